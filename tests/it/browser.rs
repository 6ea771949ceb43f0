//! The files kvs-dl writes, played by a real browser: headless Chromium loads each one into a
//! `<video>` element, plays it, seeks to its middle and says what it saw.
//!
//! How the harness works:
//! - Chromium is Debian's `chromium`, started headless (as root: `--no-sandbox`) with a fresh
//!   temporary profile and killed, with every process it started, when the test ends.
//! - It is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`): JSON
//!   messages, each ended by a NUL byte, written to its fd 3 and read from its fd 4. A shell
//!   `exec` hands it our stdin and stdout pipes as those fds. No websocket, so no extra crate.
//!   The harness opens a page target, attaches to it (flat sessions), navigates and runs one
//!   `Runtime.evaluate` of a promise that does the whole playback and returns the verdict.
//! - The file is served by a small HTTP/1.1 server on 127.0.0.1:0 (a thread per connection,
//!   keep-alive), which answers `Range` requests with 206 the way a web server does, so Chromium
//!   loads and seeks it as it would on the web (not through file://). The media response
//!   carries no Content-Type and the URL no extension: Chromium sniffs the container, so the
//!   same judge serves Matroska and MP4.
//!
//! Every wait is bounded: each stage of the playback times out in the page, and the harness
//! gives up on Chromium's answers after a deadline of its own. Without `chromium` the tests
//! skip outside CI and fail under CI, like the tests that need ffprobe.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvs_emu::{Ingest, MkvOptions, StoredFragment, Stream};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::*;

/// The browser on the PATH (Debian's package and launcher).
const CHROMIUM: &str = "chromium";

/// How long one stage of the playback (metadata, first frames, seek, frame after it) may take.
/// Generous: CI runs the whole suite at once on two cores, and the video decodes in software.
const STAGE: Duration = Duration::from_secs(30);

/// Frames that must be presented, from the start, before the seek.
const MIN_FRAMES: u32 = 5;

/// What Chromium made of a file.
#[derive(Debug, Clone, Deserialize)]
pub struct Playback {
    /// `video.duration` once the metadata loaded (NaN when unknown or infinite).
    #[serde(deserialize_with = "number_or_nan")]
    pub duration_s: f64,
    pub width: u32,
    pub height: u32,
    /// Frames presented while playing from the start (counted by `requestVideoFrameCallback`).
    pub frames_presented: u32,
    /// `currentTime` once the seek to the middle completed (NaN when it did not).
    #[serde(deserialize_with = "number_or_nan")]
    pub seeked_to_s: f64,
    /// Whether a frame within 1 s of the seek target was presented once the seek started.
    pub frame_after_seek: bool,
    /// `video.error` (code and message), or the stage that timed out.
    pub error: Option<String>,
}

fn number_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Plays `path` in headless Chromium and returns what it saw; `None` without Chromium (outside
/// CI). Panics only when the harness itself fails (Chromium does not start or answer).
pub fn playback(path: &Path) -> Option<Playback> {
    // One browser at a time: the suite runs tests in parallel on a small machine.
    static ONE: Mutex<()> = Mutex::new(());
    if !have(CHROMIUM) {
        return None;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(path);
    let mut browser = Browser::launch();
    let verdict = browser.play(&server.url("/"), &server.url("/media"));
    let verdict = verdict.unwrap_or_else(|e| {
        panic!(
            "{}: the harness failed: {e}\nrequests served: {:?}\nchromium said:\n{}",
            path.display(),
            server.log(),
            browser.stderr_tail()
        )
    });
    eprintln!(
        "{}: chromium: {verdict:?}; requests served: {:?}",
        path.display(),
        server.log()
    );
    Some(verdict)
}

/// Panics, with the whole verdict and ffprobe's view of the file, unless Chromium plays `path`:
/// metadata with a picture size and a duration within `tolerance` of `expected_duration_s`,
/// frames presented from the start, a seek to the middle that lands and presents a frame there,
/// and no error. `None` without Chromium (outside CI).
#[track_caller]
pub fn assert_plays(path: &Path, expected_duration_s: f64, tolerance: f64) -> Option<Playback> {
    let p = playback(path)?;
    // False for NaN (unknown) too.
    let near = |a: f64, b: f64| (a - b).abs() <= tolerance;
    let failures: Vec<&str> = [
        (p.error.is_some(), "an error"),
        (!near(p.duration_s, expected_duration_s), "the duration"),
        (p.width == 0 || p.height == 0, "no picture size"),
        (p.frames_presented < MIN_FRAMES, "too few frames presented"),
        (
            !near(p.seeked_to_s, p.duration_s / 2.0),
            "the seek did not land in the middle",
        ),
        (!p.frame_after_seek, "no frame after the seek"),
    ]
    .into_iter()
    .filter_map(|(failed, what)| failed.then_some(what))
    .collect();
    assert!(
        failures.is_empty(),
        "{} does not play in Chromium ({}): {p:#?}\nexpected duration {expected_duration_s} s \
         ± {tolerance} s, at least {MIN_FRAMES} frames\nffprobe: {}",
        path.display(),
        failures.join(", "),
        ffprobe_summary(path)
    );
    Some(p)
}

/// The container and streams as ffprobe sees them, for failure messages (never fails).
fn ffprobe_summary(path: &Path) -> String {
    Command::new("ffprobe")
        .args(["-v", "error", "-show_entries"])
        .arg("format=format_name,duration:stream=codec_name,profile,width,height,pix_fmt")
        .args(["-of", "compact"])
        .arg(path)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_else(|e| format!("(ffprobe did not run: {e})"))
}

/// The page: one muted `<video>` element, in view so its frames are composited.
const PAGE: &str = "<!doctype html><meta charset=utf-8><title>kvs-dl</title><link rel=icon href=data:,>\
<video id=v muted playsinline preload=auto width=320 height=240></video>";

/// Runs in the page with the media URL and the stage timeout (ms); resolves to a `Playback`.
const JUDGE: &str = r#"async (src, stageMs) => {
  const v = document.getElementById('v');
  const r = { duration_s: null, width: 0, height: 0, frames_presented: 0, seeked_to_s: null,
              frame_after_seek: false, error: null };
  const mediaError = () => v.error ? `MediaError code ${v.error.code}: ${v.error.message}` : null;
  const state = () => `readyState ${v.readyState}, networkState ${v.networkState}, ` +
    `currentTime ${v.currentTime}`;
  // Resolves on `event`, rejects on an error event or after stageMs.
  const until = (event, what) => new Promise((resolve, reject) => {
    const done = (fn, arg) => {
      clearTimeout(timer);
      v.removeEventListener(event, onEvent);
      v.removeEventListener('error', onError);
      fn(arg);
    };
    const onEvent = () => done(resolve);
    const onError = () => done(reject, new Error(mediaError() || `error event (${state()})`));
    const timer = setTimeout(
      () => done(reject, new Error(`timed out after ${stageMs} ms waiting for ${what} (${state()})`)),
      stageMs);
    v.addEventListener(event, onEvent);
    v.addEventListener('error', onError);
  });
  // Settles with `promise`, or rejects after stageMs.
  const timeout = (promise, what) => {
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${stageMs} ms waiting for ${what} (${state()})`)), stageMs);
    });
    return Promise.race([promise, late]).finally(() => clearTimeout(timer));
  };
  // Presented frames, and waiters for a frame that satisfies a condition.
  const frames = [];
  const waiters = [];
  const onFrame = (now, meta) => {
    frames.push(meta.mediaTime);
    for (const w of waiters.splice(0)) {
      if (w.test(meta.mediaTime)) w.resolve(); else waiters.push(w);
    }
    v.requestVideoFrameCallback(onFrame);
  };
  const frame = (test, what) => new Promise((resolve, reject) => {
    const w = { test, resolve: () => { clearTimeout(timer); v.removeEventListener('error', onError); resolve(); } };
    const onError = () => { clearTimeout(timer); reject(new Error(mediaError() || 'error event')); };
    const timer = setTimeout(() => {
      waiters.splice(waiters.indexOf(w), 1);
      v.removeEventListener('error', onError);
      reject(new Error(`timed out after ${stageMs} ms waiting for ${what} (${state()}, ` +
        `${frames.length} frames presented)`));
    }, stageMs);
    v.addEventListener('error', onError);
    waiters.push(w);
  });
  try {
    const metadata = until('loadedmetadata', 'loadedmetadata');
    v.src = src;
    await metadata;
    r.duration_s = Number.isFinite(v.duration) ? v.duration : null;
    r.width = v.videoWidth;
    r.height = v.videoHeight;
    if (r.duration_s === null) throw new Error(`duration is ${v.duration}`);
    v.requestVideoFrameCallback(onFrame);
    const first = frame(() => frames.length >= __MIN_FRAMES__, '__MIN_FRAMES__ presented frames');
    await timeout(v.play(), 'play() to start playback');
    await first;
    r.frames_presented = frames.length;
    const target = r.duration_s / 2;
    const seeked = until('seeked', `seeked to ${target} s`);
    const after = frame(t => Math.abs(t - target) <= 1, `a frame at ${target} s after the seek`);
    v.currentTime = target;
    await seeked;
    r.seeked_to_s = v.currentTime;
    await after;
    r.frame_after_seek = true;
  } catch (e) {
    r.error = mediaError() || String(e.message || e);
  }
  r.error = r.error || mediaError();
  v.pause();
  return r;
}"#;

/// Headless Chromium on a DevTools pipe, killed with all its processes on drop.
struct Browser {
    child: Child,
    /// Its fd 3: commands.
    commands: ChildStdin,
    /// Parsed messages from its fd 4 (replies and events), read by a thread.
    messages: Receiver<Value>,
    next_id: u64,
    /// The profile and Chromium's stderr.
    dir: tempfile::TempDir,
}

impl Browser {
    fn launch() -> Browser {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = File::create(dir.path().join("chromium.log")).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            // Our stdin becomes its fd 3 and our stdout its fd 4; its own stdout goes to the log.
            .arg(r#"exec 3<&0 4>&1 </dev/null >&2; exec "$@""#)
            .arg("sh")
            .arg(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--mute-audio",
                "--autoplay-policy=no-user-gesture-required",
                "--remote-debugging-pipe",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            // Its own process group, so that drop ends the renderers and helpers too.
            .process_group(0)
            .spawn()
            .expect("chromium starts");
        let commands = child.stdin.take().unwrap();
        let mut replies = BufReader::new(child.stdout.take().unwrap());
        let (tx, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match replies.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                let Ok(message) = serde_json::from_slice::<Value>(&buf) else {
                    continue;
                };
                if tx.send(message).is_err() {
                    break;
                }
            }
        });
        Browser {
            child,
            commands,
            messages,
            next_id: 0,
            dir,
        }
    }

    /// Sends a command (to a page session when `session` is given) and waits for its result.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        within: Duration,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .and_then(|()| self.commands.flush())
            .map_err(|e| format!("{method}: writing to chromium: {e}"))?;
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = match self.messages.recv_timeout(left) {
                Ok(reply) => reply,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("{method}: no answer within {within:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{method}: chromium closed its pipe (exited?)"));
                }
            };
            if reply["method"] == "Inspector.targetCrashed" {
                return Err(format!("{method}: the page crashed"));
            }
            if reply["id"] != id {
                continue; // an event, or the answer to a command given up on
            }
            if !reply["error"].is_null() {
                return Err(format!("{method}: {}", reply["error"]));
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Opens `page` in a new tab and judges `media` there.
    fn play(&mut self, page: &str, media: &str) -> Result<Playback, String> {
        let quick = Duration::from_secs(30);
        let target = self.call(
            None,
            "Target.createTarget",
            json!({ "url": "about:blank" }),
            quick,
        )?;
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
            quick,
        )?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or("Target.attachToTarget: no sessionId")?
            .to_owned();
        let s = Some(session.as_str());
        self.call(s, "Inspector.enable", json!({}), quick)?;
        let navigated = self.call(s, "Page.navigate", json!({ "url": page }), quick)?;
        if let Some(error) = navigated["errorText"].as_str() {
            return Err(format!("Page.navigate {page}: {error}"));
        }
        // The page is tiny; wait for it to be complete, then judge.
        let expression = format!(
            "(async () => {{ if (document.readyState !== 'complete') await new Promise(r => \
             addEventListener('load', r, {{ once: true }})); return ({})({}, {}); }})()",
            JUDGE.replace("__MIN_FRAMES__", &MIN_FRAMES.to_string()),
            json!(media),
            STAGE.as_millis()
        );
        let evaluated = self.call(
            s,
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            // Four stages, and slack for Chromium to answer.
            STAGE * 4 + Duration::from_secs(30),
        )?;
        if !evaluated["exceptionDetails"].is_null() {
            return Err(format!(
                "the judging script threw: {}",
                evaluated["exceptionDetails"]
            ));
        }
        serde_json::from_value(evaluated["result"]["value"].clone())
            .map_err(|e| format!("the verdict {}: {e}", evaluated["result"]))
    }

    /// The end of what Chromium printed, for failure messages.
    fn stderr_tail(&self) -> String {
        let all = std::fs::read_to_string(self.dir.path().join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole process group: the browser, its zygotes, renderers and utility processes.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback HTTP/1.1 server: the page at `/` and one file at `/media`, with byte ranges.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// "METHOD PATH RANGE -> STATUS" for every request, in order.
    log: Arc<Mutex<Vec<String>>>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(media: &Path) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let media = media.to_path_buf();
        let accept = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (media, log) = (media.clone(), log.clone());
                    std::thread::spawn(move || {
                        let _ = serve_connection(conn, &media, &log);
                    });
                }
            })
        };
        Server {
            addr,
            stop,
            log,
            accept: Some(accept),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Answers the requests of one keep-alive connection until the client closes it.
fn serve_connection(
    conn: TcpStream,
    media: &Path,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    // A connection the browser left open ends with the test, or after this.
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut range = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("range")
            {
                range = Some(value.trim().to_owned());
            }
        }
        let mut parts = request.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (status, headers, body) = match (method, path) {
            ("GET" | "HEAD", "/") => (
                "200 OK",
                vec![("Content-Type", "text/html".to_owned())],
                Body::Page,
            ),
            ("GET" | "HEAD", "/media") => {
                let size = std::fs::metadata(media)?.len();
                match range.as_deref().map(|r| byte_range(r, size)) {
                    None => ("200 OK", vec![], Body::File(0, size)),
                    Some(Some((first, last))) => (
                        "206 Partial Content",
                        vec![("Content-Range", format!("bytes {first}-{last}/{size}"))],
                        Body::File(first, last - first + 1),
                    ),
                    Some(None) => (
                        "416 Range Not Satisfiable",
                        vec![("Content-Range", format!("bytes */{size}"))],
                        Body::Empty,
                    ),
                }
            }
            _ => ("404 Not Found", vec![], Body::Empty),
        };
        log.lock().unwrap().push(format!(
            "{method} {path} {}-> {status}",
            range.map(|r| r + " ").unwrap_or_default()
        ));
        let length = match body {
            Body::Page => PAGE.len() as u64,
            Body::File(_, length) => length,
            Body::Empty => 0,
        };
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {length}\r\nAccept-Ranges: bytes\r\n\
             Cache-Control: no-store\r\n"
        );
        for (name, value) in headers {
            head += &format!("{name}: {value}\r\n");
        }
        head += "\r\n";
        out.write_all(head.as_bytes())?;
        if method != "HEAD" {
            match body {
                Body::Page => out.write_all(PAGE.as_bytes())?,
                Body::File(first, length) => {
                    let mut file = File::open(media)?;
                    file.seek(SeekFrom::Start(first))?;
                    // The browser drops a connection mid-body when it seeks elsewhere: an error
                    // here just ends the connection.
                    std::io::copy(&mut file.take(length), &mut out)?;
                }
                Body::Empty => {}
            }
        }
        out.flush()?;
    }
}

/// What a response carries after its headers.
enum Body {
    Page,
    /// `length` bytes of the file from `first`.
    File(u64, u64),
    Empty,
}

/// The first and last byte of a `Range: bytes=...` header (one range) in a file of `size`
/// bytes; `None` when it cannot be satisfied.
fn byte_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.strip_prefix("bytes=")?.split(',').next()?.trim();
    let (first, last) = spec.split_once('-')?;
    let (first, last) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (size.checked_sub(n.min(size))?, size.checked_sub(1)?)
        }
        (first, "") => (first.parse().ok()?, size.checked_sub(1)?),
        (first, last) => (
            first.parse().ok()?,
            last.parse::<u64>().ok()?.min(size.checked_sub(1)?),
        ),
    };
    (first <= last && last < size).then_some((first, last))
}

/// Downloads all of `fragments` (stream `cam` on a fresh emulator) with kvs-dl and `args`,
/// into `out`; returns the world holding the file.
fn download(fragments: Vec<StoredFragment>, args: &[&str]) -> World {
    let w = World::new(vec![Stream {
        idle_close: IDLE,
        ..Stream::archive("cam", fragments)
    }]);
    let out = run(w
        .kvs_dl()
        .args([
            "--stream-name",
            "cam",
            "--start",
            "earliest",
            "--end",
            "now",
        ])
        .args(args));
    assert_exit(&out, 0);
    w
}

/// The duration ffprobe reads from a file's container.
fn ffprobe_duration(path: &Path) -> Option<f64> {
    if !have("ffprobe") {
        return None;
    }
    let p = path.to_str().unwrap();
    let (rc, out, err) = tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
            p,
        ],
    );
    assert_eq!(rc, 0, "ffprobe {p}: {err}");
    Some(out.trim().parse().expect("ffprobe prints a duration"))
}

#[test]
fn byte_ranges_follow_rfc_9110() {
    assert_eq!(byte_range("bytes=0-", 10), Some((0, 9)));
    assert_eq!(byte_range("bytes=2-4", 10), Some((2, 4)));
    assert_eq!(byte_range("bytes=5-100", 10), Some((5, 9)));
    assert_eq!(byte_range("bytes=-3", 10), Some((7, 9)));
    assert_eq!(byte_range("bytes=-30", 10), Some((0, 9)));
    assert_eq!(byte_range("bytes=10-", 10), None);
    assert_eq!(byte_range("bytes=4-2", 10), None);
    assert_eq!(byte_range("items=0-1", 10), None);
    assert_eq!(byte_range("bytes=0-", 0), None);
}

#[test]
fn the_server_answers_ranges_on_a_kept_alive_connection() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("media");
    std::fs::write(&file, b"0123456789").unwrap();
    let server = Server::start(&file);
    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut exchange = |range: &str| {
        write!(
            conn,
            "GET /media HTTP/1.1\r\nHost: x\r\nRange: {range}\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            if let Some(n) = line.strip_prefix("Content-Length: ") {
                length = n.parse().unwrap();
            }
            head.push(line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (head, String::from_utf8(body).unwrap())
    };
    let (head, body) = exchange("bytes=2-4");
    assert_eq!(head[0], "HTTP/1.1 206 Partial Content");
    assert!(
        head.contains(&"Content-Range: bytes 2-4/10".to_owned()),
        "{head:?}"
    );
    assert_eq!(body, "234");
    let (head, body) = exchange("bytes=7-");
    assert_eq!(
        (head[0].as_str(), body.as_str()),
        ("HTTP/1.1 206 Partial Content", "789")
    );
    let (head, body) = exchange("bytes=10-");
    assert_eq!(
        (head[0].as_str(), body.as_str()),
        ("HTTP/1.1 416 Range Not Satisfiable", "")
    );
    assert_eq!(server.log().len(), 3);
}

#[test]
fn generated_h264_with_aac_as_default_mkv_plays_in_chromium() {
    let Some(media) = generated("h264-aac.mkv") else {
        return;
    };
    let opts = MkvOptions {
        ingest: Ingest {
            producer_start_ms: 1_700_000_000_000,
            ..Ingest::default()
        },
        ..MkvOptions::default()
    };
    let fragments = kvs_emu::from_mkv(&media, &opts).unwrap();
    // No --format: mkv is the default.
    let w = download(fragments, &["-o", "out.mkv"]);
    let path = w.path("out.mkv");
    let Some(expected) = ffprobe_duration(&path) else {
        return;
    };
    // The source is 10 s at 25 fps; Chromium and ffprobe agree on it within two frames.
    assert!((expected - 10.0).abs() <= 0.08, "ffprobe: {expected} s");
    assert_plays(&path, expected, 0.08);
}

#[test]
fn a_real_capture_as_mkv_plays_in_chromium() {
    let Some(body) = capture("output_get_media.mkv") else {
        return;
    };
    let fragments = kvs_emu::from_capture(&body).unwrap();
    let w = download(fragments, &["--format", "mkv", "-o", "out.mkv"]);
    let path = w.path("out.mkv");
    let Some(expected) = ffprobe_duration(&path) else {
        return;
    };
    assert_plays(&path, expected, 0.1);
}
