//! The parallel fetch of a listed range (design-notes §3.2–3.5): contiguous batches of the
//! listing, each fetched with one GetMediaForFragmentList call, up to `--parallel` at a time,
//! within the service's limits (a jittered start spacing under 5 calls a second; the pool
//! halves on ConnectionLimitExceeded and grows by one after a clean batch). Each response is
//! spooled beside the output and indexed by the FRAGMENT_NUMBER of its chunks, so it may come
//! in any order; fragments the service reports not found (in-band error 3000, transient right
//! after ingestion) or that a cut body did not bring are asked for again with backoff, and a
//! fragment still missing after that is *lost*. Batches are handed out strictly in order, and a
//! worker never runs more than `2 × N` batches ahead of the one being written, so the spool
//! stays within that window.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mkv::{Event, Parser};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::aws::{Archive, Failure, FetchFailure, MediaBody};
use crate::error::Error;
use crate::listing::Listed;

/// How many times a batch's missing fragments are asked for again (after 1 s, 2 s, 4 s)
/// before they count as lost.
const NOT_FOUND_RETRIES: u32 = 3;

/// Never two GetMediaForFragmentList starts closer than this (plus up to 25 % jitter): at most
/// 4 a second, under the service's 5, which other consumers share.
const START_SPACING: Duration = Duration::from_millis(250);

/// Timing knobs; tests scale the backoff down with `KVS_DL_BACKOFF_SCALE`.
#[derive(Debug, Clone)]
pub struct Timing {
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// First wait before asking again for fragments not found; doubles each round.
    pub not_found_base: Duration,
    /// A body silent this long is a dropped connection.
    pub stall: Duration,
}

/// A batch whose every fragment is either spooled or lost, in planned order.
pub struct Ready {
    pub index: usize,
    pub spool: PathBuf,
    /// Each listed fragment with where its chunk lies in the spool; `None`: lost.
    pub fragments: Vec<(Listed, Option<(u64, u64)>)>,
}

impl Ready {
    /// A reader of one spooled chunk, to be read in pieces.
    pub fn read(&self, at: u64, len: u64) -> std::io::Result<impl Read + use<>> {
        let mut file = std::fs::File::open(&self.spool)?;
        file.seek(SeekFrom::Start(at))?;
        Ok(file.take(len))
    }
}

/// Something the loop reports while the fetch goes on.
pub enum Note {
    /// A call failed and will be made again.
    Retry {
        reason: String,
        attempt: u32,
        delay: Duration,
    },
}

struct Batch {
    listed: Vec<Listed>,
    got: HashMap<String, (u64, u64)>,
    spool_len: u64,
    not_found_rounds: u32,
    running: bool,
    done: bool,
    retry_at: Option<Instant>,
}

impl Batch {
    fn missing(&self) -> Vec<String> {
        self.listed
            .iter()
            .filter(|f| !self.got.contains_key(&f.number))
            .map(|f| f.number.clone())
            .collect()
    }
}

/// What one GetMediaForFragmentList call brought.
struct JobResult {
    index: usize,
    /// Complete chunks: fragment number, offset and length in the spool.
    chunks: Vec<(String, u64, u64)>,
    spool_len: u64,
    not_found: Vec<String>,
    failure: Option<FetchFailure>,
}

/// The fetch of a planned range. See the module docs.
pub struct Fetcher {
    archive: Archive,
    batches: Vec<Batch>,
    width: usize,
    limit: usize,
    running: usize,
    next: usize,
    emitted: usize,
    tasks: JoinSet<JobResult>,
    next_start: Instant,
    failures: u32,
    max_retries: u32,
    timing: Timing,
    rng: u64,
    spool_dir: PathBuf,
    spool_prefix: String,
    notes: Vec<Note>,
    /// The most batches spooled at once, for the summary.
    pub peak_spooled: usize,
}

impl Fetcher {
    pub fn new(
        archive: Archive,
        listed: &[Listed],
        batches: Vec<std::ops::Range<usize>>,
        width: usize,
        max_retries: u32,
        timing: Timing,
        (spool_dir, spool_prefix): (PathBuf, String),
    ) -> Fetcher {
        let batches = batches
            .into_iter()
            .map(|r| Batch {
                listed: listed[r].to_vec(),
                got: HashMap::new(),
                spool_len: 0,
                not_found_rounds: 0,
                running: false,
                done: false,
                retry_at: None,
            })
            .collect();
        let width = width.clamp(1, 5);
        Fetcher {
            archive,
            batches,
            width,
            limit: width,
            running: 0,
            next: 0,
            emitted: 0,
            tasks: JoinSet::new(),
            next_start: Instant::now(),
            failures: 0,
            max_retries: max_retries.max(1),
            timing,
            rng: seed(),
            spool_dir,
            spool_prefix,
            notes: Vec::new(),
            peak_spooled: 0,
        }
    }

    pub fn endpoint(&self) -> &str {
        self.archive.endpoint()
    }

    pub fn batch_count(&self) -> usize {
        self.batches.len()
    }

    /// Reports gathered since the last call.
    pub fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    fn spool_path(&self, index: usize) -> PathBuf {
        self.spool_dir.join(format!("{}{index}", self.spool_prefix))
    }

    /// The next batch in order, once it is complete; `Ok(None)` after the last one.
    pub async fn next_ready(&mut self) -> Result<Option<Ready>, Error> {
        loop {
            if self.emitted >= self.batches.len() {
                return Ok(None);
            }
            if self.batches[self.emitted].done {
                let index = self.emitted;
                self.emitted += 1;
                let batch = &mut self.batches[index];
                let fragments = std::mem::take(&mut batch.listed)
                    .into_iter()
                    .map(|f| {
                        let at = batch.got.get(&f.number).copied();
                        (f, at)
                    })
                    .collect();
                batch.got.clear();
                return Ok(Some(Ready {
                    index,
                    spool: self.spool_path(index),
                    fragments,
                }));
            }
            let wake = self.start_jobs();
            tokio::select! {
                joined = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match joined {
                        Some(Ok(result)) => self.absorb(result)?,
                        Some(Err(e)) => return Err(Error::Other(anyhow::anyhow!("a fetch task failed: {e}"))),
                        None => {}
                    }
                }
                _ = tokio::time::sleep_until(wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if wake.is_some() => {}
            }
        }
    }

    /// Starts what may start now; returns when to look again for what may not yet.
    fn start_jobs(&mut self) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let later = |t: Instant, wake: &mut Option<Instant>| {
            *wake = Some(wake.map_or(t, |w| w.min(t)));
        };
        loop {
            if self.running >= self.limit {
                return wake;
            }
            let now = Instant::now();
            // A batch waiting to be asked again, else the next one within the window.
            let retry = (self.emitted..self.batches.len())
                .filter(|&k| {
                    let b = &self.batches[k];
                    !b.done && !b.running && b.retry_at.is_some()
                })
                .min_by_key(|&k| self.batches[k].retry_at);
            let candidate = match retry {
                Some(k) if self.batches[k].retry_at.is_some_and(|t| t <= now) => Some(k),
                Some(k) => {
                    later(self.batches[k].retry_at.expect("some"), &mut wake);
                    None
                }
                None => None,
            };
            let candidate = candidate.or_else(|| {
                (self.next < self.batches.len() && self.next < self.emitted + 2 * self.width)
                    .then_some(self.next)
            });
            let Some(k) = candidate else {
                return wake;
            };
            if now < self.next_start {
                later(self.next_start, &mut wake);
                return wake;
            }
            if k == self.next {
                self.next += 1;
            }
            self.start(k, now);
        }
    }

    fn start(&mut self, k: usize, now: Instant) {
        let jitter = self.random() * 0.25;
        self.next_start = now + START_SPACING.mul_f64(1.0 + jitter);
        let spool = self.spool_path(k);
        let batch = &mut self.batches[k];
        batch.running = true;
        batch.retry_at = None;
        self.running += 1;
        let numbers = batch.missing();
        let spooled = (0..=k)
            .filter(|&i| i >= self.emitted)
            .filter(|&i| self.batches[i].running || self.batches[i].spool_len > 0)
            .count();
        self.peak_spooled = self.peak_spooled.max(spooled);
        let batch = &self.batches[k];
        tracing::debug!(
            batch = k,
            fragments = numbers.len(),
            "GetMediaForFragmentList"
        );
        let archive = self.archive.clone();
        let from = batch.spool_len;
        let stall = self.timing.stall;
        self.tasks
            .spawn(fetch(archive, k, numbers, spool, from, stall));
    }

    fn absorb(&mut self, r: JobResult) -> Result<(), Error> {
        self.running -= 1;
        let delay;
        {
            let batch = &mut self.batches[r.index];
            batch.running = false;
            batch.spool_len = r.spool_len;
            for (number, at, len) in r.chunks {
                let listed = batch.listed.iter().any(|f| f.number == number);
                if !listed {
                    tracing::debug!(fragment = %number, "dropping a fragment that was not asked for");
                    continue;
                }
                batch.got.entry(number).or_insert((at, len));
            }
        }
        let missing = self.batches[r.index].missing();
        match r.failure {
            Some(FetchFailure::Connections(reason)) => {
                self.limit = (self.limit / 2).max(1);
                tracing::debug!(limit = self.limit, "connection limit: fewer connections");
                delay = self.fail(reason)?;
            }
            Some(FetchFailure::Other(Failure::Retry { reason, .. })) => {
                delay = self.fail(reason)?;
            }
            Some(FetchFailure::Other(Failure::Fatal(e) | Failure::Expired(e))) => return Err(e),
            None => {
                self.failures = 0;
                if missing.is_empty() {
                    self.batches[r.index].done = true;
                    self.limit = (self.limit + 1).min(self.width);
                    return Ok(());
                }
                // Not found (transient right after ingestion), or left out: ask again.
                let batch = &mut self.batches[r.index];
                batch.not_found_rounds += 1;
                if batch.not_found_rounds > NOT_FOUND_RETRIES {
                    tracing::debug!(batch = r.index, lost = ?missing, "fragments never arrived");
                    batch.done = true;
                    return Ok(());
                }
                delay = self
                    .timing
                    .not_found_base
                    .saturating_mul(1 << (batch.not_found_rounds - 1));
                self.notes.push(Note::Retry {
                    reason: format!(
                        "{} fragment(s) not found yet (first {}); asking again",
                        missing.len(),
                        r.not_found.first().or(missing.first()).expect("missing")
                    ),
                    attempt: batch.not_found_rounds,
                    delay,
                });
            }
        }
        if missing.is_empty() {
            self.batches[r.index].done = true;
            return Ok(());
        }
        self.batches[r.index].retry_at = Some(Instant::now() + delay);
        Ok(())
    }

    /// A failed call: counts it and returns the backoff, or gives up.
    fn fail(&mut self, reason: String) -> Result<Duration, Error> {
        self.failures += 1;
        if self.failures >= self.max_retries {
            return Err(Error::RetriesExhausted {
                attempts: self.failures,
                last: reason,
            });
        }
        let exp = self
            .timing
            .backoff_base
            .saturating_mul(1 << self.failures.saturating_sub(1).min(16))
            .min(self.timing.backoff_max);
        let delay = exp.mul_f64(0.5 + self.random() / 2.0);
        self.notes.push(Note::Retry {
            reason,
            attempt: self.failures,
            delay,
        });
        Ok(delay)
    }

    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 1_000_000) as f64 / 1_000_000.0
    }

    /// Deletes a batch's spool once written.
    pub fn done_with(&self, ready: &Ready) {
        let _ = std::fs::remove_file(&ready.spool);
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.tasks.abort_all();
        for k in 0..self.batches.len() {
            let _ = std::fs::remove_file(self.spool_path(k));
        }
    }
}

/// Deletes the spools a killed run left behind.
pub fn remove_stale(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// One GetMediaForFragmentList call: its body is appended to the spool from `from` on (bytes
/// after that, a cut chunk of an earlier try, are dropped) and indexed by fragment number.
async fn fetch(
    archive: Archive,
    index: usize,
    numbers: Vec<String>,
    spool: PathBuf,
    from: u64,
    stall: Duration,
) -> JobResult {
    let mut result = JobResult {
        index,
        chunks: Vec::new(),
        spool_len: from,
        not_found: Vec::new(),
        failure: None,
    };
    let mut body = match archive.fetch(&numbers).await {
        Ok(body) => body,
        Err(e) => {
            result.failure = Some(e);
            return result;
        }
    };
    let io_failure = |e: std::io::Error| {
        Some(FetchFailure::Other(Failure::Fatal(Error::io(
            format!("writing the spool {}", spool.display()),
            e,
        ))))
    };
    let mut file = match std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&spool)
        .and_then(|mut f| {
            f.set_len(from)?;
            f.seek(SeekFrom::Start(from))?;
            Ok(f)
        }) {
        Ok(f) => f,
        Err(e) => {
            result.failure = io_failure(e);
            return result;
        }
    };
    let mut parser = Parser::archived();
    let mut chunk_start = 0u64;
    // Chunks complete in the file: the spool keeps bytes up to the end of the last one.
    let mut complete_to = 0u64;
    let mut events = |parser: &mut Parser, result: &mut JobResult| -> Result<(), String> {
        loop {
            let (event, at) = match parser.next_event_at() {
                Ok(Some(next)) => next,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("an unreadable chunk: {e}")),
            };
            match event {
                Event::EbmlHeader(h) => chunk_start = at - h.len() as u64,
                Event::FragmentEnd(f) => {
                    result
                        .chunks
                        .push((f.number, from + chunk_start, at - chunk_start));
                    complete_to = at;
                }
                Event::ServiceError(e) => {
                    complete_to = at;
                    match e.fragment_number {
                        Some(n)
                            if e.id == Some(3000)
                                || e.code.as_deref() == Some("FRAGMENT_NOT_FOUND") =>
                        {
                            result.not_found.push(n)
                        }
                        _ => {
                            return Err(format!(
                                "the service reported error {} ({}) in the body",
                                e.id.map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
                                e.code.unwrap_or_default()
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    };
    loop {
        let next = match tokio::time::timeout(stall, MediaBody::next(&mut body)).await {
            Err(_) => Err(Failure::Retry {
                reason: format!("GetMediaForFragmentList: no data for {} s", stall.as_secs()),
                refresh_endpoint: false,
            }),
            Ok(next) => next,
        };
        match next {
            Ok(Some(bytes)) => {
                if let Err(e) = file.write_all(&bytes) {
                    result.failure = io_failure(e);
                    break;
                }
                parser.push(&bytes);
                if let Err(reason) = events(&mut parser, &mut result) {
                    result.failure = Some(FetchFailure::Other(Failure::Retry {
                        reason,
                        refresh_endpoint: false,
                    }));
                    break;
                }
            }
            Ok(None) => {
                let finished = parser.finish();
                let drained = events(&mut parser, &mut result);
                if let (Ok(mkv::Finish::Clean), Ok(())) = (&finished, &drained) {
                    break;
                }
                result.failure = Some(FetchFailure::Other(Failure::Retry {
                    reason: "GetMediaForFragmentList: the body ended inside a fragment".into(),
                    refresh_endpoint: false,
                }));
                break;
            }
            Err(failure) => {
                result.failure = Some(FetchFailure::Other(failure));
                break;
            }
        }
    }
    result.spool_len = from + complete_to;
    result
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9E37_79B9);
    (nanos ^ u64::from(std::process::id()).rotate_left(29)) | 1
}
