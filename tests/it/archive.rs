//! Archived ranges fetched in parallel (ListFragments + GetMediaForFragmentList), against
//! kvs-emu: the same output as one GetMedia session, within the service's limits, every listed
//! fragment written once or named as lost (exit 7).

use std::time::Duration;

use kvs_emu::{FragmentFault, Ingest, Live, StoredFragment, Stream, SyntheticSpec};

use crate::support::*;

/// Sizes scaled down 1000×: a range over 25 kB is fetched in parallel, in batches of ≤ 64 kB.
const SCALE: &str = "0.001";

/// 30 fragments of about 20 kB, in the past (the archive is idle).
fn backfill() -> Stream {
    Stream {
        idle_close: IDLE,
        ..Stream::archive("cam", sized(30, 20_000))
    }
}

/// What a file or body holds, read as GetMediaForFragmentList chunks: `--format raw` keeps
/// them as sent, without closing tags, so the last one ends at the end of the file.
fn archived_contents(data: &[u8]) -> Contents {
    let mut p = mkv::Parser::archived();
    p.push(data);
    let mut c = Contents::default();
    let drain = |p: &mut mkv::Parser, c: &mut Contents| {
        while let Some(e) = p.next_event().expect("output parses") {
            match e {
                mkv::Event::EbmlHeader(_) => c.ebml_headers += 1,
                mkv::Event::FragmentEnd(f) => c.fragments.push(f.number),
                mkv::Event::BlockStart(_) => c.blocks.push(Vec::new()),
                mkv::Event::BlockData(d) => c.blocks.last_mut().unwrap().extend_from_slice(d),
                _ => {}
            }
        }
    };
    drain(&mut p, &mut c);
    assert_eq!(p.finish().unwrap(), mkv::Finish::Clean);
    drain(&mut p, &mut c);
    c
}

fn read(w: &World, name: &str) -> Contents {
    archived_contents(&std::fs::read(w.path(name)).unwrap())
}

fn requests(w: &World, op: &str) -> usize {
    w.emu
        .requests()
        .iter()
        .filter(|r| r.operation == op)
        .count()
}

/// kvs-dl on stream `cam` into `name` with `args`, sizes scaled.
fn fetch(w: &World, name: &str, args: &[&str]) -> std::process::Output {
    run(w
        .kvs_dl()
        .env("KVS_DL_ARCHIVE_SCALE", SCALE)
        .args(["--stream-name", "cam", "-o", name, "--force"])
        .args(args))
}

#[test]
fn parallel_output_holds_the_same_fragments_as_one_session() {
    let w = World::new(vec![backfill()]);
    let all = numbers(&w_fragments(&w));
    for format in ["raw", "mkv"] {
        let par = fetch(
            &w,
            &format!("par.{format}"),
            &["--start", "earliest", "--end", "now", "--format", format],
        );
        assert_exit(&par, 0);
        let gmffl = requests(&w, "GetMediaForFragmentList");
        assert!(gmffl >= 5, "{gmffl} GetMediaForFragmentList calls");
        let one = fetch(
            &w,
            &format!("one.{format}"),
            &[
                "--start",
                "earliest",
                "--end",
                "now",
                "--format",
                format,
                "--parallel",
                "1",
            ],
        );
        assert_exit(&one, 0);
        assert_eq!(requests(&w, "GetMediaForFragmentList"), gmffl);
        let a = read(&w, &format!("par.{format}"));
        let b = read(&w, &format!("one.{format}"));
        assert_eq!(
            a.blocks, b.blocks,
            "{format}: the same blocks, byte for byte"
        );
        if format == "raw" {
            assert_eq!(a.fragments, all);
            assert_eq!(b.fragments, all);
        }
    }
}

fn w_fragments(_w: &World) -> Vec<StoredFragment> {
    sized(30, 20_000)
}

#[test]
fn transient_not_found_fragments_are_fetched_again() {
    let w = World::new(vec![Stream {
        fragment_faults: vec![
            FragmentFault::NotFoundFirst {
                fragment: 3,
                times: 1,
            },
            FragmentFault::NotFoundFirst {
                fragment: 17,
                times: 2,
            },
        ],
        ..backfill()
    }]);
    let out = fetch(
        &w,
        "out.raw",
        &["--start", "earliest", "--end", "now", "--format", "raw"],
    );
    assert_exit(&out, 0);
    let got = read(&w, "out.raw").fragments;
    assert_eq!(got, numbers(&sized(30, 20_000)));
}

#[test]
fn another_consumer_holding_three_connections_is_adapted_to() {
    let w = World::new(vec![Stream {
        held_connections: 3,
        enforce_limits: true,
        ..backfill()
    }]);
    let out = fetch(
        &w,
        "out.raw",
        &["--start", "earliest", "--end", "now", "--format", "raw"],
    );
    assert_exit(&out, 0);
    let got = read(&w, "out.raw").fragments;
    assert_eq!(got, numbers(&sized(30, 20_000)));
}

#[test]
fn a_fragment_that_stays_missing_is_a_loss_exit_7() {
    let all = sized(30, 20_000);
    let lost = all[12].number().to_owned();
    let w = World::new(vec![Stream {
        fragment_faults: vec![FragmentFault::Lost { fragment: 12 }],
        ..backfill()
    }]);
    let out = fetch(
        &w,
        "out.mkv",
        &["--start", "earliest", "--end", "now", "--progress", "json"],
    );
    assert_exit(&out, 7);
    let err = stderr(&out);
    assert!(err.contains(&lost), "{err}");
    let done = json_lines(&err)
        .into_iter()
        .find(|e| e["event"] == "done")
        .expect("a done event");
    assert_eq!(done["exit_code"], 7);
    assert!(done["reason"].as_str().unwrap().contains(&lost), "{done}");
    // Every other fragment, in a finished file.
    let kept: Vec<StoredFragment> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 12)
        .map(|(_, f)| f.clone())
        .collect();
    let data = std::fs::read(w.path("out.mkv")).expect("the file is finished");
    let served: Vec<Vec<u8>> = kept
        .iter()
        .flat_map(|f| contents(&f.chunk(0)).blocks)
        .collect();
    assert_eq!(archived_contents(&data).blocks, served);
}

#[test]
fn a_past_range_off_fragment_boundaries_keeps_what_the_contract_keeps() {
    let all = sized(30, 20_000);
    let w = World::new(vec![backfill()]);
    let ts = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap().to_string();
    for clock in ["producer", "server"] {
        let at = |f: &StoredFragment| match clock {
            "producer" => f.producer_ms(),
            _ => f.server_ms(),
        };
        // T1 inside fragment 3, T2 inside fragment 24: 3 ..= 24 are kept.
        let t1 = ts(at(&all[3]) + 700);
        let t2 = ts(at(&all[24]) + 300);
        for parallel in ["5", "1"] {
            let out = fetch(
                &w,
                "out.raw",
                &[
                    "--start",
                    &t1,
                    "--end",
                    &t2,
                    "--timestamp-type",
                    clock,
                    "--format",
                    "raw",
                    "--parallel",
                    parallel,
                ],
            );
            assert_exit(&out, 0);
            let got = read(&w, "out.raw").fragments;
            assert_eq!(
                got,
                numbers(&all[3..=24]),
                "{clock} clock, --parallel {parallel}"
            );
        }
    }
}

#[test]
fn a_live_stream_from_earliest_to_now_is_every_fragment_once() {
    // 500 ms fragments on the real clock: 30 held before the emulator starts, the rest arriving
    // in real time, so that the listing ends near the head and GetMedia brings the rest.
    let now = jiff::Timestamp::now().as_millisecond();
    let backlog = 30;
    let fragments = kvs_emu::synthetic(&SyntheticSpec {
        fragments: 40,
        fragment_ms: 500,
        frames_per_fragment: 5,
        target_fragment_bytes: Some(20_000),
        ingest: Ingest {
            producer_start_ms: now - 150 - backlog as i64 * 500,
            ..Ingest::default()
        },
    });
    let w = World::new(vec![Stream {
        live: Some(Live {
            speed: 1.0,
            backlog,
        }),
        idle_close: IDLE,
        ..Stream::archive("cam", fragments.clone())
    }]);
    std::thread::sleep(Duration::from_millis(1200));
    let out = fetch(
        &w,
        "out.raw",
        &["--start", "earliest", "--end", "now", "--format", "raw"],
    );
    assert_exit(&out, 0);
    assert!(requests(&w, "GetMediaForFragmentList") > 0);
    assert!(
        requests(&w, "GetMedia") > 0,
        "the tail comes through GetMedia"
    );
    let got = read(&w, "out.raw").fragments;
    assert!(got.len() >= backlog, "{} fragments", got.len());
    assert_eq!(
        got,
        numbers(&fragments[..got.len()]),
        "every fragment once, in order"
    );
}

#[test]
fn kill_9_mid_parallel_then_rerun_writes_every_fragment_once() {
    let all = sized(30, 20_000);
    let w = World::new(vec![Stream {
        bandwidth: Some(60_000),
        ..backfill()
    }]);
    let args = [
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "now",
        "-o",
        "out.mkv",
        "--state-file",
        "s.json",
    ];
    let mut cmd = w.kvs_dl();
    cmd.env("KVS_DL_ARCHIVE_SCALE", SCALE);
    let mut child = cmd
        .args(args)
        .args(["--progress", "json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    wait_fragments(&mut err, 4);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = run(w.kvs_dl().env("KVS_DL_ARCHIVE_SCALE", SCALE).args(args));
    assert_exit(&out, 0);
    holds_exactly(&w.path("out.mkv"), &all);
    // No spool is left behind.
    let left: Vec<_> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("spool"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
