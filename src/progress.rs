//! Telling people and scripts what a run is doing. The core reports [`Report`]s through the
//! [`Reporter`] trait; only this module decides how they look (a live line on a terminal, plain
//! lines for cron, JSON lines for scripts, nothing with `-q`) and only it knows indicatif.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::config::ProgressMode;

/// Something that happened, in the order it happened. Serialized, these are the
/// `--progress json` events: README.md documents every field and the integration tests hold
/// real runs to that table, so a rename is a breaking change for scripts.
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
        /// Media written so far: from the first fragment's start to this one's end.
        media_duration_ms: u64,
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

/// Reports finished files and counts them into `summary`.
pub fn report_files(
    reporter: &mut dyn Reporter,
    summary: &mut Summary,
    files: impl IntoIterator<Item = FileReport>,
) {
    for file in files {
        summary.files += 1;
        summary.non_monotonic_timestamps += file.non_monotonic_timestamps;
        reporter.report(&Report::File(file));
    }
}

/// Where reports go.
pub trait Reporter {
    fn report(&mut self, report: &Report);

    /// Prints a line of its own on stderr (an error after `Done`), above any live line.
    fn println(&mut self, line: &str) {
        eprintln!("{line}");
    }
}

/// How often a plain progress line is printed.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Names the file that a fragment starting a new output file goes into (`None`: standard
/// output), so that the live line can show it: fragment reports say where a file starts, not
/// what it is called.
pub type FileNamer = Box<dyn Fn(&mkv::Fragment) -> Option<PathBuf>>;

/// Builds the reporter for the chosen mode. The live line needs a terminal on stderr and no
/// `-v` (its debug lines would tear it apart); otherwise it falls back to plain lines, so cron
/// logs never fill with redraws.
pub fn reporter(mode: ProgressMode, verbose: bool, name_file: FileNamer) -> Box<dyn Reporter> {
    match mode {
        ProgressMode::Quiet => Box::new(Quiet),
        ProgressMode::Json => Box::new(Json),
        ProgressMode::Bar if !verbose && std::io::stderr().is_terminal() => {
            Box::new(Bar::new(name_file))
        }
        ProgressMode::Bar | ProgressMode::Log => {
            Box::new(Log::new(HEARTBEAT, Box::new(std::io::stderr())))
        }
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

/// The running figures both human reporters show.
#[derive(Debug, Default)]
struct Tally {
    fragments: u64,
    bytes: u64,
    lag_ms: Option<u64>,
    reconnects: u64,
    gaps: u64,
    media_ms: u64,
}

impl Tally {
    fn add(&mut self, report: &Report) {
        match report {
            Report::Fragment {
                bytes,
                lag_ms,
                media_duration_ms,
                ..
            } => {
                self.media_ms = *media_duration_ms;
                self.fragments += 1;
                self.bytes += bytes;
                self.lag_ms = *lag_ms;
            }
            Report::Reconnect { .. } => self.reconnects += 1,
            Report::Gap { .. } => self.gaps += 1,
            _ => {}
        }
    }

    /// `12 fragments, 24.0 s of media, 1.2 s behind live, 1 reconnect, 0 gaps`.
    fn figures(&self) -> String {
        let lag = self
            .lag_ms
            .map(|ms| format!(", {} behind live", human_duration(ms)))
            .unwrap_or_default();
        format!(
            "{}, {} of media{lag}, {}, {}",
            count(self.fragments, "fragment"),
            human_duration(self.media_ms),
            count(self.reconnects, "reconnect"),
            count(self.gaps, "gap"),
        )
    }
}

/// The line for an event worth a line of its own (the summary aside).
fn notice(report: &Report) -> Option<String> {
    Some(match report {
        Report::Start {
            stream,
            region,
            selector,
            ..
        } => format!("kvs-dl: reading {stream} in {region} from {selector}"),
        Report::Reconnect {
            reason,
            attempt,
            delay_ms,
        } => format!(
            "kvs-dl: reconnecting in {} (attempt {attempt}): {reason}",
            human_duration(*delay_ms)
        ),
        Report::Gap { reason, .. } => format!("kvs-dl: gap: {reason}"),
        Report::File(FileReport {
            path: Some(path),
            fragments,
            bytes,
            media_duration_ms,
            ..
        }) => format!(
            "kvs-dl: wrote {} ({}, {}, {} of media)",
            path.display(),
            count(*fragments, "fragment"),
            human_bytes(*bytes),
            human_duration(*media_duration_ms)
        ),
        Report::Fragment { .. } | Report::File(_) | Report::Done(_) => return None,
    })
}

/// The line every run that wrote something ends with. A run that failed before writing
/// anything ends with its error alone.
fn summary_line(s: &Summary) -> Option<String> {
    let failed = !matches!(s.exit_code, 0 | 130 | 143);
    if failed && s.fragments == 0 && s.files == 0 {
        return None;
    }
    let rate = human_bytes((s.bytes as f64 / (s.wall_ms.max(1) as f64 / 1000.0)) as u64);
    // An error is rendered right after this line; saying it twice helps no one.
    let why = match s.exit_code {
        0 | 130 | 143 => s.reason.as_str(),
        _ => "stopped by the error below",
    };
    Some(format!(
        "kvs-dl: done in {}: {}, {}, {}, {} of media, {rate}/s; {}, {}, {} that did not move forward; {why}",
        human_duration(s.wall_ms),
        count(s.files, "file"),
        count(s.fragments, "fragment"),
        human_bytes(s.bytes),
        human_duration(s.media_duration_ms),
        count(s.reconnects, "reconnect"),
        count(s.gaps, "gap"),
        count(s.non_monotonic_timestamps, "fragment timestamp"),
    ))
}

/// The live line on a terminal: redrawn at most 4 times a second by indicatif, with notices
/// printed above it, cleared at the end for the summary.
struct Bar {
    bar: ProgressBar,
    tally: Tally,
    name_file: FileNamer,
    /// The next fragment starts a new file (the first one, or the first after a file closed).
    new_file: bool,
    file: Option<String>,
}

impl Bar {
    fn new(name_file: FileNamer) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4))
            .with_style(
                ProgressStyle::with_template(
                    "{spinner:.green} {binary_bytes} at {binary_bytes_per_sec}, {msg}",
                )
                .expect("the template is valid"),
            )
            .with_message("connecting");
        // Keeps the spinner and the rate moving while the stream is quiet.
        bar.enable_steady_tick(Duration::from_millis(250));
        Bar {
            bar,
            tally: Tally::default(),
            name_file,
            new_file: true,
            file: None,
        }
    }
}

impl Reporter for Bar {
    fn report(&mut self, report: &Report) {
        self.tally.add(report);
        match report {
            Report::Fragment {
                number,
                server_timestamp_ms,
                producer_timestamp_ms,
                bytes,
                ..
            } => {
                if std::mem::take(&mut self.new_file) {
                    let fragment = mkv::Fragment {
                        number: number.clone(),
                        server_ms: *server_timestamp_ms,
                        producer_ms: *producer_timestamp_ms,
                        millis_behind_now: None,
                        continuation_token: None,
                    };
                    self.file = Some(match (self.name_file)(&fragment) {
                        Some(path) => path.display().to_string(),
                        None => "stdout".into(),
                    });
                }
                self.bar.inc(*bytes);
            }
            Report::File(_) => self.new_file = true,
            Report::Done(summary) => {
                self.bar.finish_and_clear();
                if let Some(line) = summary_line(summary) {
                    eprintln!("{line}");
                }
                return;
            }
            _ => {}
        }
        if let Some(line) = notice(report) {
            self.bar.println(line);
        }
        let to = self
            .file
            .as_ref()
            .map(|f| format!(" → {f}"))
            .unwrap_or_default();
        self.bar
            .set_message(format!("{}{to}", self.tally.figures()));
    }
}

impl Drop for Bar {
    /// A run that ends before `Done` (it could not connect) leaves no half-drawn line above
    /// its error.
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

/// Plain lines for logs: notices as they happen, and a heartbeat every `every` from a small
/// thread, so that a quiet stream still shows the run is alive ("waiting").
struct Log {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    heartbeat: Option<JoinHandle<()>>,
}

/// What the reporting side and the heartbeat thread share.
struct Shared {
    tally: Tally,
    /// When the last fragment came (the start before the first), for "waiting" lines.
    fragment_at: Instant,
    out: Box<dyn Write + Send>,
    done: bool,
}

impl Log {
    /// Notices as they happen, and nothing in between: a fleet's stream (one heartbeat per
    /// stream would bury the log).
    fn without_heartbeat(out: Box<dyn Write + Send>) -> Self {
        Log {
            shared: Arc::new((
                Mutex::new(Shared {
                    tally: Tally::default(),
                    fragment_at: Instant::now(),
                    out,
                    done: false,
                }),
                Condvar::new(),
            )),
            heartbeat: None,
        }
    }

    fn new(every: Duration, out: Box<dyn Write + Send>) -> Self {
        let shared = Arc::new((
            Mutex::new(Shared {
                tally: Tally::default(),
                fragment_at: Instant::now(),
                out,
                done: false,
            }),
            Condvar::new(),
        ));
        let heartbeat = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || heartbeat(&shared, every))
        };
        Log {
            shared,
            heartbeat: Some(heartbeat),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the heartbeat, so that no line follows the summary.
    fn stop(&mut self) {
        self.lock().done = true;
        self.shared.1.notify_all();
        if let Some(thread) = self.heartbeat.take() {
            let _ = thread.join();
        }
    }
}

/// Every `every` until done: the figures with the rate since the last beat, or for how long
/// nothing new came.
fn heartbeat(shared: &(Mutex<Shared>, Condvar), every: Duration) {
    let (lock, wake) = shared;
    let mut beat = Instant::now();
    let (mut fragments, mut bytes) = (0, 0);
    let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let timeout = (beat + every).saturating_duration_since(Instant::now());
        state = wake
            .wait_timeout_while(state, timeout, |s| !s.done)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if state.done {
            return;
        }
        let now = Instant::now();
        let t = &state.tally;
        let line = if t.fragments > fragments {
            let rate = (t.bytes - bytes) as f64 / now.duration_since(beat).as_secs_f64();
            format!(
                "kvs-dl: {} at {}/s, {}",
                human_bytes(t.bytes),
                human_bytes(rate as u64),
                t.figures()
            )
        } else {
            let quiet_ms = now.duration_since(state.fragment_at).as_millis() as u64;
            format!(
                "kvs-dl: waiting, no new fragment for {}; {}, {}",
                human_duration(quiet_ms),
                human_bytes(t.bytes),
                t.figures()
            )
        };
        (beat, fragments, bytes) = (now, t.fragments, t.bytes);
        let _ = writeln!(state.out, "{line}");
    }
}

impl Reporter for Log {
    fn report(&mut self, report: &Report) {
        if let Report::Done(summary) = report {
            self.stop();
            if let Some(line) = summary_line(summary) {
                let _ = writeln!(self.lock().out, "{line}");
            }
            return;
        }
        let mut shared = self.lock();
        shared.tally.add(report);
        if let Report::Fragment { .. } = report {
            shared.fragment_at = Instant::now();
        }
        if let Some(line) = notice(report) {
            let _ = writeln!(shared.out, "{line}");
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The reporter of one stream of a fleet: its JSON events carry a `stream` field (and its
/// `done` is a `stream_done`: the fleet's own `done` comes last), its log lines name it after
/// `kvs-dl: `, and there is no heartbeat. On a terminal, [`FleetProgress`] draws live lines.
pub fn stream_reporter(mode: ProgressMode, stream: &str) -> Box<dyn Reporter> {
    match mode {
        ProgressMode::Quiet => Box::new(Quiet),
        ProgressMode::Json => Box::new(TaggedJson {
            stream: stream.to_owned(),
        }),
        ProgressMode::Bar | ProgressMode::Log => Box::new(Log::without_heartbeat(Box::new(
            Named::new(stream, Box::new(std::io::stderr())),
        ))),
    }
}

/// The progress of a fleet: a reporter per stream, and the fleet's end. On a terminal (and
/// without `-v`), one indicatif [`MultiProgress`]: a totals line, then one line per active
/// stream (indicatif draws as many as the terminal's height holds), with each stream's notices
/// printed above them; elsewhere, each stream's named log lines ([`stream_reporter`]).
pub struct FleetProgress {
    mode: ProgressMode,
    board: Option<Arc<Mutex<Board>>>,
}

/// What the lines of a fleet on a terminal share.
struct Board {
    multi: MultiProgress,
    totals: ProgressBar,
    streams: usize,
    active: usize,
    finished: usize,
    failed: usize,
    fragments: u64,
}

impl Board {
    /// `3 of 100 streams active, 2 done, 0 failed, 57 fragments`.
    fn figures(&self) -> String {
        format!(
            "{} of {} active, {} done, {} failed, {}",
            self.active,
            count(self.streams as u64, "stream"),
            self.finished,
            self.failed,
            count(self.fragments, "fragment"),
        )
    }

    fn update(&self) {
        self.totals.set_message(self.figures());
    }
}

impl FleetProgress {
    /// For a fleet of `streams` streams.
    pub fn new(mode: ProgressMode, verbose: bool, streams: usize) -> Self {
        let board = (mode == ProgressMode::Bar && !verbose && std::io::stderr().is_terminal())
            .then(|| {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
                // First, so that the height of the terminal cuts stream lines, not the totals.
                let totals = multi.add(
                    ProgressBar::no_length().with_style(
                        ProgressStyle::with_template(
                            "{spinner:.green} {binary_bytes} at {binary_bytes_per_sec}, {msg}",
                        )
                        .expect("the template is valid"),
                    ),
                );
                totals.enable_steady_tick(Duration::from_millis(250));
                let board = Board {
                    multi,
                    totals,
                    streams,
                    active: 0,
                    finished: 0,
                    failed: 0,
                    fragments: 0,
                };
                board.update();
                Arc::new(Mutex::new(board))
            });
        FleetProgress { mode, board }
    }

    /// The reporter of a stream that starts now.
    pub fn stream(&self, name: &str) -> Box<dyn Reporter> {
        let Some(board) = &self.board else {
            return stream_reporter(self.mode, name);
        };
        let mut b = board.lock().unwrap_or_else(PoisonError::into_inner);
        let bar = b.multi.add(
            ProgressBar::no_length()
                .with_style(
                    ProgressStyle::with_template(
                        "  {prefix} {binary_bytes} at {binary_bytes_per_sec}, {msg}",
                    )
                    .expect("the template is valid"),
                )
                .with_prefix(format!("{name}:"))
                .with_message("connecting"),
        );
        b.active += 1;
        b.update();
        Box::new(StreamLine {
            board: Arc::clone(board),
            bar,
            name: name.to_owned(),
            tally: Tally::default(),
        })
    }

    /// Ends the fleet's report: clears the lines, then [`fleet_done`].
    pub fn done(&self, totals: &Summary, streams: &[StreamResult]) {
        if let Some(board) = &self.board {
            let b = board.lock().unwrap_or_else(PoisonError::into_inner);
            b.totals.finish_and_clear();
            let _ = b.multi.clear();
        }
        fleet_done(self.mode, totals, streams);
    }
}

/// One stream's line of a fleet on a terminal.
struct StreamLine {
    board: Arc<Mutex<Board>>,
    bar: ProgressBar,
    name: String,
    tally: Tally,
}

impl StreamLine {
    fn board(&self) -> MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `kvs-dl: NAME: ...` above the lines.
    fn above(&self, line: &str) {
        let line = match line.strip_prefix("kvs-dl: ") {
            Some(rest) => format!("kvs-dl: {}: {rest}", self.name),
            None => line.to_owned(),
        };
        let _ = self.board().multi.println(line);
    }

    fn finish(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
            let mut b = self.board();
            b.multi.remove(&self.bar);
            b.active -= 1;
            b.update();
        }
    }
}

impl Reporter for StreamLine {
    fn report(&mut self, report: &Report) {
        self.tally.add(report);
        match report {
            Report::Fragment { bytes, .. } => {
                self.bar.inc(*bytes);
                let mut b = self.board();
                b.fragments += 1;
                b.totals.inc(*bytes);
                b.update();
            }
            Report::Done(summary) => {
                self.finish();
                {
                    let mut b = self.board();
                    b.finished += 1;
                    b.failed += usize::from(!matches!(summary.exit_code, 0 | 130 | 143));
                    b.update();
                }
                if let Some(line) = summary_line(summary) {
                    self.above(&line);
                }
                return;
            }
            _ => {}
        }
        if let Some(line) = notice(report) {
            self.above(&line);
        }
        self.bar.set_message(self.tally.figures());
    }

    fn println(&mut self, line: &str) {
        let _ = self.board().multi.println(line);
    }
}

impl Drop for StreamLine {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A fleet stream's JSON events.
struct TaggedJson {
    stream: String,
}

impl Reporter for TaggedJson {
    fn report(&mut self, report: &Report) {
        let mut value = serde_json::to_value(report).expect("reports serialize");
        if let Some(object) = value.as_object_mut() {
            if let Report::Done(_) = report {
                object.insert("event".into(), "stream_done".into());
            }
            // The start event names the stream as given (name or ARN) already.
            object
                .entry("stream")
                .or_insert_with(|| self.stream.clone().into());
        }
        let mut line = serde_json::to_vec(&value).expect("reports serialize");
        line.push(b'\n');
        let _ = std::io::stderr().write_all(&line);
    }
}

/// Puts a stream's name after the `kvs-dl: ` that begins each whole line written through it.
pub struct Named {
    prefix: String,
    line: Vec<u8>,
    out: Box<dyn Write + Send>,
}

impl Named {
    pub fn new(stream: &str, out: Box<dyn Write + Send>) -> Self {
        Named {
            prefix: format!("kvs-dl: {stream}: "),
            line: Vec::new(),
            out,
        }
    }
}

impl Write for Named {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        while let Some(end) = self.line.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.line.drain(..=end).collect();
            let text = match line.strip_prefix(b"kvs-dl: ") {
                Some(rest) => [self.prefix.as_bytes(), rest].concat(),
                None => [self.prefix.as_bytes(), &line].concat(),
            };
            self.out.write_all(&text)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// How one stream of a fleet ended, for the fleet's `done` event and table.
#[derive(Debug, Clone, Serialize)]
pub struct StreamResult {
    pub stream: String,
    #[serde(flatten)]
    pub summary: Summary,
}

/// The fleet's `done` event: the totals, the fleet's exit code and every stream's result.
#[derive(Debug, Clone, Serialize)]
struct FleetDone<'a> {
    event: &'static str,
    /// Every event has one; this one is about them all.
    stream: Option<&'a str>,
    #[serde(flatten)]
    totals: &'a Summary,
    streams: &'a [StreamResult],
}

/// Ends a fleet's report: the `done` event with every stream's result, or a table of them
/// on stderr (not with `-q`).
pub fn fleet_done(mode: ProgressMode, totals: &Summary, streams: &[StreamResult]) {
    match mode {
        ProgressMode::Quiet => {}
        ProgressMode::Json => {
            let done = FleetDone {
                event: "done",
                stream: None,
                totals,
                streams,
            };
            let mut line = serde_json::to_vec(&done).expect("reports serialize");
            line.push(b'\n');
            let _ = std::io::stderr().write_all(&line);
        }
        ProgressMode::Bar | ProgressMode::Log => {
            let _ = std::io::stderr().write_all(fleet_table(totals, streams).as_bytes());
        }
    }
}

/// The table a fleet ends with: one row per stream, in the order they were given, then a
/// line of totals.
pub fn fleet_table(totals: &Summary, streams: &[StreamResult]) -> String {
    let mut rows = vec![[
        "STREAM".to_owned(),
        "EXIT".into(),
        "FILES".into(),
        "FRAGMENTS".into(),
        "BYTES".into(),
        "MEDIA".into(),
        "RESULT".into(),
    ]];
    for s in streams {
        let m = &s.summary;
        rows.push([
            s.stream.clone(),
            m.exit_code.to_string(),
            m.files.to_string(),
            m.fragments.to_string(),
            human_bytes(m.bytes),
            human_duration(m.media_duration_ms),
            m.reason.clone(),
        ]);
    }
    let mut widths = [0; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = format!("{:<w$}", row[0], w = widths[0]);
        for (i, cell) in row.iter().enumerate().take(6).skip(1) {
            line.push_str(&format!("  {cell:>w$}", w = widths[i]));
        }
        line.push_str("  ");
        line.push_str(&row[6]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let failed = streams.iter().filter(|s| s.summary.exit_code != 0).count();
    out.push_str(&format!(
        "kvs-dl: done in {}: {}, {} failed; {}, {}, {}\n",
        human_duration(totals.wall_ms),
        count(streams.len() as u64, "stream"),
        failed,
        count(totals.files, "file"),
        count(totals.fragments, "fragment"),
        human_bytes(totals.bytes),
    ));
    out
}

/// `1 file`, `2 files`.
fn count(n: u64, thing: &str) -> String {
    match n {
        1 => format!("1 {thing}"),
        n => format!("{n} {thing}s"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back while the heartbeat thread writes to it.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn fragment(n: u64, producer_ms: i64) -> Report {
        Report::Fragment {
            number: n.to_string(),
            server_timestamp_ms: producer_ms + 500,
            producer_timestamp_ms: producer_ms,
            bytes: 1000,
            lag_ms: Some(1500),
            // 2 s fragments from time 0.
            media_duration_ms: (producer_ms + 2000) as u64,
        }
    }

    #[test]
    fn log_lines_beat_while_quiet_and_stop_at_done() {
        let out = Captured::default();
        let mut log = Log::new(Duration::from_millis(40), Box::new(out.clone()));
        log.report(&fragment(1, 0));
        log.report(&fragment(2, 2000));
        std::thread::sleep(Duration::from_millis(150));
        log.report(&Report::Done(Summary {
            reason: "reached --end".into(),
            ..Summary::default()
        }));
        let at_done = out.text();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(out.text(), at_done, "nothing after the summary");
        let lines: Vec<&str> = at_done.lines().collect();
        assert!(lines.len() >= 3, "{at_done}");
        assert!(
            lines[0].starts_with("kvs-dl: 2.0 KiB at "),
            "figures first: {at_done}"
        );
        assert!(
            lines[0]
                .ends_with("2 fragments, 4.0 s of media, 1.5 s behind live, 0 reconnects, 0 gaps"),
            "{at_done}"
        );
        assert!(
            lines[1].starts_with("kvs-dl: waiting, no new fragment for "),
            "{at_done}"
        );
        assert!(
            lines.last().unwrap().starts_with("kvs-dl: done in "),
            "{at_done}"
        );
        assert!(!at_done.contains(['\r', '\x1b']), "{at_done:?}");
    }

    #[test]
    fn a_fleet_names_the_stream_in_each_line() {
        let out = Captured::default();
        let mut log = Log::without_heartbeat(Box::new(Named::new("cam2", Box::new(out.clone()))));
        log.report(&Report::Gap {
            reason: "expired".into(),
            after_fragment: None,
        });
        log.report(&Report::Done(Summary {
            fragments: 1,
            reason: "reached --end".into(),
            ..Summary::default()
        }));
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "kvs-dl: cam2: gap: expired");
        assert!(lines[1].starts_with("kvs-dl: cam2: done in "), "{text}");
        assert_eq!(lines.len(), 2, "{text}");
    }

    #[test]
    fn the_fleet_table() {
        let ok = Summary {
            files: 1,
            fragments: 30,
            bytes: 3 << 20,
            media_duration_ms: 60_000,
            reason: "reached --end".into(),
            ..Summary::default()
        };
        let failed = Summary {
            exit_code: 4,
            reason: "stream cam10 not found in us-east-1".into(),
            ..Summary::default()
        };
        let streams = [
            StreamResult {
                stream: "cam1".into(),
                summary: ok.clone(),
            },
            StreamResult {
                stream: "cam10".into(),
                summary: failed,
            },
        ];
        let totals = Summary {
            wall_ms: 2000,
            exit_code: 8,
            ..ok
        };
        assert_eq!(
            fleet_table(&totals, &streams),
            "\
STREAM  EXIT  FILES  FRAGMENTS    BYTES  MEDIA  RESULT
cam1       0      1         30  3.0 MiB  1m00s  reached --end
cam10      4      0          0      0 B  0.0 s  stream cam10 not found in us-east-1
kvs-dl: done in 2.0 s: 2 streams, 1 failed; 1 file, 30 fragments, 3.0 MiB
"
        );
    }

    #[test]
    fn the_figures_follow_the_reports() {
        let mut t = Tally::default();
        assert_eq!(t.media_ms, 0);
        for (n, at) in [(1, 0), (2, 2000), (3, 4000)] {
            t.add(&fragment(n, at));
        }
        assert_eq!(t.media_ms, 6000);
        t.add(&Report::Reconnect {
            reason: "cut".into(),
            attempt: 1,
            delay_ms: 5,
        });
        t.add(&Report::Gap {
            reason: "expired".into(),
            after_fragment: None,
        });
        assert_eq!(
            t.figures(),
            "3 fragments, 6.0 s of media, 1.5 s behind live, 1 reconnect, 1 gap"
        );
    }

    #[test]
    fn the_summary_says_everything_once() {
        let mut s = Summary {
            files: 2,
            bytes: 3 << 20,
            fragments: 30,
            media_duration_ms: 60_000,
            wall_ms: 3000,
            reconnects: 1,
            gaps: 0,
            duplicates_skipped: 0,
            non_monotonic_timestamps: 1,
            reason: "reached --end".into(),
            exit_code: 0,
        };
        assert_eq!(
            summary_line(&s).unwrap(),
            "kvs-dl: done in 3.0 s: 2 files, 30 fragments, 3.0 MiB, 1m00s of media, 1.0 MiB/s; \
             1 reconnect, 0 gaps, 1 fragment timestamp that did not move forward; reached --end"
        );
        (s.exit_code, s.reason) = (5, "gave up after 11 failed attempts in a row".into());
        assert!(
            summary_line(&s)
                .unwrap()
                .ends_with("; stopped by the error below")
        );
        (s.files, s.fragments) = (0, 0);
        assert_eq!(
            summary_line(&s),
            None,
            "a failed run that wrote nothing: the error alone"
        );
    }
}
