//! The download loop against a scripted GetMedia service, on tokio's paused clock: every call
//! the loop makes is answered from a queue (a body of chunks with delays between them, or a
//! failure), and recorded with its selector and the virtual instant it was made at. Nothing
//! sleeps for real, so head detection, the gap and refused-token fallbacks, the call spacing,
//! the backoff and the idle timeout are checked to the millisecond.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser as _;
use kvs_emu::{StoredFragment, SyntheticSpec};
use mkv::ebml::{self, id};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Download, HEAD_SILENCE, Pacing, Stopped};
use crate::aws::{Failure, MediaBody, MediaSource, Selector};
use crate::cli::Cli;
use crate::config::{Clock, Config, Env, Format};
use crate::encoder::Options;
use crate::error::Error;
use crate::progress::{Report, Reporter, Summary};
use crate::writer::{Names, Writer};

// ---------------------------------------------------------------------------------------------
// The fake service

/// One step of a scripted body.
enum Step {
    /// Nothing arrives for this long (virtual time).
    Wait(Duration),
    /// These bytes arrive.
    Data(Bytes),
    /// The read fails (a dropped connection, say).
    Fail(Failure),
    /// Nothing ever arrives again, and the body never ends.
    Stall,
}

/// What one GetMedia call answers.
enum Answer {
    /// Headers at once, then the body's steps; a clean end after the last one.
    Body(Vec<Step>),
    Fail(Failure),
    /// The call never returns.
    Hang,
}

struct FakeBody {
    steps: VecDeque<Step>,
}

impl MediaBody for FakeBody {
    async fn next(&mut self) -> Result<Option<Bytes>, Failure> {
        while let Some(step) = self.steps.pop_front() {
            match step {
                Step::Wait(d) => tokio::time::sleep(d).await,
                Step::Data(bytes) => return Ok(Some(bytes)),
                Step::Fail(failure) => return Err(failure),
                Step::Stall => {
                    self.steps.push_front(Step::Stall);
                    std::future::pending::<()>().await;
                }
            }
        }
        Ok(None)
    }
}

/// A GetMedia call as the fake saw it.
#[derive(Debug, Clone)]
struct Call {
    selector: Selector,
    at: Instant,
}

/// Answers calls from a script; a call past its end is a fatal error, so a loop that asks more
/// often than a test expects fails that test instead of hanging it.
struct FakeKvs {
    script: VecDeque<Answer>,
    calls: Vec<Call>,
    refreshes: u32,
}

impl FakeKvs {
    fn new(script: Vec<Answer>) -> FakeKvs {
        FakeKvs {
            script: script.into(),
            calls: Vec::new(),
            refreshes: 0,
        }
    }
}

/// The message of the error a call past the script's end gets.
const EXHAUSTED: &str = "the fake's script is exhausted";

impl MediaSource for FakeKvs {
    type Body = FakeBody;

    async fn get_media(&mut self, selector: &Selector) -> Result<FakeBody, Failure> {
        self.calls.push(Call {
            selector: selector.clone(),
            at: Instant::now(),
        });
        match self.script.pop_front() {
            Some(Answer::Body(steps)) => Ok(FakeBody {
                steps: steps.into(),
            }),
            Some(Answer::Fail(failure)) => Err(failure),
            Some(Answer::Hang) => std::future::pending().await,
            None => Err(Failure::Fatal(Error::Other(anyhow::anyhow!(EXHAUSTED)))),
        }
    }

    async fn refresh_endpoint(&mut self) -> Result<(), Failure> {
        self.refreshes += 1;
        Ok(())
    }

    fn data_endpoint(&self) -> &str {
        "https://fake.kinesisvideo.invalid"
    }

    fn region(&self) -> &str {
        "us-west-2"
    }
}

#[derive(Default)]
struct Recorder(Vec<Report>);

impl Reporter for Recorder {
    fn report(&mut self, report: &Report) {
        self.0.push(report.clone());
    }
}

// ---------------------------------------------------------------------------------------------
// Media

/// Fragments of one synthetic stream, 1 s each; consecutive numbers, server time 2023-11-14.
fn stream(n: usize) -> Vec<StoredFragment> {
    kvs_emu::synthetic(&SyntheticSpec {
        fragments: n,
        fragment_ms: 1000,
        frames_per_fragment: 4,
        ..SyntheticSpec::default()
    })
}

/// Fragment `f`'s whole GetMedia chunk, sent `behind_ms` behind the head.
fn chunk(f: &StoredFragment, behind_ms: u64) -> Step {
    Step::Data(Bytes::from(f.chunk(behind_ms)))
}

/// The fragment as the loop sees it at its end (as a state file would give it back).
fn written(f: &StoredFragment) -> mkv::Fragment {
    mkv::Fragment {
        number: f.number().to_owned(),
        server_ms: f.server_ms(),
        producer_ms: f.producer_ms(),
        millis_behind_now: None,
        continuation_token: Some(f.number().to_owned()),
    }
}

fn token(f: &StoredFragment) -> Selector {
    // The emulator's continuation token is the fragment number, as in every capture.
    Selector::Token(f.number().to_owned())
}

/// The chunk KVS sends for an in-band error: EBML header, unknown-size Segment, one Tags with
/// AWS_KINESISVIDEO_ERROR_CODE/_ID and the fragment it is about (as kvs-emu's `tags.rs`).
fn error_chunk(code: &str, error_id: u64, fragment: &str) -> Step {
    let error_id = error_id.to_string();
    let pairs = [
        ("AWS_KINESISVIDEO_ERROR_CODE", code),
        ("AWS_KINESISVIDEO_ERROR_ID", error_id.as_str()),
        ("AWS_KINESISVIDEO_FRAGMENT_NUMBER", fragment),
    ];
    let mut tag = Vec::new();
    for (name, value) in pairs {
        let mut simple = Vec::new();
        element4(&mut simple, id::TAG_NAME, name.as_bytes());
        element4(&mut simple, id::TAG_STRING, value.as_bytes());
        element4(&mut tag, id::SIMPLE_TAG, &simple);
    }
    let mut tags = Vec::new();
    element4(&mut tags, id::TAG, &tag);
    let mut out = mkv::writer::ebml_header();
    // A Segment of unknown size, in the 8-byte form KVS writes.
    out.extend_from_slice(&[0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF]);
    out.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    element4(&mut out, id::TAGS, &tags);
    Step::Data(Bytes::from(out))
}

fn element4(out: &mut Vec<u8>, element: u32, data: &[u8]) {
    ebml::write_id(out, element);
    ebml::write_size_fixed(out, data.len() as u64, 4);
    out.extend_from_slice(data);
}

// ---------------------------------------------------------------------------------------------
// Running the loop

/// The invocation time the configs are resolved at: `--end now` is long after the fragments.
fn now() -> jiff::Timestamp {
    "2026-11-25T12:00:00Z".parse().unwrap()
}

/// `--stream-name cam1 -o out.mkv` plus `args`, resolved as `main` would.
fn config(args: &[&str]) -> Config {
    let all = ["kvs-dl", "--stream-name", "cam1", "-o", "out.mkv"]
        .iter()
        .chain(args)
        .copied();
    let cli = Cli::try_parse_from(all).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    Config::resolve(cli, &Env::default(), now(), false)
        .unwrap_or_else(|e| panic!("{args:?}: {}", e.render()))
}

/// What a run did.
struct Outcome {
    result: Result<Stopped, Error>,
    calls: Vec<Call>,
    refreshes: u32,
    reports: Vec<Report>,
    summary: Summary,
    /// Virtual time from the start of the run to its end.
    took: Duration,
    /// Numbers of the fragments in the finished output file, in order.
    in_file: Vec<String>,
    /// The output file's bytes.
    file: Vec<u8>,
}

impl Outcome {
    /// Offsets of the calls from the start of the run.
    fn call_times(&self, start: Instant) -> Vec<Duration> {
        self.calls.iter().map(|c| c.at - start).collect()
    }

    /// Time between each call and the next.
    fn gaps(&self) -> Vec<Duration> {
        self.calls.windows(2).map(|w| w[1].at - w[0].at).collect()
    }

    fn selectors(&self) -> Vec<Selector> {
        self.calls.iter().map(|c| c.selector.clone()).collect()
    }

    fn gaps_reported(&self) -> Vec<(String, Option<String>)> {
        self.reports
            .iter()
            .filter_map(|r| match r {
                Report::Gap {
                    reason,
                    after_fragment,
                } => Some((reason.clone(), after_fragment.clone())),
                _ => None,
            })
            .collect()
    }

    /// (attempt, delay) of each reconnect report.
    fn reconnects(&self) -> Vec<(u32, Duration, String)> {
        self.reports
            .iter()
            .filter_map(|r| match r {
                Report::Reconnect {
                    reason,
                    attempt,
                    delay_ms,
                } => Some((*attempt, Duration::from_millis(*delay_ms), reason.clone())),
                _ => None,
            })
            .collect()
    }

    fn fragments_reported(&self) -> Vec<String> {
        self.reports
            .iter()
            .filter_map(|r| match r {
                Report::Fragment { number, .. } => Some(number.clone()),
                _ => None,
            })
            .collect()
    }

    fn stopped(&self) -> &Stopped {
        match &self.result {
            Ok(stopped) => stopped,
            Err(e) => panic!("the run failed: {}", e.render()),
        }
    }
}

/// Runs the loop over `script` into a raw file in a temporary directory, optionally resuming
/// after a fragment an earlier run wrote, and checks what must hold for every run: no two
/// calls closer than the call spacing.
async fn run(
    cfg: &Config,
    pacing: Pacing,
    script: Vec<Answer>,
    resume_after: Option<mkv::Fragment>,
) -> (Outcome, Instant) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.mkv");
    let opts = Options {
        seekable: true,
        faststart: false,
        app: "kvs-dl test".into(),
        stream_tag: ("KVS_STREAM_NAME".into(), "cam1".into()),
    };
    let mut writer = Writer::new(Format::Raw, opts, Names::File(path.clone()), false).unwrap();
    let mut source = FakeKvs::new(script);
    let mut reporter = Recorder::default();
    let (_signals, shutdown) = watch::channel(None);
    let min_interval = pacing.min_interval;

    let start = Instant::now();
    let mut download = Download::new(
        cfg,
        "us-west-2",
        &mut source,
        &mut writer,
        &mut reporter,
        shutdown,
        pacing,
    );
    if let Some(last) = resume_after {
        download = download.resume_after(last);
    }
    let result = download.run().await;
    let took = start.elapsed();
    let summary = download.summary();
    drop(download);

    let committed = writer.committed();
    writer.finish().unwrap();
    let file = read_if_exists(&path);
    assert!(
        file.len() as u64 >= committed,
        "the file holds what was committed"
    );
    let outcome = Outcome {
        result,
        in_file: fragments_in(&file),
        file,
        calls: source.calls,
        refreshes: source.refreshes,
        reports: reporter.0,
        summary,
        took,
    };
    for (i, gap) in outcome.gaps().iter().enumerate() {
        assert!(
            *gap >= min_interval,
            "calls {i} and {} are {gap:?} apart, closer than {min_interval:?}",
            i + 1
        );
    }
    (outcome, start)
}

fn read_if_exists(path: &Path) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// The fragments a raw output file holds, read back with the parser.
fn fragments_in(file: &[u8]) -> Vec<String> {
    let mut parser = mkv::Parser::new();
    parser.push(file);
    let mut numbers = Vec::new();
    while let Some(event) = parser.next_event().expect("the output parses") {
        if let mkv::Event::FragmentEnd(f) = event {
            numbers.push(f.number);
        }
    }
    assert_eq!(
        parser.finish().unwrap(),
        mkv::Finish::Clean,
        "whole fragments"
    );
    numbers
}

fn numbers(fragments: &[&StoredFragment]) -> Vec<String> {
    fragments.iter().map(|f| f.number().to_owned()).collect()
}

/// `actual` is the wait a report gave as `reported`: reports round down to whole milliseconds,
/// and tokio's timer wheel rounds a deadline up to the next millisecond.
#[track_caller]
fn assert_within_a_ms(actual: Duration, reported: Duration) {
    assert!(
        actual >= reported && actual <= reported + ms(1),
        "{actual:?} is not the reported {reported:?}"
    );
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A retryable failure, as a 5xx or a dropped connection gives.
fn retry(reason: &str) -> Failure {
    Failure::Retry {
        reason: reason.into(),
        refresh_endpoint: false,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Head detection

/// The service closes a body at the live head after a silence: with `--end now`, the last
/// fragment close to the head and at least HEAD_SILENCE of silence before the clean end, the
/// run has caught up after one call.
#[tokio::test(start_paused = true)]
async fn silence_then_clean_end_at_the_head_is_caught_up() {
    let f = stream(2);
    let cfg = config(&["--start", "earliest", "--end", "now"]);
    let script = vec![Answer::Body(vec![
        chunk(&f[0], 3_000),
        chunk(&f[1], 2_000),
        Step::Wait(HEAD_SILENCE),
    ])];
    let (out, start) = run(&cfg, Pacing::default(), script, None).await;
    assert_eq!(*out.stopped(), Stopped::CaughtUp);
    assert_eq!(out.selectors(), vec![Selector::Earliest]);
    assert_eq!(out.call_times(start), vec![Duration::ZERO]);
    assert_eq!(out.took, HEAD_SILENCE, "it stops as soon as the body ends");
    assert_eq!(out.in_file, numbers(&[&f[0], &f[1]]));
    assert_eq!(out.fragments_reported(), numbers(&[&f[0], &f[1]]));
    assert!(out.reconnects().is_empty());
}

/// The same body without the silence was cut mid-transfer (the service's session limit): the
/// loop asks again right after the last fragment, one call spacing later, and stops only when
/// a body ends at the head.
#[tokio::test(start_paused = true)]
async fn clean_end_without_silence_is_asked_again() {
    let f = stream(3);
    let cfg = config(&["--start", "earliest", "--end", "now"]);
    let script = vec![
        Answer::Body(vec![chunk(&f[0], 3_000), chunk(&f[1], 2_000)]),
        Answer::Body(vec![chunk(&f[2], 1_000), Step::Wait(HEAD_SILENCE)]),
    ];
    let (out, start) = run(&cfg, Pacing::default(), script, None).await;
    assert_eq!(*out.stopped(), Stopped::CaughtUp);
    assert_eq!(out.selectors(), vec![Selector::Earliest, token(&f[1])]);
    assert_eq!(out.call_times(start), vec![ms(0), ms(250)]);
    assert_eq!(out.in_file, numbers(&[&f[0], &f[1], &f[2]]));
    assert!(out.reconnects().is_empty(), "a clean end is no failure");
}

/// The silence is measured in virtual time exactly: 1 ms short of HEAD_SILENCE is not a head.
#[tokio::test(start_paused = true)]
async fn silence_just_short_of_the_threshold_is_asked_again() {
    let f = stream(2);
    let cfg = config(&["--start", "earliest", "--end", "now"]);
    let script = vec![
        Answer::Body(vec![chunk(&f[0], 1_000), Step::Wait(HEAD_SILENCE - ms(1))]),
        Answer::Body(vec![chunk(&f[1], 1_000), Step::Wait(HEAD_SILENCE)]),
    ];
    let (out, _) = run(&cfg, Pacing::default(), script, None).await;
    assert_eq!(*out.stopped(), Stopped::CaughtUp);
    assert_eq!(out.selectors(), vec![Selector::Earliest, token(&f[0])]);
    assert_eq!(out.in_file, numbers(&[&f[0], &f[1]]));
}

/// A silence before the end is not enough when the last fragment is far behind the head
/// (MILLIS_BEHIND_NOW over 10 s): the archive goes on, so the loop asks again.
#[tokio::test(start_paused = true)]
async fn silence_far_behind_the_head_is_asked_again() {
    let f = stream(3);
    let cfg = config(&["--start", "earliest", "--end", "now"]);
    let script = vec![
        Answer::Body(vec![chunk(&f[0], 60_000), Step::Wait(ms(1_000))]),
        Answer::Body(vec![chunk(&f[1], 10_001), Step::Wait(ms(1_000))]),
        Answer::Body(vec![chunk(&f[2], 10_000), Step::Wait(ms(1_000))]),
    ];
    let (out, _) = run(&cfg, Pacing::default(), script, None).await;
    assert_eq!(*out.stopped(), Stopped::CaughtUp);
    assert_eq!(
        out.selectors(),
        vec![Selector::Earliest, token(&f[0]), token(&f[1])],
        "10 001 ms behind is not the head, 10 000 ms is"
    );
    assert_eq!(out.in_file, numbers(&[&f[0], &f[1], &f[2]]));
}

/// A body that ends inside a fragment was cut: the partial fragment is dropped, the loop
/// retries (a failure, with a backoff) from the last whole fragment, and the fragment is
/// written once, whole, from the next body.
#[tokio::test(start_paused = true)]
async fn body_cut_inside_a_fragment_is_asked_again_from_the_last_whole_one() {
    let f = stream(2);
    let cfg = config(&["--start", "earliest", "--end", "now"]);
    let second = f[1].chunk(1_000);
    let half = Bytes::from(second[..second.len() / 2].to_vec());
    let script = vec![
        Answer::Body(vec![chunk(&f[0], 1_000), Step::Data(half)]),
        Answer::Body(vec![chunk(&f[1], 1_000), Step::Wait(HEAD_SILENCE)]),
    ];
    let (out, _) = run(&cfg, Pacing::default(), script, None).await;
    assert_eq!(*out.stopped(), Stopped::CaughtUp);
    assert_eq!(out.selectors(), vec![Selector::Earliest, token(&f[0])]);
    let reconnects = out.reconnects();
    assert_eq!(reconnects.len(), 1);
    assert_eq!(reconnects[0].2, "the body ended inside a fragment");
    assert_within_a_ms(out.gaps()[0], reconnects[0].1);
    assert_eq!(out.in_file, numbers(&[&f[0], &f[1]]));
    let mut expected = f[0].chunk(1_000);
    expected.extend(second);
    assert_eq!(out.file, expected, "raw output: exactly the two chunks");
}

/// A connection that drops inside a fragment (a read error, not an end): the bytes of the
/// partial fragment already handed to the writer are rolled back, and the next call continues
/// after the last whole fragment.
#[tokio::test(start_paused = true)]
async fn a_connection_dropped_inside_a_fragment_rolls_it_back() {
    let f = stream(2);
    let cfg = config(&["--start", "earliest", "--end", "now"]);
    let second = f[1].chunk(1_000);
    let most = Bytes::from(second[..second.len() - 10].to_vec());
    let script = vec![
        Answer::Body(vec![
            chunk(&f[0], 1_000),
            Step::Data(most),
            Step::Wait(ms(40)),
            Step::Fail(retry("connection reset by peer")),
        ]),
        Answer::Body(vec![chunk(&f[1], 1_000), Step::Wait(HEAD_SILENCE)]),
    ];
    let (out, start) = run(&cfg, Pacing::default(), script, None).await;
    assert_eq!(*out.stopped(), Stopped::CaughtUp);
    assert_eq!(out.selectors(), vec![Selector::Earliest, token(&f[0])]);
    let reconnects = out.reconnects();
    assert_eq!(reconnects.len(), 1);
    assert_eq!(reconnects[0].2, "connection reset by peer");
    assert_within_a_ms(out.call_times(start)[1], ms(40) + reconnects[0].1);
    let mut expected = f[0].chunk(1_000);
    expected.extend(second);
    assert_eq!(
        out.file, expected,
        "the partial fragment left nothing behind"
    );
    assert_eq!(out.fragments_reported(), numbers(&[&f[0], &f[1]]));
}

// ---------------------------------------------------------------------------------------------
// 2. Gaps

/// A body that only reports FRAGMENT_NOT_FOUND (4000) brought nothing and left a gap: it is
/// not taken as caught up, the gap is reported once, and the next call, one call spacing
/// later (no poll pause), asks for the earliest fragment kept.
#[tokio::test(start_paused = true)]
async fn a_body_with_only_error_4000_falls_back_to_earliest() {
    let f = stream(3);
    let expired = f[0].number();
    let cfg = config(&["--start", &format!("fragment:{expired}"), "--end", "now"]);
    let script = vec![
        Answer::Body(vec![error_chunk("FRAGMENT_NOT_FOUND", 4000, expired)]),
        Answer::Body(vec![
            chunk(&f[1], 2_000),
            chunk(&f[2], 1_000),
            Step::Wait(HEAD_SILENCE),
        ]),
    ];
    let (out, start) = run(&cfg, Pacing::default(), script, None).await;
    assert_eq!(*out.stopped(), Stopped::CaughtUp);
    assert_eq!(
        out.selectors(),
        vec![Selector::Fragment(expired.to_owned()), Selector::Earliest]
    );
    assert_eq!(out.call_times(start), vec![ms(0), ms(250)]);
    let gaps = out.gaps_reported();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(gaps[0].0.contains(expired), "{}", gaps[0].0);
    assert_eq!(gaps[0].1, None, "nothing was written before the gap");
    assert_eq!(out.summary.gaps, 1);
    assert!(out.reconnects().is_empty(), "a gap is no failure");
    assert_eq!(out.in_file, numbers(&[&f[1], &f[2]]));
}

/// When fragments follow the error in the same body, the gap is behind: the next call
/// continues after them by token, not from the earliest fragment.
#[tokio::test(start_paused = true)]
async fn a_gap_followed_by_fragments_continues_by_token() {
    let f = stream(3);
    let cfg = config(&["--start", "earliest", "--end", "now"]);
    let script = vec![
        Answer::Body(vec![
            chunk(&f[0], 5_000),
            error_chunk("FRAGMENT_NOT_FOUND", 4000, f[1].number()),
            chunk(&f[2], 4_000),
        ]),
        Answer::Body(vec![Step::Wait(HEAD_SILENCE)]),
    ];
    let (out, _) = run(&cfg, Pacing::default(), script, None).await;
    assert_eq!(
        *out.stopped(),
        Stopped::CaughtUp,
        "an empty body: nothing newer"
    );
    assert_eq!(out.selectors(), vec![Selector::Earliest, token(&f[2])]);
    let gaps = out.gaps_reported();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].1.as_deref(), Some(f[0].number()));
    assert_eq!(out.in_file, numbers(&[&f[0], &f[2]]));
}

// ---------------------------------------------------------------------------------------------
// 3. A refused continuation token

/// A saved token the service refuses (InvalidArgumentException) is not fatal: the next call
/// asks for the saved fragment's server time, after one backoff; the saved fragment, sent
/// again by that call, is skipped; later reconnects go back to tokens.
#[tokio::test(start_paused = true)]
async fn a_refused_token_resumes_from_the_fragments_server_time() {
    let f = stream(5);
    // `--end now` with the default `--start now` needs a state file; the test hands the loop
    // the saved fragment itself and keeps the loop from writing one.
    let cfg = Config {
        state_file: None,
        ..config(&["--end", "now", "--state-file", "state.json"])
    };
    let script = vec![
        Answer::Fail(Failure::Fatal(Error::InvalidArgument {
            stream: "cam1".into(),
            message: "ContinuationToken is not valid".into(),
        })),
        Answer::Body(vec![chunk(&f[2], 3_000), chunk(&f[3], 2_000)]),
        Answer::Body(vec![chunk(&f[4], 1_000), Step::Wait(HEAD_SILENCE)]),
    ];
    let (out, start) = run(&cfg, Pacing::default(), script, Some(written(&f[2]))).await;
    assert_eq!(*out.stopped(), Stopped::CaughtUp);
    let at = jiff::Timestamp::from_millisecond(f[2].server_ms()).unwrap();
    assert_eq!(
        out.selectors(),
        vec![
            token(&f[2]),
            Selector::Time(Clock::Server, at),
            token(&f[3])
        ]
    );
    let reconnects = out.reconnects();
    assert_eq!(reconnects.len(), 1, "{reconnects:?}");
    assert_eq!(reconnects[0].0, 1);
    assert!(reconnects[0].2.contains("continuation token was refused"));
    let delay = reconnects[0].1;
    assert!(
        (ms(250)..=ms(500)).contains(&delay),
        "first backoff: {delay:?}"
    );
    // The second call waits the reported backoff.
    assert_within_a_ms(out.call_times(start)[1], delay);
    assert_eq!(out.summary.duplicates_skipped, 1);
    assert_eq!(out.in_file, numbers(&[&f[3], &f[4]]), "f2 is not written");
    assert_eq!(out.fragments_reported(), numbers(&[&f[3], &f[4]]));
    let mut expected = f[3].chunk(2_000);
    expected.extend(f[4].chunk(1_000));
    assert_eq!(out.file, expected, "not a byte of the skipped fragment");
}

/// The fallback is for tokens only: an InvalidArgument for any other selector ends the run.
#[tokio::test(start_paused = true)]
async fn invalid_argument_for_another_selector_is_fatal() {
    let f = stream(1);
    let cfg = config(&["--start", &format!("fragment:{}", f[0].number())]);
    let script = vec![Answer::Fail(Failure::Fatal(Error::InvalidArgument {
        stream: "cam1".into(),
        message: "bad fragment number".into(),
    }))];
    let (out, _) = run(&cfg, Pacing::default(), script, None).await;
    assert!(
        matches!(&out.result, Err(Error::InvalidArgument { message, .. }) if message == "bad fragment number"),
        "{:?}",
        out.result
    );
    assert_eq!(out.calls.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Pacing

/// Backoff steps shorter than the call spacing are raised to it: four failures, calls exactly
/// `min_interval` apart, then RetriesExhausted with `--max-retries` attempts and the last reason.
#[tokio::test(start_paused = true)]
async fn calls_are_never_closer_than_the_call_spacing() {
    let cfg = config(&["--max-retries", "4"]);
    let pacing = Pacing {
        backoff_base: ms(10),
        backoff_max: ms(40),
        ..Pacing::default()
    };
    let script = (1..=4)
        .map(|k| Answer::Fail(retry(&format!("503 number {k}"))))
        .collect();
    let (out, start) = run(&cfg, pacing, script, None).await;
    match &out.result {
        Err(Error::RetriesExhausted { attempts, last }) => {
            assert_eq!(*attempts, 4);
            assert_eq!(last, "503 number 4");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        out.call_times(start),
        vec![ms(0), ms(250), ms(500), ms(750)]
    );
    let attempts: Vec<u32> = out.reconnects().iter().map(|r| r.0).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    assert!(out.reconnects().iter().all(|r| r.1 <= ms(40)));
    assert_eq!(out.summary.reconnects, 3);
}

/// The backoff doubles per consecutive failure (half to all of the step, for jitter) up to
/// `backoff_max`, and the next call comes exactly that long after the failed one.
#[tokio::test(start_paused = true)]
async fn backoff_doubles_per_failure_up_to_the_maximum() {
    let cfg = config(&["--max-retries", "6"]);
    let pacing = Pacing {
        backoff_base: ms(1_000),
        backoff_max: ms(4_000),
        ..Pacing::default()
    };
    let script = (1..=6)
        .map(|k| Answer::Fail(retry(&format!("timeout {k}"))))
        .collect();
    let (out, _) = run(&cfg, pacing, script, None).await;
    assert!(
        matches!(out.result, Err(Error::RetriesExhausted { attempts: 6, .. })),
        "{:?}",
        out.result
    );
    assert_eq!(out.calls.len(), 6);
    let reconnects = out.reconnects();
    let steps = [1_000, 2_000, 4_000, 4_000, 4_000];
    assert_eq!(reconnects.len(), steps.len());
    for (k, ((attempt, delay, _), step)) in reconnects.iter().zip(steps).enumerate() {
        assert_eq!(*attempt as usize, k + 1);
        assert!(
            (ms(step / 2)..=ms(step)).contains(delay),
            "attempt {attempt}: {delay:?} not within half to all of {step} ms"
        );
        assert_within_a_ms(out.gaps()[k], *delay);
    }
}

/// Failures count in a row: a fragment written resets the count, so `--max-retries 3` allows
/// two failures, a good body, then three more failures.
#[tokio::test(start_paused = true)]
async fn a_written_fragment_resets_the_failure_count() {
    let f = stream(1);
    let cfg = config(&["--start", "earliest", "--max-retries", "3"]);
    let script = vec![
        Answer::Fail(retry("a")),
        Answer::Fail(retry("b")),
        Answer::Body(vec![chunk(&f[0], 1_000)]),
        Answer::Fail(retry("c")),
        Answer::Fail(retry("d")),
        Answer::Fail(retry("e")),
    ];
    let (out, _) = run(&cfg, Pacing::default(), script, None).await;
    match &out.result {
        Err(Error::RetriesExhausted { attempts, last }) => {
            assert_eq!((*attempts, last.as_str()), (3, "e"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out.calls.len(), 6);
    let attempts: Vec<u32> = out.reconnects().iter().map(|r| r.0).collect();
    assert_eq!(attempts, vec![1, 2, 1, 2]);
    assert_eq!(
        out.selectors()[2..],
        [Selector::Earliest, token(&f[0]), token(&f[0]), token(&f[0])]
    );
    assert_eq!(out.in_file, numbers(&[&f[0]]));
}

/// A body with nothing in it, with no `--end`, means nothing newer yet: the loop asks again
/// after `poll`, not at once, and it is no failure.
#[tokio::test(start_paused = true)]
async fn an_empty_body_waits_the_poll_interval() {
    let cfg = config(&[]);
    let script = vec![Answer::Body(vec![]), Answer::Body(vec![])];
    let (out, start) = run(&cfg, Pacing::default(), script, None).await;
    // The third call runs past the script, which ends the run.
    assert!(
        matches!(&out.result, Err(Error::Other(e)) if e.to_string() == EXHAUSTED),
        "{:?}",
        out.result
    );
    assert_eq!(out.call_times(start), vec![ms(0), ms(2_000), ms(4_000)]);
    assert_eq!(out.selectors(), vec![Selector::Now; 3]);
    assert!(out.reconnects().is_empty());
}

/// A body silent for `stall` is a dropped connection: retried with a backoff from the last
/// whole fragment.
#[tokio::test(start_paused = true)]
async fn a_stalled_body_is_a_dropped_connection() {
    let f = stream(2);
    let cfg = config(&["--start", "earliest", "--end", "now"]);
    let script = vec![
        Answer::Body(vec![chunk(&f[0], 1_000), Step::Stall]),
        Answer::Body(vec![chunk(&f[1], 1_000), Step::Wait(HEAD_SILENCE)]),
    ];
    let (out, start) = run(&cfg, Pacing::default(), script, None).await;
    assert_eq!(*out.stopped(), Stopped::CaughtUp);
    let reconnects = out.reconnects();
    assert_eq!(reconnects.len(), 1);
    assert_eq!(reconnects[0].2, "no data for 30 s");
    assert_within_a_ms(out.call_times(start)[1], ms(30_000) + reconnects[0].1);
    assert_eq!(out.selectors()[1], token(&f[0]));
    assert_eq!(out.in_file, numbers(&[&f[0], &f[1]]));
}

/// A retryable failure that asks for it makes the loop resolve the endpoint again.
#[tokio::test(start_paused = true)]
async fn a_stale_endpoint_is_resolved_again() {
    let cfg = config(&["--start", "earliest", "--end", "now"]);
    let script = vec![
        Answer::Fail(Failure::Retry {
            reason: "endpoint gone".into(),
            refresh_endpoint: true,
        }),
        Answer::Fail(retry("503")),
        Answer::Body(vec![Step::Wait(HEAD_SILENCE)]),
    ];
    let (out, _) = run(&cfg, Pacing::default(), script, None).await;
    assert_eq!(*out.stopped(), Stopped::CaughtUp);
    assert_eq!(out.refreshes, 1);
    assert_eq!(out.calls.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// 5. Idle timeout

/// A body that stalls with `--idle-timeout 5s` (shorter than the stall limit) ends the run as
/// idle exactly 5 s after the start, with one call.
#[tokio::test(start_paused = true)]
async fn idle_timeout_ends_a_stalled_body() {
    let cfg = config(&["--idle-timeout", "5s"]);
    let script = vec![Answer::Body(vec![Step::Stall])];
    let (out, _) = run(&cfg, Pacing::default(), script, None).await;
    assert_eq!(*out.stopped(), Stopped::Idle);
    assert_eq!(out.took, ms(5_000));
    assert_eq!(out.calls.len(), 1);
}

/// The idle timeout counts from the last fragment: one arriving at 2 s moves the end to 7 s,
/// and that fragment is kept whole.
#[tokio::test(start_paused = true)]
async fn idle_timeout_counts_from_the_last_fragment() {
    let f = stream(1);
    let cfg = config(&["--start", "earliest", "--idle-timeout", "5s"]);
    let script = vec![Answer::Body(vec![
        Step::Wait(ms(2_000)),
        chunk(&f[0], 1_000),
        Step::Stall,
    ])];
    let (out, _) = run(&cfg, Pacing::default(), script, None).await;
    assert_eq!(*out.stopped(), Stopped::Idle);
    assert_eq!(out.took, ms(7_000));
    assert_eq!(out.in_file, numbers(&[&f[0]]));
}

/// A call that never answers is raced against the idle timeout too.
#[tokio::test(start_paused = true)]
async fn idle_timeout_ends_a_call_that_never_answers() {
    let cfg = config(&["--idle-timeout", "5s"]);
    let (out, _) = run(&cfg, Pacing::default(), vec![Answer::Hang], None).await;
    assert_eq!(*out.stopped(), Stopped::Idle);
    assert_eq!(out.took, ms(5_000));
    assert!(out.in_file.is_empty());
}

/// Empty bodies and pauses between them do not reset the idle clock: polling an idle stream
/// still ends at the timeout, inside the poll pause.
#[tokio::test(start_paused = true)]
async fn idle_timeout_ends_a_poll_pause() {
    let cfg = config(&["--idle-timeout", "5s"]);
    let script = (0..3).map(|_| Answer::Body(vec![])).collect();
    let (out, start) = run(&cfg, Pacing::default(), script, None).await;
    assert_eq!(*out.stopped(), Stopped::Idle);
    assert_eq!(out.took, ms(5_000));
    assert_eq!(out.call_times(start), vec![ms(0), ms(2_000), ms(4_000)]);
}

// ---------------------------------------------------------------------------------------------
// The state, saved beside the loop

/// A raw writer of `every`-long segments in `dir`, named by the server clock.
fn raw_segments(dir: &Path, every: Duration) -> Writer {
    let opts = Options {
        seekable: true,
        faststart: false,
        app: "kvs-dl test".into(),
        stream_tag: ("KVS_STREAM_NAME".into(), "cam1".into()),
    };
    let names = Names::Segments(crate::writer::Segments {
        template: segment_template(dir),
        every,
        stream: "cam1".into(),
        clock: Clock::Server,
    });
    Writer::new(Format::Raw, opts, names, false).unwrap()
}

fn segment_template(dir: &Path) -> String {
    dir.join("%H%M%S.raw").to_string_lossy().into_owned()
}

/// Runs the loop over one body of `f` (10 s behind the head, then the head's silence) into
/// `writer`, saving the state through `saver` when there is one; finishes the output.
async fn run_body(
    cfg: &Config,
    mut writer: Writer,
    f: &[StoredFragment],
    saver: Option<&mut crate::state::Saver>,
) -> Result<Stopped, Error> {
    let mut source = FakeKvs::new(vec![Answer::Body(
        f.iter()
            .map(|f| chunk(f, 10_000))
            .chain([Step::Wait(HEAD_SILENCE)])
            .collect(),
    )]);
    let mut reporter = Recorder::default();
    let (_signals, shutdown) = watch::channel(None);
    let mut download = Download::new(
        cfg,
        "us-west-2",
        &mut source,
        &mut writer,
        &mut reporter,
        shutdown,
        Pacing::default(),
    );
    if let Some(saver) = saver {
        download = download.with_saver(saver);
    }
    let result = download.run().await;
    drop(download);
    writer.finish().unwrap();
    result
}

/// The raw files in `dir`, in name order.
fn raw_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "raw"))
        .collect();
    paths.sort();
    paths
}

/// States are saved on a thread of their own and may lag behind the loop, but a segment takes
/// its final name only once the state through its last fragment is saved: a state that lagged
/// behind a finished file would make the next run write that file's last fragments again.
#[tokio::test(start_paused = true)]
async fn a_segment_is_final_only_once_the_state_names_its_last_fragment() {
    use std::sync::{Arc, Mutex};

    use crate::state::{self, Saver, Store};

    let f = stream(9);
    let cfg = config(&["--start", "earliest", "--end", "now"]);
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("s.json");
    let (store, none) = Store::open(&state_path, Duration::ZERO).await.unwrap();
    assert_eq!(none, None);
    let mut saver = Saver::start(store).unwrap();
    let mut writer = raw_segments(dir.path(), ms(2_000));
    // At each file's finish: the files already final, and the fragment the saved state names.
    let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let barrier = saver.barrier();
    let (at_settle, state_dir) = (Arc::clone(&seen), dir.path().to_owned());
    writer.settle_with(Box::new(move || {
        barrier.wait()?;
        let finals = raw_files(&state_dir).len();
        let saved = state::load(&state_dir.join("s.json")).unwrap();
        let last = saved.map(|s| s.last.fragment_number).unwrap_or_default();
        at_settle.lock().unwrap().push((finals, last));
        Ok(())
    }));
    let result = run_body(&cfg, writer, &f, Some(&mut saver)).await;
    assert_eq!(result.unwrap(), Stopped::CaughtUp);
    saver.flush().unwrap();

    let files: Vec<Vec<String>> = raw_files(dir.path())
        .iter()
        .map(|p| fragments_in(&std::fs::read(p).unwrap()))
        .collect();
    assert!(files.len() >= 4, "2 s segments of 1 s fragments: {files:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), files.len(), "every file waited once");
    for (k, (finals, saved)) in seen.iter().enumerate() {
        assert_eq!(*finals, k, "file {k} was not final yet");
        assert_eq!(
            saved,
            files[k].last().unwrap(),
            "file {k} became final with the state at its last fragment"
        );
    }
}

/// A run killed before its state named a file leaves that file's `.part` behind. A run that
/// holds the state takes the name back: its fragments come again after the state's last one,
/// and no `.part` nobody would finish stays beside a `NAME.1`.
#[tokio::test(start_paused = true)]
async fn a_leftover_part_no_state_names_is_taken_back() {
    let f = stream(4);
    let cfg = config(&["--start", "earliest", "--end", "now"]);
    let dir = tempfile::tempdir().unwrap();
    let first = crate::writer::segment_name(
        &segment_template(dir.path()),
        "cam1",
        Clock::Server,
        &written(&f[0]),
    )
    .unwrap();
    let part = crate::destination::part_path(&first);
    std::fs::write(&part, b"what a killed run left").unwrap();
    let mut writer = raw_segments(dir.path(), ms(60_000));
    writer.reclaim_leftovers().unwrap();
    let result = run_body(&cfg, writer, &f, None).await;
    assert_eq!(result.unwrap(), Stopped::CaughtUp);
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    assert_eq!(left, vec![first.clone()], "one file, under its own name");
    assert_eq!(
        fragments_in(&std::fs::read(&first).unwrap()),
        numbers(&f.iter().collect::<Vec<_>>())
    );
}
