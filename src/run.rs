//! One invocation, end to end: resolve the flags, connect, download, finish the output, report.

use std::io::{IsTerminal, Write};

use clap::CommandFactory;
use tokio::sync::watch;

use std::path::PathBuf;
use std::time::Duration;

use crate::aws::{Failure, Kvs, MediaSource};
use crate::cli::{Invocation, Tool};
use crate::config::{Clock, End, Start};
use crate::ledger::{Ledger, Record};
use crate::listing::{self, Gap, Listed, MAX_FRAGMENT_MS, SETTLE_MS};
use crate::source::{self, archive::Fetcher};
use std::path::Path;

use mkv::Fragment;

use crate::config::{Config, Env, ProgressMode, StreamId, Target};
use crate::destination::part_path;
use crate::download::Stopped;
use crate::download::{Download, Pacing, Signal};
use crate::encoder::Options;
use crate::error::Error;
use crate::progress::{self, FileNamer, FileReport, Report, Reporter, Summary};
use crate::state::{Saver, State, Store};
use crate::writer::{Names, OpenFile, Segments, Writer, finish_leftover, segment_name};

/// Runs the command line and returns the exit code; errors are returned for `main` to render.
pub fn run(invocation: Invocation) -> Result<u8, Error> {
    match invocation.command {
        Some(Tool::List(args)) => return crate::inspect::list(args),
        Some(Tool::Verify(args)) => return crate::inspect::verify(args),
        Some(Tool::Shards(args)) => return crate::fleet::shards(args),
        Some(tool) => return print_tool(tool).map(|()| 0),
        None => {}
    }
    let cli = invocation
        .download
        .expect("clap requires the download flags without a subcommand");
    if crate::fleet::is_fleet(&cli) {
        return crate::fleet::run(cli);
    }
    let now = jiff::Timestamp::now();
    let cfg = Config::resolve(
        cli,
        &Env::from_process(),
        now,
        std::io::stdout().is_terminal(),
    )?;
    init_tracing(cfg.verbose, cfg.progress == ProgressMode::Quiet);
    runtime(&cfg)?.block_on(download(&cfg))
}

/// The async runtime for a run with `cfg`'s outputs.
pub(crate) fn runtime(cfg: &Config) -> Result<tokio::runtime::Runtime, Error> {
    // One thread: the body is read and written in turn, like curl does; a second worker would
    // only add wake-ups between the HTTP connection and the writer. S3 needs workers: its
    // uploads go on while the download does, and a call that waits for one blocks in place.
    match cfg.s3_buckets().is_empty() {
        true => tokio::runtime::Builder::new_current_thread(),
        false => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(2);
            builder
        }
    }
    .enable_all()
    .build()
    .map_err(|e| Error::io("starting the async runtime", e))
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
        Tool::List(_) | Tool::Verify(_) | Tool::Shards(_) => {
            unreachable!("run by crate::inspect and crate::fleet")
        }
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
    let outcome = transfer(cfg, reporter.as_mut(), &mut summary, None).await;
    (summary.exit_code, summary.reason) = match &outcome {
        Ok(stopped) => (stopped.exit_code(), stopped.describe()),
        Err(e) if e.is_broken_pipe() => (0, "the reader of standard output went away".into()),
        Err(e) => (e.exit_code(), e.to_string()),
    };
    reporter.report(&Report::Done(summary));
    outcome.map(|stopped| stopped.exit_code())
}

/// Everything between the flags and the `done` event: taking the state, finishing what a
/// killed run left, connecting, downloading, finishing the output and saving the state. Files
/// are reported as they are finished; the totals go into `summary`, also when an error ends the
/// run. `shared`: the SDK configuration of a fleet, shared by its streams (else one of its own).
pub(crate) async fn transfer(
    cfg: &Config,
    reporter: &mut dyn Reporter,
    summary: &mut Summary,
    shared: Option<aws_config::SdkConfig>,
) -> Result<Stopped, Error> {
    // S3 is checked (credentials, buckets) before anything is downloaded or written.
    let sdk = match cfg.s3_buckets() {
        buckets if buckets.is_empty() => shared,
        buckets => {
            let sdk = match shared {
                Some(sdk) => sdk,
                None => crate::aws::sdk_config(cfg).await?,
            };
            let buckets: Vec<&str> = buckets.iter().map(String::as_str).collect();
            crate::s3::connect(&sdk, &cfg.s3, &buckets).await?;
            Some(sdk)
        }
    };
    // Before any output, so that a second run of the same state touches nothing.
    let (mut store, state) = match &cfg.state_file {
        Some(path) => {
            let (store, state) = Store::open(path, cfg.wait_lock).await?;
            (Some(store), state)
        }
        None => (None, None),
    };
    if let Some(state) = &state {
        check_stream(cfg, state, None)?;
    }
    // Only the state's owner may abort the upload a killed run left: claim it first.
    if state
        .as_ref()
        .and_then(|s| s.file.as_ref())
        .is_some_and(|f| crate::s3::is_s3(&f.path))
    {
        claim(store.as_mut()).await?;
    }
    let rewound;
    let (cfg, state) = match take_over_upload(cfg, state)? {
        TakenOver::Resume(state) => (cfg, *state),
        TakenOver::Rewound(c) => {
            rewound = *c;
            (&rewound, None)
        }
    };
    let opts = encoder_options(cfg);
    let (mut writer, continued) = output_writer(cfg, &opts, state.as_ref())?;
    // Now that this run holds the file it goes on with (a live run holding it made it exit 6).
    claim(store.as_mut()).await?;
    let mut source = match sdk {
        Some(sdk) => Kvs::with_sdk(cfg, sdk),
        None => Kvs::connect(cfg).await?,
    };
    let region = source.region().to_owned();
    let mut files = Vec::new();
    let resume_after = match &state {
        Some(state) => {
            check_stream(cfg, state, Some(&region))?;
            if !continued {
                let store = store.as_mut().expect("a state was loaded");
                finish_left_file(cfg, &region, state, store, &opts, &mut files)?;
            }
            Some(state.last.to_fragment())
        }
        None => None,
    };
    progress::report_files(reporter, summary, files.drain(..));
    let plan = match archived_range(cfg, resume_after.as_ref()) {
        Some(range) => plan_archive(cfg, &mut source, range, resume_after.as_ref()).await?,
        None => None,
    };
    let fetcher = match &plan {
        Some(plan) if plan.parallel => Some(fetcher(cfg, &mut source, plan).await?),
        _ => None,
    };
    let ledger = match &cfg.manifest {
        Some(path) => {
            let mut ledger = Ledger::open(path)
                .map_err(|e| Error::io(format!("opening --manifest {}", path.display()), e))?;
            ledger
                .append(&Record::Run {
                    stream: cfg.stream.display().to_owned(),
                    region: region.clone(),
                    clock: match cfg.clock {
                        Clock::Server => "server".into(),
                        Clock::Producer => "producer".into(),
                    },
                })
                .map_err(|e| Error::io(format!("appending to {}", path.display()), e))?;
            Some(ledger)
        }
        None => None,
    };
    let mut saver = store.map(Saver::start).transpose()?;
    if let Some(saver) = &saver {
        let barrier = saver.barrier();
        writer.settle_with(Box::new(move || barrier.wait()));
        writer
            .reclaim_leftovers()
            .map_err(|e| Error::io("clearing what a killed run left", e))?;
    }
    let mut download = Download::new(
        cfg,
        &region,
        &mut source,
        &mut writer,
        reporter,
        signals(),
        Pacing::from_env(),
    );
    if let Some(last) = resume_after {
        download = download.resume_after(last);
    }
    if let Some(ledger) = ledger {
        download = download.with_ledger(ledger);
    }
    if let Some(saver) = saver.as_mut() {
        download = download.with_saver(saver);
    }
    let result = match plan {
        None => download.run().await,
        Some(plan) => {
            let mut result = Ok(());
            for gap in &plan.gaps {
                result = result.and_then(|()| download.report_gap(gap));
            }
            match (result, fetcher, plan.listed.last()) {
                (Err(e), _, _) => Err(e),
                (Ok(()), Some(fetcher), _) => download.run_archived(fetcher, plan.complete).await,
                (Ok(()), None, None) if plan.complete.is_some() => {
                    Ok(plan.complete.expect("checked"))
                }
                (Ok(()), None, last) => {
                    if let (Some(last), Some(stop)) = (last, plan.complete) {
                        download = download.complete_after(last.number.clone(), stop);
                    }
                    download.run().await
                }
            }
        }
    };
    let result = download.check_complete(result);
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
    // Whatever ended the run, what was committed is whole fragments: make it final, or, for a
    // segment the stream has not reached the end of, leave it for the next run to continue.
    files.extend(writer.take_closed());
    // The saves still under way end before the output does: a run whose state another run
    // took over must not finish what it was writing.
    let flushed = match saver.as_mut() {
        Some(saver) => saver.flush(),
        None => Ok(()),
    };
    let result = match (result, flushed) {
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Err(then)) if then.exit_code() == 6 => Err(then.and_then(e)),
        (result, _) => result,
    };
    // Another run took over the S3 state or upload: nothing more is written.
    let superseded = matches!(&result, Err(e) if e.exit_code() == 6);
    // An S3 object cannot stay open across runs (its parts cannot be read back): it is
    // completed, and the next run's segment gets a suffixed name.
    let keep_open = cfg.state_file.is_some()
        && !s3_output(cfg)
        && writer
            .segment_end_ms()
            .is_some_and(|end| end > reached_ms(cfg, &result, last.as_ref()));
    let open = keep_open.then(|| writer.open_file()).flatten();
    let finished = match (superseded, keep_open) {
        (true, _) => {
            files.extend(writer.abandon());
            Ok(())
        }
        (false, true) => writer.leave_open().map(|closed| files.extend(closed)),
        (false, false) => writer.finish().map(|file| files.extend(file)),
    }
    .map_err(|e| Error::io("finishing the output", e));
    progress::report_files(reporter, summary, files.drain(..));
    let saved_state = match (&mut saver, &last, &finished) {
        (Some(saver), Some(last), Ok(())) if !superseded => {
            match saver.save(State::after(cfg, &region, last, open), None) {
                Ok(()) => saver.flush(),
                Err(e) => Err(e),
            }
        }
        _ => Ok(()),
    };
    // The run's own error first, with a failure to make its output final after it.
    match (result, finished) {
        (Err(e), Err(then)) => Err(e.and_then(then)),
        (result, finished) => {
            let stopped = result?;
            finished?;
            saved_state?;
            Ok(stopped)
        }
    }
}

/// An archived range as ListFragments describes it, and how to fetch it.
struct ArchivePlan {
    listed: Vec<Listed>,
    gaps: Vec<Gap>,
    /// The listing covers the whole range: the run ends this way after its last fragment.
    /// `None`: fragments newer than the listing may still come, through GetMedia.
    complete: Option<Stopped>,
    /// Big enough to fetch over parallel connections.
    parallel: bool,
}

/// Where an archived run's range starts and ends on the `--timestamp-type` clock (`None` at the
/// start: the earliest fragment), when it is one: `--start earliest` or a past time (or a
/// state to resume), and `--end` a time (`now` included).
fn archived_range(cfg: &Config, resume: Option<&Fragment>) -> Option<(Option<i64>, i64)> {
    let Some(End::Time(end)) = &cfg.stop.end else {
        return None;
    };
    let start = match (resume, &cfg.start) {
        (Some(last), _) => Some(cfg.clock.of(last)),
        (None, Start::Earliest) => None,
        (None, Start::Time(t)) => Some(t.as_millisecond()),
        _ => return None,
    };
    Some((start, end.as_millisecond()))
}

/// `KVS_DL_ARCHIVE_SCALE` (a test and benchmark knob): scales the sizes that decide when a
/// range is fetched in parallel (25 MB) and how big its batches are (64 MB).
fn archive_scale() -> f64 {
    std::env::var("KVS_DL_ARCHIVE_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0)
}

const PARALLEL_MIN_BYTES: f64 = 25e6;
const BATCH_BYTES: f64 = 64e6;

/// Lists the range. A listing that fails is not fatal: the run goes on with GetMedia alone,
/// which reports a real problem (a missing stream, refused credentials) itself.
async fn plan_archive(
    cfg: &Config,
    source: &mut Kvs,
    (start, end): (Option<i64>, i64),
    resume: Option<&Fragment>,
) -> Result<Option<ArchivePlan>, Error> {
    let listed_at = jiff::Timestamp::now().as_millisecond();
    let from = start.map_or(0, |s| s.saturating_sub(MAX_FRAGMENT_MS));
    let listed = match source.list_fragments(cfg.clock, from, end).await {
        Ok(listed) => listed,
        Err(Failure::Retry { reason, .. }) => {
            tracing::debug!(%reason, "listing failed: one GetMedia session instead");
            return Ok(None);
        }
        Err(Failure::Fatal(e) | Failure::Expired(e)) => {
            tracing::debug!(error = %e, "listing failed: one GetMedia session instead");
            return Ok(None);
        }
    };
    let mut listed = listing::trim(listed, cfg.clock, start, Some(end));
    if let Some(last) = resume {
        listed.retain(|f| mkv::cmp_fragment_numbers(&f.number, &last.number).is_gt());
    }
    // Complete when nothing newer can still come: the end is long past on the server clock,
    // or the stream's newest listed fragment ended long before the listing (idle).
    let end_settled = cfg.clock == Clock::Server && end + SETTLE_MS <= listed_at;
    // A producer still sending would have finished its next fragment within about the longest
    // fragment listed, and the service lists it within about a second.
    let longest = listed
        .iter()
        .map(|f| f.duration_ms as i64)
        .max()
        .unwrap_or(0);
    let settle = longest.clamp(1_000, MAX_FRAGMENT_MS) + 2_000;
    let idle = listed
        .last()
        .is_some_and(|f| f.end(Clock::Server) + settle <= listed_at);
    let complete = if end_settled {
        Some(Stopped::End)
    } else if idle {
        Some(Stopped::CaughtUp)
    } else {
        None
    };
    let bytes: u64 = listed.iter().map(|f| f.bytes).sum();
    let parallel = cfg.parallel > 1 && bytes as f64 > PARALLEL_MIN_BYTES * archive_scale();
    tracing::debug!(
        fragments = listed.len(),
        bytes,
        parallel,
        complete = ?complete,
        "listed the range"
    );
    Ok(Some(ArchivePlan {
        gaps: listing::gaps(&listed, cfg.clock),
        listed,
        complete,
        parallel,
    }))
}

/// The parallel fetch of a plan, spooling beside the output.
async fn fetcher(cfg: &Config, source: &mut Kvs, plan: &ArchivePlan) -> Result<Fetcher, Error> {
    let archive = source.archive().await.map_err(|f| match f {
        Failure::Fatal(e) | Failure::Expired(e) => e,
        Failure::Retry { reason, .. } => Error::RetriesExhausted {
            attempts: 1,
            last: reason,
        },
    })?;
    let scale = archive_scale();
    let batches = listing::batches(
        &plan.listed,
        (PARALLEL_MIN_BYTES * scale) as u64,
        (BATCH_BYTES * scale) as u64,
    );
    let (dir, prefix) = spool_place(cfg);
    source::archive::remove_stale(&dir, &prefix);
    let pacing = Pacing::from_env();
    let scale = std::env::var("KVS_DL_BACKOFF_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(1.0);
    Ok(Fetcher::new(
        archive,
        &plan.listed,
        batches,
        cfg.parallel,
        cfg.max_retries,
        source::archive::Timing {
            backoff_base: pacing.backoff_base,
            backoff_max: pacing.backoff_max,
            not_found_base: Duration::from_secs(1).mul_f64(scale),
            stall: pacing.stall,
        },
        (dir, prefix),
    ))
}

/// Where a run's spools go: beside the output (the same disk), named after it.
fn spool_place(cfg: &Config) -> (PathBuf, String) {
    let templated = |p: &Path| {
        let s = p.to_string_lossy();
        s.contains('%') || s.contains('{')
    };
    match &cfg.output.target {
        Target::File(path) if !crate::s3::is_s3(path) => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty() && !templated(p))
                .map(Path::to_path_buf)
                .or_else(|| {
                    cfg.state_file
                        .as_deref()
                        .and_then(Path::parent)
                        .filter(|p| !p.as_os_str().is_empty())
                        .map(Path::to_path_buf)
                })
                .unwrap_or_else(|| PathBuf::from("."));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().replace(['%', '{', '}', '/'], "_"))
                .unwrap_or_default();
            (parent, format!(".kvs-dl-spool.{name}."))
        }
        Target::Stdout => (
            std::env::temp_dir(),
            format!(
                ".kvs-dl-spool.stdout-{}-{}.",
                std::process::id(),
                cfg.stream.name()
            ),
        ),
        // S3: the machine's temporary folder (the output has no disk of its own).
        Target::File(_) => (
            std::env::temp_dir(),
            format!(
                ".kvs-dl-spool.s3-{}-{}.",
                std::process::id(),
                cfg.stream.name()
            ),
        ),
    }
}

/// How far the stream is known to reach when the run stops, on the `--timestamp-type` clock:
/// the live edge when it caught up, else the last fragment it saw.
fn reached_ms(cfg: &Config, result: &Result<Stopped, Error>, last: Option<&Fragment>) -> i64 {
    let last = last.map_or(i64::MIN, |f| cfg.clock.of(f));
    match result {
        Ok(Stopped::CaughtUp) => jiff::Timestamp::now().as_millisecond().max(last),
        Ok(Stopped::End) => match &cfg.stop.end {
            Some(crate::config::End::Time(t)) => t.as_millisecond().max(last),
            _ => last,
        },
        _ => last,
    }
}

async fn claim(store: Option<&mut Store>) -> Result<(), Error> {
    match store {
        Some(store) => store.claim().await,
        None => Ok(()),
    }
}

/// Whether `-o` is an S3 object (or template).
fn s3_output(cfg: &Config) -> bool {
    matches!(&cfg.output.target, Target::File(path) if crate::s3::is_s3(path))
}

/// What a run does with the state it loaded.
enum TakenOver {
    /// Go on after the state's last fragment.
    Resume(Box<Option<State>>),
    /// The S3 object a killed run was writing was never completed; its upload is aborted and its
    /// fragments are taken again, from its first one.
    Rewound(Box<Config>),
}

/// Deals with the S3 upload a killed run left, if the state records one.
fn take_over_upload(cfg: &Config, state: Option<State>) -> Result<TakenOver, Error> {
    let Some(mut state) = state else {
        return Ok(TakenOver::Resume(Box::new(None)));
    };
    let Some(file) = state.file.as_ref().filter(|f| crate::s3::is_s3(&f.path)) else {
        return Ok(TakenOver::Resume(Box::new(Some(state))));
    };
    let left = crate::destination::s3::take_over(&file.path, file.upload.as_ref())
        .map_err(|e| Error::io(format!("taking over {}", file.path.display()), e))?;
    match left {
        crate::destination::s3::Leftover::Completed => {
            state.file = None;
            Ok(TakenOver::Resume(Box::new(Some(state))))
        }
        crate::destination::s3::Leftover::Aborted => {
            tracing::debug!(
                object = %file.path.display(),
                first = %file.first.fragment_number,
                "an unfinished S3 object: its fragments are taken again"
            );
            Ok(TakenOver::Rewound(Box::new(Config {
                start: Start::Fragment(file.first.fragment_number.clone()),
                ..cfg.clone()
            })))
        }
    }
}

/// Refuses a state written for another stream (or, once the region is known, another region).
fn check_stream(cfg: &Config, state: &State, region: Option<&str>) -> Result<(), Error> {
    let Some(theirs) = state.mismatch(cfg, region) else {
        return Ok(());
    };
    let path = cfg.state_file.as_deref().expect("a state was loaded");
    Err(Error::usage(
        format!(
            "--state-file {} belongs to {theirs}, not stream {}{}",
            path.display(),
            cfg.stream.display(),
            region.map(|r| format!(" in {r}")).unwrap_or_default(),
        ),
        Some("give each stream its own state file".into()),
    ))
}

/// Finishes the file the run that saved `state` left open, when this run does not go on with
/// it, and records that it is finished.
fn finish_left_file(
    cfg: &Config,
    region: &str,
    state: &State,
    store: &mut Store,
    opts: &Options,
    files: &mut Vec<FileReport>,
) -> Result<(), Error> {
    let Some(file) = &state.file else {
        return Ok(());
    };
    let last = state.last.to_fragment();
    files.extend(finish_leftover(opts, file, &last).map_err(|e| leftover_error(file, e))?);
    store.save(&State::after(cfg, region, &last, None), None)
}

fn leftover_error(file: &OpenFile, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::ResourceBusy {
        // Another run is writing it right now (only an S3 state lets two runs get this far).
        return Error::Locked {
            lock: part_path(&file.path),
        };
    }
    Error::io(
        format!(
            "finishing {} left by an earlier run",
            part_path(&file.path).display()
        ),
        e,
    )
}

/// How files are labelled and laid out.
fn encoder_options(cfg: &Config) -> Options {
    Options {
        seekable: matches!(cfg.output.target, Target::File(_)),
        faststart: cfg.output.faststart,
        app: format!("kvs-dl {}", env!("CARGO_PKG_VERSION")),
        stream_tag: match &cfg.stream {
            StreamId::Arn(arn) => ("KVS_STREAM_ARN".into(), arn.clone()),
            StreamId::Name(name) => ("KVS_STREAM_NAME".into(), name.clone()),
        },
    }
}

/// The writer for `-o`, `--format` and `--segment`, and whether it goes on with the file
/// the last run left open (a segment not over yet, or the file of a killed run).
fn output_writer(
    cfg: &Config,
    opts: &Options,
    state: Option<&State>,
) -> Result<(Writer, bool), Error> {
    let names = || match (&cfg.output.target, cfg.output.segment) {
        (Target::Stdout, _) => Names::Stdout,
        (Target::File(path), None) => Names::File(path.clone()),
        (Target::File(template), Some(every)) => Names::Segments(Segments {
            template: template.to_string_lossy().into_owned(),
            every,
            stream: cfg.stream.name().to_owned(),
            clock: cfg.clock,
        }),
    };
    let format = cfg.output.format;
    let force = cfg.output.force;
    if let Some(state) = state
        && let Some(file) = &state.file
        && Writer::writes(&names(), format, file)
    {
        let last = state.last.to_fragment();
        if let Some(writer) = Writer::continuing(opts.clone(), names(), force, file, &last)
            .map_err(|e| leftover_error(file, e))?
        {
            return Ok((writer, true));
        }
    }
    let writer = Writer::new(format, opts.clone(), names(), force).map_err(|e| {
        let Target::File(path) = &cfg.output.target else {
            return Error::io("preparing standard output", e);
        };
        match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::usage(
                format!("{} already exists", path.display()),
                Some("give --force to replace it, or another -o".into()),
            ),
            std::io::ErrorKind::ResourceBusy => Error::Locked {
                lock: part_path(path),
            },
            _ => Error::io(format!("preparing {}", path.display()), e),
        }
    })?;
    Ok((writer, false))
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
pub(crate) fn init_tracing(verbose: u8, quiet: bool) {
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
