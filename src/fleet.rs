//! A fleet: many streams in one run, and the shards of a fleet over many runs.
//!
//! Each stream is an ordinary run ([`crate::run::transfer`]) with its own [`Config`]: the flags
//! of the command line with the stream, `{stream}` in `-o` and `--manifest`, and its own state
//! in `--state-dir`. The streams share one SDK configuration (one credential cache, one HTTP
//! connection pool); the service's limits stay per stream, as each stream's source keeps them.
//! At most `--max-concurrent` run at a time. A stream that fails ends alone; the run's exit code
//! says whether all of them succeeded.
//!
//! Shards: N identical processes, each given K, each take the streams whose
//! [`fnv1a64`] hash of the stream name, mod N, is K. The hash is frozen: changing it moves
//! streams between shards.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use tracing::Instrument;

use crate::cli::{Cli, ShardsArgs};
use crate::config::{Config, Env, ProgressMode, StreamId, Target, parse_stream, stream_name_of};
use crate::error::Error;
use crate::progress::{self, StreamResult, Summary};

/// The exit code of a fleet in which some streams failed (each stream's own code is in its
/// `stream_done` event, the `done` event and the table).
pub const SOME_FAILED: u8 = 8;

/// The variables a scheduler passes a shard's index in, in the order they are read:
/// Kubernetes Indexed Jobs, AWS Batch array jobs, Nomad.
pub const INDEX_VARS: [&str; 3] = [
    "JOB_COMPLETION_INDEX",
    "AWS_BATCH_JOB_ARRAY_INDEX",
    "NOMAD_ALLOC_INDEX",
];

/// FNV-1a, 64 bits: offset basis 0xcbf29ce484222325, prime 0x100000001b3; for each byte,
/// XOR it in, then multiply (wrapping). Frozen: docs/cli.md gives test vectors.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The shard of `stream` (a name, or an ARN: its name is hashed) among `count`.
pub fn shard_of(stream: &str, count: u32) -> u32 {
    (fnv1a64(stream_name_of(stream).as_bytes()) % u64::from(count)) as u32
}

/// Shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub fn holds(&self, stream: &str) -> bool {
        shard_of(stream, self.count) == self.index
    }
}

/// `--shard K/N`, or `--shard-count N` with K from the first of [`INDEX_VARS`] that is set.
pub fn resolve_shard(
    shard: Option<&str>,
    count: Option<u32>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Shard>, Error> {
    let bad = |why: String| {
        Error::usage(
            why,
            Some("give --shard K/N with 0 <= K < N, e.g. --shard 0/4".into()),
        )
    };
    match (shard, count) {
        (Some(text), _) => {
            let parsed = text
                .split_once('/')
                .and_then(|(k, n)| Some((k.parse::<u32>().ok()?, n.parse::<u32>().ok()?)));
            match parsed {
                Some((index, count)) if count > 0 && index < count => {
                    Ok(Some(Shard { index, count }))
                }
                _ => Err(bad(format!("invalid value '{text}' for --shard"))),
            }
        }
        (None, Some(count)) => {
            let Some((name, value)) = INDEX_VARS
                .iter()
                .find_map(|name| var(name).filter(|v| !v.is_empty()).map(|v| (name, v)))
            else {
                return Err(Error::usage(
                    "--shard-count needs the shard's index, and none of JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX or NOMAD_ALLOC_INDEX is set",
                    Some("run it as an indexed job, or give --shard K/N".into()),
                ));
            };
            match value.trim().parse::<u32>() {
                Ok(index) if index < count => Ok(Some(Shard { index, count })),
                _ => Err(Error::usage(
                    format!("{name}={value} is not a shard of --shard-count {count}"),
                    Some(format!(
                        "make --shard-count the number of indexes (completions, array size, count): more than {value}"
                    )),
                )),
            }
        }
        (None, None) => Ok(None),
    }
}

/// Whether these flags make a fleet rather than a run of one stream.
pub fn is_fleet(cli: &Cli) -> bool {
    cli.stream_name.len() + cli.stream_arn.len() > 1
        || cli.streams_from.is_some()
        || cli.streams_matching.is_some()
        || cli.state_dir.is_some()
        || cli.shard.is_some()
        || cli.shard_count.is_some()
        || cli.max_concurrent.is_some()
}

/// A stream list: one name or ARN a line; blank lines and `#` comments are skipped. Each is
/// checked as `--stream-name`/`--stream-arn` are; `origin` names the list in errors.
pub fn parse_list(text: &str, origin: &str) -> Result<Vec<String>, Error> {
    let mut streams = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        parse_stream(line).map_err(|e| {
            Error::usage(
                format!("{origin} line {}: {e}", n + 1),
                Some("one stream name or ARN a line; # starts a comment".into()),
            )
        })?;
        streams.push(line.to_owned());
    }
    Ok(streams)
}

/// Reads `--streams-from FILE` (`-`: standard input).
pub fn read_list(path: &Path) -> Result<Vec<String>, Error> {
    let mut text = String::new();
    let origin = match path.as_os_str() == "-" {
        true => {
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Error::io("reading --streams-from - (standard input)", e))?;
            "standard input".to_owned()
        }
        false => {
            text = std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("reading --streams-from {}", path.display()), e))?;
            path.display().to_string()
        }
    };
    parse_list(&text, &origin)
}

/// The fleet's streams once each, in the order given. The same stream twice is taken once; two
/// different streams with one name (two regions) cannot share `{stream}` outputs and states.
pub fn distinct(streams: Vec<String>) -> Result<Vec<String>, Error> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for stream in streams {
        let name = stream_name_of(&stream).to_owned();
        match seen.get(&name) {
            Some(first)
                if *first == stream
                    || !first.starts_with("arn:")
                    || !stream.starts_with("arn:") =>
            {
                continue;
            }
            Some(first) => {
                return Err(Error::usage(
                    format!("two streams are named {name}: {first} and {stream}"),
                    Some("run them as two fleets, with their own -o and --state-dir".into()),
                ));
            }
            None => {
                seen.insert(name, stream.clone());
                out.push(stream);
            }
        }
    }
    Ok(out)
}

/// A fleet, resolved: the flags every stream shares, and how its streams are found.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The configuration of every stream but the stream itself.
    pub base: Config,
    /// `--region`, which wins over the region inside an ARN.
    pub region: Option<String>,
    /// Streams given by name or ARN (flags and `--streams-from`).
    pub given: Vec<String>,
    /// `--streams-matching`.
    pub matching: Option<String>,
    pub shard: Option<Shard>,
    pub max_concurrent: Option<usize>,
}

/// A name that passes `--stream-name`'s checks, for resolving the shared flags.
const PLACEHOLDER: &str = "kvs-dl-fleet";
const STREAM: &str = "{stream}";

impl Plan {
    /// Turns a fleet's command line into a plan, or a usage error naming the flag. `listed`:
    /// the streams of `--streams-from`, read by the caller.
    pub fn resolve(
        mut cli: Cli,
        listed: Vec<String>,
        env: &Env,
        var: impl Fn(&str) -> Option<String>,
        now: jiff::Timestamp,
    ) -> Result<Plan, Error> {
        let shard = resolve_shard(cli.shard.as_deref(), cli.shard_count, var)?;
        let mut given = Vec::new();
        for name in std::mem::take(&mut cli.stream_name) {
            parse_stream(&name)?;
            given.push(name);
        }
        for arn in std::mem::take(&mut cli.stream_arn) {
            parse_stream(&arn)?;
            given.push(arn);
        }
        given.extend(listed);
        if !cli.output.to_string_lossy().contains(STREAM) {
            return Err(Error::usage(
                format!(
                    "-o {} has no {STREAM}: every stream of a fleet needs its own output",
                    cli.output.display()
                ),
                Some(
                    "put {stream} in the path, e.g. -o 'archive/{stream}/%Y%m%d-%H%M%S.mkv' --segment 1h"
                        .into(),
                ),
            ));
        }
        if let Some(manifest) = &cli.manifest
            && !manifest.to_string_lossy().contains(STREAM)
        {
            return Err(Error::usage(
                format!("--manifest {} has no {STREAM}", manifest.display()),
                Some("give each stream its own manifest, e.g. --manifest '{stream}.jsonl'".into()),
            ));
        }
        if let Some(dir) = &cli.state_dir {
            cli.state_file = Some(dir.join(format!("{STREAM}.json")));
        }
        let region = cli.region.clone();
        let matching = cli.streams_matching.take();
        let max_concurrent = cli.max_concurrent.map(|n| n as usize);
        cli.stream_name = vec![PLACEHOLDER.into()];
        let base = Config::resolve(cli, env, now, std::io::stdout().is_terminal())?;
        Ok(Plan {
            base,
            region,
            given,
            matching,
            shard,
            max_concurrent,
        })
    }

    /// The configuration of one stream of the fleet.
    pub fn stream(&self, given: &str) -> Result<Config, Error> {
        let (stream, arn_region) = parse_stream(given)?;
        let name = stream.name().to_owned();
        let expand = |p: &Path| PathBuf::from(p.to_string_lossy().replace(STREAM, &name));
        let mut cfg = Config {
            stream,
            region: self.region.clone().or(arn_region),
            ..self.base.clone()
        };
        if let Target::File(path) = &cfg.output.target {
            cfg.output.target = Target::File(expand(path));
        }
        cfg.state_file = cfg.state_file.as_deref().map(expand);
        cfg.manifest = cfg.manifest.as_deref().map(expand);
        Ok(cfg)
    }
}

/// `kvs-dl` with the flags of a fleet: downloads every stream, returns the exit code.
pub fn run(cli: Cli) -> Result<u8, Error> {
    let listed = match &cli.streams_from {
        Some(path) => read_list(path)?,
        None => Vec::new(),
    };
    let plan = Plan::resolve(
        cli,
        listed,
        &Env::from_process(),
        |name| std::env::var(name).ok(),
        jiff::Timestamp::now(),
    )?;
    crate::run::init_tracing(plan.base.verbose, plan.base.progress == ProgressMode::Quiet);
    let runtime = crate::run::runtime(&plan.base)?;
    let local = tokio::task::LocalSet::new();
    runtime.block_on(local.run_until(download(plan)))
}

/// Finds the streams, then downloads them, at most `--max-concurrent` at a time.
async fn download(plan: Plan) -> Result<u8, Error> {
    let started = Instant::now();
    // The SDK configuration every stream shares, in the region of --region, else of the first
    // ARN, else of the SDK chain; streams of other regions get a copy in theirs.
    let first_region = plan
        .given
        .iter()
        .find_map(|s| parse_stream(s).ok().and_then(|(_, region)| region));
    let account = Config {
        region: plan.region.clone().or(first_region),
        ..plan.base.clone()
    };
    let sdk = crate::aws::sdk_config(&account).await?;
    let mut streams = plan.given.clone();
    if let Some(prefix) = &plan.matching {
        streams.extend(crate::aws::list_streams(&sdk, prefix).await?);
    }
    let mut streams = distinct(streams)?;
    if let Some(shard) = plan.shard {
        streams.retain(|s| shard.holds(s));
    }
    let mode = plan.base.progress;
    if streams.is_empty() && mode != ProgressMode::Quiet {
        let why = match plan.shard {
            Some(Shard { index, count }) => format!("shard {index}/{count} holds none"),
            None => "none were found".into(),
        };
        eprintln!("kvs-dl: no streams to download: {why}");
    }
    let configs = streams
        .iter()
        .map(|s| plan.stream(s))
        .collect::<Result<Vec<_>, Error>>()?;
    let mut sdks: HashMap<String, aws_config::SdkConfig> = HashMap::new();
    let home = sdk.region().map(ToString::to_string).unwrap_or_default();
    sdks.insert(home.clone(), sdk.clone());
    for cfg in &configs {
        if let Some(region) = &cfg.region
            && !sdks.contains_key(region)
        {
            let other = sdk
                .clone()
                .into_builder()
                .region(aws_config::Region::new(region.clone()))
                .build();
            sdks.insert(region.clone(), other);
        }
    }
    let permits = plan
        .max_concurrent
        .unwrap_or(configs.len())
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let gate = Rc::new(tokio::sync::Semaphore::new(permits));
    let board = Rc::new(progress::FleetProgress::new(
        mode,
        plan.base.verbose > 0,
        configs.len(),
    ));
    let mut tasks = Vec::new();
    for cfg in configs {
        let sdk = sdks[cfg.region.as_ref().unwrap_or(&home)].clone();
        let gate = Rc::clone(&gate);
        let board = Rc::clone(&board);
        let span = tracing::error_span!("stream", name = %cfg.stream.name());
        tasks.push(tokio::task::spawn_local(
            async move {
                let _permit = gate.acquire().await.expect("the gate is never closed");
                one(cfg, sdk, &board).await
            }
            .instrument(span),
        ));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.map_err(|e| Error::Other(e.into()))?);
    }
    let code = exit_code(&results);
    let mut totals = Summary::default();
    for r in &results {
        let s = &r.summary;
        totals.files += s.files;
        totals.bytes += s.bytes;
        totals.fragments += s.fragments;
        totals.media_duration_ms += s.media_duration_ms;
        totals.reconnects += s.reconnects;
        totals.gaps += s.gaps;
        totals.duplicates_skipped += s.duplicates_skipped;
        totals.non_monotonic_timestamps += s.non_monotonic_timestamps;
    }
    let failed = results.iter().filter(|r| r.summary.exit_code != 0).count();
    totals.wall_ms = started.elapsed().as_millis() as u64;
    totals.exit_code = code;
    totals.reason = match failed {
        0 => format!("{} finished", count(results.len())),
        _ => format!("{failed} of {} failed", count(results.len())),
    };
    board.done(&totals, &results);
    Ok(code)
}

fn count(n: usize) -> String {
    match n {
        1 => "1 stream".into(),
        n => format!("{n} streams"),
    }
}

/// One stream of the fleet, from its state to its `stream_done`.
async fn one(
    cfg: Config,
    sdk: aws_config::SdkConfig,
    board: &progress::FleetProgress,
) -> StreamResult {
    let name = cfg.stream.name().to_owned();
    let mut reporter = board.stream(&name);
    let mut summary = Summary::default();
    let outcome = crate::run::transfer(&cfg, reporter.as_mut(), &mut summary, Some(sdk)).await;
    (summary.exit_code, summary.reason) = match &outcome {
        Ok(stopped) => (stopped.exit_code(), stopped.describe()),
        Err(e) => (e.exit_code(), e.to_string()),
    };
    reporter.report(&progress::Report::Done(summary.clone()));
    if let Err(e) = &outcome {
        // As `main` renders a run's error, with the stream after `kvs-dl: `.
        let line = e.render();
        let line = match line.strip_prefix("kvs-dl: ") {
            Some(rest) => format!("kvs-dl: {name}: {rest}"),
            None => line,
        };
        reporter.println(&line);
    }
    StreamResult {
        stream: match &cfg.stream {
            StreamId::Name(n) | StreamId::Arn(n) => n.clone(),
        },
        summary,
    }
}

/// 0 when every stream ended well; 130 or 143 when a signal stopped them; 6 when every stream
/// that failed was held by another run (a shard or an overlapping run owns it: nothing was
/// written twice); else [`SOME_FAILED`].
fn exit_code(results: &[StreamResult]) -> u8 {
    let codes: Vec<u8> = results.iter().map(|r| r.summary.exit_code).collect();
    let failures: Vec<u8> = codes
        .iter()
        .copied()
        .filter(|c| !matches!(c, 0 | 130 | 143))
        .collect();
    match failures.as_slice() {
        [] => codes.iter().copied().max().unwrap_or(0),
        all if all.iter().all(|&c| c == 6) => 6,
        _ => SOME_FAILED,
    }
}

/// `kvs-dl shards`: each stream's shard, without downloading.
pub fn shards(args: ShardsArgs) -> Result<u8, Error> {
    let mut streams = Vec::new();
    for s in args.stream_name.iter().chain(&args.stream_arn) {
        parse_stream(s)?;
        streams.push(s.clone());
    }
    if let Some(path) = &args.streams_from {
        streams.extend(read_list(path)?);
    }
    let streams = distinct(streams)?;
    if let Some(k) = args.only
        && k >= args.shard_count
    {
        return Err(Error::usage(
            format!(
                "--only {k} is not a shard of --shard-count {}",
                args.shard_count
            ),
            Some(format!("give a shard from 0 to {}", args.shard_count - 1)),
        ));
    }
    let mut out = String::new();
    let mut assigned: Vec<(u32, &String)> = streams
        .iter()
        .map(|s| (shard_of(s, args.shard_count), s))
        .filter(|(k, _)| args.only.is_none_or(|only| only == *k))
        .collect();
    assigned.sort_by_key(|(k, _)| *k);
    for (k, s) in assigned {
        out.push_str(&format!("{k}\t{s}\n"));
    }
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::io("writing to standard output", e))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_test_vectors() {
        // From the FNV reference (draft-eastlake-fnv): frozen, docs/cli.md lists them.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a64(b"cam1"), fnv1a64("cam1".as_bytes()));
    }

    #[test]
    fn an_arn_is_sharded_by_its_name() {
        let arn = "arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam1/1234567890123";
        for n in 1..20 {
            assert_eq!(shard_of(arn, n), shard_of("cam1", n));
        }
        assert_eq!(shard_of("cam1", 1), 0);
    }

    #[test]
    fn shards_are_disjoint_and_cover() {
        let streams: Vec<String> = (0..1000).map(|i| format!("cam-{i}")).collect();
        let n = 7;
        let mut sizes = vec![0; n as usize];
        for s in &streams {
            let holders: Vec<u32> = (0..n)
                .filter(|&k| Shard { index: k, count: n }.holds(s))
                .collect();
            assert_eq!(holders.len(), 1, "{s}");
            sizes[holders[0] as usize] += 1;
        }
        assert!(sizes.iter().all(|&c| (100..190).contains(&c)), "{sizes:?}");
    }

    #[test]
    fn shard_flags() {
        let none = |_: &str| None;
        assert_eq!(
            resolve_shard(Some("2/5"), None, none).unwrap(),
            Some(Shard { index: 2, count: 5 })
        );
        for bad in ["5/5", "1", "a/2", "0/0", "-1/3"] {
            assert!(resolve_shard(Some(bad), None, none).is_err(), "{bad}");
        }
        assert_eq!(resolve_shard(None, None, none).unwrap(), None);
        assert!(resolve_shard(None, Some(3), none).is_err());
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let k8s = env(&[("JOB_COMPLETION_INDEX", "1"), ("NOMAD_ALLOC_INDEX", "2")]);
        assert_eq!(
            resolve_shard(None, Some(3), k8s).unwrap(),
            Some(Shard { index: 1, count: 3 })
        );
        let batch = env(&[("AWS_BATCH_JOB_ARRAY_INDEX", "2")]);
        assert_eq!(
            resolve_shard(None, Some(3), batch).unwrap(),
            Some(Shard { index: 2, count: 3 })
        );
        let nomad = env(&[("NOMAD_ALLOC_INDEX", "3")]);
        let e = resolve_shard(None, Some(3), nomad).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("NOMAD_ALLOC_INDEX=3"), "{e}");
    }

    #[test]
    fn lists() {
        let text = "# site A\ncam1\n\n  cam2  \narn:aws:kinesisvideo:eu-west-1:123456789012:stream/cam3/1\n";
        assert_eq!(
            parse_list(text, "f").unwrap(),
            [
                "cam1",
                "cam2",
                "arn:aws:kinesisvideo:eu-west-1:123456789012:stream/cam3/1"
            ]
        );
        let e = parse_list("cam1\nbad name\n", "f").unwrap_err();
        assert!(e.to_string().starts_with("f line 2: "), "{e}");
        let a = "arn:aws:kinesisvideo:eu-west-1:123456789012:stream/cam1/1";
        let b = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam1/1";
        assert_eq!(
            distinct(vec!["cam1".into(), "cam2".into(), "cam1".into()]).unwrap(),
            ["cam1", "cam2"]
        );
        assert!(distinct(vec![a.into(), b.into()]).is_err());
    }

    fn result(code: u8) -> StreamResult {
        StreamResult {
            stream: "s".into(),
            summary: Summary {
                exit_code: code,
                ..Summary::default()
            },
        }
    }

    #[test]
    fn exit_codes() {
        let codes = |c: &[u8]| exit_code(&c.iter().map(|&c| result(c)).collect::<Vec<_>>());
        assert_eq!(codes(&[]), 0);
        assert_eq!(codes(&[0, 0]), 0);
        assert_eq!(codes(&[0, 130]), 130);
        assert_eq!(codes(&[0, 4]), SOME_FAILED);
        assert_eq!(codes(&[6, 0, 6]), 6);
        assert_eq!(codes(&[6, 5]), SOME_FAILED);
    }

    fn cli(args: &[&str]) -> Cli {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("kvs-dl").chain(args.iter().copied())).unwrap()
    }

    fn plan(args: &[&str]) -> Result<Plan, Error> {
        Plan::resolve(
            cli(args),
            vec![],
            &Env::default(),
            |_| None,
            jiff::Timestamp::UNIX_EPOCH,
        )
    }

    #[test]
    fn a_fleet_plan() {
        let p = plan(&[
            "--stream-name",
            "cam1",
            "--stream-name",
            "cam2",
            "-o",
            "out/{stream}.mkv",
            "--state-dir",
            "st",
            "--manifest",
            "{stream}.jsonl",
            "--region",
            "eu-west-1",
        ])
        .unwrap();
        assert_eq!(p.given, ["cam1", "cam2"]);
        let c = p.stream("cam2").unwrap();
        assert_eq!(c.stream, StreamId::Name("cam2".into()));
        assert_eq!(c.output.target, Target::File("out/cam2.mkv".into()));
        assert_eq!(c.state_file, Some(PathBuf::from("st/cam2.json")));
        assert_eq!(c.manifest, Some(PathBuf::from("cam2.jsonl")));
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        let p = plan(&[
            "--stream-name",
            "a",
            "--stream-name",
            "b",
            "-o",
            "{stream}.mkv",
        ])
        .unwrap();
        let arn = "arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam1/1";
        assert_eq!(p.stream(arn).unwrap().region.as_deref(), Some("us-west-2"));
        assert_eq!(p.stream("a").unwrap().state_file, None);
    }

    #[test]
    fn a_fleet_needs_stream_in_its_names() {
        let e = plan(&["--stream-name", "a", "--stream-name", "b", "-o", "x.mkv"]).unwrap_err();
        assert!(e.to_string().contains("{stream}"), "{e}");
        let e = plan(&["--stream-name", "a", "--stream-name", "b", "-o", "-"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = plan(&[
            "--stream-name",
            "a",
            "--stream-name",
            "b",
            "-o",
            "{stream}.mkv",
            "--manifest",
            "m.jsonl",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("--manifest"), "{e}");
        assert!(is_fleet(&cli(&[
            "--stream-name",
            "a",
            "-o",
            "x",
            "--state-dir",
            "d"
        ])));
        assert!(!is_fleet(&cli(&["--stream-name", "a", "-o", "x"])));
    }
}
