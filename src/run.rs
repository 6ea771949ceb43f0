//! One invocation, end to end: resolve the flags, connect, download, finish the output, report.

use std::io::IsTerminal;

use tokio::sync::watch;

use crate::aws::Kvs;
use crate::cli::Cli;
use std::path::PathBuf;

use mkv::Fragment;

use crate::config::{Clock, Config, Env, Format, StreamId, Target};
use crate::download::{Download, Pacing, Signal};
use crate::error::Error;
use crate::output::{MkvWriter, RawWriter, Segments, Writer};
use crate::progress::{self, Report};
use crate::sink::{FileSink, Sink, StdoutSink};

/// Runs the command line and returns the exit code; errors are returned for `main` to render.
pub fn run(cli: Cli) -> Result<u8, Error> {
    let now = jiff::Timestamp::now();
    let cfg = Config::resolve(
        cli,
        &Env::from_process(),
        now,
        std::io::stdout().is_terminal(),
    )?;
    init_tracing(cfg.verbose);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    runtime.block_on(download(&cfg))
}

async fn download(cfg: &Config) -> Result<u8, Error> {
    let mut writer = writer(cfg)?;
    let mut reporter = progress::reporter(cfg.progress);
    let mut source = Kvs::connect(cfg).await?;
    let shutdown = signals();
    let result = Download::new(
        cfg,
        &mut source,
        writer.as_mut(),
        reporter.as_mut(),
        shutdown,
        Pacing::from_env(),
    )
    .run()
    .await;
    // Whatever ended the run, what was committed is whole fragments: make it final.
    let mut files = writer.take_closed();
    let last = writer.finish();
    let (stopped, mut summary) = result?;
    files.extend(last.map_err(|e| Error::io("finishing the output", e))?);
    for file in files {
        summary.files += 1;
        summary.non_monotonic_timestamps += file.non_monotonic_timestamps;
        reporter.report(&Report::File(file));
    }
    reporter.report(&Report::Done(summary));
    Ok(stopped.exit_code())
}

/// The writer for `--format`, over the sink for `-o`.
fn writer(cfg: &Config) -> Result<Box<dyn Writer>, Error> {
    let options = mkv::Options {
        seekable: matches!(cfg.output.target, Target::File(_)),
        app: format!("kvs-dl {}", env!("CARGO_PKG_VERSION")),
        stream_tag: match &cfg.stream {
            StreamId::Arn(arn) => ("KVS_STREAM_ARN".into(), arn.clone()),
            StreamId::Name(name) => ("KVS_STREAM_NAME".into(), name.clone()),
        },
    };
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

/// `-v` shows kvs-dl's own debug lines, `-vv` the SDK's too. Colour only on a terminal.
fn init_tracing(verbose: u8) {
    let directives = match verbose {
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
