//! One invocation, end to end: resolve the flags, connect, download, finish the output, report.

use std::io::IsTerminal;

use tokio::sync::watch;

use crate::aws::{Kvs, MediaSource};
use crate::cli::Cli;
use crate::config::{Config, Env, Format, Target};
use crate::download::{Download, Pacing, Signal};
use crate::error::Error;
use crate::output::{RawWriter, Writer};
use crate::progress::{self, FileReport, Report};
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
    let fragments_written = writer.committed() > 0;
    let finished = writer.finish();
    let (stopped, mut summary) = result?;
    let path = finished.map_err(|e| Error::io("finishing the output", e))?;
    if path.is_some() || fragments_written {
        summary.files = 1;
    }
    let _ = source.region();
    if let Some(path) = path {
        reporter.report(&Report::File(FileReport {
            path: Some(path),
            fragments: summary.fragments,
            bytes: summary.bytes,
            media_duration_ms: summary.media_duration_ms,
            ..FileReport::default()
        }));
    }
    reporter.report(&Report::Done(summary));
    Ok(stopped.exit_code())
}

/// The writer for `--format` over the sink for `-o`.
fn writer(cfg: &Config) -> Result<Box<dyn Writer>, Error> {
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
    match cfg.output.format {
        Format::Raw => Ok(Box::new(RawWriter::new(sink))),
        Format::Mkv => Err(Error::usage(
            "--format mkv is not available yet",
            Some("use --format raw".into()),
        )),
    }
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
