//! One invocation, end to end: resolve the flags, connect, download, finish the output, report.

use std::io::{IsTerminal, Write};

use clap::CommandFactory;
use tokio::sync::watch;

use crate::aws::Kvs;
use crate::cli::{Invocation, Tool};
use std::path::{Path, PathBuf};

use mkv::Fragment;

use crate::config::{Clock, Config, Env, Format, ProgressMode, StreamId, Target};
use crate::download::{Download, Pacing, Signal};
use crate::error::Error;
use crate::output::{MkvWriter, RawWriter, Segments, Writer, finish_leftover};
use crate::progress::{self, FileNamer, FileReport, Report};
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
    let options = muxer_options(cfg);
    let saved = match &cfg.state_file {
        Some(path) => resume(cfg, path, &options)?,
        None => Resume::default(),
    };
    let mut writer = writer(cfg, options)?;
    let mut reporter = progress::reporter(cfg.progress, cfg.verbose > 0, file_namer(cfg));
    let mut source = Kvs::connect(cfg).await?;
    let mut download = Download::new(
        cfg,
        &mut source,
        writer.as_mut(),
        reporter.as_mut(),
        signals(),
        Pacing::from_env(),
    );
    if let Some(last) = saved.last {
        download = download.resume_after(last);
    }
    let result = download.run().await;
    let last = download.last().cloned();
    let mut summary = download.summary();
    drop(download);
    // Whatever ended the run, what was committed is whole fragments: make it final.
    let mut files: Vec<FileReport> = saved.recovered.into_iter().collect();
    files.extend(writer.take_closed());
    let finished = writer
        .finish()
        .map_err(|e| Error::io("finishing the output", e));
    let saved_state = match (&cfg.state_file, &last, &finished) {
        (Some(path), Some(last), Ok(_)) => state::save(path, &State::after(cfg, last, None))
            .map_err(|e| Error::io(format!("saving the state to {}", path.display()), e)),
        _ => Ok(()),
    };
    let outcome = match (result, finished, saved_state) {
        (Ok(stopped), Ok(last_file), Ok(())) => {
            files.extend(last_file);
            Ok(stopped)
        }
        (Err(e), Ok(last_file), _) => {
            files.extend(last_file);
            Err(e)
        }
        (Err(e), Err(_), _) | (Ok(_), Err(e), _) | (Ok(_), Ok(_), Err(e)) => Err(e),
    };
    for file in files {
        summary.files += 1;
        summary.non_monotonic_timestamps += file.non_monotonic_timestamps;
        reporter.report(&Report::File(file));
    }
    (summary.exit_code, summary.reason) = match &outcome {
        Ok(stopped) => (stopped.exit_code(), stopped.describe()),
        Err(e) if e.is_broken_pipe() => (0, "the reader of standard output went away".into()),
        Err(e) => (e.exit_code(), e.to_string()),
    };
    reporter.report(&Report::Done(summary));
    outcome.map(|stopped| stopped.exit_code())
}

/// What a state file says about where to go on.
#[derive(Default)]
struct Resume {
    /// The last fragment written by an earlier run.
    last: Option<Fragment>,
    /// The file a killed run left unfinished, now finished.
    recovered: Option<FileReport>,
}

/// Reads the state file; finishes the file a killed run left behind.
fn resume(cfg: &Config, path: &Path, options: &mkv::Options) -> Result<Resume, Error> {
    let Some(state) = state::load(path)
        .map_err(|e| Error::io(format!("reading the state file {}", path.display()), e))?
    else {
        return Ok(Resume::default());
    };
    if state.stream != cfg.stream.display() {
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
    let mut recovered = None;
    if let Some(file) = &state.file {
        recovered = finish_leftover(file, &last, options.clone()).map_err(|e| {
            Error::io(
                format!(
                    "finishing {} left by an earlier run",
                    crate::sink::part_path(&file.path).display()
                ),
                e,
            )
        })?;
        state::save(path, &State::after(cfg, &last, None))
            .map_err(|e| Error::io(format!("saving the state to {}", path.display()), e))?;
    }
    Ok(Resume {
        last: Some(last),
        recovered,
    })
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
        let stream = stream_name(&cfg.stream).to_owned();
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

/// The stream's name, also when it was given as an ARN (`arn:...:stream/NAME/123`).
fn stream_name(stream: &StreamId) -> &str {
    match stream {
        StreamId::Name(name) => name,
        StreamId::Arn(arn) => arn.rsplit('/').nth(1).unwrap_or(arn),
    }
}

/// A `--segment` file name: `{stream}`, `{fragment}` and strftime fields of the first
/// fragment's time (on the `--timestamp-type` clock), in UTC.
fn segment_name(
    template: &str,
    stream: &str,
    clock: Clock,
    fragment: &Fragment,
) -> std::io::Result<PathBuf> {
    let ms = match clock {
        Clock::Server => fragment.server_ms,
        Clock::Producer => fragment.producer_ms,
    };
    let time = jiff::Timestamp::from_millisecond(ms).map_err(std::io::Error::other)?;
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
    let stream = stream_name(&cfg.stream).to_owned();
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
