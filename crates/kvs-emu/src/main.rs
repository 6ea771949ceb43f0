//! `kvs-emu`: serve local Kinesis video streams until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kvs_emu::{
    ACCESS_KEY, Config, Emulator, MkvOptions, SECRET_KEY, StoredFragment, Stream, SyntheticSpec,
    from_capture, from_mkv, is_capture, synthetic,
};

/// A local Amazon Kinesis Video Streams emulator (GetDataEndpoint, DescribeStream, ListStreams,
/// GetMedia, ListFragments, GetMediaForFragmentList, and STS AssumeRole for any role), for
/// trying and testing clients without AWS.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Control-plane port: the endpoint clients are configured with (0: any free port)
    #[arg(long, default_value_t = 4566)]
    port: u16,
    /// Data-plane port, returned by GetDataEndpoint (0: any free port)
    #[arg(long, default_value_t = 0)]
    data_port: u16,
    /// A stream to serve, as NAME=SOURCE (repeatable; default demo=synthetic). SOURCE is
    /// `synthetic` (60 fragments of 2 s of beeping PCM audio), `synthetic:N` (N fragments), a
    /// GetMedia capture, or a plain Matroska file (cut into fragments at key frames)
    #[arg(long = "stream", value_name = "NAME=SOURCE", value_parser = parse_stream)]
    streams: Vec<StreamArg>,
    /// Make the streams live: fragments arrive over time, on their server clock
    #[arg(long)]
    live: bool,
    /// How many times faster than real time live fragments arrive (at least 1)
    #[arg(long, default_value_t = 1.0, requires = "live")]
    speed: f64,
    /// Do not check SigV4 signatures (for clients such as curl)
    #[arg(long)]
    no_verify: bool,
    /// End a GetMedia body after this long without a new fragment (e.g. 3s, 500ms)
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    idle_close: Duration,
    /// Play each Matroska file source this many times back to back, with fresh fragment numbers
    /// and continuing timestamps (large streams from a short clip; the media is not copied)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    repeat: u64,
    /// Make synthetic fragments about this many bytes each (e.g. 40MB, for memory tests)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    fragment_bytes: Option<usize>,
    /// Region in the stream ARNs and in the suggested client command
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Cap every GetMedia and GetMediaForFragmentList connection at this many bytes per second
    /// (e.g. 25MB, the service's cap; default: no cap)
    #[arg(long, value_name = "BYTES_PER_SECOND", value_parser = parse_rate)]
    bandwidth: Option<u64>,
    /// List (ListFragments) and serve (GetMediaForFragmentList) a live fragment only this long
    /// after it arrived, like the service's eventually consistent archive (e.g. 800ms)
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    visibility_delay: Duration,
    /// With --live: send each frame at its own time, as a camera does, not each fragment whole
    #[arg(long, requires = "live")]
    frame_paced: bool,
    /// With --frame-paced: append the Unix time (µs) at which each frame's last byte was sent
    #[arg(long, value_name = "FILE", requires = "frame_paced")]
    frame_log: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone)]
struct StreamArg {
    name: String,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Synthetic(usize),
    File(PathBuf),
}

fn parse_stream(arg: &str) -> Result<StreamArg, String> {
    let (name, source) = arg
        .split_once('=')
        .ok_or("expected NAME=SOURCE, e.g. demo=synthetic")?;
    let source = match source.split_once(':') {
        _ if source == "synthetic" => Source::Synthetic(SyntheticSpec::default().fragments),
        Some(("synthetic", n)) => Source::Synthetic(
            n.parse()
                .map_err(|_| format!("synthetic:N needs a number of fragments, not {n:?}"))?,
        ),
        _ => Source::File(source.into()),
    };
    Ok(StreamArg {
        name: name.to_owned(),
        source,
    })
}

/// `40MB`, `2MiB`, `1048576`.
fn parse_size(arg: &str) -> Result<usize, String> {
    let size: u64 = match arg.parse::<u64>() {
        Ok(n) => n,
        Err(_) => {
            let digits = arg.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let n: u64 = digits.parse().map_err(|_| format!("not a size: {arg:?}"))?;
            let unit = match &arg[digits.len()..] {
                "B" => 1,
                "KB" => 1_000,
                "KiB" => 1 << 10,
                "MB" => 1_000_000,
                "MiB" => 1 << 20,
                "GB" => 1_000_000_000,
                "GiB" => 1 << 30,
                other => {
                    return Err(format!(
                        "unknown size unit {other:?} (KB, MB, GB, KiB, MiB, GiB)"
                    ));
                }
            };
            n * unit
        }
    };
    usize::try_from(size).map_err(|_| format!("{arg} is too large"))
}

/// A size per second, at least 1 byte.
fn parse_rate(arg: &str) -> Result<u64, String> {
    match parse_size(arg)? {
        0 => Err("the bandwidth must be at least 1 byte per second".into()),
        n => u64::try_from(n).map_err(|_| format!("{arg} is too large")),
    }
}

fn parse_duration(arg: &str) -> Result<Duration, String> {
    let duration: jiff::SignedDuration = arg.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from(duration).map_err(|_| format!("{arg} is negative"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvs-emu: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let default = [StreamArg {
        name: "demo".into(),
        source: Source::Synthetic(SyntheticSpec::default().fragments),
    }];
    let args = if cli.streams.is_empty() {
        &default[..]
    } else {
        &cli.streams
    };
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let mut streams = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let base = i as u64 * 1_000_000_000_000_000;
        let fragments = load(arg, cli, now_ms, base)?;
        if fragments.is_empty() {
            return Err(format!(
                "stream {}: the source holds no complete fragment",
                arg.name
            ));
        }
        let mut stream = if cli.live {
            Stream::live(&arg.name, fragments, cli.speed)
        } else {
            Stream::archive(&arg.name, fragments)
        };
        stream.region.clone_from(&cli.region);
        stream.idle_close = cli.idle_close;
        stream.bandwidth = cli.bandwidth;
        stream.visibility_delay = cli.visibility_delay;
        stream.frame_paced = cli.frame_paced;
        stream.frame_log = cli.frame_log.clone();
        streams.push(stream);
    }
    let summary: Vec<String> = streams.iter().map(|s| describe(s, cli)).collect();
    let first = streams[0].name.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let stop = {
        let _context = runtime.enter();
        StopSignals::install().map_err(|e| format!("cannot catch Ctrl-C or SIGTERM: {e}"))?
    };
    let emulator = Emulator::start(Config {
        verify_signatures: !cli.no_verify,
        streams,
        control_port: cli.port,
        data_port: cli.data_port,
        ..Config::default()
    })
    .map_err(|e| format!("cannot start: {e}"))?;

    let endpoint = emulator.endpoint();
    println!(
        "kvs-emu: control endpoint {endpoint} (region {})",
        cli.region
    );
    for line in summary {
        println!("  {line}");
    }
    let range = if cli.live {
        "--start now --duration 30s"
    } else {
        "--start earliest --end now"
    };
    println!("try:");
    println!(
        "  AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} AWS_REGION={} \\",
        cli.region
    );
    println!("  kvs-dl --endpoint-url {endpoint} --stream-name {first} {range} -o {first}.mkv");

    runtime
        .block_on(stop.wait())
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    drop(emulator);
    Ok(())
}

/// Ctrl-C and, on Unix, SIGTERM (what `kill`, service managers and container runtimes send to
/// stop a server): either ends the emulator the same clean way, with exit code 0. Both are
/// caught from the moment they are installed, before the banner, so that a script that stops
/// the emulator as soon as it printed its endpoint never kills it mid-way.
#[cfg(unix)]
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl StopSignals {
    /// Needs a Tokio runtime's context.
    fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn wait(mut self) -> std::io::Result<()> {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        Ok(())
    }
}

/// Elsewhere, only Ctrl-C.
#[cfg(not(unix))]
struct StopSignals;

#[cfg(not(unix))]
impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        Ok(StopSignals)
    }

    async fn wait(self) -> std::io::Result<()> {
        tokio::signal::ctrl_c().await
    }
}

/// The fragments of one stream. Generated and remuxed media is stamped to start now (live) or
/// to end now (archive), so that relative times such as `--start -15m` find it.
fn load(
    arg: &StreamArg,
    cli: &Cli,
    now_ms: i64,
    number_base: u64,
) -> Result<Vec<StoredFragment>, String> {
    let live = cli.live;
    let context = |e: &dyn std::fmt::Display| format!("stream {}: {e}", arg.name);
    match &arg.source {
        Source::Synthetic(count) => {
            let mut spec = SyntheticSpec {
                fragments: *count,
                target_fragment_bytes: cli.fragment_bytes,
                ..SyntheticSpec::default()
            };
            let length = (*count as u64 * spec.fragment_ms) as i64;
            spec.ingest.producer_start_ms = if live { now_ms } else { now_ms - length };
            spec.ingest.fragment_number_base = number_base;
            Ok(synthetic(&spec))
        }
        Source::File(path) => {
            let bytes =
                std::fs::read(path).map_err(|e| context(&format!("{}: {e}", path.display())))?;
            if is_capture(&bytes) {
                return from_capture(&bytes).map_err(|e| context(&e));
            }
            let mut opts = MkvOptions {
                repeat: cli.repeat as usize,
                ..MkvOptions::default()
            };
            opts.ingest.producer_start_ms = now_ms;
            opts.ingest.fragment_number_base = number_base;
            let fragments = from_mkv(&bytes, &opts).map_err(|e| context(&e))?;
            if live {
                return Ok(fragments);
            }
            // The media's length is known only once it is cut: stamp it again, ending now.
            opts.ingest.producer_start_ms = now_ms - media_ms(&fragments);
            from_mkv(&bytes, &opts).map_err(|e| context(&e))
        }
    }
}

/// From the first fragment's start to the last one's end.
fn media_ms(fragments: &[StoredFragment]) -> i64 {
    match (fragments.first(), fragments.last()) {
        (Some(first), Some(last)) => {
            last.producer_ms() - first.producer_ms() + last.duration_ms() as i64
        }
        _ => 0,
    }
}

fn describe(stream: &Stream, cli: &Cli) -> String {
    let kind = if cli.live {
        format!("live at {}x", cli.speed)
    } else {
        "archive".into()
    };
    format!(
        "stream {}: {} fragments, {:.1} s, {kind}",
        stream.name,
        stream.fragments.len(),
        media_ms(&stream.fragments) as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn streams_and_durations_parse() {
        let cli = Cli::try_parse_from([
            "kvs-emu",
            "--stream",
            "a=synthetic",
            "--stream",
            "b=synthetic:5",
            "--stream",
            "c=/tmp/x.mkv",
            "--live",
            "--speed",
            "10",
            "--idle-close",
            "300ms",
            "--bandwidth",
            "25MB",
            "--visibility-delay",
            "800ms",
        ])
        .unwrap();
        assert_eq!(cli.bandwidth, Some(25_000_000));
        assert_eq!(cli.visibility_delay, Duration::from_millis(800));
        assert!(Cli::try_parse_from(["kvs-emu", "--bandwidth", "0"]).is_err());
        assert!(matches!(cli.streams[0].source, Source::Synthetic(60)));
        assert!(matches!(cli.streams[1].source, Source::Synthetic(5)));
        assert!(matches!(&cli.streams[2].source, Source::File(p) if p.ends_with("x.mkv")));
        assert_eq!(cli.idle_close, Duration::from_millis(300));
        assert!(Cli::try_parse_from(["kvs-emu", "--stream", "nosource"]).is_err());
        assert!(Cli::try_parse_from(["kvs-emu", "--stream", "a=synthetic:x"]).is_err());
        assert!(Cli::try_parse_from(["kvs-emu", "--speed", "2"]).is_err());
        assert_eq!(parse_size("40MB"), Ok(40_000_000));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("12"), Ok(12));
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn archive_synthetic_streams_end_now() {
        let arg = parse_stream("d=synthetic:3").unwrap();
        let cli = Cli::try_parse_from(["kvs-emu"]).unwrap();
        let fragments = load(&arg, &cli, 1_000_000, 0).unwrap();
        assert_eq!(media_ms(&fragments), 6000);
        assert_eq!(fragments[0].producer_ms(), 1_000_000 - 6000);
    }
}
