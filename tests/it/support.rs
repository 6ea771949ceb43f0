//! What every integration test needs: a `kvs-emu` on loopback, the real `kvs-dl` binary in a
//! clean environment pointed at it, the third-party captures, media made with ffmpeg, and the
//! verdicts of ffprobe and mkvmerge.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use kvs_emu::{Config, Emulator, Ingest, Request, StoredFragment, Stream, SyntheticSpec};
use mkv::{Event, Parser};

pub const IDLE: Duration = Duration::from_millis(200);

/// A running emulator and a scratch directory for one test.
pub struct World {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new(streams: Vec<Stream>) -> World {
        World::with(Config {
            streams,
            ..Config::default()
        })
    }

    pub fn with(config: Config) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("home")).unwrap();
        World {
            emu: Emulator::start(config).expect("emulator starts"),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `kvs-dl` with dummy credentials, an empty home (no ~/.aws), no metadata service, the emulator's
    /// endpoint and fast backoff. Add the stream and output flags.
    pub fn kvs_dl(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvs-dl"));
        let home = self.dir.path().join("home");
        cmd.env_clear()
            .env("HOME", &home)
            .env("AWS_ACCESS_KEY_ID", kvs_emu::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", kvs_emu::SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("KVS_DL_BACKOFF_SCALE", "0.01")
            .arg("--endpoint-url")
            .arg(self.emu.endpoint())
            .current_dir(self.dir.path());
        cmd
    }

    /// GetMedia requests, in order.
    pub fn get_media(&self) -> Vec<Request> {
        self.emu
            .requests()
            .into_iter()
            .filter(|r| r.operation == "GetMedia")
            .collect()
    }

    /// The StartSelector of each GetMedia request.
    pub fn selectors(&self) -> Vec<serde_json::Value> {
        self.get_media()
            .into_iter()
            .map(|r| r.body["StartSelector"].clone())
            .collect()
    }
}

/// Runs a command to its end and returns what it printed.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("kvs-dl runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing stderr when it is not the one expected.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "stderr:\n{}", stderr(out));
}

/// An archive stream of `n` synthetic fragments that ends its bodies quickly when drained.
pub fn archive(name: &str, n: usize) -> Stream {
    Stream {
        idle_close: IDLE,
        ..Stream::archive(name, synthetic(n, Ingest::default()))
    }
}

pub fn synthetic(n: usize, ingest: Ingest) -> Vec<StoredFragment> {
    kvs_emu::synthetic(&SyntheticSpec {
        fragments: n,
        fragment_ms: 2000,
        frames_per_fragment: 10,
        target_fragment_bytes: None,
        ingest,
    })
}

/// Fragment numbers and block payloads of every whole fragment in a GetMedia body or a file.
#[derive(Debug, Default, PartialEq)]
pub struct Contents {
    pub fragments: Vec<String>,
    pub blocks: Vec<Vec<u8>>,
    pub ebml_headers: usize,
}

pub fn contents(data: &[u8]) -> Contents {
    let mut p = Parser::new();
    p.push(data);
    let mut c = Contents::default();
    while let Some(e) = p.next_event().expect("output parses") {
        match e {
            Event::EbmlHeader(_) => c.ebml_headers += 1,
            Event::FragmentEnd(f) => c.fragments.push(f.number),
            Event::BlockStart(_) => c.blocks.push(Vec::new()),
            Event::BlockData(d) => c.blocks.last_mut().unwrap().extend_from_slice(d),
            _ => {}
        }
    }
    c
}

/// The numbers of some stored fragments.
pub fn numbers(fragments: &[StoredFragment]) -> Vec<String> {
    fragments.iter().map(|f| f.number().to_owned()).collect()
}

/// The third-party GetMedia captures, read in place. `None` (skip) only outside CI.
pub fn capture(name: &str) -> Option<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/kvs-getmedia");
    if !dir.is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the captures are missing at {}",
            dir.display()
        );
        eprintln!("skipping: no captures at {}", dir.display());
        return None;
    }
    Some(std::fs::read(dir.join(name)).expect(name))
}

/// Whether an external tool can run. Missing: the test fails under CI, is skipped elsewhere.
pub fn have(tool: &str) -> bool {
    static FOUND: OnceLock<std::sync::Mutex<Vec<(String, bool)>>> = OnceLock::new();
    let cache = FOUND.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap();
    if let Some((_, found)) = cache.iter().find(|(t, _)| t == tool) {
        return *found;
    }
    let found = Command::new(tool)
        .arg("-version")
        .output()
        .or_else(|_| Command::new(tool).arg("--version").output())
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is needed by this test (install ffmpeg and mkvtoolnix)"
        );
        eprintln!("skipping: {tool} is not installed");
    }
    cache.push((tool.to_owned(), found));
    found
}

/// Runs a tool and returns (exit code, stdout, stderr).
pub fn tool(cmd: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
