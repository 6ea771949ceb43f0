//! Telling people and scripts what a run is doing. The core reports [`Report`]s through the
//! [`Reporter`] trait; only this module decides how they look (a live line on a terminal, plain
//! lines for cron, JSON lines for scripts, nothing with `-q`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::ProgressMode;

/// Something that happened, in the order it happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Report {
    Start {
        stream: String,
        region: String,
        data_endpoint: String,
        selector: String,
    },
    Fragment {
        number: String,
        server_timestamp_ms: i64,
        producer_timestamp_ms: i64,
        bytes: u64,
        lag_ms: Option<u64>,
    },
    Reconnect {
        reason: String,
        attempt: u32,
        delay_ms: u64,
    },
    Gap {
        reason: String,
        after_fragment: Option<String>,
    },
    File(FileReport),
    Done(Summary),
}

/// One finished output file.
#[derive(Debug, Clone, Serialize, Default)]
pub struct FileReport {
    pub path: Option<PathBuf>,
    pub fragments: u64,
    pub bytes: u64,
    pub media_duration_ms: u64,
    pub first_fragment: Option<String>,
    pub last_fragment: Option<String>,
    pub non_monotonic_timestamps: u64,
}

impl FileReport {
    /// Counts a fragment written to this file.
    pub fn add(&mut self, fragment: &mkv::Fragment) {
        self.fragments += 1;
        self.first_fragment
            .get_or_insert_with(|| fragment.number.clone());
        self.last_fragment = Some(fragment.number.clone());
    }
}

/// The totals a run ends with.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub files: u64,
    pub bytes: u64,
    pub fragments: u64,
    pub media_duration_ms: u64,
    pub wall_ms: u64,
    pub reconnects: u64,
    pub gaps: u64,
    pub duplicates_skipped: u64,
    pub non_monotonic_timestamps: u64,
    pub reason: String,
    pub exit_code: u8,
}

/// Where reports go.
pub trait Reporter {
    fn report(&mut self, report: &Report);
}

/// Builds the reporter for the chosen mode. `Bar` falls back to plain lines when stderr is not
/// a terminal, so cron logs never fill with redraws.
pub fn reporter(mode: ProgressMode) -> Box<dyn Reporter> {
    match mode {
        ProgressMode::Quiet => Box::new(Quiet),
        ProgressMode::Json => Box::new(Json),
        ProgressMode::Log => Box::new(Log::new(Duration::from_secs(10))),
        ProgressMode::Bar if std::io::stderr().is_terminal() => {
            Box::new(Log::new(Duration::from_secs(1)))
        }
        ProgressMode::Bar => Box::new(Log::new(Duration::from_secs(10))),
    }
}

struct Quiet;

impl Reporter for Quiet {
    fn report(&mut self, _: &Report) {}
}

/// One JSON object per line on stderr.
struct Json;

impl Reporter for Json {
    fn report(&mut self, report: &Report) {
        let mut line = serde_json::to_vec(report).expect("reports serialize");
        line.push(b'\n');
        let _ = std::io::stderr().write_all(&line);
    }
}

/// Plain lines: one every `every`, on reconnects and gaps, and the summary.
struct Log {
    every: Duration,
    started: Instant,
    last_line: Instant,
    fragments: u64,
    bytes: u64,
    lag_ms: Option<u64>,
}

impl Log {
    fn new(every: Duration) -> Self {
        let now = Instant::now();
        Log {
            every,
            started: now,
            last_line: now,
            fragments: 0,
            bytes: 0,
            lag_ms: None,
        }
    }
}

impl Reporter for Log {
    fn report(&mut self, report: &Report) {
        let line = match report {
            Report::Start {
                stream,
                region,
                selector,
                ..
            } => {
                format!("kvs-dl: reading {stream} in {region} from {selector}")
            }
            Report::Fragment { bytes, lag_ms, .. } => {
                self.fragments += 1;
                self.bytes += bytes;
                self.lag_ms = *lag_ms;
                if self.last_line.elapsed() < self.every {
                    return;
                }
                let secs = self.started.elapsed().as_secs_f64().max(1e-3);
                let lag = self
                    .lag_ms
                    .map(|l| format!(", {:.1} s behind live", l as f64 / 1000.0))
                    .unwrap_or_default();
                format!(
                    "kvs-dl: {} fragments, {} ({}/s){lag}",
                    self.fragments,
                    human_bytes(self.bytes),
                    human_bytes((self.bytes as f64 / secs) as u64)
                )
            }
            Report::Reconnect {
                reason,
                attempt,
                delay_ms,
            } => format!(
                "kvs-dl: reconnecting in {:.1} s (attempt {attempt}): {reason}",
                *delay_ms as f64 / 1000.0
            ),
            Report::Gap { reason, .. } => format!("kvs-dl: gap: {reason}"),
            Report::File(f) => match &f.path {
                Some(path) => format!(
                    "kvs-dl: wrote {} ({} fragments, {}, {})",
                    path.display(),
                    f.fragments,
                    human_bytes(f.bytes),
                    human_duration(f.media_duration_ms)
                ),
                None => return,
            },
            Report::Done(s) => format!(
                "kvs-dl: done: {} files, {} fragments, {}, {} of media in {} ({}/s), {} reconnects, {} gaps; {}",
                s.files,
                s.fragments,
                human_bytes(s.bytes),
                human_duration(s.media_duration_ms),
                human_duration(s.wall_ms),
                human_bytes((s.bytes as f64 / (s.wall_ms.max(1) as f64 / 1000.0)) as u64),
                s.reconnects,
                s.gaps,
                s.reason
            ),
        };
        self.last_line = Instant::now();
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

/// `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// `1h02m03s`, `4.5 s`.
pub fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{:.1} s", ms as f64 / 1000.0),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m{:02}s", secs / 3600, secs / 60 % 60, secs % 60),
    }
}
