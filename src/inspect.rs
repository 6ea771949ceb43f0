//! `kvs-dl list` and `kvs-dl verify`: the archive as ListFragments describes it, without
//! downloading, and a `--manifest` held against it.
//!
//! Both resolve their stream, account and range flags through [`Config::resolve`], so they
//! accept exactly what a download accepts and refuse it with the same messages and exit codes.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser as _;
use serde_json::json;

use crate::aws::{Failure, Kvs};
use crate::cli::{AccountArgs, Cli, ClockArg, ListArgs, VerifyArgs};
use crate::config::{Clock, Config, End, Env, Start, StreamId, stream_name_of};
use crate::download::Pacing;
use crate::error::Error;
use crate::ledger::{self, Record};
use crate::listing::{self, Gap, Listed, MAX_FRAGMENT_MS};

/// Exit code of `verify` when the files lack fragments the stream lists (as a download's).
pub const INCOMPLETE: u8 = 7;

/// `kvs-dl list`: prints the range's fragments and gaps. Exit codes as for a download.
pub fn list(args: ListArgs) -> Result<u8, Error> {
    let stream = match (&args.stream_name, &args.stream_arn) {
        (Some(name), _) => StreamId::Name(name.clone()),
        (None, Some(arn)) => StreamId::Arn(arn.clone()),
        (None, None) => unreachable!("clap requires a stream flag"),
    };
    let cfg = range_config(
        &stream,
        &args.account,
        &args.start,
        &args.end,
        args.timestamp_type,
    )?;
    let start = match &cfg.start {
        Start::Earliest => None,
        Start::Time(t) => Some(t.as_millisecond()),
        _ => {
            return Err(Error::usage(
                format!("list cannot start at '{}'", args.start),
                Some("give --start earliest, a time or a relative time such as -1h".into()),
            ));
        }
    };
    let Some(End::Time(end)) = &cfg.stop.end else {
        return Err(Error::usage(
            format!("list cannot end at '{}'", args.end),
            Some("give --end now, a time or a relative time such as -5m".into()),
        ));
    };
    let end = end.as_millisecond();
    crate::run::init_tracing(cfg.verbose, args.account.quiet);
    let listed = runtime()?.block_on(async {
        let mut kvs = Kvs::connect(&cfg).await?;
        list_range(&mut kvs, cfg.clock, start, end, cfg.max_retries).await
    })?;
    let gaps = listing::gaps(&listed, cfg.clock);
    let out = if args.json {
        list_json(&listed, &gaps, cfg.clock)
    } else {
        list_table(&listed, &gaps, cfg.clock)
    };
    print(&out)?;
    Ok(0)
}

/// Lists `[start, end)` on `clock` as a download does (the fragment containing `start` is in,
/// the first at or after `end` is not), retrying as a download retries.
async fn list_range(
    kvs: &mut Kvs,
    clock: Clock,
    start: Option<i64>,
    end: i64,
    max_retries: u32,
) -> Result<Vec<Listed>, Error> {
    // ListFragments returns the fragments that start in the range: widen it by the longest
    // fragment so that the one containing `start` is among them.
    let from = start.map_or(0, |s| s.saturating_sub(MAX_FRAGMENT_MS));
    let pacing = Pacing::from_env();
    let mut failures = 0u32;
    let mut expired = false;
    loop {
        let reason = match kvs.list_fragments(clock, from, end).await {
            Ok(listed) => return Ok(listing::trim(listed, clock, start, Some(end))),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Expired(e)) if expired => return Err(e),
            Err(Failure::Expired(_)) => {
                expired = true;
                kvs.forget_list_endpoint();
                continue;
            }
            Err(Failure::Retry {
                reason,
                refresh_endpoint,
            }) => {
                if refresh_endpoint {
                    kvs.forget_list_endpoint();
                }
                reason
            }
        };
        failures += 1;
        if failures > max_retries {
            return Err(Error::RetriesExhausted {
                attempts: failures,
                last: reason,
            });
        }
        let step = pacing
            .backoff_base
            .saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(pacing.backoff_max);
        let jitter = f64::from(jiff::Timestamp::now().subsec_nanosecond().unsigned_abs() % 1000);
        let wait = step.mul_f64(0.5 + jitter / 2000.0);
        tracing::warn!(%reason, attempt = failures, "ListFragments failed; trying again in {wait:?}");
        tokio::time::sleep(wait.max(Duration::from_millis(200))).await;
    }
}

fn list_table(listed: &[Listed], gaps: &[Gap], clock: Clock) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<48}  {:<24}  {:<24}  {:>10}  {:>10}",
        "FRAGMENT", "SERVER TIME", "PRODUCER TIME", "DURATION", "BYTES"
    );
    let gap_count = gaps.len();
    let mut gaps = gaps.iter().peekable();
    for f in listed {
        while let Some(gap) = gaps.next_if(|g| g.before_fragment.as_deref() == Some(&f.number)) {
            let _ = writeln!(
                out,
                "-- gap of {} ({} clock): no fragments from {} to {}",
                seconds(gap.to_ms - gap.from_ms),
                clock_name(clock),
                time(gap.from_ms),
                time(gap.to_ms),
            );
        }
        let _ = writeln!(
            out,
            "{:<48}  {:<24}  {:<24}  {:>10}  {:>10}",
            f.number,
            time(f.server_timestamp_ms),
            time(f.producer_timestamp_ms),
            seconds(f.duration_ms as i64),
            f.bytes
        );
    }
    let bytes: u64 = listed.iter().map(|f| f.bytes).sum();
    let media: u64 = listed.iter().map(|f| f.duration_ms).sum();
    let _ = writeln!(
        out,
        "{} fragment{}, {} bytes, {} of media, {} gap{}",
        listed.len(),
        plural(listed.len()),
        bytes,
        seconds(media as i64),
        gap_count,
        plural(gap_count),
    );
    out
}

fn list_json(listed: &[Listed], gaps: &[Gap], clock: Clock) -> String {
    let mut out = String::new();
    let mut gaps = gaps.iter().peekable();
    for f in listed {
        while let Some(gap) = gaps.next_if(|g| g.before_fragment.as_deref() == Some(&f.number)) {
            let _ = writeln!(out, "{}", gap_json(gap, clock));
        }
        let _ = writeln!(
            out,
            "{}",
            json!({
                "kind": "fragment",
                "number": f.number,
                "server_timestamp_ms": f.server_timestamp_ms,
                "producer_timestamp_ms": f.producer_timestamp_ms,
                "duration_ms": f.duration_ms,
                "bytes": f.bytes,
            })
        );
    }
    out
}

fn gap_json(gap: &Gap, clock: Clock) -> serde_json::Value {
    json!({
        "kind": "gap",
        "clock": clock_name(clock),
        "from_ms": gap.from_ms,
        "to_ms": gap.to_ms,
        "after_fragment": gap.after_fragment,
        "before_fragment": gap.before_fragment,
    })
}

/// One fragment as a manifest records it.
#[derive(Debug, Clone)]
struct Saved {
    file: PathBuf,
    server_ms: i64,
    producer_ms: i64,
}

impl Saved {
    fn at(&self, clock: Clock) -> i64 {
        match clock {
            Clock::Server => self.server_ms,
            Clock::Producer => self.producer_ms,
        }
    }
}

/// What `verify` found wrong with one fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finding {
    /// The stream lists it; the manifest does not hold it.
    NotInManifest,
    /// The manifest holds it, but its file is gone.
    FileMissing(PathBuf),
    /// The manifest holds it; the stream no longer lists it.
    Unlisted(PathBuf),
}

/// `kvs-dl verify --manifest PATH`: exit 0 when the files hold every fragment the stream lists
/// in the range, 7 when some are missing.
pub fn verify(args: VerifyArgs) -> Result<u8, Error> {
    let records = match ledger::read(&args.manifest) {
        Ok(records) => records,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::usage(
                format!("--manifest {} does not exist", args.manifest.display()),
                Some("give the file a download wrote with --manifest PATH".into()),
            ));
        }
        Err(e) => {
            return Err(Error::io(
                format!("reading --manifest {}", args.manifest.display()),
                e,
            ));
        }
    };
    let wanted = args.stream_name.clone().or_else(|| args.stream_arn.clone());
    let ManifestStream {
        stream,
        region,
        saved,
    } = manifest_stream(&records, wanted.as_deref(), &args.manifest)?;
    let stream = match (&args.stream_name, &args.stream_arn) {
        (Some(name), _) => StreamId::Name(name.clone()),
        (None, Some(arn)) => StreamId::Arn(arn.clone()),
        (None, None) if stream.starts_with("arn:") => StreamId::Arn(stream),
        (None, None) => StreamId::Name(stream),
    };
    let mut account = args.account.clone();
    if account.region.is_none() && !matches!(stream, StreamId::Arn(_)) {
        account.region = region;
    }
    let cfg = range_config(
        &stream,
        &account,
        args.start.as_deref().unwrap_or("earliest"),
        args.end.as_deref().unwrap_or("now"),
        args.timestamp_type,
    )?;
    let clock = cfg.clock;
    if saved.is_empty() && (args.start.is_none() || args.end.is_none()) {
        return Err(Error::usage(
            format!(
                "--manifest {} holds no fragment of stream {}",
                args.manifest.display(),
                stream.display()
            ),
            Some("give --start and --end to check a range against it".into()),
        ));
    }
    let start = match (&args.start, &cfg.start) {
        (None, _) => saved.values().map(|s| s.at(clock)).min(),
        (Some(_), Start::Earliest) => None,
        (Some(_), Start::Time(t)) => Some(t.as_millisecond()),
        (Some(given), _) => {
            return Err(Error::usage(
                format!("verify cannot start at '{given}'"),
                Some("give --start earliest, a time or a relative time such as -1h".into()),
            ));
        }
    };
    let end = match (&args.end, &cfg.stop.end) {
        (None, _) => saved
            .values()
            .map(|s| s.at(clock))
            .max()
            .expect("checked: not empty")
            .saturating_add(1),
        (Some(_), Some(End::Time(t))) => t.as_millisecond(),
        (Some(given), _) => {
            return Err(Error::usage(
                format!("verify cannot end at '{given}'"),
                Some("give --end now, a time or a relative time such as -5m".into()),
            ));
        }
    };
    crate::run::init_tracing(cfg.verbose, args.account.quiet);
    let listed = runtime()?.block_on(async {
        let mut kvs = Kvs::connect(&cfg).await?;
        list_range(&mut kvs, clock, start, end, cfg.max_retries).await
    })?;
    let gaps = listing::gaps(&listed, clock);

    // Files are looked up as written (relative to where the download ran, which is usually
    // where verify runs), then beside the manifest.
    let base = args
        .manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut exists: HashMap<PathBuf, bool> = HashMap::new();
    let mut present = |file: &Path| {
        *exists.entry(file.to_owned()).or_insert_with(|| {
            let found = |p: &Path| p.exists() || crate::destination::part_path(p).exists();
            file == Path::new("-") || found(file) || (file.is_relative() && found(&base.join(file)))
        })
    };
    let mut findings: Vec<(String, Option<&Listed>, Finding)> = Vec::new();
    let mut held = 0usize;
    for f in &listed {
        match saved.get(&f.number) {
            None => findings.push((f.number.clone(), Some(f), Finding::NotInManifest)),
            Some(s) if !present(&s.file) => findings.push((
                f.number.clone(),
                Some(f),
                Finding::FileMissing(s.file.clone()),
            )),
            Some(_) => held += 1,
        }
    }
    let listed_numbers: std::collections::HashSet<&str> =
        listed.iter().map(|f| f.number.as_str()).collect();
    for (number, s) in &saved {
        let at = s.at(clock);
        if start.is_none_or(|t| at >= t) && at < end && !listed_numbers.contains(number.as_str()) {
            findings.push((number.clone(), None, Finding::Unlisted(s.file.clone())));
        }
    }
    let missing = findings
        .iter()
        .filter(|(_, _, f)| !matches!(f, Finding::Unlisted(_)))
        .count();
    let unlisted = findings.len() - missing;
    let code = if missing > 0 { INCOMPLETE } else { 0 };
    let files: std::collections::BTreeSet<&Path> = listed
        .iter()
        .filter_map(|f| saved.get(&f.number))
        .map(|s| s.file.as_path())
        .collect();

    let mut out = String::new();
    if args.json {
        for (number, f, finding) in &findings {
            let mut v = json!({
                "kind": match finding {
                    Finding::Unlisted(_) => "unlisted",
                    _ => "missing",
                },
                "number": number,
                "reason": match finding {
                    Finding::NotInManifest => "not_in_manifest",
                    Finding::FileMissing(_) => "file_missing",
                    Finding::Unlisted(_) => "not_listed_by_stream",
                },
            });
            if let Some(f) = f {
                v["server_timestamp_ms"] = f.server_timestamp_ms.into();
                v["producer_timestamp_ms"] = f.producer_timestamp_ms.into();
                v["bytes"] = f.bytes.into();
            }
            if let Finding::FileMissing(file) | Finding::Unlisted(file) = finding {
                v["file"] = file.to_string_lossy().into();
            }
            let _ = writeln!(out, "{v}");
        }
        let _ = writeln!(
            out,
            "{}",
            json!({
                "kind": "summary",
                "stream": stream.display(),
                "clock": clock_name(clock),
                "start_ms": start,
                "end_ms": end,
                "listed": listed.len(),
                "held": held,
                "missing": missing,
                "unlisted": unlisted,
                "gaps": gaps.len(),
                "files": files.len(),
                "complete": missing == 0,
                "exit_code": code,
            })
        );
    } else {
        let _ = writeln!(
            out,
            "stream {}, {} clock, {} to {}",
            stream.display(),
            clock_name(clock),
            start.map_or("earliest".into(), time),
            time(end),
        );
        let _ = writeln!(
            out,
            "{} fragment{} listed, {} gap{}; {} held in {} file{} of the manifest",
            listed.len(),
            plural(listed.len()),
            gaps.len(),
            plural(gaps.len()),
            held,
            files.len(),
            plural(files.len()),
        );
        for (number, f, finding) in &findings {
            let when = f.map_or(String::new(), |f| {
                format!(" (server time {})", time(f.server_timestamp_ms))
            });
            let _ = match finding {
                Finding::NotInManifest => {
                    writeln!(out, "missing {number}{when}: not in the manifest")
                }
                Finding::FileMissing(file) => writeln!(
                    out,
                    "missing {number}{when}: its file {} is gone",
                    file.display()
                ),
                Finding::Unlisted(file) => writeln!(
                    out,
                    "unlisted {number}: in {} but the stream no longer lists it (expired or deleted)",
                    file.display()
                ),
            };
        }
        let _ = match missing {
            0 => writeln!(out, "complete"),
            n => writeln!(out, "incomplete: {n} fragment{} missing", plural(n)),
        };
    }
    print(&out)?;
    if missing > 0 && !args.json {
        eprintln!(
            "kvs-dl: incomplete: the files lack {missing} fragment{} the stream lists",
            plural(missing)
        );
    }
    Ok(code)
}

/// The stream a manifest names (or `wanted` among several), its region, and the fragments
/// written for it: by number, the last record of each (a rerun after a kill may write one
/// again).
fn manifest_stream(
    records: &[Record],
    wanted: Option<&str>,
    manifest: &Path,
) -> Result<ManifestStream, Error> {
    let same = |a: &str, b: &str| a == b || stream_name_of(a) == stream_name_of(b);
    let mut streams: Vec<String> = Vec::new();
    for r in records {
        if let Record::Run { stream, .. } = r
            && !streams.iter().any(|s| s == stream)
        {
            streams.push(stream.clone());
        }
    }
    let chosen = match wanted {
        Some(w) => streams
            .iter()
            .find(|s| same(s, w))
            .cloned()
            .unwrap_or_else(|| w.to_owned()),
        None => match streams.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(Error::usage(
                    format!("--manifest {} holds no run record", manifest.display()),
                    Some("give the file a download wrote with --manifest PATH".into()),
                ));
            }
            many => {
                return Err(Error::usage(
                    format!(
                        "--manifest {} names several streams: {}",
                        manifest.display(),
                        many.join(", ")
                    ),
                    Some("choose one with --stream-name or --stream-arn".into()),
                ));
            }
        },
    };
    let mut region = None;
    let mut current = false;
    let mut saved = BTreeMap::new();
    for r in records {
        match r {
            Record::Run {
                stream, region: r, ..
            } => {
                current = same(stream, &chosen);
                if current {
                    region = Some(r.clone());
                }
            }
            Record::Fragment {
                file,
                number,
                server_timestamp_ms,
                producer_timestamp_ms,
                ..
            } if current => {
                saved.insert(
                    number.clone(),
                    Saved {
                        file: file.clone(),
                        server_ms: *server_timestamp_ms,
                        producer_ms: *producer_timestamp_ms,
                    },
                );
            }
            _ => {}
        }
    }
    Ok(ManifestStream {
        stream: chosen,
        region,
        saved,
    })
}

/// One stream's part of a manifest.
struct ManifestStream {
    stream: String,
    region: Option<String>,
    saved: BTreeMap<String, Saved>,
}

/// A download's `Config` for the stream, account and range flags, resolved as a download
/// resolves them (the same checks, messages and exit codes). The output is a placeholder:
/// nothing is written.
fn range_config(
    stream: &StreamId,
    account: &AccountArgs,
    start: &str,
    end: &str,
    clock: ClockArg,
) -> Result<Config, Error> {
    let mut argv: Vec<String> = vec!["kvs-dl".into()];
    let mut flag = |name: &str, value: &str| {
        argv.push(format!("--{name}"));
        argv.push(value.to_owned());
    };
    match stream {
        StreamId::Name(name) => flag("stream-name", name),
        StreamId::Arn(arn) => flag("stream-arn", arn),
    }
    flag("output", "kvs-dl-placeholder.mkv");
    flag("start", start);
    flag("end", end);
    flag(
        "timestamp-type",
        match clock {
            ClockArg::Server => "server",
            ClockArg::Producer => "producer",
        },
    );
    flag("max-retries", &account.max_retries.to_string());
    for (name, value) in [
        ("region", &account.region),
        ("profile", &account.profile),
        ("role-arn", &account.role_arn),
        ("role-session-name", &account.role_session_name),
        ("endpoint-url", &account.endpoint_url),
    ] {
        if let Some(value) = value {
            flag(name, value);
        }
    }
    if account.quiet {
        argv.push("--quiet".into());
    }
    for _ in 0..account.verbose {
        argv.push("--verbose".into());
    }
    let cli = Cli::try_parse_from(&argv).map_err(|e| Error::usage(e.to_string(), None))?;
    Config::resolve(cli, &Env::from_process(), jiff::Timestamp::now(), false)
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))
}

fn print(text: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::io("writing to standard output", e))
}

/// RFC 3339 in UTC with milliseconds, fixed width.
fn time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or(ms.to_string(), |t| {
        t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    })
}

fn seconds(ms: i64) -> String {
    format!("{}.{:03}s", ms / 1000, (ms % 1000).abs())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn clock_name(clock: Clock) -> &'static str {
    match clock {
        Clock::Server => "server",
        Clock::Producer => "producer",
    }
}
