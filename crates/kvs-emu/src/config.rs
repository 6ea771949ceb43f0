//! What the emulator serves: credentials and the roles they may assume, ports, and the streams
//! with their fragments, clocks, limits and scripted faults.

use std::time::Duration;

use crate::faults::{CallFault, FragmentFault};
use crate::fragment::StoredFragment;

/// The access key the emulator accepts unless told otherwise.
pub const ACCESS_KEY: &str = "AKIDKVSEMULATOR";
/// The secret key that goes with [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "kvs-emu-secret";

/// The emulator's configuration. `Config::default()` has the default keys, signature checks on,
/// any role assumable, OS-chosen ports and no streams.
#[derive(Debug, Clone)]
pub struct Config {
    pub access_key: String,
    pub secret_key: String,
    /// Check every request's SigV4 signature (off for clients that cannot sign, e.g. curl).
    pub verify_signatures: bool,
    /// Append the service namespace to `x-amzn-ErrorType` (`Name:https://…`), as AWS sometimes
    /// does, to test that a client strips it.
    pub namespaced_error_types: bool,
    /// Role ARNs that STS AssumeRole (on the control plane) may hand out credentials for; a role
    /// outside the list gets AccessDenied. Empty: any role ARN of the shape
    /// `arn:aws:iam::<12 digits>:role/<name>`.
    pub roles: Vec<String>,
    pub streams: Vec<Stream>,
    /// Control-plane port (GetDataEndpoint); 0: any free port.
    pub control_port: u16,
    /// Data-plane port (GetMedia); 0: any free port.
    pub data_port: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            verify_signatures: true,
            namespaced_error_types: false,
            roles: Vec::new(),
            streams: Vec::new(),
            control_port: 0,
            data_port: 0,
        }
    }
}

/// One Kinesis video stream.
#[derive(Debug, Clone)]
pub struct Stream {
    /// 1 to 256 characters of `[a-zA-Z0-9_.-]`.
    pub name: String,
    /// Goes into the ARN.
    pub region: String,
    /// In ingestion order.
    pub fragments: Vec<StoredFragment>,
    /// `None`: an archive, every fragment stored from the start.
    pub live: Option<Live>,
    /// What happens to GetMedia call 0, 1, 2… on this stream (as numbered in the request log);
    /// calls past the end of the list are served normally, unless `fault_cycle`.
    pub faults: Vec<CallFault>,
    /// Repeat `faults` for ever: call `i` gets `faults[i % faults.len()]`, so that "every call
    /// is cut after N bytes" is one fault.
    pub fault_cycle: bool,
    /// Apply the service's per-stream limits, each API with its own budget: more than 5 calls
    /// per second of GetMedia, ListFragments or GetMediaForFragmentList get
    /// ClientLimitExceededException; more than 3 open GetMedia bodies or 5 open
    /// GetMediaForFragmentList bodies get ConnectionLimitExceededException.
    pub enforce_limits: bool,
    /// Fragments whose server timestamp is further than this behind the stream's clock are
    /// gone (the stream's clock: the end of its last fragment for an archive, the live clock
    /// otherwise).
    pub retention_ms: Option<u64>,
    /// Refuse a CONTINUATION_TOKEN that names a fragment the stream does not hold (never had, has
    /// not received yet, or lost to retention) with 400 InvalidArgumentException "ContinuationToken
    /// is not valid", as a service that no longer accepts an old token does, instead of the
    /// in-band FRAGMENT_NOT_FOUND (4000) chunk: the client must fall back to a timestamp.
    pub reject_unknown_tokens: bool,
    /// A GetMedia body ends (cleanly) after this long without a new fragment to send; the
    /// service's is 3 s.
    pub idle_close: Duration,
    /// A GetMedia body ends (cleanly, possibly mid-fragment) this long after the call, standing
    /// in for the service's ~45-minute cut.
    pub max_session: Option<Duration>,
    /// Listing is eventually consistent: a fragment ingested while the emulator runs is listed by
    /// ListFragments, and served by GetMediaForFragmentList, only this long after it arrived
    /// (the service's "typically less than one second"). Fragments the stream held before the
    /// emulator started (an archive, a live stream's backlog) are visible at once.
    pub visibility_delay: Duration,
    /// ListFragments returns its fragments in a deterministic shuffle, within and across pages,
    /// because the service promises no order; off: ingestion order, for readable test failures.
    pub shuffle_listings: bool,
    /// Per-connection bandwidth cap in bytes per second for GetMedia and
    /// GetMediaForFragmentList bodies (the service's is 25 MB/s); `None`: as fast as possible.
    pub bandwidth: Option<u64>,
    /// Fragments that GetMediaForFragmentList cannot serve for a while, or ever, and fragments
    /// that GetMedia serves damaged.
    pub fragment_faults: Vec<FragmentFault>,
    /// Open GetMediaForFragmentList connections another consumer holds on this stream: they
    /// count against its limit of 5 (and turn that limit on even without `enforce_limits`).
    pub held_connections: usize,
    /// DescribeStream's and ListStreams' `MediaType`.
    pub media_type: String,
    /// A live stream's fragments arrive frame by frame, as a camera sends them: each frame's
    /// bytes go out at its own time, not the whole fragment at its start. For measuring how soon
    /// a client passes a frame on.
    pub frame_paced: bool,
    /// Appends one line per frame sent whole in a frame-paced body: the Unix time in
    /// microseconds when its last byte went out.
    pub frame_log: Option<std::path::PathBuf>,
}

/// How a live stream receives its fragments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Live {
    /// Fragment `k` arrives `(server_ms[k] − server_ms[backlog]) / speed` after the emulator
    /// starts; at least 1.
    pub speed: f64,
    /// How many fragments the stream already held before the emulator started; the next one
    /// arrives at the start.
    pub backlog: usize,
}

impl Stream {
    /// A stream with all its fragments stored, no faults and the service's limits off.
    pub fn archive(name: impl Into<String>, fragments: Vec<StoredFragment>) -> Stream {
        Stream {
            name: name.into(),
            region: "us-east-1".into(),
            fragments,
            live: None,
            faults: Vec::new(),
            fault_cycle: false,
            enforce_limits: false,
            retention_ms: None,
            reject_unknown_tokens: false,
            idle_close: Duration::from_secs(3),
            max_session: None,
            visibility_delay: Duration::ZERO,
            shuffle_listings: true,
            bandwidth: None,
            frame_paced: false,
            frame_log: None,
            fragment_faults: Vec::new(),
            held_connections: 0,
            media_type: "video/h264".into(),
        }
    }

    /// A stream whose first fragment arrives when the emulator starts and the others on their
    /// server clock, `speed` times faster than real time.
    pub fn live(name: impl Into<String>, fragments: Vec<StoredFragment>, speed: f64) -> Stream {
        Stream {
            live: Some(Live { speed, backlog: 0 }),
            ..Stream::archive(name, fragments)
        }
    }

    /// `arn:aws:kinesisvideo:<region>:123456789012:stream/<name>/1700000000000`: the last
    /// part is the creation time, as in real stream ARNs.
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:kinesisvideo:{}:123456789012:stream/{}/{CREATION_MS}",
            self.region, self.name
        )
    }

    /// What the scripted faults do to GetMedia call `call` on this stream.
    pub(crate) fn fault(&self, call: usize) -> CallFault {
        let index = match self.faults.len() {
            0 => return CallFault::None,
            len if self.fault_cycle => call % len,
            _ => call,
        };
        self.faults.get(index).cloned().unwrap_or(CallFault::None)
    }

    /// Whether fragment `index` is served damaged ([`FragmentFault::Corrupt`]).
    pub(crate) fn corrupt(&self, index: usize) -> bool {
        self.fragment_faults
            .contains(&FragmentFault::Corrupt { fragment: index })
    }

    /// Why the stream cannot be served, if it cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !is_stream_name(&self.name) {
            return Err(format!(
                "stream name {:?} must be 1 to 256 characters of [a-zA-Z0-9_.-]",
                self.name
            ));
        }
        if let Some(live) = &self.live
            && !(live.speed.is_finite() && live.speed >= 1.0)
        {
            return Err(format!(
                "stream {}: live speed {} must be at least 1",
                self.name, live.speed
            ));
        }
        if self.bandwidth == Some(0) {
            return Err(format!(
                "stream {}: a bandwidth cap must be at least 1 byte/s",
                self.name
            ));
        }
        let count = self.fragments.len();
        if let Some(fault) = self.fragment_faults.iter().find(|f| f.fragment() >= count) {
            return Err(format!(
                "stream {}: {fault:?} names a fragment past the last one ({count} fragments)",
                self.name
            ));
        }
        Ok(())
    }
}

/// Every stream's creation time (epoch ms), in its ARN and DescribeStream.
pub(crate) const CREATION_MS: i64 = 1_700_000_000_000;

/// The service's StreamName constraint.
pub(crate) fn is_stream_name(name: &str) -> bool {
    (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}
