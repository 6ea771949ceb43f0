//! One invocation, end to end: resolve the flags, connect, download, finish the output, report.

use std::io::{IsTerminal, Write};

use clap::CommandFactory;
use tokio::sync::watch;

use crate::aws::Kvs;
use crate::cli::{Invocation, Tool};
use std::path::{Path, PathBuf};

use mkv::Fragment;

use crate::config::{Clock, Config, Env, Format, ProgressMode, StreamId, Target, stream_name_of};
use crate::download::Stopped;
use crate::download::{Download, Pacing, Signal};
use crate::error::Error;
use crate::output::{MkvWriter, RawWriter, Segments, Writer, continue_leftover, finish_leftover};
use crate::progress::{self, FileNamer, FileReport, Report, Reporter, Summary};
use crate::sink::{FileSink, Sink, StdoutSink};
use crate::state::{self, State};

/// Runs the command line and returns the exit code; errors are returned for `main` to render.
pub fn run(invocation: Invocation) -> Result<u8, Error> {
    if let Some(tool) = invocation.command {
        return print_tool(tool).map(|()| 0);
    }
    let cli = invocation
        .download
        .expect("clap requires the download flags without a subcommand");
    let now = jiff::Timestamp::now();
    let cfg = Config::resolve(
        cli,
        &Env::from_process(),
        now,
        std::io::stdout().is_terminal(),
    )?;
    init_tracing(cfg.verbose, cfg.progress == ProgressMode::Quiet);
    // One thread: the body is read and written in turn, like curl does; a second worker would
    // only add wake-ups between the HTTP connection and the writer.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    runtime.block_on(download(&cfg))
}

/// `kvs-dl completions SHELL` and `kvs-dl man`: generated from the clap definition, so they
/// always match the flags. Rendered in memory first: a reader that goes away (`| head`) is a
/// broken pipe for `main` to ignore, not a panic inside a generator.
fn print_tool(tool: Tool) -> Result<(), Error> {
    let mut command = Invocation::command();
    let mut out = Vec::new();
    match tool {
        Tool::Completions { shell } => {
            clap_complete::generate(shell, &mut command, "kvs-dl", &mut out)
        }
        Tool::Man => clap_mangen::Man::new(command)
            .render(&mut out)
            .map_err(|e| Error::io("rendering the manual page", e))?,
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::io("writing to standard output", e))
}

async fn download(cfg: &Config) -> Result<u8, Error> {
    let mut reporter = progress::reporter(cfg.progress, cfg.verbose > 0, file_namer(cfg));
    let mut summary = Summary::default();
    let outcome = transfer(cfg, reporter.as_mut(), &mut summary).await;
    (summary.exit_code, summary.reason) = match &outcome {
        Ok(stopped) => (stopped.exit_code(), stopped.describe()),
        Err(e) if e.is_broken_pipe() => (0, "the reader of standard output went away".into()),
        Err(e) => (e.exit_code(), e.to_string()),
    };
    reporter.report(&Report::Done(summary));
    outcome.map(|stopped| stopped.exit_code())
}

/// Everything between the flags and the `done` event: finishing what a killed run left,
/// connecting, downloading, finishing the output and saving the state. Files are reported as
/// they are finished; the totals go into `summary`, also when an error ends the run.
async fn transfer(
    cfg: &Config,
    reporter: &mut dyn Reporter,
    summary: &mut Summary,
) -> Result<Stopped, Error> {
    let mut files = Vec::new();
    let (mut writer, resume_after) = prepare(cfg, &mut files)?;
    progress::report_files(reporter, summary, files.drain(..));
    let mut source = Kvs::connect(cfg).await?;
    let mut download = Download::new(
        cfg,
        &mut source,
        writer.as_mut(),
        reporter,
        signals(),
        Pacing::from_env(),
    );
    if let Some(last) = resume_after {
        download = download.resume_after(last);
    }
    let result = download.run().await;
    let last = download.last().cloned();
    let totals = download.summary();
    drop(download);
    // The totals count the segments closed during the run; add the recovered file, if any.
    *summary = Summary {
        files: summary.files + totals.files,
        non_monotonic_timestamps: summary.non_monotonic_timestamps
            + totals.non_monotonic_timestamps,
        ..totals
    };
    // Whatever ended the run, what was committed is whole fragments: make it final.
    files.extend(writer.take_closed());
    let finished = writer
        .finish()
        .map_err(|e| Error::io("finishing the output", e));
    if let Ok(Some(file)) = &finished {
        files.push(file.clone());
    }
    progress::report_files(reporter, summary, files.drain(..));
    let saved_state = match (&cfg.state_file, &last, &finished) {
        (Some(path), Some(last), Ok(_)) => save_state(path, &State::after(cfg, last, None)),
        _ => Ok(()),
    };
    // The run's own error first; then a failure to make its output final.
    let stopped = result?;
    finished?;
    saved_state?;
    Ok(stopped)
}

fn save_state(path: &Path, state: &State) -> Result<(), Error> {
    state::save(path, state)
        .map_err(|e| Error::io(format!("saving the state to {}", path.display()), e))
}

/// The writer for this run, and the fragment to continue after (from the state file). A file
/// a killed run left as `.part` is finished first (into `files`), or, when this run writes that
/// same file, continued.
fn prepare(
    cfg: &Config,
    files: &mut Vec<FileReport>,
) -> Result<(Box<dyn Writer>, Option<Fragment>), Error> {
    let options = muxer_options(cfg);
    let Some(path) = &cfg.state_file else {
        return Ok((writer(cfg, options)?, None));
    };
    let Some(state) = state::load(path)
        .map_err(|e| Error::io(format!("reading the state file {}", path.display()), e))?
    else {
        return Ok((writer(cfg, options)?, None));
    };
    if stream_name_of(&state.stream) != cfg.stream.name() {
        return Err(Error::usage(
            format!(
                "--state-file {} belongs to stream {}, not {}",
                path.display(),
                state.stream,
                cfg.stream.display()
            ),
            Some("give each stream its own state file".into()),
        ));
    }
    let last = state.last.to_fragment();
    let leftover_error = |file: &crate::state::InProgress, e| {
        Error::io(
            format!(
                "finishing {} left by an earlier run",
                crate::sink::part_path(&file.path).display()
            ),
            e,
        )
    };
    let same_file = |file: &crate::state::InProgress| {
        cfg.output.segment.is_none()
            && matches!(&cfg.output.target, Target::File(p) if *p == file.path)
            && file.format == cfg.output.format.into()
    };
    let writer = match &state.file {
        Some(file) if same_file(file) => {
            match continue_leftover(file, &last, options.clone())
                .map_err(|e| leftover_error(file, e))?
            {
                Some(writer) => writer,
                None => writer(cfg, options)?,
            }
        }
        Some(file) => {
            // The output is checked before anything is renamed into place.
            let writer = writer(cfg, options.clone())?;
            files.extend(
                finish_leftover(file, &last, options).map_err(|e| leftover_error(file, e))?,
            );
            save_state(path, &State::after(cfg, &last, None))?;
            writer
        }
        None => writer(cfg, options)?,
    };
    Ok((writer, Some(last)))
}

/// How `--format mkv` files are written and labelled.
fn muxer_options(cfg: &Config) -> mkv::Options {
    mkv::Options {
        seekable: matches!(cfg.output.target, Target::File(_)),
        app: format!("kvs-dl {}", env!("CARGO_PKG_VERSION")),
        stream_tag: match &cfg.stream {
            StreamId::Arn(arn) => ("KVS_STREAM_ARN".into(), arn.clone()),
            StreamId::Name(name) => ("KVS_STREAM_NAME".into(), name.clone()),
        },
    }
}

/// The writer for `--format`, over the sink for `-o`.
fn writer(cfg: &Config, options: mkv::Options) -> Result<Box<dyn Writer>, Error> {
    if let (Some(every), Target::File(path)) = (cfg.output.segment, &cfg.output.target) {
        let stream = cfg.stream.name().to_owned();
        let clock = cfg.clock;
        let segments = Segments {
            template: path.to_string_lossy().into_owned(),
            every,
            force: cfg.output.force,
            name: Box::new(move |template, fragment| {
                segment_name(template, &stream, clock, fragment)
            }),
        };
        return Ok(Box::new(MkvWriter::segmented(segments, options)));
    }
    let sink: Box<dyn Sink> = match &cfg.output.target {
        Target::Stdout => Box::new(StdoutSink::new(std::io::stdout())),
        Target::File(path) => Box::new(FileSink::new(path, cfg.output.force).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::usage(
                    format!("{} already exists", path.display()),
                    Some("give --force to replace it, or another -o".into()),
                )
            } else {
                Error::io(format!("preparing {}", path.display()), e)
            }
        })?),
    };
    Ok(match cfg.output.format {
        Format::Raw => Box::new(RawWriter::new(sink)),
        Format::Mkv => Box::new(MkvWriter::single(sink, options)),
    })
}

/// A `--segment` file name: `{stream}`, `{fragment}` and strftime fields of the first
/// fragment's time (on the `--timestamp-type` clock), in UTC.
fn segment_name(
    template: &str,
    stream: &str,
    clock: Clock,
    fragment: &Fragment,
) -> std::io::Result<PathBuf> {
    let time =
        jiff::Timestamp::from_millisecond(clock.of(fragment)).map_err(std::io::Error::other)?;
    let named = template
        .replace("{stream}", stream)
        .replace("{fragment}", &fragment.number);
    let expanded = jiff::fmt::strtime::format(&named, time).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("cannot expand the file name template {template:?}: {e}"),
        )
    })?;
    Ok(PathBuf::from(expanded))
}

/// What the live line calls the file a fragment starts: the `-o` path, or the `--segment`
/// template expanded as the writer expands it; `None` for standard output.
fn file_namer(cfg: &Config) -> FileNamer {
    let target = cfg.output.target.clone();
    let segmented = cfg.output.segment.is_some();
    let stream = cfg.stream.name().to_owned();
    let clock = cfg.clock;
    Box::new(move |fragment| match &target {
        Target::Stdout => None,
        Target::File(path) if segmented => {
            segment_name(&path.to_string_lossy(), &stream, clock, fragment).ok()
        }
        Target::File(path) => Some(path.clone()),
    })
}

/// SIGINT and SIGTERM: the first asks the download to finish cleanly, a second exits at once.
fn signals() -> watch::Receiver<Option<Signal>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let mut received = None;
        loop {
            let s = tokio::select! {
                _ = int.recv() => Signal::Interrupt,
                _ = term.recv() => Signal::Terminate,
            };
            if received.is_some() {
                std::process::exit(match s {
                    Signal::Interrupt => 130,
                    Signal::Terminate => 143,
                });
            }
            received = Some(s);
            let _ = tx.send(Some(s));
        }
    });
    rx
}

/// `-v` shows kvs-dl's own debug lines, `-vv` the SDK's debug lines too (credentials chain,
/// calls, retries). Never the SDK's trace level: that is where it logs whole requests, with
/// their Authorization and session token headers. `-q` shows only errors. Colour only on a
/// terminal.
fn init_tracing(verbose: u8, quiet: bool) {
    let directives = match verbose {
        _ if quiet => "error",
        0 => "warn",
        1 => "warn,kvs_dl=debug",
        _ => "warn,kvs_dl=trace,aws_config=debug,aws_smithy_runtime=debug",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(directives))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
