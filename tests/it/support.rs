//! What every integration test needs: a `kvs-emu` on loopback, the real `kvs-dl` binary in a
//! clean environment pointed at it, the third-party captures, media made with ffmpeg, and the
//! verdicts of ffprobe and mkvmerge.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kvs_emu::{Config, Emulator, Ingest, Live, Request, StoredFragment, Stream, SyntheticSpec};
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

/// Downloads stream `cam` as raw into `out.raw` (replacing it) with `args`; returns what the
/// run printed and the fragment numbers written.
pub fn fetch_raw(w: &World, args: &[&str]) -> (Output, Vec<String>) {
    let out = run(w
        .kvs_dl()
        .args([
            "--stream-name",
            "cam",
            "--format",
            "raw",
            "-o",
            "out.raw",
            "--force",
        ])
        .args(args));
    let got = std::fs::read(w.path("out.raw"))
        .map(|d| contents(&d).fragments)
        .unwrap_or_default();
    (out, got)
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

/// Asserts that a raw output is whole: the parser reads all of it without an error to
/// `Finish::Clean`, every fragment that begins also ends (one `FragmentEnd` per fragment
/// written), and the fragments are exactly `expected`, in order.
#[track_caller]
pub fn assert_whole_raw(bytes: &[u8], expected: &[String]) {
    let mut p = Parser::new();
    p.push(bytes);
    let (mut started, mut ended) = (0, Vec::new());
    loop {
        match p.next_event() {
            Ok(Some(Event::FragmentStart(_))) => started += 1,
            Ok(Some(Event::FragmentEnd(f))) => ended.push(f.number),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => panic!("the raw output does not parse: {e} (after {ended:?})"),
        }
    }
    assert_eq!(
        p.finish(),
        Ok(mkv::Finish::Clean),
        "the raw output ends inside a fragment (after {ended:?})"
    );
    assert_eq!(started, ended.len(), "a fragment began and did not end");
    assert_eq!(ended, expected, "the raw output's whole fragments");
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

/// A Matroska file kvs-dl wrote, as ffprobe, mkvmerge and ffmpeg see it.
#[derive(Debug)]
pub struct Verdict {
    pub packets: u64,
    pub duration: f64,
    pub start_time: f64,
    pub tracks: usize,
    /// ffprobe's `format.tags` (the file's global Tags).
    pub tags: serde_json::Value,
    pub ffprobe_stderr: String,
}

/// Judges a Matroska file with the real tools and checks what must always hold: mkvmerge reads
/// it without an error or a warning and sees as many tracks as ffprobe; there is one EBML
/// header, Cues (when `seekable`) and a Segment that ends where the file does; ffmpeg decodes a
/// video frame from its middle (when the payload is `decodable` media). `None` when the tools
/// are missing (outside CI).
pub fn verdict(path: &Path, seekable: bool, decodable: bool) -> Option<Verdict> {
    if !have("ffprobe") || !have("mkvmerge") || !have("ffmpeg") {
        return None;
    }
    let p = path.to_str().unwrap();
    let (rc, out, err) = tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "format=duration,start_time:format_tags:stream=nb_read_packets,codec_type",
            "-of",
            "json",
            p,
        ],
    );
    assert_eq!(rc, 0, "ffprobe {p}: {err}");
    let probe: serde_json::Value = serde_json::from_str(&out).unwrap();
    let streams = probe["streams"].as_array().unwrap();
    let packets = streams
        .iter()
        .map(|s| {
            s["nb_read_packets"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    let number = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let duration = number(&probe["format"]["duration"]);
    let start_time = number(&probe["format"]["start_time"]);

    let (rc, out, err) = tool("mkvmerge", &["-J", p]);
    assert_eq!(rc, 0, "mkvmerge -J {p}: {out} {err}");
    let merge: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(merge["errors"], serde_json::json!([]), "{p}");
    assert_eq!(merge["warnings"], serde_json::json!([]), "{p}");
    assert_eq!(
        merge["tracks"].as_array().unwrap().len(),
        streams.len(),
        "{p}: mkvmerge sees every track"
    );

    let data = std::fs::read(path).unwrap();
    assert_eq!(contents(&data).ebml_headers, 1, "{p}: one EBML header");
    let level1 = segment_children(&data);
    if seekable {
        assert!(level1.contains(&mkv::ebml::id::CUES), "{p}: Cues present");
        assert!(
            level1.contains(&mkv::ebml::id::SEEK_HEAD),
            "{p}: SeekHead present"
        );
    }
    assert!(level1.contains(&mkv::ebml::id::TAGS), "{p}: Tags present");

    if decodable && streams.iter().any(|s| s["codec_type"] == "video") {
        let middle = format!("{:.3}", duration / 2.0);
        let (rc, out, err) = tool(
            "ffmpeg",
            &[
                "-v",
                "error",
                "-ss",
                &middle,
                "-i",
                p,
                "-map",
                "0:v:0",
                "-frames:v",
                "1",
                "-f",
                "framemd5",
                "-",
            ],
        );
        assert_eq!(rc, 0, "{p}: {err}");
        assert!(err.is_empty(), "{p}: ffmpeg seeking to {middle}: {err}");
        assert_eq!(
            out.lines().filter(|l| !l.starts_with('#')).count(),
            1,
            "{p}: a frame decoded at {middle} s"
        );
    }
    Some(Verdict {
        packets,
        duration,
        start_time,
        tracks: streams.len(),
        tags: probe["format"]["tags"].clone(),
        ffprobe_stderr: err_of_probe(p),
    })
}

/// What `ffprobe -v error` prints about a file: nothing, for a clean one.
fn err_of_probe(p: &str) -> String {
    tool("ffprobe", &["-v", "error", p]).2
}

/// The IDs of the Segment's children, in order (the file must be one known-size Segment).
pub fn segment_children(data: &[u8]) -> Vec<u32> {
    use mkv::ebml::read_header;
    let ebml = read_header(data).unwrap().unwrap();
    let at = ebml.len + ebml.size.unwrap() as usize;
    let seg = read_header(&data[at..]).unwrap().unwrap();
    let mut pos = at + seg.len;
    let end = match seg.size {
        Some(size) => {
            assert_eq!(
                pos + size as usize,
                data.len(),
                "the Segment ends where the file does"
            );
            data.len()
        }
        None => data.len(),
    };
    let mut ids = Vec::new();
    while pos < end {
        let h = read_header(&data[pos..]).unwrap().unwrap();
        ids.push(h.id);
        match h.size {
            Some(size) => pos += h.len + size as usize,
            None => break,
        }
    }
    ids
}

/// Media made once per test run with ffmpeg (10 s, key frames every second): H.264 + AAC,
/// H.265, and H.264 at a second resolution. `None` without ffmpeg (outside CI).
pub fn generated(name: &str) -> Option<Vec<u8>> {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if !have("ffmpeg") {
        return None;
    }
    let _guard = LOCK.lock().unwrap();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let path = dir.path().join(name);
    if !path.exists() {
        let video = |size: &str| format!("testsrc2=duration=10:size={size}:rate=25");
        let args: Vec<String> = match name {
            "h264-aac.mkv" => vec![
                "-f",
                "lavfi",
                "-i",
                &video("320x240"),
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:duration=10",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "25",
                "-bf",
                "0",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-shortest",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "h264-640.mkv" => vec![
                "-f",
                "lavfi",
                "-i",
                &video("640x480"),
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "25",
                "-bf",
                "0",
                "-pix_fmt",
                "yuv420p",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "h265.mkv" => vec![
                "-f",
                "lavfi",
                "-i",
                &video("320x240"),
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "keyint=25:min-keyint=25:no-open-gop=1:bframes=0:log-level=error",
                "-pix_fmt",
                "yuv420p",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            // B-frames (composition offsets) and audio that starts with the picture.
            "h265-aac-bf.mkv" => vec![
                "-f",
                "lavfi",
                "-i",
                &video("320x240"),
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:duration=10",
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "keyint=25:min-keyint=25:no-open-gop=1:bframes=3:log-level=error",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-shortest",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            other => panic!("no recipe for {other}"),
        };
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-y"])
            .args(&args)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ffmpeg {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(std::fs::read(path).unwrap())
}

/// `cmd` (its program, arguments, environment and directory) run by util-linux `script` on a
/// pseudo-terminal 200 columns wide, as a person at a terminal would run it: stdin, stdout and
/// stderr are the terminal, and everything it draws is the transcript on script's stdout.
pub fn in_terminal(cmd: &Command) -> Command {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_str().unwrap().replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect();
    let mut script = Command::new("script");
    script
        .args([
            "-qfec",
            &format!("stty cols 200 rows 50; exec {}", line.join(" ")),
        ])
        .arg("/dev/null")
        .env_clear()
        .env("TERM", "xterm")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null());
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            script.env(key, value);
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        script.current_dir(dir);
    }
    script
}

/// `n` synthetic fragments of about `bytes` each.
pub fn sized(n: usize, bytes: usize) -> Vec<kvs_emu::StoredFragment> {
    kvs_emu::synthetic(&kvs_emu::SyntheticSpec {
        fragments: n,
        target_fragment_bytes: Some(bytes),
        ..kvs_emu::SyntheticSpec::default()
    })
}

/// JSON objects, one per line.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Starts kvs-dl with `--progress json` and returns it with a reader of its stderr.
pub fn spawn_json(w: &World, args: &[&str]) -> (Child, BufReader<ChildStderr>) {
    let mut child = w
        .kvs_dl()
        .args(args)
        .args(["--progress", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(child.stderr.take().unwrap());
    (child, err)
}

/// Reads JSON events until `n` fragments were written.
pub fn wait_fragments(err: &mut BufReader<ChildStderr>, n: usize) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while events
        .iter()
        .filter(|e: &&serde_json::Value| e["event"] == "fragment")
        .count()
        < n
    {
        assert!(Instant::now() < deadline, "no progress: {events:?}");
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "kvs-dl ended early: {events:?}"
        );
        if let Ok(v) = serde_json::from_str(&line) {
            events.push(v);
        }
    }
    events
}

/// A live stream `cam` of `n` fragments, two held before the emulator starts, the others
/// arriving `speed` times faster than real time.
pub fn live(n: usize, speed: f64) -> Stream {
    Stream {
        live: Some(Live { speed, backlog: 2 }),
        ..archive("cam", n)
    }
}

/// Asserts that `path` holds exactly `fragments`, once each, and says so in its Tags.
pub fn holds_exactly(path: &Path, fragments: &[kvs_emu::StoredFragment]) {
    let served: Vec<Vec<u8>> = fragments
        .iter()
        .flat_map(|f| contents(&f.chunk(0)).blocks)
        .collect();
    let data = std::fs::read(path).unwrap();
    assert_eq!(contents(&data).blocks, served, "{}", path.display());
    if let Some(v) = verdict(path, true, false) {
        assert_eq!(v.tags["KVS_FIRST_FRAGMENT_NUMBER"], fragments[0].number());
        assert_eq!(
            v.tags["KVS_LAST_FRAGMENT_NUMBER"],
            fragments[fragments.len() - 1].number()
        );
        assert_eq!(v.tags["KVS_FRAGMENTS"], fragments.len().to_string());
    }
}

/// Waits (30 s at most) until `done` holds: a condition another process brings about, polled.
#[track_caller]
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until a run has saved `w`'s `s.json` (states are saved beside the download, so a
/// `fragment` event can come before its state).
#[track_caller]
pub fn wait_for_state(w: &World) {
    wait_until("a state saved", || w.path("s.json").exists());
}

/// The state of `w`'s `s.json`.
pub fn state(w: &World) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(w.path("s.json")).unwrap()).unwrap()
}
