//! Faults: every fragment ends up on disk exactly once, with the documented exit code.

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use kvs_emu::{CallFault, Live, Stream};

use crate::support::*;

/// Raw download of everything, returning the fragment numbers written.
fn download_all(w: &World, extra: &[&str]) -> (std::process::Output, Vec<String>) {
    let mut args = vec!["--start", "earliest", "--end", "now"];
    args.extend_from_slice(extra);
    fetch_raw(w, &args)
}

fn with_faults(n: usize, faults: Vec<CallFault>) -> (World, Vec<String>) {
    let stream = Stream {
        faults,
        ..archive("cam", n)
    };
    let all = numbers(&stream.fragments);
    (World::new(vec![stream]), all)
}

#[test]
fn a_cut_connection_resumes_from_the_last_whole_fragment() {
    let (w, all) = with_faults(
        6,
        vec![CallFault::CutInFragment {
            index: 2,
            at_fraction: 0.5,
        }],
    );
    let (out, got) = download_all(&w, &[]);
    assert_exit(&out, 0);
    assert_eq!(got, all);
    // The cut, then the resumption after the last whole fragment, which reaches the head.
    let sel = w.selectors();
    assert_eq!(sel.len(), 2, "{sel:?}");
    assert_eq!(sel[1]["StartSelectorType"], "CONTINUATION_TOKEN");
    assert_eq!(
        sel[1]["ContinuationToken"],
        all[1].as_str(),
        "after the last whole fragment"
    );
}

#[test]
fn server_errors_and_throttling_are_retried() {
    let (w, all) = with_faults(
        4,
        vec![
            CallFault::Status500,
            CallFault::Throttle,
            CallFault::ConnectionLimit,
        ],
    );
    let (out, got) = download_all(&w, &[]);
    assert_exit(&out, 0);
    assert_eq!(got, all);
    // Three refusals, then the download.
    assert_eq!(w.get_media().len(), 4);
}

#[test]
fn retries_give_up_with_exit_5() {
    let (w, _) = with_faults(4, vec![CallFault::Status500; 10]);
    let (out, got) = download_all(&w, &["--max-retries", "3"]);
    assert_exit(&out, 5);
    assert!(got.is_empty());
    assert!(!w.path("out.raw").exists() && !w.path("out.raw.part").exists());
    assert_eq!(
        w.get_media().len(),
        3,
        "three consecutive failures end the run"
    );
    assert!(stderr(&out).contains("--max-retries"), "{}", stderr(&out));
}

#[test]
fn an_invalid_endpoint_is_resolved_again() {
    let (w, all) = with_faults(3, vec![CallFault::InvalidEndpoint]);
    let (out, got) = download_all(&w, &[]);
    assert_exit(&out, 0);
    assert_eq!(got, all);
    let endpoints = w
        .emu
        .requests()
        .iter()
        .filter(|r| r.operation == "GetDataEndpoint" && r.body["APIName"] == "GET_MEDIA")
        .count();
    assert_eq!(endpoints, 2);
}

#[test]
fn retryable_in_band_errors_reconnect_and_kms_errors_end_with_exit_3() {
    let (w, all) = with_faults(
        5,
        vec![CallFault::InBandError {
            after_fragments: 2,
            id: 5000,
            code: "INTERNAL_ERROR".into(),
        }],
    );
    let (out, got) = download_all(&w, &[]);
    assert_exit(&out, 0);
    assert_eq!(got, all);
    let (w, all) = with_faults(
        5,
        vec![CallFault::InBandError {
            after_fragments: 2,
            id: 4501,
            code: "KMS_KEY_DISABLED".into(),
        }],
    );
    let (out, got) = download_all(&w, &[]);
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("KMS"), "{}", stderr(&out));
    assert_eq!(got, all[..2], "what came before the error is kept");
}

#[test]
fn expired_fragments_are_a_reported_gap() {
    // Ten 2 s fragments; retention keeps the last 11 s, so fragments 0 to 4 are gone.
    let stream = Stream {
        retention_ms: Some(11_000),
        ..archive("cam", 10)
    };
    let all = numbers(&stream.fragments);
    let w = World::new(vec![stream]);
    let start = format!("fragment:{}", all[0]);
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "cam",
        "--start",
        &start,
        "--end",
        "now",
        "--format",
        "raw",
        "-o",
        "out.raw",
        "--progress",
        "json",
    ]));
    assert_exit(&out, 0);
    let got = contents(&std::fs::read(w.path("out.raw")).unwrap()).fragments;
    assert_eq!(got, all[5..]);
    let events = json_lines(&stderr(&out));
    assert!(events.iter().any(|e| e["event"] == "gap"), "{events:?}");
    let done = events.iter().find(|e| e["event"] == "done").unwrap();
    assert_eq!(done["gaps"], 1);
}

#[test]
fn session_cuts_and_stalls_lose_nothing() {
    let stream = Stream {
        max_session: Some(Duration::from_millis(20)),
        idle_close: IDLE,
        ..Stream::archive("cam", sized(30, 1 << 20))
    };
    let all = numbers(&stream.fragments);
    let w = World::new(vec![stream]);
    // One GetMedia session, cut (30 MB would otherwise be fetched in parallel).
    let (out, got) = download_all(&w, &["--parallel", "1"]);
    assert_exit(&out, 0);
    assert_eq!(got, all);
    assert!(w.get_media().len() > 1, "the session was cut");
    // A body silent for longer than the SDK's 5 s stalled-stream grace period.
    let (w, all) = with_faults(3, vec![CallFault::Stall { ms: 6500 }]);
    let (out, got) = download_all(&w, &[]);
    assert_exit(&out, 0);
    assert_eq!(got, all);
    assert_eq!(
        w.get_media()[0].fragments_sent,
        3,
        "the stall did not break the connection"
    );
}

#[test]
fn getmedia_calls_stay_within_five_per_second() {
    let stream = Stream {
        enforce_limits: true,
        faults: vec![CallFault::Status500; 12],
        ..archive("cam", 2)
    };
    let all = numbers(&stream.fragments);
    let w = World::new(vec![stream]);
    let mut cmd = w.kvs_dl();
    cmd.env("KVS_DL_BACKOFF_SCALE", "0");
    let out = run(cmd.args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "now",
        "--format",
        "raw",
        "-o",
        "out.raw",
        "--max-retries",
        "20",
    ]));
    assert_exit(&out, 0);
    assert_eq!(
        contents(&std::fs::read(w.path("out.raw")).unwrap()).fragments,
        all
    );
    let times: Vec<Duration> = w.get_media().iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 13);
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 5,
            "{in_window} calls within a second from call {i}"
        );
    }
    assert!(
        w.get_media()
            .iter()
            .all(|r| r.error_type.as_deref() != Some("ClientLimitExceededException"))
    );
}

fn signal(child: &Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigint_and_sigterm_finish_the_file_and_exit_130_and_143() {
    for (sig, code) in [("-INT", 130), ("-TERM", 143)] {
        let stream = live(100, 4.0);
        let all = numbers(&stream.fragments);
        let w = World::new(vec![stream]);
        let (mut child, mut err) = spawn_json(
            &w,
            &[
                "--stream-name",
                "cam",
                "--start",
                "earliest",
                "-o",
                "out.mkv",
                "--state-file",
                "s.json",
            ],
        );
        wait_fragments(&mut err, 3);
        signal(&child, sig);
        let mut rest = String::new();
        err.read_to_string(&mut rest).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{rest}");
        let file = std::fs::read(w.path("out.mkv")).expect("the file was finished");
        assert!(!w.path("out.mkv.part").exists());
        let got = contents(&file);
        assert_eq!(got.ebml_headers, 1);
        let events = json_lines(&rest);
        let written = events
            .iter()
            .find(|e| e["event"] == "file")
            .expect("a file event");
        let n = written["fragments"].as_u64().unwrap() as usize;
        assert!(n >= 3);
        assert_eq!(written["first_fragment"], all[0].as_str());
        assert_eq!(written["last_fragment"], all[n - 1].as_str());
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(w.path("s.json")).unwrap()).unwrap();
        assert_eq!(state["last"]["fragment_number"], all[n - 1].as_str());
        assert!(state["file"].is_null());
    }
}

#[test]
fn a_broken_pipe_ends_quietly() {
    let w = World::new(vec![live(100, 4.0)]);
    let mut child = w
        .kvs_dl()
        .args(["--stream-name", "cam", "--start", "earliest", "-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("error"), "{}", stderr(&out));
}

#[test]
fn chained_cron_runs_hold_every_fragment_exactly_once() {
    // A fragment arrives every second while the runs go on.
    let stream = Stream {
        live: Some(Live {
            speed: 2.0,
            backlog: 5,
        }),
        ..archive("cam", 15)
    };
    let all = numbers(&stream.fragments);
    let w = World::new(vec![stream]);
    let mut union = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for run_no in 0.. {
        assert!(
            Instant::now() < deadline,
            "the chain never caught up with the whole stream"
        );
        let name = format!("run{run_no}.raw");
        let out = run(w.kvs_dl().args([
            "--stream-name",
            "cam",
            "--start",
            "earliest",
            "--end",
            "now",
            "--state-file",
            "s.json",
            "--format",
            "raw",
            "-o",
            &name,
        ]));
        assert_exit(&out, 0);
        if let Ok(data) = std::fs::read(w.path(&name)) {
            union.extend(contents(&data).fragments);
        }
        if union.len() == all.len() {
            assert!(run_no >= 2, "the chain took several runs");
            break;
        }
    }
    assert_eq!(union, all, "every fragment once, in order");
}

#[test]
fn a_refused_saved_token_falls_back_to_the_saved_time() {
    let stream = archive("cam", 6);
    let all = numbers(&stream.fragments);
    let saved = &stream.fragments[2];
    let state = serde_json::json!({
        "version": 1,
        "stream": "cam",
        "last": {
            "fragment_number": saved.number(),
            "server_timestamp_ms": saved.server_ms(),
            "producer_timestamp_ms": saved.producer_ms(),
            "continuation_token": "no.longer.valid",
        },
        "file": null,
    });
    let w = World::new(vec![stream]);
    std::fs::write(w.path("s.json"), state.to_string()).unwrap();
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "now",
        "--state-file",
        "s.json",
        "--format",
        "raw",
        "-o",
        "out.raw",
    ]));
    assert_exit(&out, 0);
    assert_eq!(
        contents(&std::fs::read(w.path("out.raw")).unwrap()).fragments,
        all[3..]
    );
    let sel = w.selectors();
    assert_eq!(sel[0]["StartSelectorType"], "CONTINUATION_TOKEN");
    assert_eq!(sel[1]["StartSelectorType"], "SERVER_TIMESTAMP");
}

/// Starts `args` on a live stream, kills it with SIGKILL after `n` fragments, and returns how
/// many fragments the state file recorded.
fn kill_9_after(w: &World, args: &[&str], n: usize, all: &[String]) -> usize {
    let (mut child, mut err) = spawn_json(w, args);
    wait_fragments(&mut err, n);
    // States are saved beside the download: kill once one is.
    wait_for_state(w);
    signal(&child, "-KILL");
    child.wait().unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("s.json")).unwrap()).unwrap();
    all.iter()
        .position(|n| *n == state["last"]["fragment_number"])
        .expect("the state names a fragment")
        + 1
}

#[test]
fn after_kill_9_the_next_run_finishes_the_part_file_then_continues() {
    let stream = live(100, 4.0);
    let fragments = stream.fragments.clone();
    let all = numbers(&fragments);
    let w = World::new(vec![stream]);
    let args = [
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--state-file",
        "s.json",
        "--segment",
        "1h",
        "-o",
        "seg-{fragment}.mkv",
    ];
    // The state is saved after the first fragment, then at most every 5 s: it may record fewer
    // fragments than the .part holds, and the next run keeps only those.
    let recorded = kill_9_after(&w, &args, 4, &all);
    assert!(recorded >= 1);
    let first = w.path(&format!("seg-{}.mkv", all[0]));
    assert!(!first.exists(), "killed: nothing finished");
    assert!(w.path(&format!("seg-{}.mkv.part", all[0])).exists());

    // A run writing other files (another template) finishes the killed run's segment.
    let mut other = args;
    other[9] = "other-{fragment}.mkv";
    let out = run(w.kvs_dl().args(other).args(["--max-fragments", "3"]));
    assert_exit(&out, 0);
    assert!(!w.path(&format!("seg-{}.mkv.part", all[0])).exists());
    holds_exactly(&first, &fragments[..recorded]);
    // Its own hour-long segment is not over: it stays open for the next run.
    let next = format!("other-{}.mkv", all[recorded]);
    assert!(w.path(&format!("{next}.part")).exists());
    let saved = state(&w);
    assert_eq!(saved["file"]["path"], next, "{saved}");
    assert_eq!(saved["file"]["fragments"], 3, "{saved}");
}

#[test]
fn a_segment_spans_runs_until_a_fragment_past_its_end_arrives() {
    // 2 s fragments from a time that is a multiple of 10 s: segments of 5 fragments.
    let stream = live(100, 4.0);
    let fragments = stream.fragments.clone();
    let all = numbers(&fragments);
    let w = World::new(vec![stream]);
    let args = [
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--state-file",
        "s.json",
        "--segment",
        "10s",
        "-o",
        "seg-{fragment}.mkv",
    ];
    // The kill may land between a fragment's event and its state: 1 to 4 fragments recorded.
    let recorded = kill_9_after(&w, &args, 2, &all);
    assert!((1..5).contains(&recorded), "{recorded}");
    let seg = |k: usize| w.path(&format!("seg-{}.mkv", all[k]));
    let part = |k: usize| w.path(&format!("seg-{}.mkv.part", all[k]));

    // The same command goes on with the killed run's segment, closes it at the first fragment
    // past 10 s, and leaves the next one open (fragments 5 and 6): the stream has not reached
    // its end yet.
    let rest = (7 - recorded).to_string();
    let out = run(w.kvs_dl().args(args).args(["--max-fragments", &rest]));
    assert_exit(&out, 0);
    holds_exactly(&seg(0), &fragments[..5]);
    assert!(!part(0).exists());
    assert!(part(5).exists() && !seg(5).exists(), "{}", stderr(&out));
    let saved = state(&w);
    assert_eq!(
        saved["file"]["path"],
        format!("seg-{}.mkv", all[5]),
        "{saved}"
    );
    assert_eq!(saved["last"]["fragment_number"], all[6]);
    assert_eq!(saved["file"]["fragments"], 2, "{saved}");

    // A third run completes it at fragment 10.
    let out = run(w.kvs_dl().args(args).args(["--max-fragments", "4"]));
    assert_exit(&out, 0);
    holds_exactly(&seg(5), &fragments[5..10]);
    assert!(!part(5).exists());
}

#[test]
fn after_kill_9_the_same_command_continues_the_same_file() {
    let stream = live(100, 4.0);
    let fragments = stream.fragments.clone();
    let all = numbers(&fragments);
    let w = World::new(vec![stream]);
    let args = [
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--state-file",
        "s.json",
        "-o",
        "out.mkv",
    ];
    let recorded = kill_9_after(&w, &args, 3, &all);
    assert!(!w.path("out.mkv").exists() && w.path("out.mkv.part").exists());

    let out = run(w.kvs_dl().args(args).args(["--max-fragments", "3"]));
    assert_exit(&out, 0);
    assert!(!w.path("out.mkv.part").exists());
    // The recorded fragments, then the next three, once each, in one file.
    holds_exactly(&w.path("out.mkv"), &fragments[..recorded + 3]);
}
