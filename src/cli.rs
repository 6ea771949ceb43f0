//! The command line as the user types it.
//!
//! Only the shape lives here: flag names, help text and what clap can check on its own (one stream
//! flag, numbers, enum values, conflicts). Times, durations and sizes stay strings because their
//! meaning depends on context (the invocation time, the other flags); [`crate::config::Config::resolve`]
//! turns a [`Cli`] into typed values. The core never sees these structs.

use std::path::PathBuf;

use clap::{ArgAction, ArgGroup, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  Follow a live stream into a file until Ctrl-C, with a live progress line:
    kvs-dl --stream-arn ARN --start now -o out.mkv

  Hourly from cron: every fragment exactly once across runs, one file per hour of media
  (-o is a file name template only with --segment), plain log lines instead of a live line:
    kvs-dl --stream-name cam1 --start earliest --end now --state-file cam1.json \\
      --segment 1h -o 'cam1/%Y-%m-%d/%H%M%S.mkv'

  Watch live in a player:
    kvs-dl --stream-name cam1 -o - | ffplay -

  Yesterday 14:00-15:00 over five connections, with a manifest, then check it later:
    kvs-dl --stream-name cam7 --start 2026-11-24T14:00:00Z --end 2026-11-24T15:00:00Z \\
      -o cam7-1400.mkv --manifest cam7.jsonl
    kvs-dl list --stream-name cam7 --start -1h
    kvs-dl verify --manifest cam7.jsonl

  Hourly into S3, with the state in S3 too (a container needs no disk); an S3-compatible
  store through AWS_ENDPOINT_URL_S3:
    kvs-dl --stream-name cam1 --start earliest --end now --segment 1h \\
      -o 's3://my-archive/cam1/%Y-%m-%d/%H%M%S.mkv' --state-file s3://my-archive/state/cam1.json

  A fleet: every stream in cams.txt, one state each; shard K of 8 from JOB_COMPLETION_INDEX
  (Kubernetes), AWS_BATCH_JOB_ARRAY_INDEX or NOMAD_ALLOC_INDEX; exit 8 if some stream failed:
    kvs-dl --streams-from cams.txt --shard-count 8 --start earliest --end now \\
      --segment 1h -o 'archive/{stream}/%Y%m%d-%H%M%S.mkv' --state-dir state
    kvs-dl shards --shard-count 8 --streams-from cams.txt

  Shell completions and the manual page:
    kvs-dl completions bash > ~/.local/share/bash-completion/completions/kvs-dl
    kvs-dl man > ~/.local/share/man/man1/kvs-dl.1";

/// Download Amazon Kinesis Video Streams to playable local files, live or archived, resumable from cron.
///
/// The top-level command: a download (the flags of [`Cli`]), or a subcommand that prints
/// something derived from this definition. The stream and output flags are required only
/// without a subcommand, and cannot be mixed with one.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kvs-dl",
    version,
    long_about = None,
    after_help = EXAMPLES,
    max_term_width = 100,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
pub struct Invocation {
    /// `None` only with a subcommand (clap requires the stream flags otherwise).
    #[command(flatten)]
    pub download: Option<Cli>,

    #[command(subcommand)]
    pub command: Option<Tool>,
}

/// The subcommands: what they print goes to stdout, generated from this very definition so it
/// cannot drift from the flags.
#[derive(Debug, Clone, Subcommand)]
pub enum Tool {
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff)
    Man,
    /// Print a range's fragments and gaps as ListFragments lists them, without downloading
    ///
    /// A table on stdout (or JSON Lines with --json): each fragment's number, server and
    /// producer timestamps, duration and bytes, in stream order, and the gaps between them.
    /// Exit codes as for a download.
    List(ListArgs),
    /// Check a --manifest against the stream: exit 0 when complete, 7 when fragments are missing
    ///
    /// Lists the range the manifest covers (its first to its last fragment, or --start/--end)
    /// and reports the fragments the stream has that the files lack (not in the manifest, or
    /// their file is gone), and the manifest's fragments the stream no longer lists (expired
    /// or deleted; reported, exit unchanged).
    Verify(VerifyArgs),
    /// Print which shard each stream of a fleet belongs to, without downloading
    ///
    /// One line per stream: the shard (0 to N-1), a tab, the stream as given. The same
    /// assignment as --shard K/N and --shard-count N: FNV-1a 64 of the stream name, mod N.
    Shards(ShardsArgs),
}

/// The account flags of a download, for `list` and `verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct AccountArgs {
    /// AWS region [default: from the ARN, else AWS_REGION or the profile]
    #[arg(long, value_name = "REGION", help_heading = "Stream")]
    pub region: Option<String>,

    /// Named profile from the shared AWS config files
    #[arg(long, value_name = "PROFILE", help_heading = "Stream")]
    pub profile: Option<String>,

    /// Assume this IAM role on top of the resolved credentials
    #[arg(long, value_name = "ARN", help_heading = "Stream")]
    pub role_arn: Option<String>,

    /// Session name for --role-arn
    #[arg(
        long,
        value_name = "NAME",
        requires = "role_arn",
        help_heading = "Stream"
    )]
    pub role_session_name: Option<String>,

    /// Control-plane endpoint, for VPC endpoints and emulators [env: AWS_ENDPOINT_URL]
    #[arg(long, value_name = "URL", help_heading = "Stream")]
    pub endpoint_url: Option<String>,

    /// Give up after N consecutive failed attempts (0: on the first failure)
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_retries: u32,

    /// Print only errors
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print debug detail (-vv for more)
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
}

/// `kvs-dl list`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(
    ArgGroup::new("stream")
        .required(true)
        .multiple(false)
        .args(["stream_name", "stream_arn"]),
))]
pub struct ListArgs {
    /// Name of the stream to list
    #[arg(long, value_name = "NAME", help_heading = "Stream")]
    pub stream_name: Option<String>,

    /// ARN of the stream to list (its region is used unless --region is given)
    #[arg(long, value_name = "ARN", help_heading = "Stream")]
    pub stream_arn: Option<String>,

    #[command(flatten)]
    pub account: AccountArgs,

    /// Where the range starts: earliest, a time or -15m (as for a download)
    #[arg(
        long,
        value_name = "WHEN",
        default_value = "earliest",
        allow_hyphen_values = true,
        help_heading = "Range"
    )]
    pub start: String,

    /// Where the range ends (the first fragment at or after it is not listed): now, a time, -15m
    #[arg(
        long,
        value_name = "WHEN",
        default_value = "now",
        allow_hyphen_values = true,
        help_heading = "Range"
    )]
    pub end: String,

    /// Which clock --start and --end refer to
    #[arg(
        long,
        value_name = "CLOCK",
        value_enum,
        default_value_t = ClockArg::Server,
        help_heading = "Range"
    )]
    pub timestamp_type: ClockArg,

    /// Print JSON Lines ({"kind":"fragment",...} and {"kind":"gap",...}) instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `kvs-dl verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The manifest a download wrote with --manifest PATH
    #[arg(long, value_name = "PATH", required = true)]
    pub manifest: PathBuf,

    /// The stream to check [default: the one the manifest names]
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "stream_arn",
        help_heading = "Stream"
    )]
    pub stream_name: Option<String>,

    /// The stream to check, by ARN [default: the one the manifest names]
    #[arg(long, value_name = "ARN", help_heading = "Stream")]
    pub stream_arn: Option<String>,

    #[command(flatten)]
    pub account: AccountArgs,

    /// Check from here: earliest, a time or -15m [default: the manifest's first fragment]
    #[arg(
        long,
        value_name = "WHEN",
        allow_hyphen_values = true,
        help_heading = "Range"
    )]
    pub start: Option<String>,

    /// Check up to here, excluded: now, a time or -15m [default: its last fragment, included]
    #[arg(
        long,
        value_name = "WHEN",
        allow_hyphen_values = true,
        help_heading = "Range"
    )]
    pub end: Option<String>,

    /// Which clock --start and --end (and the manifest's range) refer to
    #[arg(
        long,
        value_name = "CLOCK",
        value_enum,
        default_value_t = ClockArg::Server,
        help_heading = "Range"
    )]
    pub timestamp_type: ClockArg,

    /// Print JSON Lines (one object per finding, then a summary) instead of a report
    #[arg(long)]
    pub json: bool,
}

/// The flags of a download. A `Parser` of its own too, so that `Config`'s tests can parse it
/// without the subcommands.
#[derive(Debug, Clone, Parser)]
#[command(group(
    ArgGroup::new("stream")
        .required(true)
        .multiple(true)
        .args(["stream_name", "stream_arn", "streams_from", "streams_matching"]),
))]
pub struct Cli {
    /// Name of the stream to download (repeat it for a fleet: see --streams-from)
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "stream_arn",
        help_heading = "Stream"
    )]
    pub stream_name: Vec<String>,

    /// ARN of the stream to download (its region is used unless --region is given; repeatable)
    #[arg(long, value_name = "ARN", help_heading = "Stream")]
    pub stream_arn: Vec<String>,

    // The flags of a fleet: many streams in one run, and shards of a fleet over many runs.
    /// Download every stream named in FILE (names or ARNs, one a line; `-`: standard input)
    ///
    /// Blank lines and lines starting with # are skipped. With more than one stream, -o must
    /// hold {stream}, each stream is downloaded on its own with the same flags, and the run
    /// exits 0 only if every stream succeeded (else 8, or 6 if every failure was another run
    /// holding the stream).
    #[arg(long, value_name = "FILE", help_heading = "Fleet")]
    pub streams_from: Option<PathBuf>,

    /// Download every stream whose name begins with PREFIX (ListStreams; `""` for all)
    #[arg(long, value_name = "PREFIX", help_heading = "Fleet")]
    pub streams_matching: Option<String>,

    /// Keep one state per stream in DIR (DIR/NAME.json), or in S3 under s3://BUCKET/PREFIX/,
    /// as --state-file does for one stream
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "state_file",
        help_heading = "Fleet"
    )]
    pub state_dir: Option<PathBuf>,

    /// Download at most N streams at a time [default: all of them]
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        help_heading = "Fleet"
    )]
    pub max_concurrent: Option<u32>,

    /// Take only shard K of N: the streams whose FNV-1a 64 hash of the name, mod N, is K
    #[arg(
        long,
        value_name = "K/N",
        conflicts_with = "shard_count",
        help_heading = "Fleet"
    )]
    pub shard: Option<String>,

    /// Take shard K of N, K from JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX or NOMAD_ALLOC_INDEX
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        help_heading = "Fleet"
    )]
    pub shard_count: Option<u32>,

    /// AWS region [default: from the ARN, else AWS_REGION or the profile]
    #[arg(long, value_name = "REGION", help_heading = "Stream")]
    pub region: Option<String>,

    /// Named profile from the shared AWS config files
    #[arg(long, value_name = "PROFILE", help_heading = "Stream")]
    pub profile: Option<String>,

    /// Assume this IAM role on top of the resolved credentials
    #[arg(long, value_name = "ARN", help_heading = "Stream")]
    pub role_arn: Option<String>,

    /// Session name for --role-arn
    #[arg(
        long,
        value_name = "NAME",
        default_value = "kvs-dl",
        requires = "role_arn",
        help_heading = "Stream"
    )]
    pub role_session_name: String,

    /// Control-plane endpoint, for VPC endpoints and emulators [env: AWS_ENDPOINT_URL]
    #[arg(long, value_name = "URL", help_heading = "Stream")]
    pub endpoint_url: Option<String>,

    /// Region of the S3 bucket(s) in -o and --state-file [default: the bucket's own]
    ///
    /// S3 goes to AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL (path-style addressing then), with
    /// the same credentials as the stream.
    #[arg(long, value_name = "REGION", help_heading = "Output")]
    pub s3_region: Option<String>,

    /// Where to start: now, earliest, a time, -15m, fragment:NUMBER or token:TOKEN
    ///
    /// A time is RFC 3339 with an offset (2026-11-25T10:00:00Z, 2026-11-25T11:00:00+01:00) or
    /// relative to now (-15m, -2h30m, -1d). fragment:NUMBER starts at that fragment;
    /// token:TOKEN continues after a continuation token from an earlier run.
    #[arg(
        long,
        value_name = "WHEN",
        default_value = "now",
        allow_hyphen_values = true,
        help_heading = "Start and stop"
    )]
    pub start: String,

    /// Which clock --start and --end times refer to
    #[arg(
        long,
        value_name = "CLOCK",
        value_enum,
        default_value_t = ClockArg::Server,
        help_heading = "Start and stop"
    )]
    pub timestamp_type: ClockArg,

    /// Stop before the first fragment at or after WHEN: now, a time, -15m or fragment:NUMBER
    ///
    /// `now` is the time of invocation. Every fragment whose timestamp is before WHEN is kept;
    /// with fragment:NUMBER that fragment is the first one not written.
    #[arg(
        long,
        value_name = "WHEN",
        allow_hyphen_values = true,
        help_heading = "Start and stop"
    )]
    pub end: Option<String>,

    /// Stop once the kept media spans DURATION (90s, 10m, 1h30m, 1d)
    #[arg(long, value_name = "DURATION", help_heading = "Start and stop")]
    pub duration: Option<String>,

    /// Stop after N fragments
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..),
        help_heading = "Start and stop"
    )]
    pub max_fragments: Option<u64>,

    /// Stop after SIZE bytes of media (500MB, 2GiB, 1048576)
    #[arg(long, value_name = "SIZE", help_heading = "Start and stop")]
    pub max_bytes: Option<String>,

    /// Stop when no new fragment arrives for DURATION
    #[arg(long, value_name = "DURATION", help_heading = "Start and stop")]
    pub idle_timeout: Option<String>,

    /// Write to PATH (`-` for standard output, s3://BUCKET/KEY for S3)
    ///
    /// The file is written as PATH.part and renamed when complete. With --segment, PATH is a
    /// template: %Y %m %d %H %M %S from the first fragment's UTC timestamp, {stream} and
    /// {fragment}. An S3 object is a multipart upload that appears only when complete, and
    /// never replaces an existing object (unless --force).
    #[arg(short = 'o', long, value_name = "PATH", help_heading = "Output")]
    pub output: PathBuf,

    /// Output format: a clean Matroska file, or the GetMedia bytes as received
    #[arg(
        long,
        value_name = "FORMAT",
        value_enum,
        default_value_t = FormatArg::Mkv,
        help_heading = "Output"
    )]
    pub format: FormatArg,

    /// With --format mp4: finish each file as a progressive MP4, its index before the media
    ///
    /// For players and web servers that need `moov` first. The file is rewritten once it is
    /// complete (on the same disk, about the time of a copy).
    #[arg(long, help_heading = "Output")]
    pub faststart: bool,

    /// Overwrite existing output files
    #[arg(long, help_heading = "Output")]
    pub force: bool,

    /// Start a new file every DURATION of media (cut at a fragment boundary)
    ///
    /// Segments end at multiples of DURATION on the clock (--segment 1h: on the hour). A name
    /// that is taken already gets a suffix: NAME.1.mkv, NAME.2.mkv, ...
    #[arg(long, value_name = "DURATION", help_heading = "Output")]
    pub segment: Option<String>,

    /// Resume after the last fragment saved in PATH, and keep it up to date
    ///
    /// One run holds a state at a time (PATH.lock): another run of the same state exits with
    /// code 6. With --segment, a segment the stream has not reached the end of yet stays open
    /// as .part and the next run continues it. PATH may be s3://BUCKET/KEY: written only with
    /// If-Match/If-None-Match, so a run that loses a race exits 6.
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    pub state_file: Option<PathBuf>,

    /// When another run holds the state file, wait up to DURATION for it instead of exiting
    #[arg(long, value_name = "DURATION", help_heading = "Output")]
    pub wait_lock: Option<String>,

    /// Fetch an archived range over up to N connections (1 to 5)
    ///
    /// With --start earliest or a past time and --end now or a past time, a range holding more
    /// than about 25 MB is listed (ListFragments) and fetched in batches with
    /// GetMediaForFragmentList, written in stream order. 1 keeps one GetMedia session.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 5,
        value_parser = clap::value_parser!(u8).range(1..=5),
        help_heading = "Behavior"
    )]
    pub parallel: u8,

    /// Append a JSON Lines record per fragment written and per gap to PATH
    ///
    /// Each fragment record holds its file, number, server and producer timestamps, duration,
    /// bytes and the SHA-256 of its media; `kvs-dl verify --manifest PATH` checks it against
    /// the stream.
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    pub manifest: Option<PathBuf>,

    /// Stop at the first fragment that cannot be read, instead of skipping it as a gap
    #[arg(long, help_heading = "Behavior")]
    pub strict: bool,

    /// Give up after N consecutive failed attempts (0: on the first failure)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        help_heading = "Behavior"
    )]
    pub max_retries: u32,

    /// How to report progress on stderr
    #[arg(
        long,
        value_name = "MODE",
        value_enum,
        default_value_t = ProgressArg::Auto,
        help_heading = "Behavior"
    )]
    pub progress: ProgressArg,

    /// Print only errors
    #[arg(short, long, conflicts_with = "verbose", help_heading = "Behavior")]
    pub quiet: bool,

    /// Print debug detail (-vv for more)
    #[arg(short, long, action = ArgAction::Count, help_heading = "Behavior")]
    pub verbose: u8,
}

/// `kvs-dl shards`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(
    ArgGroup::new("streams")
        .required(true)
        .multiple(true)
        .args(["stream_name", "stream_arn", "streams_from"]),
))]
pub struct ShardsArgs {
    /// How many shards the fleet is split into
    #[arg(long, value_name = "N", required = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub shard_count: u32,

    /// The fleet: names or ARNs, one a line (`-`: standard input)
    #[arg(long, value_name = "FILE")]
    pub streams_from: Option<PathBuf>,

    /// A stream of the fleet (repeatable)
    #[arg(long, value_name = "NAME")]
    pub stream_name: Vec<String>,

    /// A stream of the fleet, by ARN (repeatable)
    #[arg(long, value_name = "ARN")]
    pub stream_arn: Vec<String>,

    /// Print only the streams of shard K
    #[arg(long, value_name = "K")]
    pub only: Option<u32>,
}

/// `--timestamp-type`: which clock `--start` and `--end` refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClockArg {
    /// When the service received the fragment
    Server,
    /// The timestamp the producer (camera) put on the fragment
    Producer,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// One clean Matroska file: continuous timestamps, cues, duration, tags
    Mkv,
    /// Fragmented MP4 (H.264, H.265, AAC, G.711): plays in browsers, phones, editors
    Mp4,
    /// The GetMedia bytes as received, whole fragments only
    Raw,
}

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// A live line on a terminal, plain log lines otherwise
    Auto,
    /// A live line
    Bar,
    /// A plain line every 10 s and at the end
    Log,
    /// One JSON object per event
    Json,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    fn invoke(args: &[&str]) -> Result<Invocation, clap::Error> {
        Invocation::try_parse_from(std::iter::once("kvs-dl").chain(args.iter().copied()))
    }

    /// A download's flags, parsed as `main` parses them.
    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        invoke(args).map(|i| {
            i.download
                .expect("flags without a subcommand are a download")
        })
    }

    fn ok(args: &[&str]) -> Cli {
        parse(args).unwrap_or_else(|e| panic!("{args:?} should parse: {e}"))
    }

    fn err(args: &[&str]) -> ErrorKind {
        match parse(args) {
            Ok(cli) => panic!("{args:?} should not parse: {cli:?}"),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn command_is_consistent() {
        Invocation::command().debug_assert();
        Cli::command().debug_assert();
    }

    #[test]
    fn subcommands_need_no_stream_flags() {
        let i = invoke(&["completions", "zsh"]).unwrap();
        assert!(i.download.is_none());
        assert!(matches!(
            i.command,
            Some(Tool::Completions {
                shell: clap_complete::Shell::Zsh
            })
        ));
        let i = invoke(&["man"]).unwrap();
        assert!(matches!(i.command, Some(Tool::Man)));
        assert!(i.download.is_none());
        assert_eq!(err(&["completions", "tcsh"]), ErrorKind::InvalidValue);
        assert_eq!(err(&["completions"]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn list_and_verify() {
        let i = invoke(&["list", "--stream-name", "cam", "--start", "-1h", "--json"]).unwrap();
        let Some(Tool::List(l)) = i.command else {
            panic!("{i:?}")
        };
        assert_eq!(l.stream_name.as_deref(), Some("cam"));
        assert_eq!((l.start.as_str(), l.end.as_str()), ("-1h", "now"));
        assert!(l.json);
        assert_eq!(l.account.max_retries, 10);
        assert!(invoke(&["list"]).is_err(), "list needs a stream");
        assert!(invoke(&["list", "--stream-name", "a", "-o", "x"]).is_err());
        let i = invoke(&["verify", "--manifest", "m.jsonl", "--region", "eu-west-1"]).unwrap();
        let Some(Tool::Verify(v)) = i.command else {
            panic!("{i:?}")
        };
        assert_eq!(v.manifest, PathBuf::from("m.jsonl"));
        assert_eq!(v.account.region.as_deref(), Some("eu-west-1"));
        assert_eq!((v.start, v.end), (None, None));
        assert!(invoke(&["verify"]).is_err(), "verify needs --manifest");
    }

    #[test]
    fn subcommands_do_not_mix_with_download_flags() {
        assert!(invoke(&["--stream-name", "a", "-o", "x", "man"]).is_err());
        assert!(invoke(&["man", "--stream-name", "a"]).is_err());
        assert!(invoke(&["--progress", "log", "man"]).is_err());
    }

    #[test]
    fn nothing_at_all_asks_for_the_stream() {
        assert_eq!(err(&[]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn defaults() {
        let cli = ok(&["--stream-name", "cam1", "-o", "out.mkv"]);
        assert_eq!(cli.stream_name, ["cam1"]);
        assert!(cli.stream_arn.is_empty());
        assert_eq!(cli.region, None);
        assert_eq!(cli.profile, None);
        assert_eq!(cli.role_arn, None);
        assert_eq!(cli.role_session_name, "kvs-dl");
        assert_eq!(cli.endpoint_url, None);
        assert_eq!(cli.start, "now");
        assert_eq!(cli.timestamp_type, ClockArg::Server);
        assert_eq!(cli.end, None);
        assert_eq!(cli.duration, None);
        assert_eq!(cli.max_fragments, None);
        assert_eq!(cli.max_bytes, None);
        assert_eq!(cli.idle_timeout, None);
        assert_eq!(cli.output, PathBuf::from("out.mkv"));
        assert_eq!(cli.format, FormatArg::Mkv);
        assert!(!cli.force);
        assert_eq!(cli.segment, None);
        assert_eq!(cli.state_file, None);
        assert_eq!(cli.max_retries, 10);
        assert_eq!(cli.progress, ProgressArg::Auto);
        assert!(!cli.quiet);
        assert_eq!(cli.verbose, 0);
    }

    #[test]
    fn stream_arn() {
        let arn = "arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam1/1234567890123";
        let cli = ok(&["--stream-arn", arn, "-o", "x"]);
        assert_eq!(cli.stream_arn, [arn]);
        assert!(cli.stream_name.is_empty());
    }

    #[test]
    fn stream_is_required() {
        assert_eq!(err(&["-o", "x"]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn both_stream_flags_conflict() {
        assert_eq!(
            err(&["--stream-name", "a", "--stream-arn", "b", "-o", "x"]),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn output_is_required() {
        assert_eq!(
            err(&["--stream-name", "a"]),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn output_long_and_stdout() {
        let cli = ok(&["--stream-name", "a", "--output", "dir/x.mkv"]);
        assert_eq!(cli.output, PathBuf::from("dir/x.mkv"));
        let cli = ok(&["--stream-name", "a", "-o", "-"]);
        assert_eq!(cli.output, PathBuf::from("-"));
    }

    #[test]
    fn account_flags() {
        let cli = ok(&[
            "--stream-name",
            "a",
            "-o",
            "x",
            "--region",
            "eu-west-1",
            "--profile",
            "prod",
            "--role-arn",
            "arn:aws:iam::123456789012:role/reader",
            "--role-session-name",
            "nightly",
            "--endpoint-url",
            "http://127.0.0.1:4566",
        ]);
        assert_eq!(cli.region.as_deref(), Some("eu-west-1"));
        assert_eq!(cli.profile.as_deref(), Some("prod"));
        assert_eq!(
            cli.role_arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/reader")
        );
        assert_eq!(cli.role_session_name, "nightly");
        assert_eq!(cli.endpoint_url.as_deref(), Some("http://127.0.0.1:4566"));
    }

    #[test]
    fn role_session_name_requires_role_arn() {
        assert_eq!(
            err(&["--stream-name", "a", "-o", "x", "--role-session-name", "n"]),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn start_forms() {
        for when in [
            "now",
            "earliest",
            "2026-11-25T10:00:00Z",
            "-15m",
            "-2h30m",
            "fragment:91343852333181432392682062620223489018226093425",
            "token:abc_DEF.1-2",
        ] {
            let cli = ok(&["--stream-name", "a", "-o", "x", "--start", when]);
            assert_eq!(cli.start, when);
        }
        let cli = ok(&["--stream-name", "a", "-o", "x", "--start=-1d"]);
        assert_eq!(cli.start, "-1d");
    }

    #[test]
    fn negative_start_before_other_flags() {
        let cli = ok(&["--start", "-15m", "--stream-name", "a", "-o", "x"]);
        assert_eq!(cli.start, "-15m");
        assert_eq!(cli.stream_name, ["a"]);
    }

    #[test]
    fn timestamp_type() {
        let cli = ok(&[
            "--stream-name",
            "a",
            "-o",
            "x",
            "--timestamp-type",
            "producer",
        ]);
        assert_eq!(cli.timestamp_type, ClockArg::Producer);
        let cli = ok(&[
            "--stream-name",
            "a",
            "-o",
            "x",
            "--timestamp-type",
            "server",
        ]);
        assert_eq!(cli.timestamp_type, ClockArg::Server);
        assert_eq!(
            err(&["--stream-name", "a", "-o", "x", "--timestamp-type", "local"]),
            ErrorKind::InvalidValue
        );
    }

    #[test]
    fn end() {
        let cli = ok(&["--stream-name", "a", "-o", "x", "--end", "now"]);
        assert_eq!(cli.end.as_deref(), Some("now"));
        let cli = ok(&["--stream-name", "a", "-o", "x", "--end", "-5m"]);
        assert_eq!(cli.end.as_deref(), Some("-5m"));
    }

    #[test]
    fn stop_flags() {
        let cli = ok(&[
            "--stream-name",
            "a",
            "-o",
            "x",
            "--duration",
            "1h30m",
            "--max-fragments",
            "100",
            "--max-bytes",
            "2GiB",
            "--idle-timeout",
            "90s",
        ]);
        assert_eq!(cli.duration.as_deref(), Some("1h30m"));
        assert_eq!(cli.max_fragments, Some(100));
        assert_eq!(cli.max_bytes.as_deref(), Some("2GiB"));
        assert_eq!(cli.idle_timeout.as_deref(), Some("90s"));
    }

    #[test]
    fn max_fragments_must_be_positive() {
        assert_eq!(
            err(&["--stream-name", "a", "-o", "x", "--max-fragments", "0"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            err(&["--stream-name", "a", "-o", "x", "--max-fragments", "ten"]),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn output_flags() {
        let cli = ok(&[
            "--stream-name",
            "a",
            "-o",
            "cam-%Y%m%dT%H%M%SZ.mkv",
            "--format",
            "raw",
            "--force",
            "--segment",
            "10m",
            "--state-file",
            "cam.json",
        ]);
        assert_eq!(cli.format, FormatArg::Raw);
        assert!(cli.force);
        assert_eq!(cli.segment.as_deref(), Some("10m"));
        assert_eq!(cli.state_file, Some(PathBuf::from("cam.json")));
        let cli = ok(&[
            "--stream-name",
            "a",
            "-o",
            "x",
            "--format",
            "mp4",
            "--faststart",
        ]);
        assert_eq!((cli.format, cli.faststart), (FormatArg::Mp4, true));
        assert_eq!(
            err(&["--stream-name", "a", "-o", "x", "--format", "mov"]),
            ErrorKind::InvalidValue
        );
    }

    #[test]
    fn max_retries() {
        let cli = ok(&["--stream-name", "a", "-o", "x", "--max-retries", "0"]);
        assert_eq!(cli.max_retries, 0);
        let cli = ok(&[
            "--stream-name",
            "a",
            "-o",
            "x",
            "--max-retries",
            "4294967295",
        ]);
        assert_eq!(cli.max_retries, u32::MAX);
        assert_eq!(
            err(&["--stream-name", "a", "-o", "x", "--max-retries", "-1"]),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn progress_and_verbosity() {
        for (arg, want) in [
            ("auto", ProgressArg::Auto),
            ("bar", ProgressArg::Bar),
            ("log", ProgressArg::Log),
            ("json", ProgressArg::Json),
        ] {
            let cli = ok(&["--stream-name", "a", "-o", "x", "--progress", arg]);
            assert_eq!(cli.progress, want);
        }
        let cli = ok(&["--stream-name", "a", "-o", "x", "-q"]);
        assert!(cli.quiet);
        let cli = ok(&["--stream-name", "a", "-o", "x", "--quiet"]);
        assert!(cli.quiet);
        let cli = ok(&["--stream-name", "a", "-o", "x", "-vv", "--verbose"]);
        assert_eq!(cli.verbose, 3);
        assert_eq!(
            err(&["--stream-name", "a", "-o", "x", "-q", "-v"]),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn help_mentions_examples() {
        let help = Invocation::command().render_long_help().to_string();
        assert!(help.contains("-o - | ffplay -"), "{help}");
        assert!(help.contains("--state-file cam1.json"), "{help}");
        assert!(
            help.contains("--segment 1h -o 'cam1/%Y-%m-%d/%H%M%S.mkv'"),
            "{help}"
        );
        assert!(help.contains("kvs-dl completions bash"), "{help}");
        assert!(
            help.starts_with("Download Amazon Kinesis Video Streams"),
            "{help}"
        );
    }
}
