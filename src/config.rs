//! What the run will do, as plain typed values.
//!
//! [`Config::resolve`] is pure: it reads only the parsed [`Cli`], an [`Env`] snapshot, the
//! invocation time and whether stdout is a terminal. Everything that depends on context — relative
//! times, the region inside an ARN, conflicts between flags — is settled here, so the rest of the
//! program never sees `Cli` and never re-validates a flag. Every refusal is a usage error (exit 2)
//! whose message names the flag.

use std::path::PathBuf;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::cli::{Cli, ClockArg, FormatArg, ProgressArg};
use crate::error::Error;

/// The process environment the resolver needs, read once by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// `AWS_ENDPOINT_URL`, as every AWS SDK reads it.
    pub aws_endpoint_url: Option<String>,
    /// `AWS_ENDPOINT_URL_S3`: S3's own endpoint, before `AWS_ENDPOINT_URL`.
    pub aws_endpoint_url_s3: Option<String>,
}

impl Env {
    /// Reads the variables from the current process. Unset, empty and non-UTF-8 values are `None`.
    pub fn from_process() -> Env {
        Env {
            aws_endpoint_url: std::env::var("AWS_ENDPOINT_URL")
                .ok()
                .filter(|v| !v.is_empty()),
            aws_endpoint_url_s3: std::env::var("AWS_ENDPOINT_URL_S3")
                .ok()
                .filter(|v| !v.is_empty()),
        }
    }
}

/// Which stream to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamId {
    Name(String),
    Arn(String),
}

impl StreamId {
    /// The name, or the ARN: how the stream is named in messages.
    pub fn display(&self) -> &str {
        match self {
            StreamId::Name(s) | StreamId::Arn(s) => s,
        }
    }

    /// The stream's name, also when it was given as an ARN (`arn:...:stream/NAME/123`).
    pub fn name(&self) -> &str {
        stream_name_of(self.display())
    }
}

/// The same for a name or an ARN as text (a state file holds whichever was given).
pub fn stream_name_of(stream: &str) -> &str {
    match stream.strip_prefix("arn:") {
        Some(_) => stream.rsplit('/').nth(1).unwrap_or(stream),
        None => stream,
    }
}

/// `--role-arn` and `--role-session-name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    pub role_arn: String,
    pub session_name: String,
}

/// Where the download begins (`--start`). A state file, when it exists, overrides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The live edge.
    Now,
    /// The oldest fragment the stream keeps.
    Earliest,
    /// The fragment containing this time, or the first one after it, on [`Config::clock`].
    Time(Timestamp),
    /// This fragment number, included.
    Fragment(String),
    /// Right after this continuation token.
    Token(String),
}

/// `--end`: the first fragment at or after it is not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A time on [`Config::clock`]; `--end now` is the invocation time.
    Time(Timestamp),
    /// This fragment number, excluded.
    Fragment(String),
}

/// `--timestamp-type`: which clock `--start` and `--end` times refer to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Clock {
    Server,
    Producer,
}

impl Clock {
    /// A fragment's timestamp on this clock, in epoch milliseconds.
    pub fn of(self, fragment: &mkv::Fragment) -> mkv::Millis {
        match self {
            Clock::Server => fragment.server_ms,
            Clock::Producer => fragment.producer_ms,
        }
    }
}

/// The stop conditions; the first that holds ends the run. All `None`: follow until interrupted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stop {
    pub end: Option<End>,
    /// Media time kept, at least.
    pub duration: Option<Duration>,
    pub max_fragments: Option<u64>,
    pub max_bytes: Option<u64>,
    /// No new fragment for this long.
    pub idle_timeout: Option<Duration>,
}

/// `--format` (as a state file saves it, too).
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Mkv,
    Mp4,
    Raw,
}

impl Format {
    /// As `--format` names it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Mkv => "mkv",
            Format::Mp4 => "mp4",
            Format::Raw => "raw",
        }
    }
}

/// Where the media goes (`-o`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A path, or a name template when [`Output::segment`] is set.
    File(PathBuf),
    /// `-o -`; never a terminal.
    Stdout,
}

/// How the media is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub target: Target,
    pub format: Format,
    /// Replace existing files.
    pub force: bool,
    /// `--faststart`: finished MP4 files are progressive (always with `Format::Mp4` and a file).
    pub faststart: bool,
    /// Start a new file every this much media (always with `Target::File`).
    pub segment: Option<Duration>,
}

/// What stderr shows. `Bar` may still fall back to log lines when stderr is not a terminal.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProgressMode {
    Bar,
    Log,
    Json,
    Quiet,
}

/// Everything a run needs to know, resolved and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub stream: StreamId,
    /// `--region`, else the region inside the ARN, else `None` (the SDK chain decides).
    pub region: Option<String>,
    pub profile: Option<String>,
    pub assume_role: Option<AssumeRole>,
    /// `--endpoint-url`, else `AWS_ENDPOINT_URL`, else `None`.
    pub endpoint_url: Option<String>,
    pub start: Start,
    pub clock: Clock,
    pub stop: Stop,
    pub output: Output,
    pub state_file: Option<PathBuf>,
    /// `--wait-lock`: how long to wait for another run holding the state file.
    pub wait_lock: Duration,
    /// `--strict`: a fragment that cannot be read ends the run instead of being skipped.
    pub strict: bool,
    pub max_retries: u32,
    pub progress: ProgressMode,
    pub verbose: u8,
    /// `--parallel`: GetMediaForFragmentList connections for an archived range (1 to 5).
    pub parallel: usize,
    /// `--manifest`: the fragment ledger.
    pub manifest: Option<PathBuf>,
    /// How S3 is reached, when `-o` or `--state-file` is `s3://`.
    pub s3: crate::s3::Settings,
}

impl Config {
    /// The S3 buckets the run writes to (`-o`, `--state-file`), each once.
    pub fn s3_buckets(&self) -> Vec<String> {
        let mut buckets = Vec::new();
        let output = match &self.output.target {
            Target::File(path) => Some(path.as_path()),
            Target::Stdout => None,
        };
        for path in output.into_iter().chain(self.state_file.as_deref()) {
            if let Some(url) = crate::s3::parse(path)
                && !buckets.contains(&url.bucket)
            {
                buckets.push(url.bucket);
            }
        }
        buckets
    }
}

impl Config {
    /// Turns the command line into a `Config`, or a usage error naming the flag to change.
    ///
    /// `now` is the invocation time (relative times and `now` are taken from it);
    /// `stdout_is_tty` says whether `-o -` would write to a terminal.
    pub fn resolve(
        cli: Cli,
        env: &Env,
        now: Timestamp,
        stdout_is_tty: bool,
    ) -> Result<Config, Error> {
        let (stream, arn_region) = resolve_stream(only(cli.stream_name)?, only(cli.stream_arn)?)?;

        let region = match cli.region {
            Some(r) => Some(check_region(r)?),
            None => arn_region,
        };
        let profile = cli.profile.map(check_profile).transpose()?;
        let assume_role = match cli.role_arn {
            Some(arn) => Some(AssumeRole {
                role_arn: check_role_arn(arn)?,
                session_name: check_session_name(cli.role_session_name)?,
            }),
            None => None,
        };
        let endpoint_url = match (cli.endpoint_url, &env.aws_endpoint_url) {
            (Some(url), _) => Some(check_endpoint(url, "--endpoint-url")?),
            (None, Some(url)) if !url.is_empty() => {
                Some(check_endpoint(url.clone(), "AWS_ENDPOINT_URL")?)
            }
            (None, _) => None,
        };

        let clock = match cli.timestamp_type {
            ClockArg::Server => Clock::Server,
            ClockArg::Producer => Clock::Producer,
        };
        let start = resolve_start(&cli.start, now)?;
        let end = cli
            .end
            .as_deref()
            .map(|e| resolve_end(e, now))
            .transpose()?;
        if let Some(end) = &end {
            check_order(
                &start,
                &cli.start,
                end,
                cli.end.as_deref().unwrap_or_default(),
                now,
                cli.state_file.is_some(),
            )?;
        }
        let stop = Stop {
            end,
            duration: cli
                .duration
                .as_deref()
                .map(|d| duration_flag("--duration", d))
                .transpose()?,
            max_fragments: cli.max_fragments,
            max_bytes: cli.max_bytes.as_deref().map(max_bytes).transpose()?,
            idle_timeout: cli
                .idle_timeout
                .as_deref()
                .map(|d| duration_flag("--idle-timeout", d))
                .transpose()?,
        };
        if stop.max_fragments == Some(0) {
            return Err(usage(
                "invalid value '0' for --max-fragments: must be at least 1".into(),
                "leave --max-fragments out to keep going",
            ));
        }

        let output = resolve_output(
            cli.output,
            cli.format,
            cli.faststart,
            cli.force,
            cli.segment.as_deref(),
            stdout_is_tty,
        )?;

        let state_file = match cli.state_file {
            Some(p) if p.as_os_str().is_empty() => {
                return Err(usage(
                    "invalid value '' for --state-file: the path is empty".into(),
                    "give a file name, e.g. --state-file cam1.json",
                ));
            }
            Some(p) => {
                if let Target::File(out) = &output.target
                    && *out == p
                {
                    return Err(usage(
                        format!("--state-file and -o are the same file '{}'", p.display()),
                        "keep the state in its own file, e.g. --state-file cam1.json",
                    ));
                }
                if output.force
                    && output.segment.is_none()
                    && matches!(output.target, Target::File(_))
                {
                    return Err(usage(
                        "--force with --state-file and a fixed -o would replace the file holding the fragments the state has moved past".into(),
                        "give -o a template with --segment (e.g. 'cam-%Y%m%d-%H.mkv' --segment 1h), or drop --force",
                    ));
                }
                Some(p)
            }
            None => None,
        };

        let s3 = resolve_s3(&output, state_file.as_deref(), cli.s3_region, env)?;

        let progress = match (cli.quiet, cli.progress) {
            (true, ProgressArg::Auto) => ProgressMode::Quiet,
            (true, other) => {
                return Err(usage(
                    format!(
                        "-q/--quiet conflicts with --progress {}",
                        progress_name(other)
                    ),
                    "use -q to print only errors, or --progress to choose how progress is shown",
                ));
            }
            (false, ProgressArg::Auto | ProgressArg::Bar) => ProgressMode::Bar,
            (false, ProgressArg::Log) => ProgressMode::Log,
            (false, ProgressArg::Json) => ProgressMode::Json,
        };
        if cli.quiet && cli.verbose > 0 {
            return Err(usage(
                "-q/--quiet conflicts with -v/--verbose".into(),
                "give one of them",
            ));
        }

        Ok(Config {
            stream,
            region,
            profile,
            assume_role,
            endpoint_url,
            start,
            clock,
            stop,
            output,
            state_file,
            wait_lock: cli
                .wait_lock
                .as_deref()
                .map(|d| duration_flag("--wait-lock", d))
                .transpose()?
                .unwrap_or(Duration::ZERO),
            strict: cli.strict,
            max_retries: cli.max_retries,
            progress,
            verbose: cli.verbose,
            parallel: usize::from(cli.parallel).clamp(1, 5),
            manifest: cli.manifest,
            s3,
        })
    }
}

/// Checks `s3://` values of -o and --state-file, and how S3 is reached.
fn resolve_s3(
    output: &Output,
    state_file: Option<&std::path::Path>,
    region: Option<String>,
    env: &Env,
) -> Result<crate::s3::Settings, Error> {
    let s3_output = match &output.target {
        Target::File(path) if crate::s3::is_s3(path) => {
            crate::s3::check(path, "-o")?;
            true
        }
        _ => false,
    };
    if let Some(path) = state_file.filter(|p| crate::s3::is_s3(p)) {
        crate::s3::check(path, "--state-file")?;
    }
    if s3_output && output.faststart {
        return Err(usage(
            "--faststart cannot be used with an s3:// output (an uploaded object is not rewritten)"
                .into(),
            "drop --faststart (the fragmented MP4 plays in browsers and players), or write a local file",
        ));
    }
    let region = region
        .map(|r| {
            if is_region(&r) {
                Ok(r)
            } else {
                Err(usage(
                    format!("invalid value '{r}' for --s3-region"),
                    "a region looks like us-west-2 or eu-central-1",
                ))
            }
        })
        .transpose()?;
    let endpoint_url = match (&env.aws_endpoint_url_s3, &env.aws_endpoint_url) {
        (Some(url), _) if !url.is_empty() => {
            Some(check_endpoint(url.clone(), "AWS_ENDPOINT_URL_S3")?)
        }
        (_, Some(url)) if !url.is_empty() => Some(check_endpoint(url.clone(), "AWS_ENDPOINT_URL")?),
        _ => None,
    };
    Ok(crate::s3::Settings {
        endpoint_url,
        region,
    })
}

fn usage(message: String, hint: &str) -> Error {
    Error::usage(message, Some(hint.to_string()))
}

fn progress_name(p: ProgressArg) -> &'static str {
    match p {
        ProgressArg::Auto => "auto",
        ProgressArg::Bar => "bar",
        ProgressArg::Log => "log",
        ProgressArg::Json => "json",
    }
}

// ---------------------------------------------------------------------------------------------
// Stream and account

const NAME_HINT: &str = "a stream name is 1 to 256 characters of letters, digits, '_', '.' and '-'";

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn is_stream_name(s: &str) -> bool {
    (1..=256).contains(&s.len()) && s.chars().all(is_name_char)
}

/// The stream, and the region named in its ARN.
/// The one stream of a run that is not a fleet ([`crate::fleet`] takes more than one).
fn only(mut given: Vec<String>) -> Result<Option<String>, Error> {
    match given.len() {
        0 | 1 => Ok(given.pop()),
        _ => Err(usage(
            "more than one stream given".into(),
            "a fleet needs {stream} in -o (see --streams-from)",
        )),
    }
}

/// A stream as a fleet lists it: an ARN (with its region) or a name, checked like
/// `--stream-arn` and `--stream-name`.
pub fn parse_stream(given: &str) -> Result<(StreamId, Option<String>), Error> {
    match given.starts_with("arn:") {
        true => resolve_stream(None, Some(given.to_owned())),
        false => resolve_stream(Some(given.to_owned()), None),
    }
}

fn resolve_stream(
    name: Option<String>,
    arn: Option<String>,
) -> Result<(StreamId, Option<String>), Error> {
    match (name, arn) {
        (Some(name), None) => {
            if !is_stream_name(&name) {
                return Err(usage(
                    format!("invalid value '{name}' for --stream-name"),
                    NAME_HINT,
                ));
            }
            Ok((StreamId::Name(name), None))
        }
        (None, Some(arn)) => {
            let region = arn_region(&arn).ok_or_else(|| {
                usage(
                    format!(
                        "invalid value '{arn}' for --stream-arn: not a Kinesis Video stream ARN"
                    ),
                    "expected arn:PARTITION:kinesisvideo:REGION:ACCOUNT:stream/NAME/CREATION-TIME, \
                     as shown by `aws kinesisvideo describe-stream`",
                )
            })?;
            let region = region.to_string();
            Ok((StreamId::Arn(arn), Some(region)))
        }
        (Some(_), Some(_)) => Err(usage(
            "--stream-name and --stream-arn cannot be used together".into(),
            "give one of them",
        )),
        (None, None) => Err(usage(
            "no stream given".into(),
            "give --stream-name NAME or --stream-arn ARN",
        )),
    }
}

/// `arn:<partition>:kinesisvideo:<region>:<account>:stream/<name>/<digits>` → `<region>`.
fn arn_region(arn: &str) -> Option<&str> {
    if arn.len() > 1024 {
        return None;
    }
    let mut parts = arn.splitn(6, ':');
    let (arn_kw, partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let (name, created) = resource.strip_prefix("stream/")?.split_once('/')?;
    let ok = arn_kw == "arn"
        && is_partition(partition)
        && service == "kinesisvideo"
        && is_region(region)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && is_stream_name(name)
        && !created.is_empty()
        && created.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(region)
}

fn is_partition(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}

fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_region(region: String) -> Result<String, Error> {
    if is_region(&region) {
        Ok(region)
    } else {
        Err(usage(
            format!("invalid value '{region}' for --region"),
            "a region looks like us-west-2 or eu-central-1",
        ))
    }
}

fn check_profile(profile: String) -> Result<String, Error> {
    if profile.trim().is_empty() {
        Err(usage(
            "invalid value '' for --profile: the name is empty".into(),
            "give a profile from ~/.aws/config, or leave --profile out",
        ))
    } else {
        Ok(profile)
    }
}

/// `arn:<partition>:iam::<account>:role/<path/name>`.
fn check_role_arn(arn: String) -> Result<String, Error> {
    let ok = (|| {
        let mut parts = arn.splitn(6, ':');
        let (arn_kw, partition, service, region, account, resource) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        let name = resource.strip_prefix("role/")?;
        Some(
            arn_kw == "arn"
                && is_partition(partition)
                && service == "iam"
                && region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && !name.is_empty(),
        )
    })()
    .unwrap_or(false);
    if ok {
        Ok(arn)
    } else {
        Err(usage(
            format!("invalid value '{arn}' for --role-arn: not an IAM role ARN"),
            "expected arn:aws:iam::ACCOUNT:role/NAME",
        ))
    }
}

/// STS: `[\w+=,.@-]{2,64}`.
fn check_session_name(name: String) -> Result<String, Error> {
    let ok = (2..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if ok {
        Ok(name)
    } else {
        Err(usage(
            format!("invalid value '{name}' for --role-session-name"),
            "a session name is 2 to 64 characters of letters, digits and _+=,.@-",
        ))
    }
}

/// An `http://` or `https://` URL with a host.
fn check_endpoint(url: String, source: &str) -> Result<String, Error> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let ok = match rest {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !host.starts_with(':') && !rest.contains(char::is_whitespace)
        }
        None => false,
    };
    if ok {
        Ok(url)
    } else {
        Err(usage(
            format!("invalid value '{url}' for {source}: expected an http:// or https:// URL"),
            "for example https://kinesisvideo.us-west-2.amazonaws.com or http://127.0.0.1:4566",
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Start and end

const START_HINT: &str = "use now, earliest, an RFC 3339 time like 2026-11-25T10:00:00Z, \
                          a relative time like -15m, fragment:NUMBER or token:TOKEN";
const END_HINT: &str = "use now, an RFC 3339 time like 2026-11-25T10:00:00Z, \
                        a relative time like -15m, or fragment:NUMBER";

/// A `--start`/`--end` value before the flag-specific checks.
enum When {
    Now,
    Earliest,
    Time(Timestamp),
    Fragment(String),
    Token(String),
}

fn parse_when(flag: &str, value: &str, now: Timestamp, hint: &str) -> Result<When, Error> {
    let bad = |why: &str| usage(format!("invalid value '{value}' for {flag}: {why}"), hint);

    match value {
        "now" => return Ok(When::Now),
        "earliest" => return Ok(When::Earliest),
        _ => {}
    }
    if let Some(number) = value.strip_prefix("fragment:") {
        let ok = (1..=128).contains(&number.len()) && number.bytes().all(|b| b.is_ascii_digit());
        return if ok {
            Ok(When::Fragment(number.to_string()))
        } else {
            Err(bad("a fragment number is 1 to 128 digits"))
        };
    }
    if let Some(token) = value.strip_prefix("token:") {
        let ok = (1..=128).contains(&token.len()) && token.chars().all(is_name_char);
        return if ok {
            Ok(When::Token(token.to_string()))
        } else {
            Err(bad(
                "a continuation token is 1 to 128 characters of letters, digits, '_', '.' and '-'",
            ))
        };
    }
    if let Some(ago) = value.strip_prefix('-') {
        let ago = parse_duration(ago).map_err(|why| bad(&format!("bad relative time: {why}")))?;
        let time = SignedDuration::try_from(ago)
            .ok()
            .and_then(|ago| now.checked_sub(ago).ok())
            .ok_or_else(|| bad("too far in the past"))?;
        return Ok(When::Time(time));
    }
    if let Some(ahead) = value.strip_prefix('+')
        && parse_duration(ahead).is_ok()
    {
        return Err(bad(&format!(
            "a relative time must be in the past: write -{ahead}"
        )));
    }
    if parse_duration(value).is_ok() {
        return Err(bad(&format!(
            "a relative time must be in the past: write -{value}"
        )));
    }
    if let Ok(time) = value.parse::<Timestamp>() {
        return Ok(When::Time(time));
    }
    if value.parse::<jiff::civil::DateTime>().is_ok() {
        return Err(usage(
            format!("invalid value '{value}' for {flag}: the time has no UTC offset"),
            &format!(
                "add Z for UTC or an offset like +01:00, e.g. {value}{}",
                if value.contains(['T', 't', ' ']) {
                    "Z"
                } else {
                    "T00:00:00Z"
                }
            ),
        ));
    }
    Err(bad("not a time"))
}

fn resolve_start(value: &str, now: Timestamp) -> Result<Start, Error> {
    Ok(match parse_when("--start", value, now, START_HINT)? {
        When::Now => Start::Now,
        When::Earliest => Start::Earliest,
        When::Time(t) if t > now => {
            return Err(usage(
                format!("invalid value '{value}' for --start: {t} is in the future"),
                "use --start now to follow the live stream",
            ));
        }
        When::Time(t) => Start::Time(t),
        When::Fragment(f) => Start::Fragment(f),
        When::Token(t) => Start::Token(t),
    })
}

fn resolve_end(value: &str, now: Timestamp) -> Result<End, Error> {
    Ok(match parse_when("--end", value, now, END_HINT)? {
        When::Now => End::Time(now),
        When::Time(t) => End::Time(t),
        When::Fragment(f) => End::Fragment(f),
        When::Earliest => {
            return Err(usage(
                format!(
                    "invalid value '{value}' for --end: the run cannot end at the earliest fragment"
                ),
                END_HINT,
            ));
        }
        When::Token(_) => {
            return Err(usage(
                format!(
                    "invalid value '{value}' for --end: a continuation token can only start a run"
                ),
                "use it as --start token:TOKEN; end with --end now, a time or fragment:NUMBER",
            ));
        }
    })
}

/// The end must come after the start when both can be compared.
///
/// `--start now` (the default) counts as the invocation time, except with a state file: an
/// existing one overrides `--start`, so `--state-file s.json --end now` is a valid cron line.
fn check_order(
    start: &Start,
    start_text: &str,
    end: &End,
    end_text: &str,
    now: Timestamp,
    has_state: bool,
) -> Result<(), Error> {
    let refuse = || {
        usage(
            format!("--end {end_text} is not after --start {start_text}"),
            "nothing would be downloaded; give an --end later than --start, \
             or --start earliest to read the archive",
        )
    };
    match (start, end) {
        (Start::Time(s), End::Time(e)) if e <= s => Err(refuse()),
        (Start::Now, End::Time(e)) if !has_state && *e <= now => Err(refuse()),
        (Start::Fragment(s), End::Fragment(e)) if mkv::cmp_fragment_numbers(e, s).is_le() => {
            Err(refuse())
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Durations and sizes

const DURATION_HINT: &str = "a duration is a number with a unit, d h m or s, largest first: \
                             90s, 10m, 1h30m, 1d";

/// `90s`, `10m`, `1h`, `1h30m`, `1d`: one or more NUMBER UNIT pairs, units `d h m s` in that order,
/// each at most once. Days are 24 hours. No sign, no spaces.
fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at '{rest}'"));
        }
        let (number, after) = rest.split_at(digits);
        let unit = after
            .chars()
            .next()
            .ok_or_else(|| format!("'{number}' has no unit (add s, m, h or d)"))?;
        let (rank, seconds) = match unit {
            'd' => (3, 86_400),
            'h' => (2, 3_600),
            'm' => (1, 60),
            's' => (0, 1),
            other => return Err(format!("unknown unit '{other}' (use s, m, h or d)")),
        };
        if rank >= last_rank {
            return Err("give each unit once, largest first, like 1h30m".into());
        }
        last_rank = rank;
        let value = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(seconds))
            .and_then(|n| n.checked_add(total))
            .ok_or_else(|| "too large".to_string())?;
        total = value;
        rest = &after[unit.len_utf8()..];
    }
    if total == 0 {
        return Err("must be more than zero".into());
    }
    Ok(Duration::from_secs(total))
}

fn duration_flag(flag: &str, value: &str) -> Result<Duration, Error> {
    parse_duration(value).map_err(|why| {
        usage(
            format!("invalid value '{value}' for {flag}: {why}"),
            DURATION_HINT,
        )
    })
}

fn max_bytes(value: &str) -> Result<u64, Error> {
    let hint = "a size is a number of bytes, or with a unit: 500MB, 2GiB, 1048576";
    match value.trim().parse::<bytesize::ByteSize>() {
        Ok(size) if size.as_u64() > 0 => Ok(size.as_u64()),
        Ok(_) => Err(usage(
            format!("invalid value '{value}' for --max-bytes: must be more than zero"),
            hint,
        )),
        Err(_) => Err(usage(
            format!("invalid value '{value}' for --max-bytes: not a size"),
            hint,
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Output

fn resolve_output(
    path: PathBuf,
    format: FormatArg,
    faststart: bool,
    force: bool,
    segment: Option<&str>,
    stdout_is_tty: bool,
) -> Result<Output, Error> {
    let format = match format {
        FormatArg::Mkv => Format::Mkv,
        FormatArg::Mp4 => Format::Mp4,
        FormatArg::Raw => Format::Raw,
    };
    let segment = segment.map(|s| duration_flag("--segment", s)).transpose()?;

    let target = if path.as_os_str() == "-" {
        Target::Stdout
    } else if path.as_os_str().is_empty() {
        return Err(usage(
            "invalid value '' for -o/--output: the path is empty".into(),
            "give a file name, or -o - for standard output",
        ));
    } else {
        Target::File(path)
    };

    if target == Target::Stdout && stdout_is_tty {
        return Err(usage(
            "refusing to write video to a terminal; redirect stdout or give -o PATH".into(),
            "for example: kvs-dl ... -o - | ffplay -",
        ));
    }
    if segment.is_some() {
        if target == Target::Stdout {
            return Err(usage(
                "--segment cannot be used with -o - (standard output is one stream)".into(),
                "give -o a name template like 'cam1-%Y%m%dT%H%M%SZ.mkv'",
            ));
        }
        if let (Target::File(template), Some(every)) = (&target, segment) {
            check_template(&template.to_string_lossy(), every)?;
        }
    }

    if faststart && format != Format::Mp4 {
        return Err(usage(
            format!("--faststart needs --format mp4, not {}", format.name()),
            "add --format mp4, or drop --faststart",
        ));
    }
    if faststart && target == Target::Stdout {
        return Err(usage(
            "--faststart cannot be used with -o - (a pipe cannot be rewritten)".into(),
            "drop --faststart: standard output gets a fragmented MP4 players read as it comes",
        ));
    }

    Ok(Output {
        target,
        format,
        faststart,
        force,
        segment,
    })
}

/// A `--segment` template must expand (strftime fields jiff knows) and give each segment its
/// own name: `{fragment}`, or a time field at least as fine as the segment length.
fn check_template(t: &str, every: Duration) -> Result<(), Error> {
    let named = t.replace("{stream}", "s").replace("{fragment}", "1");
    if let Err(e) = jiff::fmt::strtime::format(&named, jiff::Timestamp::UNIX_EPOCH) {
        return Err(usage(
            format!("-o '{t}' is not a valid file name template: {e}"),
            "use %Y %m %d %H %M %S, {stream} and {fragment}",
        ));
    }
    const FIELDS: [(&str, u64); 9] = [
        ("%S", 1),
        ("%s", 1),
        ("%T", 1),
        ("%M", 60),
        ("%R", 60),
        ("%H", 3600),
        ("%d", 86_400),
        ("%j", 86_400),
        ("%F", 86_400),
    ];
    let finest = FIELDS
        .iter()
        .filter(|(field, _)| t.contains(field))
        .map(|(_, seconds)| *seconds)
        .min();
    let unique = t.contains("{fragment}") || finest.is_some_and(|s| s <= every.as_secs().max(1));
    if !unique {
        return Err(usage(
            format!(
                "-o '{t}' would give several {}-long segments the same name",
                humanize(every)
            ),
            "add {fragment} or finer time fields, e.g. -o 'cam1-%Y%m%dT%H%M%SZ.mkv'",
        ));
    }
    Ok(())
}

/// `1h`, `10m`, `90s`, for messages.
fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    const ARN: &str = "arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam1/1234567890123";

    fn now() -> Timestamp {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("kvs-dl").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?} should parse: {e}"))
    }

    /// Resolves `--stream-name cam1 -o out.mkv` plus `args`, stdout not a terminal, no env.
    fn resolve(args: &[&str]) -> Result<Config, Error> {
        let mut all = vec!["--stream-name", "cam1", "-o", "out.mkv"];
        all.extend_from_slice(args);
        Config::resolve(cli(&all), &Env::default(), now(), false)
    }

    fn ok(args: &[&str]) -> Config {
        resolve(args).unwrap_or_else(|e| panic!("{args:?} should resolve: {}", e.render()))
    }

    /// The usage error's message; panics on success or on another kind of error.
    fn usage_err(result: Result<Config, Error>) -> String {
        match result {
            Ok(c) => panic!("should fail: {c:?}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{}", e.render());
                match &e {
                    Error::Usage { message, hint } => {
                        assert!(hint.is_some(), "usage errors carry a hint: {message}");
                        message.clone()
                    }
                    other => panic!("not a usage error: {other:?}"),
                }
            }
        }
    }

    fn err(args: &[&str]) -> String {
        usage_err(resolve(args))
    }

    fn start(value: &str) -> Start {
        ok(&["--start", value]).start
    }

    fn end(value: &str) -> End {
        ok(&["--start", "earliest", "--end", value])
            .stop
            .end
            .unwrap()
    }

    #[test]
    fn defaults() {
        let c = ok(&[]);
        assert_eq!(
            c,
            Config {
                stream: StreamId::Name("cam1".into()),
                region: None,
                profile: None,
                assume_role: None,
                endpoint_url: None,
                start: Start::Now,
                clock: Clock::Server,
                stop: Stop::default(),
                output: Output {
                    target: Target::File("out.mkv".into()),
                    format: Format::Mkv,
                    faststart: false,
                    force: false,
                    segment: None,
                },
                state_file: None,
                wait_lock: Duration::ZERO,
                strict: false,
                max_retries: 10,
                progress: ProgressMode::Bar,
                verbose: 0,
                parallel: 5,
                manifest: None,
                s3: crate::s3::Settings::default(),
            }
        );
        assert_eq!(c.stream.display(), "cam1");
    }

    // --- stream, region, account ------------------------------------------------------------

    #[test]
    fn stream_arn_gives_region() {
        let c = Config::resolve(
            cli(&["--stream-arn", ARN, "-o", "x.mkv"]),
            &Env::default(),
            now(),
            false,
        )
        .unwrap();
        assert_eq!(c.stream, StreamId::Arn(ARN.into()));
        assert_eq!(c.stream.display(), ARN);
        assert_eq!(c.region.as_deref(), Some("us-west-2"));
    }

    #[test]
    fn region_flag_wins_over_arn() {
        let c = Config::resolve(
            cli(&["--stream-arn", ARN, "-o", "x.mkv", "--region", "eu-west-1"]),
            &Env::default(),
            now(),
            false,
        )
        .unwrap();
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            ok(&["--region", "ap-south-1"]).region.as_deref(),
            Some("ap-south-1")
        );
    }

    #[test]
    fn other_partitions() {
        for (arn, region) in [
            (
                "arn:aws-cn:kinesisvideo:cn-north-1:123456789012:stream/a.b-c_d/1",
                "cn-north-1",
            ),
            (
                "arn:aws-us-gov:kinesisvideo:us-gov-west-1:123456789012:stream/x/42",
                "us-gov-west-1",
            ),
        ] {
            let c = Config::resolve(
                cli(&["--stream-arn", arn, "-o", "x.mkv"]),
                &Env::default(),
                now(),
                false,
            )
            .unwrap();
            assert_eq!(c.region.as_deref(), Some(region));
        }
    }

    #[test]
    fn bad_stream_arns() {
        for arn in [
            "cam1",
            "",
            "arn:aws:kinesis:us-west-2:123456789012:stream/cam1/1234567890123",
            "arn:aws:kinesisvideo::123456789012:stream/cam1/1234567890123",
            "arn:aws:kinesisvideo:us-west-2:1234:stream/cam1/1234567890123",
            "arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam1",
            "arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam1/",
            "arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam1/12x",
            "arn:aws:kinesisvideo:us-west-2:123456789012:channel/cam1/123",
            "arn:aws:kinesisvideo:us-west-2:123456789012:stream//123",
            "arn:aws:kinesisvideo:us-west-2:123456789012:stream/ca m/123",
            "arn::kinesisvideo:us-west-2:123456789012:stream/cam1/123",
            "xrn:aws:kinesisvideo:us-west-2:123456789012:stream/cam1/123",
        ] {
            let msg = usage_err(Config::resolve(
                cli(&["--stream-arn", arn, "-o", "x.mkv"]),
                &Env::default(),
                now(),
                false,
            ));
            assert!(msg.contains("--stream-arn"), "{arn}: {msg}");
        }
    }

    #[test]
    fn stream_names() {
        let long = "a".repeat(256);
        for name in ["cam1", "A.b_c-d", long.as_str()] {
            let c = Config::resolve(
                cli(&["--stream-name", name, "-o", "x.mkv"]),
                &Env::default(),
                now(),
                false,
            )
            .unwrap();
            assert_eq!(c.stream, StreamId::Name(name.into()));
            assert_eq!(c.region, None);
        }
        let too_long = "a".repeat(257);
        for name in ["", "cam 1", "cam/1", "câm", too_long.as_str()] {
            let msg = usage_err(Config::resolve(
                cli(&["--stream-name", name, "-o", "x.mkv"]),
                &Env::default(),
                now(),
                false,
            ));
            assert!(msg.contains("--stream-name"), "{name}: {msg}");
        }
    }

    #[test]
    fn bad_region() {
        assert!(err(&["--region", "US West"]).contains("--region"));
        assert!(err(&["--region", ""]).contains("--region"));
    }

    #[test]
    fn profile() {
        assert_eq!(ok(&["--profile", "prod"]).profile.as_deref(), Some("prod"));
        assert!(err(&["--profile", ""]).contains("--profile"));
    }

    #[test]
    fn assume_role() {
        let role = "arn:aws:iam::123456789012:role/team/reader";
        let c = ok(&["--role-arn", role]);
        assert_eq!(
            c.assume_role,
            Some(AssumeRole {
                role_arn: role.into(),
                session_name: "kvs-dl".into(),
            })
        );
        let c = ok(&["--role-arn", role, "--role-session-name", "cron@host=1"]);
        assert_eq!(c.assume_role.unwrap().session_name, "cron@host=1");

        for bad in [
            "reader",
            "arn:aws:iam::123:role/r",
            "arn:aws:iam::123456789012:user/u",
        ] {
            assert!(err(&["--role-arn", bad]).contains("--role-arn"), "{bad}");
        }
        for bad in ["x", "has space", &"n".repeat(65)] {
            let msg = err(&["--role-arn", role, "--role-session-name", bad]);
            assert!(msg.contains("--role-session-name"), "{bad}: {msg}");
        }
    }

    #[test]
    fn endpoint_url() {
        let env = Env {
            aws_endpoint_url: Some("http://localhost:4566".into()),
            ..Env::default()
        };
        let base = ["--stream-name", "cam1", "-o", "x.mkv"];

        let c = Config::resolve(cli(&base), &env, now(), false).unwrap();
        assert_eq!(c.endpoint_url.as_deref(), Some("http://localhost:4566"));

        let mut args = base.to_vec();
        args.extend([
            "--endpoint-url",
            "https://vpce-1.kinesisvideo.us-west-2.vpce.amazonaws.com",
        ]);
        let c = Config::resolve(cli(&args), &env, now(), false).unwrap();
        assert_eq!(
            c.endpoint_url.as_deref(),
            Some("https://vpce-1.kinesisvideo.us-west-2.vpce.amazonaws.com")
        );

        let c = Config::resolve(cli(&base), &Env::default(), now(), false).unwrap();
        assert_eq!(c.endpoint_url, None);
        let empty = Env {
            aws_endpoint_url: Some(String::new()),
            ..Env::default()
        };
        let c = Config::resolve(cli(&base), &empty, now(), false).unwrap();
        assert_eq!(c.endpoint_url, None);

        for bad in ["localhost:4566", "ftp://x", "http://", "http:///path"] {
            assert!(
                err(&["--endpoint-url", bad]).contains("--endpoint-url"),
                "{bad}"
            );
        }
        let bad_env = Env {
            aws_endpoint_url: Some("localhost".into()),
            ..Env::default()
        };
        let msg = usage_err(Config::resolve(cli(&base), &bad_env, now(), false));
        assert!(msg.contains("AWS_ENDPOINT_URL"), "{msg}");
    }

    #[test]
    fn s3_targets() {
        let env = Env {
            aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
            aws_endpoint_url_s3: Some("http://127.0.0.1:8333".into()),
        };
        let args = [
            "--stream-name",
            "cam1",
            "-o",
            "s3://media/cam/%Y%m%d-%H.mkv",
            "--segment",
            "1h",
            "--state-file",
            "s3://state/cam1.json",
            "--s3-region",
            "eu-west-1",
        ];
        let c = Config::resolve(cli(&args), &env, now(), false).unwrap();
        assert_eq!(c.s3.endpoint_url.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(c.s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.s3_buckets(), ["media", "state"]);
        let only_global = Env {
            aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
            ..Env::default()
        };
        let c = Config::resolve(cli(&args), &only_global, now(), false).unwrap();
        assert_eq!(c.s3.endpoint_url.as_deref(), Some("http://127.0.0.1:4566"));
        assert!(ok(&[]).s3_buckets().is_empty());

        let s3_err = |args: &[&str]| {
            let mut all = vec!["--stream-name", "cam1"];
            all.extend_from_slice(args);
            usage_err(Config::resolve(cli(&all), &env, now(), false))
        };
        let msg = s3_err(&["-o", "s3://media/x.mp4", "--format", "mp4", "--faststart"]);
        assert!(
            msg.contains("--faststart") && msg.contains("s3://"),
            "{msg}"
        );
        assert!(s3_err(&["-o", "s3://media"]).contains("-o"));
        assert!(err(&["--state-file", "s3://Bad_/x"]).contains("--state-file"));
        assert!(err(&["--s3-region", "EU"]).contains("--s3-region"));
    }

    #[test]
    fn resolve_without_clap_checks_stream() {
        let mut c = cli(&["--stream-name", "cam1", "-o", "x.mkv"]);
        c.stream_name = vec![];
        assert!(
            usage_err(Config::resolve(c.clone(), &Env::default(), now(), false))
                .contains("no stream")
        );
        c.stream_name = vec!["a".into()];
        c.stream_arn = vec![ARN.into()];
        assert!(
            usage_err(Config::resolve(c, &Env::default(), now(), false))
                .contains("--stream-name and --stream-arn")
        );
    }

    // --- start ------------------------------------------------------------------------------

    #[test]
    fn start_keywords() {
        assert_eq!(start("now"), Start::Now);
        assert_eq!(start("earliest"), Start::Earliest);
    }

    #[test]
    fn start_rfc3339() {
        assert_eq!(
            start("2026-11-25T10:00:00Z"),
            Start::Time(ts("2026-11-25T10:00:00Z"))
        );
        assert_eq!(
            start("2026-11-25T11:00:00+01:00"),
            Start::Time(ts("2026-11-25T10:00:00Z"))
        );
        assert_eq!(
            start("2026-11-25T10:00:00.250Z"),
            Start::Time(ts("2026-11-25T10:00:00.25Z"))
        );
        assert_eq!(start("2026-11-25T12:00:00Z"), Start::Time(now()));
    }

    #[test]
    fn start_without_offset_is_refused() {
        let msg = err(&["--start", "2026-11-25T10:00:00"]);
        assert!(
            msg.contains("--start") && msg.contains("no UTC offset"),
            "{msg}"
        );
        match resolve(&["--start", "2026-11-25T10:00:00"]) {
            Err(Error::Usage { hint, .. }) => {
                let hint = hint.unwrap();
                assert!(
                    hint.contains("add Z") && hint.contains("2026-11-25T10:00:00Z"),
                    "{hint}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn start_relative() {
        assert_eq!(start("-15m"), Start::Time(ts("2026-11-25T11:45:00Z")));
        assert_eq!(
            start("-2h30m"),
            Start::Time(now().checked_sub(SignedDuration::from_secs(9000)).unwrap())
        );
        assert_eq!(
            start("-1d"),
            Start::Time(
                now()
                    .checked_sub(SignedDuration::from_secs(86_400))
                    .unwrap()
            )
        );
        assert_eq!(start("-90s"), Start::Time(ts("2026-11-25T11:58:30Z")));
        assert_eq!(start("-1d2h3m4s"), Start::Time(ts("2026-11-24T09:56:56Z")));
    }

    #[test]
    fn start_relative_future_is_refused() {
        for value in ["15m", "+15m", "1h30m"] {
            let msg = err(&["--start", value]);
            assert!(
                msg.contains("--start") && msg.contains("in the past"),
                "{value}: {msg}"
            );
        }
    }

    #[test]
    fn start_bad_relative() {
        for value in [
            "-", "-0s", "-15", "-15x", "-m", "-30m2h", "-1h1h", "- 15m", "--15m", "-1.5h",
        ] {
            let msg = err(&["--start", value]);
            assert!(
                msg.contains(&format!("'{value}' for --start")),
                "{value}: {msg}"
            );
        }
        assert!(err(&["--start", "-99999999999999d"]).contains("--start"));
    }

    #[test]
    fn start_in_the_future_is_refused() {
        let msg = err(&["--start", "2026-11-25T12:00:01Z"]);
        assert!(msg.contains("--start") && msg.contains("future"), "{msg}");
        let msg = err(&["--start", "2027-01-01T00:00:00+01:00"]);
        assert!(msg.contains("future"), "{msg}");
    }

    #[test]
    fn start_fragment() {
        assert_eq!(start("fragment:0"), Start::Fragment("0".into()));
        let long = "9".repeat(128);
        assert_eq!(
            start(&format!("fragment:{long}")),
            Start::Fragment(long.clone())
        );
        for bad in [
            "fragment:",
            "fragment:12a",
            "fragment:-1",
            &format!("fragment:{long}9"),
        ] {
            let msg = err(&["--start", bad]);
            assert!(
                msg.contains("--start") && msg.contains("fragment number"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn start_token() {
        assert_eq!(
            start("token:abc_DEF.1-2"),
            Start::Token("abc_DEF.1-2".into())
        );
        let long = "t".repeat(128);
        assert_eq!(start(&format!("token:{long}")), Start::Token(long.clone()));
        for bad in [
            "token:",
            "token:a b",
            "token:a/b",
            &format!("token:{long}t"),
        ] {
            let msg = err(&["--start", bad]);
            assert!(
                msg.contains("--start") && msg.contains("token"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn start_garbage() {
        for bad in ["yesterday", "NOW", "2026-13-01T00:00:00Z", "fragment", ""] {
            let msg = err(&["--start", bad]);
            assert!(msg.contains("for --start"), "{bad}: {msg}");
        }
    }

    #[test]
    fn timestamp_type() {
        assert_eq!(ok(&[]).clock, Clock::Server);
        assert_eq!(ok(&["--timestamp-type", "producer"]).clock, Clock::Producer);
        assert_eq!(ok(&["--timestamp-type", "server"]).clock, Clock::Server);
    }

    // --- end and the other stop conditions --------------------------------------------------

    #[test]
    fn end_forms() {
        assert_eq!(end("now"), End::Time(now()));
        assert_eq!(
            end("2026-11-25T11:00:00+01:00"),
            End::Time(ts("2026-11-25T10:00:00Z"))
        );
        assert_eq!(end("-5m"), End::Time(ts("2026-11-25T11:55:00Z")));
        assert_eq!(end("fragment:123"), End::Fragment("123".into()));
        // The future is fine: the run ends once it catches up with the live edge.
        assert_eq!(
            end("2026-11-25T13:00:00Z"),
            End::Time(ts("2026-11-25T13:00:00Z"))
        );
    }

    #[test]
    fn end_refusals() {
        let msg = err(&["--end", "earliest"]);
        assert!(msg.contains("--end") && msg.contains("earliest"), "{msg}");
        let msg = err(&["--end", "token:abc"]);
        assert!(msg.contains("--end") && msg.contains("token"), "{msg}");
        let msg = err(&["--end", "2026-11-25T10:00:00"]);
        assert!(
            msg.contains("--end") && msg.contains("no UTC offset"),
            "{msg}"
        );
        let msg = err(&["--end", "5m"]);
        assert!(
            msg.contains("--end") && msg.contains("in the past"),
            "{msg}"
        );
        assert!(err(&["--end", "soon"]).contains("--end"));
    }

    #[test]
    fn end_after_start() {
        let c = ok(&["--start", "-2h", "--end", "-1h"]);
        assert_eq!(c.start, Start::Time(ts("2026-11-25T10:00:00Z")));
        assert_eq!(c.stop.end, Some(End::Time(ts("2026-11-25T11:00:00Z"))));
        ok(&["--start", "-1h", "--end", "now"]);

        let msg = err(&["--start", "-1h", "--end", "-2h"]);
        assert!(msg.contains("--end -2h is not after --start -1h"), "{msg}");
        let msg = err(&[
            "--start",
            "2026-11-25T10:00:00Z",
            "--end",
            "2026-11-25T11:00:00+01:00",
        ]);
        assert!(msg.contains("not after"), "{msg}");
    }

    #[test]
    fn end_before_default_start_now() {
        let msg = err(&["--end", "now"]);
        assert!(msg.contains("--end now is not after --start now"), "{msg}");
        assert!(err(&["--end", "-1h"]).contains("not after"));
        // A future end with a live start is fine.
        ok(&["--end", "2026-11-25T13:00:00Z"]);
        // With a state file the start comes from the state: the cron line is valid.
        let c = ok(&["--end", "now", "--state-file", "cam1.json"]);
        assert_eq!(c.start, Start::Now);
        assert_eq!(c.stop.end, Some(End::Time(now())));
        // Earliest, tokens and fragments cannot be compared with a time.
        ok(&["--start", "earliest", "--end", "-1h"]);
        ok(&["--start", "token:abc", "--end", "now"]);
        ok(&["--start", "fragment:5", "--end", "now"]);
    }

    #[test]
    fn end_fragment_after_start_fragment() {
        ok(&["--start", "fragment:99", "--end", "fragment:100"]);
        ok(&["--start", "fragment:0099", "--end", "fragment:100"]);
        assert!(err(&["--start", "fragment:100", "--end", "fragment:100"]).contains("not after"));
        assert!(err(&["--start", "fragment:100", "--end", "fragment:99"]).contains("not after"));
        assert!(err(&["--start", "fragment:100", "--end", "fragment:0100"]).contains("not after"));
    }

    #[test]
    fn durations() {
        let c = ok(&["--duration", "90s", "--idle-timeout", "10m"]);
        assert_eq!(c.stop.duration, Some(Duration::from_secs(90)));
        assert_eq!(c.stop.idle_timeout, Some(Duration::from_secs(600)));
        let c = Config::resolve(
            cli(&[
                "--stream-name",
                "cam1",
                "-o",
                "{fragment}.mkv",
                "--segment",
                "1h30m",
            ]),
            &Env::default(),
            now(),
            false,
        )
        .unwrap();
        assert_eq!(c.output.segment, Some(Duration::from_secs(5400)));
        let c = ok(&["--duration", "1d", "--idle-timeout", "1h"]);
        assert_eq!(c.stop.duration, Some(Duration::from_secs(86_400)));
        assert_eq!(c.stop.idle_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(
            ok(&["--duration", "2d12h"]).stop.duration,
            Some(Duration::from_secs(216_000))
        );
    }

    #[test]
    fn bad_durations() {
        for flag in ["--duration", "--idle-timeout", "--segment"] {
            for bad in [
                "0s",
                "0h0m",
                "1x",
                "10",
                "-5m",
                "+5m",
                "1h 30m",
                "30m1h",
                "m",
                "",
                "1.5h",
                "99999999999999999999s",
            ] {
                // `--flag=VALUE` so that clap hands over values starting with '-'.
                let msg = err(&[&format!("{flag}={bad}")]);
                assert!(
                    msg.contains(&format!("invalid value '{bad}' for {flag}")),
                    "{flag} {bad}: {msg}"
                );
            }
        }
        assert!(err(&["--duration", "1x"]).contains("unknown unit 'x'"));
        assert!(err(&["--duration", "0s"]).contains("more than zero"));
    }

    #[test]
    fn max_fragments() {
        assert_eq!(ok(&["--max-fragments", "1"]).stop.max_fragments, Some(1));
        assert_eq!(ok(&[]).stop.max_fragments, None);
    }

    #[test]
    fn max_bytes() {
        assert_eq!(
            ok(&["--max-bytes", "500MB"]).stop.max_bytes,
            Some(500_000_000)
        );
        assert_eq!(
            ok(&["--max-bytes", "2GiB"]).stop.max_bytes,
            Some(2 * 1024 * 1024 * 1024)
        );
        assert_eq!(
            ok(&["--max-bytes", "1048576"]).stop.max_bytes,
            Some(1_048_576)
        );
        assert_eq!(ok(&["--max-bytes", "10 KiB"]).stop.max_bytes, Some(10_240));
        for bad in ["0", "0MB", "lots", "5XB", "-5MB", ""] {
            let msg = err(&[&format!("--max-bytes={bad}")]);
            assert!(
                msg.contains(&format!("invalid value '{bad}' for --max-bytes")),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn max_fragments_zero_without_clap() {
        let mut c = cli(&["--stream-name", "cam1", "-o", "x.mkv"]);
        c.max_fragments = Some(0);
        let msg = usage_err(Config::resolve(c, &Env::default(), now(), false));
        assert!(msg.contains("--max-fragments"), "{msg}");
    }

    // --- output -----------------------------------------------------------------------------

    #[test]
    fn output_file() {
        let c = ok(&["--force", "--format", "raw"]);
        assert_eq!(
            c.output,
            Output {
                target: Target::File("out.mkv".into()),
                format: Format::Raw,
                faststart: false,
                force: true,
                segment: None,
            }
        );
    }

    fn resolve_stdout(args: &[&str], tty: bool) -> Result<Config, Error> {
        let mut all = vec!["--stream-name", "cam1", "-o", "-"];
        all.extend_from_slice(args);
        Config::resolve(cli(&all), &Env::default(), now(), tty)
    }

    #[test]
    fn output_stdout() {
        let c = resolve_stdout(&["--force"], false).unwrap();
        assert_eq!(c.output.target, Target::Stdout);
        assert!(c.output.force);
        let c = resolve_stdout(&["--format", "raw"], false).unwrap();
        assert_eq!(c.output.format, Format::Raw);
    }

    #[test]
    fn output_stdout_terminal_is_refused() {
        let msg = usage_err(resolve_stdout(&[], true));
        assert_eq!(
            msg,
            "refusing to write video to a terminal; redirect stdout or give -o PATH"
        );
        // A file is fine on a terminal.
        Config::resolve(
            cli(&["--stream-name", "cam1", "-o", "x.mkv"]),
            &Env::default(),
            now(),
            true,
        )
        .unwrap();
    }

    #[test]
    fn output_empty_path() {
        // clap refuses `-o ''` already; the resolver does not rely on it.
        let mut c = cli(&["--stream-name", "cam1", "-o", "x.mkv"]);
        c.output = PathBuf::new();
        let msg = usage_err(Config::resolve(c, &Env::default(), now(), false));
        assert!(msg.contains("-o/--output"), "{msg}");
    }

    #[test]
    fn segment() {
        let c = Config::resolve(
            cli(&[
                "--stream-name",
                "cam1",
                "-o",
                "cam1-%Y%m%dT%H%M%SZ.mkv",
                "--segment",
                "10m",
            ]),
            &Env::default(),
            now(),
            false,
        )
        .unwrap();
        assert_eq!(c.output.segment, Some(Duration::from_secs(600)));
        assert_eq!(
            c.output.target,
            Target::File("cam1-%Y%m%dT%H%M%SZ.mkv".into())
        );
        Config::resolve(
            cli(&[
                "--stream-name",
                "cam1",
                "-o",
                "{stream}-{fragment}.mkv",
                "--segment",
                "1h",
            ]),
            &Env::default(),
            now(),
            false,
        )
        .unwrap();
    }

    #[test]
    fn segment_refusals() {
        let msg = usage_err(resolve_stdout(&["--segment", "10m"], false));
        assert!(msg.contains("--segment") && msg.contains("-o -"), "{msg}");
        // --faststart is for mp4 files.
        let msg = err(&["--faststart"]);
        assert!(msg.contains("--faststart") && msg.contains("mp4"), "{msg}");
        assert!(ok(&["--format", "mp4", "--faststart"]).output.faststart);
        let msg = usage_err(resolve_stdout(&["--format", "mp4", "--faststart"], false));
        assert!(msg.contains("-o -"), "{msg}");
        // Every format can be segmented.
        let raw = [
            "--stream-name",
            "cam1",
            "-o",
            "{fragment}.raw",
            "--segment",
            "10m",
            "--format",
            "raw",
        ];
        let c = Config::resolve(cli(&raw), &Env::default(), now(), false).unwrap();
        assert_eq!(c.output.format, Format::Raw);
        // --force would replace the one file that holds what the state moved past.
        let msg = err(&["--force", "--state-file", "s.json"]);
        assert!(
            msg.contains("--force") && msg.contains("--state-file"),
            "{msg}"
        );
        // A name that cannot tell 10-minute segments apart, or that does not expand.
        let with = |o: &str, every: &str| {
            let args = ["--stream-name", "cam1", "-o", o, "--segment", every];
            Config::resolve(cli(&args), &Env::default(), now(), false)
        };
        let coarse = usage_err(with("cam-%Y%m%dT%H.mkv", "10m"));
        assert!(coarse.contains("same name"), "{coarse}");
        let bad = usage_err(with("cam-%S-%", "10m"));
        assert!(bad.contains("not a valid file name template"), "{bad}");
        assert!(with("cam-%Y%m%dT%H.mkv", "1h").is_ok());
        assert!(with("cam-{fragment}.mkv", "10m").is_ok());
        // A fixed name would make every segment collide.
        let msg = err(&["--segment", "10m"]);
        assert!(msg.contains("same name"), "{msg}");
    }

    #[test]
    fn state_file() {
        let c = ok(&["--state-file", "cam1.json"]);
        assert_eq!(c.state_file, Some(PathBuf::from("cam1.json")));
        let mut c = cli(&["--stream-name", "cam1", "-o", "x.mkv"]);
        c.state_file = Some(PathBuf::new());
        let msg = usage_err(Config::resolve(c, &Env::default(), now(), false));
        assert!(msg.contains("--state-file"), "{msg}");
        assert!(err(&["--state-file", "out.mkv"]).contains("same file"));
    }

    // --- behavior ---------------------------------------------------------------------------

    #[test]
    fn max_retries() {
        assert_eq!(ok(&[]).max_retries, 10);
        assert_eq!(ok(&["--max-retries", "0"]).max_retries, 0);
        assert_eq!(ok(&["--max-retries", "4294967295"]).max_retries, u32::MAX);
    }

    #[test]
    fn progress() {
        assert_eq!(ok(&[]).progress, ProgressMode::Bar);
        assert_eq!(ok(&["--progress", "auto"]).progress, ProgressMode::Bar);
        assert_eq!(ok(&["--progress", "bar"]).progress, ProgressMode::Bar);
        assert_eq!(ok(&["--progress", "log"]).progress, ProgressMode::Log);
        assert_eq!(ok(&["--progress", "json"]).progress, ProgressMode::Json);
        assert_eq!(ok(&["-q"]).progress, ProgressMode::Quiet);
        assert_eq!(
            ok(&["-q", "--progress", "auto"]).progress,
            ProgressMode::Quiet
        );
        for mode in ["bar", "log", "json"] {
            let msg = err(&["-q", "--progress", mode]);
            assert_eq!(msg, format!("-q/--quiet conflicts with --progress {mode}"));
        }
    }

    #[test]
    fn verbose() {
        assert_eq!(ok(&[]).verbose, 0);
        assert_eq!(ok(&["-v"]).verbose, 1);
        assert_eq!(ok(&["-vvv"]).verbose, 3);
        let mut c = cli(&["--stream-name", "cam1", "-o", "x.mkv", "-q"]);
        c.verbose = 1;
        assert!(usage_err(Config::resolve(c, &Env::default(), now(), false)).contains("--verbose"));
    }

    #[test]
    fn full_cron_line() {
        let c = Config::resolve(
            cli(&[
                "--stream-arn",
                ARN,
                "--start",
                "earliest",
                "--end",
                "now",
                "--state-file",
                "cam1.json",
                "-o",
                "cam1-%Y%m%dT%H%M%SZ.mkv",
                "--progress",
                "log",
            ]),
            &Env::default(),
            now(),
            false,
        )
        .unwrap();
        assert_eq!(c.start, Start::Earliest);
        assert_eq!(c.stop.end, Some(End::Time(now())));
        assert_eq!(c.state_file, Some(PathBuf::from("cam1.json")));
        assert_eq!(c.region.as_deref(), Some("us-west-2"));
        assert_eq!(c.progress, ProgressMode::Log);
    }

    #[test]
    fn parse_duration_grammar() {
        assert_eq!(parse_duration("1d1h1m1s"), Ok(Duration::from_secs(90_061)));
        assert_eq!(parse_duration("0h5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("120m"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("1h1d").is_err());
        assert!(parse_duration("1s1s").is_err());
        assert!(parse_duration("1H").is_err());
        assert!(parse_duration("1ms").is_err());
    }
}
