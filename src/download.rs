//! The download loop: GetMedia bodies through the parser into the [`Writer`], fragment by
//! fragment, until a stop condition holds. It knows no output format. It reconnects after a dropped connection or a clean
//! end of the body, from the last whole fragment, and never writes a fragment twice.

use std::time::Duration;

use mkv::span::Span;
use mkv::{Chunk, Event, Finish, Fragment, Parser};
use sha2::Digest;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::aws::{Failure, MediaBody, MediaSource, Selector};
use crate::config::{Clock, Config, End, Start};
use crate::error::Error;
use crate::ledger::{Ledger, Record};
use crate::listing::Gap;
use crate::progress::{self, Report, Reporter, Summary};
use crate::source::archive::{Fetcher, Note};
use crate::state::{Saver, State};
use crate::writer::{Accept, WriteError, Writer};

/// A terminating signal, as delivered through the shutdown channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

/// Why a run stopped without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// A fragment at or after `--end` arrived.
    End,
    /// `--end` is set and the stream has nothing newer yet.
    CaughtUp,
    Duration,
    MaxFragments,
    MaxBytes,
    Idle,
    /// The track configuration changed and there is no `--segment` to start a new file.
    TrackChange {
        fragment: String,
    },
    Signal(Signal),
}

impl Stopped {
    pub fn exit_code(&self) -> u8 {
        match self {
            Stopped::Signal(Signal::Interrupt) => 130,
            Stopped::Signal(Signal::Terminate) => 143,
            _ => 0,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Stopped::End => "reached --end".into(),
            Stopped::CaughtUp => "caught up with the live edge (nothing newer before --end)".into(),
            Stopped::Duration => "reached --duration".into(),
            Stopped::MaxFragments => "reached --max-fragments".into(),
            Stopped::MaxBytes => "reached --max-bytes".into(),
            Stopped::Idle => "no new fragment within --idle-timeout".into(),
            Stopped::TrackChange { fragment } => format!(
                "the track configuration changed at fragment {fragment}; continue with --start fragment:{fragment}, or use --segment to split files"
            ),
            Stopped::Signal(Signal::Interrupt) => "interrupted (SIGINT)".into(),
            Stopped::Signal(Signal::Terminate) => "terminated (SIGTERM)".into(),
        }
    }
}

/// Timing of reconnects. The defaults respect the service's 5 GetMedia calls per second per
/// stream; tests scale the backoff down with `KVS_DL_BACKOFF_SCALE` but keep the call spacing.
#[derive(Debug, Clone)]
pub struct Pacing {
    /// Never two GetMedia calls closer than this.
    pub min_interval: Duration,
    /// First backoff step; doubles per consecutive failure, with full jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Wait before asking again when the live head had nothing new.
    pub poll: Duration,
    /// A body silent for this long is treated as a dropped connection.
    pub stall: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            min_interval: Duration::from_millis(250),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            poll: Duration::from_secs(2),
            stall: Duration::from_secs(30),
        }
    }
}

impl Pacing {
    /// The defaults, with the backoff scaled by `KVS_DL_BACKOFF_SCALE` (a test knob).
    pub fn from_env() -> Pacing {
        let mut pacing = Pacing::default();
        if let Some(scale) = std::env::var("KVS_DL_BACKOFF_SCALE")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
        {
            pacing.backoff_base = pacing.backoff_base.mul_f64(scale);
            pacing.backoff_max = pacing.backoff_max.mul_f64(scale);
            pacing.poll = pacing.poll.mul_f64(scale).max(pacing.min_interval);
        }
        pacing
    }
}

/// A body that fell silent this long before its clean end was closed for want of new
/// fragments (the service waits about 3 s), not cut mid-transfer.
const HEAD_SILENCE: Duration = Duration::from_millis(150);

/// How much of a spooled chunk is read at a time.
const SPOOL_PIECE: usize = 1 << 20;

/// MILLIS_BEHIND_NOW of a fragment at the live head, give or take a fragment.
const HEAD_LAG_MS: u64 = 10_000;

/// What a GetMedia session ended with.
enum SessionEnd {
    /// The service closed the body cleanly.
    Clean {
        new_fragments: u64,
        /// It ended the way the service ends a body at the live head: after a silence, with
        /// the last fragment at the head. (A ~45-minute cut comes mid-transfer.)
        at_head: bool,
    },
    /// The connection dropped or the service reported a retryable problem.
    Retry(String),
    Stop(Stopped),
}

/// What became of the bytes pushed into a parser (see `Download::consume`).
enum Consumed {
    /// Read through, with this many fragments written whole.
    Read {
        fragments: u64,
    },
    Stop(Stopped),
    /// The service sent an error in-band: the fragment in progress is dropped.
    Retry(String),
    /// What came next could not be parsed (reported as a gap), after this many fragments:
    /// a body reads on at its next chunk, a spooled chunk is dropped.
    Unreadable {
        fragments: u64,
    },
}

/// Routes the raw body bytes to the writer, so that a format that copies bytes sees exactly
/// the bytes of the events it is told about, and no byte the parser has not consumed yet.
struct Cursor {
    /// Bytes of earlier pushes the parser had not consumed: body offsets `routed..`.
    carry: Vec<u8>,
    /// Body offset up to which bytes were handed to the writer.
    routed: u64,
}

impl Cursor {
    fn new() -> Cursor {
        Cursor {
            carry: Vec::new(),
            routed: 0,
        }
    }

    /// Hands the writer the bytes up to body offset `offset`; `chunk` holds the body from
    /// offset `chunk_at`, right after the carried bytes.
    fn route_to(
        &mut self,
        writer: &mut Writer,
        offset: u64,
        chunk: &[u8],
        chunk_at: u64,
    ) -> Result<(), Error> {
        let io = |e| Error::io("writing the output", e);
        if offset > self.routed && !self.carry.is_empty() {
            let n = ((offset - self.routed) as usize).min(self.carry.len());
            writer.body(&self.carry[..n]).map_err(io)?;
            self.carry.drain(..n);
            self.routed += n as u64;
        }
        if offset > self.routed && self.routed >= chunk_at {
            let from = (self.routed - chunk_at) as usize;
            let to = ((offset - chunk_at) as usize).min(chunk.len());
            writer.body(&chunk[from..to]).map_err(io)?;
            self.routed = chunk_at + to as u64;
        }
        Ok(())
    }

    /// Keeps the bytes of `chunk` not routed yet for the next push.
    fn carry_rest(&mut self, chunk: &[u8], chunk_at: u64) {
        let from = self.routed.saturating_sub(chunk_at) as usize;
        self.carry
            .extend_from_slice(&chunk[from.min(chunk.len())..]);
    }
}

/// One run's state.
pub struct Download<'a, S: MediaSource> {
    cfg: &'a Config,
    source: &'a mut S,
    /// The region the stream is read from, for the state file.
    region: &'a str,
    writer: &'a mut Writer,
    reporter: &'a mut dyn Reporter,
    shutdown: watch::Receiver<Option<Signal>>,
    pacing: Pacing,
    /// The last fragment written (whole), for resuming and de-duplicating.
    last: Option<Fragment>,
    /// Inside a fragment that is not written (already written before a reconnect).
    skipping: bool,
    /// The media span of the fragment being written.
    span: Option<Span>,
    /// The headers of the chunk being read.
    chunk: Chunk,
    first_producer_ms: Option<i64>,
    media_end_ms: Option<i64>,
    last_fragment_at: Instant,
    last_call: Option<Instant>,
    failures: u32,
    rng: u64,
    summary: Summary,
    committed_at_start: u64,
    started: Instant,
    /// The service reported expired fragments; the next call may need to start afresh.
    gap_pending: bool,
    /// `--state-file`, saved after every fragment.
    saver: Option<&'a mut Saver>,
    /// The fragment being read (written or skipped), for naming it when it cannot be read.
    current: Option<String>,
    /// Fragments that could not be read and were skipped, so that they are skipped quietly
    /// when a reconnect brings them again.
    unreadable: Vec<String>,
    /// The last fragment the listing holds, and how the run stops once it is written: the
    /// listing says where the archive ends, so no idle wait is needed to find out.
    complete_after: Option<(String, Stopped)>,
    /// `--manifest`.
    ledger: Option<Ledger>,
    /// SHA-256 of the media of the fragment being written, for the manifest.
    hasher: Option<sha2::Sha256>,
    /// Listed fragments that never arrived.
    lost: Vec<String>,
}

impl<'a, S: MediaSource> Download<'a, S> {
    pub fn new(
        cfg: &'a Config,
        region: &'a str,
        source: &'a mut S,
        writer: &'a mut Writer,
        reporter: &'a mut dyn Reporter,
        shutdown: watch::Receiver<Option<Signal>>,
        pacing: Pacing,
    ) -> Self {
        let committed_at_start = writer.committed();
        Download {
            cfg,
            region,
            source,
            writer,
            reporter,
            shutdown,
            pacing,
            last: None,
            skipping: false,
            span: None,
            chunk: Chunk::default(),
            first_producer_ms: None,
            media_end_ms: None,
            last_fragment_at: Instant::now(),
            last_call: None,
            failures: 0,
            rng: seed(),
            summary: Summary::default(),
            committed_at_start,
            started: Instant::now(),
            gap_pending: false,
            saver: None,
            current: None,
            unreadable: Vec::new(),
            complete_after: None,
            ledger: None,
            hasher: None,
            lost: Vec::new(),
        }
    }

    /// The run is complete once fragment `number` is written (or was, by an earlier run).
    pub fn complete_after(mut self, number: String, stop: Stopped) -> Self {
        self.complete_after = Some((number, stop));
        self
    }

    /// Saves the state through `saver` after every fragment.
    pub fn with_saver(mut self, saver: &'a mut Saver) -> Self {
        self.saver = Some(saver);
        self
    }

    /// Appends a record per fragment and per gap to `--manifest`.
    pub fn with_ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Whether the fragment the listing ends with is written already.
    fn listing_done(&self) -> Option<Stopped> {
        let (number, stop) = self.complete_after.as_ref()?;
        let last = self.last.as_ref()?;
        (!is_newer(number, &last.number)).then(|| stop.clone())
    }

    /// Reports (and records) a stretch of the stream without fragments.
    pub fn report_gap(&mut self, gap: &Gap) -> Result<(), Error> {
        self.summary.gaps += 1;
        self.reporter.report(&Report::Gap {
            reason: format!(
                "no fragments from {} to {} ({} clock): the producer was off",
                jiff::Timestamp::from_millisecond(gap.from_ms)
                    .map_or(gap.from_ms.to_string(), |t| t.to_string()),
                jiff::Timestamp::from_millisecond(gap.to_ms)
                    .map_or(gap.to_ms.to_string(), |t| t.to_string()),
                clock_name(self.cfg.clock),
            ),
            after_fragment: gap.after_fragment.clone(),
        });
        self.record(&Record::Gap {
            clock: clock_name(self.cfg.clock).into(),
            from_ms: gap.from_ms,
            to_ms: gap.to_ms,
            after_fragment: gap.after_fragment.clone(),
            before_fragment: gap.before_fragment.clone(),
        })
    }

    fn record(&mut self, record: &Record) -> Result<(), Error> {
        let Some(ledger) = self.ledger.as_mut() else {
            return Ok(());
        };
        ledger
            .append(record)
            .map_err(|e| Error::io(format!("appending to {}", ledger.path().display()), e))
    }

    /// Writes a planned archived range fetched by `fetcher`, batch by batch in stream order,
    /// through the same consumer as a GetMedia session. `then`: how the run ends when the
    /// listing covers the whole range; `None`: what is newer continues with GetMedia.
    pub async fn run_archived(
        &mut self,
        mut fetcher: Fetcher,
        then: Option<Stopped>,
    ) -> Result<Stopped, Error> {
        self.reporter.report(&Report::Start {
            stream: self.cfg.stream.display().to_owned(),
            region: self.region.to_owned(),
            data_endpoint: fetcher.endpoint().to_owned(),
            selector: format!(
                "FRAGMENT_LIST ({} batches, up to {} connections)",
                fetcher.batch_count(),
                self.cfg.parallel
            ),
        });
        loop {
            let next = tokio::select! {
                s = wait_signal(&mut self.shutdown) => return Ok(Stopped::Signal(s)),
                next = fetcher.next_ready() => next,
            };
            for note in fetcher.take_notes() {
                let Note::Retry {
                    reason,
                    attempt,
                    delay,
                } = note;
                self.summary.reconnects += 1;
                self.reporter.report(&Report::Reconnect {
                    reason,
                    attempt,
                    delay_ms: delay.as_millis() as u64,
                });
            }
            let Some(ready) = next? else { break };
            tracing::debug!(batch = ready.index, "writing a batch");
            for (listed, at) in &ready.fragments {
                let Some((at, len)) = *at else {
                    if self
                        .last
                        .as_ref()
                        .is_some_and(|l| !is_newer(&listed.number, &l.number))
                    {
                        continue;
                    }
                    self.lost.push(listed.number.clone());
                    self.summary.gaps += 1;
                    self.reporter.report(&Report::Gap {
                        reason: format!(
                            "fragment {} is listed but never arrived: lost",
                            listed.number
                        ),
                        after_fragment: self.last.as_ref().map(|f| f.number.clone()),
                    });
                    continue;
                };
                let mut chunk = ready
                    .read(at, len)
                    .map_err(|e| Error::io(format!("reading {}", ready.spool.display()), e))?;
                if let Some(stop) = self.feed_chunk(&mut chunk)? {
                    return Ok(stop);
                }
                tokio::task::yield_now().await;
            }
            fetcher.done_with(&ready);
        }
        drop(fetcher);
        if let Some(stop) = then {
            return Ok(stop);
        }
        // What is newer than the listing: GetMedia after the last listed fragment.
        self.run().await
    }

    /// Lost fragments end the run with exit 7, once the output is complete otherwise.
    pub fn check_complete(&self, result: Result<Stopped, Error>) -> Result<Stopped, Error> {
        match result {
            Ok(_) if !self.lost.is_empty() => Err(Error::Incomplete {
                lost: self.lost.clone(),
            }),
            other => other,
        }
    }

    /// One whole GetMediaForFragmentList chunk, through the consumer.
    fn feed_chunk(&mut self, chunk: &mut dyn std::io::Read) -> Result<Option<Stopped>, Error> {
        let mut parser = Parser::archived();
        let mut cursor = Cursor::new();
        self.skipping = false;
        // In pieces, so that a 50 MB fragment costs one piece of memory, as on the wire.
        let mut piece = vec![0; SPOOL_PIECE];
        let mut offset = 0u64;
        let mut ended = false;
        loop {
            let n = chunk
                .read(&mut piece)
                .map_err(|e| Error::io("reading a spooled chunk", e))?;
            let data = &piece[..n];
            let data_at = offset;
            offset += n as u64;
            if n == 0 {
                // The chunk is all here: a fragment without closing tags ends with it.
                ended = true;
                match parser.finish() {
                    Ok(Finish::Clean) => {}
                    Ok(Finish::Truncated { .. }) => {
                        self.unreadable_chunk(mkv::ParseError {
                            offset,
                            id: None,
                            reason: "the chunk ends inside its fragment".into(),
                        })?;
                        return Ok(None);
                    }
                    Err(e) if !self.cfg.strict => {
                        self.unreadable_chunk(e)?;
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                parser.push(data);
            }
            match self.consume(&mut parser, &mut cursor, data, data_at)? {
                Consumed::Read { .. } if ended => return Ok(None),
                Consumed::Read { .. } => {}
                Consumed::Stop(stop) => return Ok(Some(stop)),
                Consumed::Retry(reason) => {
                    tracing::debug!(%reason, "a spooled chunk held an error");
                    return Ok(None);
                }
                Consumed::Unreadable { .. } => return Ok(None),
            }
        }
    }

    /// Continues after a fragment an earlier run wrote (from the state file): the run starts
    /// after it, whatever `--start` says, and never writes it or anything before it again.
    pub fn resume_after(mut self, last: Fragment) -> Self {
        self.last = Some(last);
        self
    }

    /// The last fragment written whole, for the final state.
    pub fn last(&self) -> Option<&Fragment> {
        self.last.as_ref()
    }

    /// Runs until a stop condition holds or an error ends it. The writer is left for the
    /// caller to finish either way: everything it committed is whole.
    pub async fn run(&mut self) -> Result<Stopped, Error> {
        if let Some(stop) = self.listing_done() {
            return Ok(stop);
        }
        let mut selector = match self.last.is_some() {
            true => self.resume_selector(&Selector::Earliest),
            false => self.initial_selector(),
        };
        tracing::debug!(
            selector = %selector.describe(),
            resuming = self.last.is_some(),
            "first GetMedia selector"
        );
        let mut started = false;
        let mut wait = Duration::ZERO;
        let mut expired_before = false;
        loop {
            if let Some(stop) = self.pause(wait).await {
                return Ok(stop);
            }
            wait = Duration::ZERO;
            self.last_call = Some(Instant::now());
            let call = self.source.get_media(&selector);
            let answer = match race(
                &mut self.shutdown,
                self.cfg.stop.idle_timeout,
                self.last_fragment_at,
                self.pacing.stall,
                call,
            )
            .await
            {
                Raced::Stop(stop) => return Ok(stop),
                Raced::TimedOut => Err(Failure::Retry {
                    reason: format!("GetMedia: no answer for {} s", self.pacing.stall.as_secs()),
                    refresh_endpoint: false,
                }),
                Raced::Done(answer) => answer,
            };
            let reason = match answer {
                Ok(body) => {
                    expired_before = false;
                    if !std::mem::replace(&mut started, true) {
                        self.reporter.report(&Report::Start {
                            stream: self.cfg.stream.display().to_owned(),
                            region: self.source.region().to_owned(),
                            data_endpoint: self.source.data_endpoint().to_owned(),
                            selector: selector.describe(),
                        });
                    }
                    match self.session(body).await? {
                        SessionEnd::Stop(stop) => return Ok(stop),
                        SessionEnd::Clean {
                            new_fragments,
                            at_head,
                        } => {
                            tracing::debug!(new_fragments, at_head, "the service ended the body");
                            // Caught up: the session brought nothing, or it ended as the service
                            // ends one at the live head (silent, then closed, the last fragment
                            // at the head). A session cut short mid-transfer is asked again, and
                            // so is one that only reported expired fragments.
                            let caught_up = (new_fragments == 0 || at_head) && !self.gap_pending;
                            if self.cfg.stop.end.is_some() && caught_up {
                                tracing::debug!("caught up: nothing newer, and --end is set");
                                return Ok(Stopped::CaughtUp);
                            }
                            if new_fragments == 0 && !self.gap_pending {
                                wait = self.pacing.poll;
                                tracing::debug!(
                                    wait_ms = wait.as_millis() as u64,
                                    "nothing newer yet: asking again after a pause"
                                );
                            }
                            selector = self.resume_selector(&selector);
                            continue;
                        }
                        SessionEnd::Retry(reason) => {
                            selector = self.resume_selector(&selector);
                            reason
                        }
                    }
                }
                // A continuation token the service no longer takes (a saved one, typically):
                // ask for the last fragment's time instead; what was already written is skipped
                // by number. Later reconnects go back to tokens, as soon as a fragment comes.
                Err(Failure::Fatal(Error::InvalidArgument { message, .. }))
                    if matches!(selector, Selector::Token(_)) && self.last.is_some() =>
                {
                    let last = self.last.as_ref().expect("checked");
                    tracing::debug!(
                        fragment = %last.number,
                        "continuation token refused: asking for the fragment's server time"
                    );
                    let at = jiff::Timestamp::from_millisecond(last.server_ms)
                        .map_err(|e| Error::Other(e.into()))?;
                    selector = Selector::Time(Clock::Server, at);
                    format!(
                        "the continuation token was refused ({message}); resuming from its fragment's time"
                    )
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Expired(e)) => {
                    // The streaming token aged out: a fresh data endpoint brings a fresh one.
                    // Twice in a row means the credentials themselves are refused.
                    if std::mem::replace(&mut expired_before, true) {
                        return Err(e);
                    }
                    tracing::debug!("streaming token expired: resolving the data endpoint again");
                    self.refresh_endpoint()
                        .await?
                        .unwrap_or_else(|| e.to_string())
                }
                Err(Failure::Retry {
                    reason,
                    refresh_endpoint,
                }) => {
                    if refresh_endpoint {
                        self.refresh_endpoint().await?.unwrap_or(reason)
                    } else {
                        reason
                    }
                }
            };
            self.failures += 1;
            if self.failures >= self.cfg.max_retries.max(1) {
                return Err(Error::RetriesExhausted {
                    attempts: self.failures,
                    last: reason,
                });
            }
            wait = self.backoff();
            tracing::debug!(
                attempt = self.failures,
                delay_ms = wait.as_millis() as u64,
                %reason,
                "reconnecting after a backoff"
            );
            self.summary.reconnects += 1;
            self.reporter.report(&Report::Reconnect {
                reason,
                attempt: self.failures,
                delay_ms: wait.as_millis() as u64,
            });
        }
    }

    /// Resolves the data endpoint again; a failure to do so is the reason to wait and retry.
    async fn refresh_endpoint(&mut self) -> Result<Option<String>, Error> {
        let call = self.source.refresh_endpoint();
        match race(
            &mut self.shutdown,
            None,
            self.last_fragment_at,
            self.pacing.stall,
            call,
        )
        .await
        {
            // A signal is seen again by the pause that follows.
            Raced::Stop(_) | Raced::Done(Ok(())) => Ok(None),
            Raced::TimedOut => Ok(Some("GetDataEndpoint: no answer".into())),
            Raced::Done(Err(Failure::Retry { reason, .. })) => Ok(Some(reason)),
            Raced::Done(Err(Failure::Fatal(e) | Failure::Expired(e))) => Err(e),
        }
    }

    fn initial_selector(&self) -> Selector {
        match &self.cfg.start {
            Start::Now => Selector::Now,
            Start::Earliest => Selector::Earliest,
            Start::Time(t) => Selector::Time(self.cfg.clock, *t),
            Start::Fragment(n) => Selector::Fragment(n.clone()),
            Start::Token(t) => Selector::Token(t.clone()),
        }
    }

    /// Where the next call starts: after the last whole fragment, or where we started when none
    /// came yet. After a gap (fragments expired) with nothing written since, the earliest
    /// fragment kept: everything before ours is gone anyway.
    fn resume_selector(&mut self, previous: &Selector) -> Selector {
        if std::mem::take(&mut self.gap_pending) {
            tracing::debug!("a gap brought nothing new: asking for the earliest fragment kept");
            return Selector::Earliest;
        }
        match &self.last {
            Some(f) => match &f.continuation_token {
                Some(token) => Selector::Token(token.clone()),
                None => Selector::Fragment(f.number.clone()),
            },
            None => previous.clone(),
        }
    }

    /// Exponential backoff with jitter (half to all of the step), never below the call spacing.
    fn backoff(&mut self) -> Duration {
        let exp = self
            .pacing
            .backoff_base
            .saturating_mul(1 << (self.failures.saturating_sub(1)).min(16))
            .min(self.pacing.backoff_max);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = (self.rng % 1_000_000) as f64 / 1_000_000.0;
        exp.mul_f64(0.5 + jitter / 2.0)
    }

    /// Waits `wait`, and at least the call spacing since the last call, unless a signal or the
    /// idle timeout comes first.
    async fn pause(&mut self, wait: Duration) -> Option<Stopped> {
        let mut until = Instant::now() + wait;
        if let Some(last) = self.last_call {
            until = until.max(last + self.pacing.min_interval);
        }
        if let Some(signal) = *self.shutdown.borrow() {
            return Some(Stopped::Signal(signal));
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => None,
            s = wait_signal(&mut self.shutdown) => Some(Stopped::Signal(s)),
            _ = idle(self.cfg.stop.idle_timeout, self.last_fragment_at) => Some(Stopped::Idle),
        }
    }

    /// Reads one GetMedia body to its end.
    async fn session(&mut self, mut body: S::Body) -> Result<SessionEnd, Error> {
        // A fresh parser per body: a fragment cut off in the last one is forgotten.
        let mut parser = Parser::new();
        self.skipping = false;
        let mut offset = 0u64;
        let mut cursor = Cursor::new();
        let mut new_fragments = 0u64;
        let mut last_data = Instant::now();
        loop {
            let next = tokio::select! {
                s = wait_signal(&mut self.shutdown) => {
                    self.discard()?;
                    return Ok(SessionEnd::Stop(Stopped::Signal(s)));
                }
                _ = idle(self.cfg.stop.idle_timeout, self.last_fragment_at) => {
                    self.discard()?;
                    return Ok(SessionEnd::Stop(Stopped::Idle));
                }
                next = tokio::time::timeout(self.pacing.stall, body.next()) => next,
            };
            let chunk = match next {
                Err(_) => {
                    self.discard()?;
                    return Ok(SessionEnd::Retry(format!(
                        "no data for {} s",
                        self.pacing.stall.as_secs()
                    )));
                }
                Ok(Err(Failure::Fatal(e) | Failure::Expired(e))) => return Err(e),
                Ok(Err(Failure::Retry { reason, .. })) => {
                    self.discard()?;
                    return Ok(SessionEnd::Retry(reason));
                }
                Ok(Ok(None)) => {
                    if let Finish::Truncated { .. } = parser.finish()? {
                        // Cut short cleanly (the service's session limit): not at the head.
                        self.discard()?;
                        return Ok(SessionEnd::Retry("the body ended inside a fragment".into()));
                    }
                    let lag = self.last.as_ref().and_then(|f| f.millis_behind_now);
                    let at_head = last_data.elapsed() >= HEAD_SILENCE
                        && lag.is_some_and(|l| l <= HEAD_LAG_MS);
                    return Ok(SessionEnd::Clean {
                        new_fragments,
                        at_head,
                    });
                }
                Ok(Ok(Some(chunk))) => chunk,
            };
            last_data = Instant::now();
            parser.push(&chunk);
            let chunk_at = offset;
            offset += chunk.len() as u64;
            loop {
                match self.consume(&mut parser, &mut cursor, &chunk, chunk_at)? {
                    Consumed::Read { fragments } => {
                        new_fragments += fragments;
                        break;
                    }
                    Consumed::Unreadable { fragments } => {
                        new_fragments += fragments;
                        // One bad fragment does not end the body: read on at the next chunk.
                        parser.resync();
                    }
                    Consumed::Stop(stop) => return Ok(SessionEnd::Stop(stop)),
                    Consumed::Retry(reason) => return Ok(SessionEnd::Retry(reason)),
                }
            }
        }
    }

    /// Handles every event `parser` has for `data` (pushed at `data_at`, the bytes of a body or
    /// of a spooled chunk), then routes what the events left of `data` and carries what the
    /// parser has not consumed. What cannot be read is reported as a gap and returned: the
    /// caller resyncs the parser and calls again (a body), or drops the chunk.
    fn consume(
        &mut self,
        parser: &mut Parser,
        cursor: &mut Cursor,
        data: &[u8],
        data_at: u64,
    ) -> Result<Consumed, Error> {
        let mut fragments = 0;
        loop {
            let (event, at) = match parser.next_event_at() {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(e) if !self.cfg.strict => {
                    self.unreadable_chunk(e)?;
                    return Ok(Consumed::Unreadable { fragments });
                }
                Err(e) => return Err(e.into()),
            };
            let mut route = |writer: &mut Writer, at| cursor.route_to(writer, at, data, data_at);
            match self.handle(event, at, &mut route)? {
                Handled::Continue => {}
                Handled::Fragment => {
                    fragments += 1;
                    self.failures = 0;
                    self.gap_pending = false;
                    self.last_fragment_at = Instant::now();
                }
                Handled::Stop(stop) => return Ok(Consumed::Stop(stop)),
                Handled::Retry(reason) => {
                    self.discard()?;
                    return Ok(Consumed::Retry(reason));
                }
            }
        }
        cursor.route_to(self.writer, parser.position(), data, data_at)?;
        cursor.carry_rest(data, data_at);
        Ok(Consumed::Read { fragments })
    }

    /// The parser could not read what came: the fragment it was in (or the chunk before its
    /// fragment started) is dropped and reported as a gap, and reading goes on at the next
    /// chunk, so that one bad fragment does not stop this run or every run after it.
    fn unreadable_chunk(&mut self, e: mkv::ParseError) -> Result<(), Error> {
        let number = self.current.take();
        self.discard()?;
        if number.as_ref().is_some_and(|n| self.unreadable.contains(n)) {
            return Ok(());
        }
        self.summary.gaps += 1;
        self.reporter.report(&Report::Gap {
            reason: match &number {
                Some(n) => format!("fragment {n} could not be read and was skipped: {e}"),
                None => format!("a chunk could not be read and was skipped: {e}"),
            },
            after_fragment: self.last.as_ref().map(|f| f.number.clone()),
        });
        self.unreadable.extend(number);
        Ok(())
    }

    /// Records that `f` is in the output: the state is saved once the output is durable, off
    /// the download's thread (see [`Saver`]).
    fn save_state(&mut self, f: &Fragment) -> Result<(), Error> {
        let Some(saver) = self.saver.as_deref_mut() else {
            return Ok(());
        };
        let durable = self
            .writer
            .durable()
            .map_err(|e| Error::io("syncing the output", e))?;
        saver.save(
            State::after(self.cfg, self.region, f, self.writer.open_file()),
            durable,
        )
    }

    /// Reports the files a segmenting writer finished.
    fn report_closed(&mut self) {
        let closed = self.writer.take_closed();
        progress::report_files(&mut *self.reporter, &mut self.summary, closed);
    }

    fn discard(&mut self) -> Result<(), Error> {
        self.span = None;
        self.current = None;
        self.skipping = false;
        self.writer
            .discard()
            .map_err(|e| Error::io("dropping a cut-off fragment", e))
    }

    /// The totals so far (the caller adds the files, the reason and the exit code).
    pub fn summary(&self) -> Summary {
        Summary {
            wall_ms: self.started.elapsed().as_millis() as u64,
            ..self.summary.clone()
        }
    }
}

/// What handling one event asks the session to do.
enum Handled {
    Continue,
    /// A fragment was written whole.
    Fragment,
    Stop(Stopped),
    Retry(String),
}

impl<S: MediaSource> Download<'_, S> {
    /// Hands one event to the writer (with the body bytes before it) and applies the stop rules.
    fn handle(
        &mut self,
        event: Event<'_>,
        at: u64,
        route: &mut dyn FnMut(&mut Writer, u64) -> Result<(), Error>,
    ) -> Result<Handled, Error> {
        let io = |e| Error::io("writing the output", e);
        route(self.writer, at)?;
        match &event {
            // A new chunk: its own Info and Tracks follow.
            Event::EbmlHeader(_) | Event::Info { .. } | Event::Tracks(_) => {
                self.chunk.event(&event)
            }
            Event::FragmentStart(f) => {
                self.skipping = false;
                self.current = Some(f.number.clone());
                if self
                    .last
                    .as_ref()
                    .is_some_and(|last| !is_newer(&f.number, &last.number))
                {
                    self.skipping = true;
                    tracing::debug!(fragment = %f.number, "skipping a fragment already written");
                    self.summary.duplicates_skipped += 1;
                    self.writer.skip_fragment();
                    return Ok(Handled::Continue);
                }
                if reached_end(self.cfg, f) {
                    return Ok(Handled::Stop(Stopped::End));
                }
                let accepted = self.writer.accept(f).map_err(|e| match e {
                    WriteError::Io(e) => io(e),
                    WriteError::Unwritable { .. } => Error::Unwritable {
                        format: self.cfg.output.format.name().into(),
                        reason: e.to_string(),
                    },
                })?;
                if accepted == Accept::TrackChange {
                    return Ok(Handled::Stop(Stopped::TrackChange {
                        fragment: f.number.clone(),
                    }));
                }
                self.report_closed();
                self.span = Some(self.chunk.span());
                self.hasher = self.ledger.is_some().then(sha2::Sha256::new);
            }
            Event::Cluster { timecode } => {
                if let Some(span) = self.span.as_mut() {
                    span.cluster(*timecode);
                }
            }
            Event::BlockStart(b) => {
                if let Some(span) = self.span.as_mut() {
                    span.block(b.track, b.timecode);
                }
            }
            Event::BlockData(d) if !self.skipping => {
                if let Some(h) = self.hasher.as_mut() {
                    h.update(d);
                }
            }
            Event::FragmentEnd(_) if self.skipping => {
                self.skipping = false;
                self.current = None;
                self.writer.event(&event).map_err(io)?;
                return Ok(Handled::Continue);
            }
            Event::FragmentEnd(f) => {
                self.current = None;
                let before = self.writer.committed();
                self.writer.event(&event).map_err(io)?;
                let length = self.span.take().map_or(0, |span| span.length());
                let length_ms = self.chunk.millis(length);
                let first = *self.first_producer_ms.get_or_insert(f.producer_ms);
                let end = f
                    .producer_ms
                    .saturating_add(length_ms)
                    .max(self.media_end_ms.unwrap_or(i64::MIN));
                self.media_end_ms = Some(end);
                let bytes = self.writer.committed() - before;
                self.summary.fragments += 1;
                self.summary.bytes = self.writer.committed() - self.committed_at_start;
                self.summary.media_duration_ms = end.saturating_sub(first).max(0) as u64;
                self.reporter.report(&Report::Fragment {
                    number: f.number.clone(),
                    server_timestamp_ms: f.server_ms,
                    producer_timestamp_ms: f.producer_ms,
                    bytes,
                    lag_ms: f.millis_behind_now,
                    media_duration_ms: self.summary.media_duration_ms,
                });
                self.last = Some(f.clone());
                self.save_state(f)?;
                if self.ledger.is_some() {
                    let sha256 = crate::ledger::hex(
                        &self
                            .hasher
                            .take()
                            .map(|h| h.finalize().to_vec())
                            .unwrap_or_default(),
                    );
                    let file = self
                        .writer
                        .open_file()
                        .map_or_else(|| "-".into(), |o| o.path);
                    self.record(&Record::Fragment {
                        file,
                        number: f.number.clone(),
                        server_timestamp_ms: f.server_ms,
                        producer_timestamp_ms: f.producer_ms,
                        duration_ms: length_ms.max(0) as u64,
                        bytes,
                        sha256,
                    })?;
                }
                let stop = &self.cfg.stop;
                if stop
                    .max_fragments
                    .is_some_and(|n| self.summary.fragments >= n)
                {
                    return Ok(Handled::Stop(Stopped::MaxFragments));
                }
                if stop.max_bytes.is_some_and(|n| self.summary.bytes >= n) {
                    return Ok(Handled::Stop(Stopped::MaxBytes));
                }
                if stop
                    .duration
                    .is_some_and(|d| self.summary.media_duration_ms >= d.as_millis() as u64)
                {
                    return Ok(Handled::Stop(Stopped::Duration));
                }
                if let Some(stop) = self.listing_done() {
                    return Ok(Handled::Stop(stop));
                }
                return Ok(Handled::Fragment);
            }
            Event::ServiceError(_) if self.span.is_some() || self.skipping => {
                // The error came inside a fragment: that fragment is not whole. Drop it, then
                // handle the error as if it had come between fragments.
                self.discard()?;
                return self.handle(event, at, route);
            }
            Event::ServiceError(e) if e.id == Some(4000) => {
                // Fragments expired (retention) or never existed: a gap; the body goes on with
                // the next one the service has.
                self.summary.gaps += 1;
                self.gap_pending = true;
                self.reporter.report(&Report::Gap {
                    reason: format!(
                        "fragment {} is no longer available ({})",
                        e.fragment_number.as_deref().unwrap_or("?"),
                        e.code.as_deref().unwrap_or("error 4000")
                    ),
                    after_fragment: self.last.as_ref().map(|f| f.number.clone()),
                });
                self.writer.event(&event).map_err(io)?;
                return Ok(Handled::Continue);
            }
            Event::ServiceError(e) => {
                let id = e.id.unwrap_or_default();
                let what = format!(
                    "the service reported error {}{} in the body",
                    e.id.map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
                    e.code
                        .as_ref()
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default()
                );
                if (4500..=4506).contains(&id) {
                    return Err(Error::Auth {
                        message: format!(
                            "{what}: the KMS key of stream {} cannot be used",
                            self.cfg.stream.display()
                        ),
                        hint: Some(
                            "check the stream's KMS key and the caller's kms:Decrypt permission"
                                .into(),
                        ),
                    });
                }
                return Ok(Handled::Retry(what));
            }
            _ => {}
        }
        if !self.skipping {
            self.writer.event(&event).map_err(io)?;
        }
        Ok(Handled::Continue)
    }
}

/// `--end`: this fragment is at or after it.
fn reached_end(cfg: &Config, f: &Fragment) -> bool {
    match &cfg.stop.end {
        None => false,
        Some(End::Time(t)) => cfg.clock.of(f) >= t.as_millisecond(),
        Some(End::Fragment(n)) => !is_newer(n, &f.number),
    }
}

fn clock_name(clock: Clock) -> &'static str {
    match clock {
        Clock::Server => "server",
        Clock::Producer => "producer",
    }
}

/// Whether fragment number `a` comes after `b`.
fn is_newer(a: &str, b: &str) -> bool {
    mkv::cmp_fragment_numbers(a, b).is_gt()
}

/// How a call raced against signals, the idle timeout and a time limit.
enum Raced<T> {
    Done(T),
    Stop(Stopped),
    TimedOut,
}

/// Runs `call` unless a signal or `--idle-timeout` comes first, or it takes longer than `limit`:
/// a service that accepts the connection and never answers must not hang the run.
async fn race<T>(
    shutdown: &mut watch::Receiver<Option<Signal>>,
    idle_timeout: Option<Duration>,
    since: Instant,
    limit: Duration,
    call: impl std::future::Future<Output = T>,
) -> Raced<T> {
    tokio::select! {
        s = wait_signal(shutdown) => Raced::Stop(Stopped::Signal(s)),
        _ = idle(idle_timeout, since) => Raced::Stop(Stopped::Idle),
        r = tokio::time::timeout(limit, call) => r.map_or(Raced::TimedOut, Raced::Done),
    }
}

async fn wait_signal(rx: &mut watch::Receiver<Option<Signal>>) -> Signal {
    loop {
        if let Some(s) = *rx.borrow_and_update() {
            return s;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves when `--idle-timeout` has passed since the last fragment; never without it.
async fn idle(timeout: Option<Duration>, since: Instant) {
    match timeout {
        Some(t) => tokio::time::sleep_until(since + t).await,
        None => std::future::pending().await,
    }
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9E37_79B9);
    (nanos ^ u64::from(std::process::id()).rotate_left(32)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_numbers_compare_as_numbers() {
        assert!(is_newer("10", "9"));
        assert!(!is_newer("9", "10"));
        assert!(!is_newer(
            "91343852333181432392682062607743920146159169392",
            "91343852333181432392682062607743920146159169392"
        ));
        assert!(is_newer(
            "91343852333181432392682062607743920146159169393",
            "91343852333181432392682062607743920146159169392"
        ));
    }
}

#[cfg(test)]
mod loop_tests;
