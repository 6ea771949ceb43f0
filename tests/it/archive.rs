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

/// `kvs-dl SUBCOMMAND args` against the emulator (the endpoint from the environment: the
/// download flags cannot come before a subcommand).
fn subcommand(w: &World, args: &[&str]) -> std::process::Output {
    run(std::process::Command::new(env!("CARGO_BIN_EXE_kvs-dl"))
        .env_clear()
        .env("HOME", w.path("home"))
        .env("AWS_ACCESS_KEY_ID", kvs_emu::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", kvs_emu::SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", w.emu.endpoint())
        .env("KVS_DL_BACKOFF_SCALE", "0.01")
        .current_dir(w.dir.path())
        .args(args))
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// 10 fragments, a minute with none (the producer was off), then 10 more.
fn with_a_gap() -> Vec<StoredFragment> {
    let first = sized(10, 20_000);
    let resume = first.last().unwrap().producer_ms() + 2_000 + 60_000;
    let second = kvs_emu::synthetic(&SyntheticSpec {
        fragments: 10,
        target_fragment_bytes: Some(20_000),
        ingest: Ingest {
            producer_start_ms: resume,
            fragment_number_base: 1_000 * kvs_emu::FRAGMENT_NUMBER_STEP,
            ..Ingest::default()
        },
        ..SyntheticSpec::default()
    });
    first.into_iter().chain(second).collect()
}

fn ms_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[test]
fn list_prints_the_fragments_and_gaps_of_a_range() {
    let all = with_a_gap();
    let w = World::new(vec![Stream {
        idle_close: IDLE,
        ..Stream::archive("cam", all.clone())
    }]);

    // The whole stream, as JSON Lines: every fragment as the emulator holds it, the gap between.
    let out = subcommand(&w, &["list", "--stream-name", "cam", "--json"]);
    assert_exit(&out, 0);
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines.len(), all.len() + 1, "{}", stdout(&out));
    let fragments: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["kind"] == "fragment").collect();
    assert_eq!(fragments.len(), all.len());
    for (got, f) in fragments.iter().zip(&all) {
        assert_eq!(got["number"], f.number());
        assert_eq!(got["server_timestamp_ms"], f.server_ms());
        assert_eq!(got["producer_timestamp_ms"], f.producer_ms());
        assert_eq!(got["duration_ms"], f.duration_ms());
        assert_eq!(got["bytes"], f.archived_size());
    }
    let gap = &lines[10];
    assert_eq!(gap["kind"], "gap", "the gap comes between the two halves");
    assert_eq!(gap["after_fragment"], all[9].number());
    assert_eq!(gap["before_fragment"], all[10].number());
    assert_eq!(gap["from_ms"], all[9].server_ms() + 2_000);
    assert_eq!(gap["to_ms"], all[10].server_ms());

    // A range off fragment boundaries, as a table: what a download of it keeps (3 ..= 14).
    for clock in ["server", "producer"] {
        let at = |f: &StoredFragment| match clock {
            "producer" => f.producer_ms(),
            _ => f.server_ms(),
        };
        let t1 = ms_time(at(&all[3]) + 700);
        let t2 = ms_time(at(&all[14]) + 300);
        let out = subcommand(
            &w,
            &[
                "list",
                "--stream-name",
                "cam",
                "--start",
                &t1,
                "--end",
                &t2,
                "--timestamp-type",
                clock,
            ],
        );
        assert_exit(&out, 0);
        let text = stdout(&out);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|cols| {
                cols.first()
                    .is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit()))
            })
            .filter(|cols| cols.len() == 5)
            .collect();
        let want: Vec<Vec<String>> = all[3..=14]
            .iter()
            .map(|f| {
                vec![
                    f.number().to_owned(),
                    ms_time(f.server_ms()),
                    ms_time(f.producer_ms()),
                    format!("{:.3}s", f.duration_ms() as f64 / 1000.0),
                    f.archived_size().to_string(),
                ]
            })
            .collect();
        assert_eq!(rows, want, "{clock} clock:\n{text}");
        assert!(text.starts_with("FRAGMENT"), "{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("-- gap of 60.000s"))
                .count(),
            1,
            "{text}"
        );
        assert!(text.contains("12 fragments,"), "{text}");
        assert!(requests(&w, "GetMediaForFragmentList") + requests(&w, "GetMedia") == 0);
    }

    // Exit codes as for a download.
    assert_exit(&subcommand(&w, &["list", "--stream-name", "nope"]), 4);
    assert_exit(
        &subcommand(
            &w,
            &["list", "--stream-name", "cam", "--start", "fragment:1"],
        ),
        2,
    );
    assert_exit(&subcommand(&w, &["list"]), 2);
}

/// Cuts fragment `number` out of a `--format raw` file of GetMediaForFragmentList chunks.
fn cut_raw_fragment(path: &std::path::Path, number: &str) {
    let data = std::fs::read(path).unwrap();
    let mut p = mkv::Parser::archived();
    p.push(&data);
    // Where each chunk starts, and the fragment it holds.
    let mut starts = Vec::new();
    let mut numbers = Vec::new();
    loop {
        match p.next_event_at().unwrap() {
            Some((mkv::Event::EbmlHeader(h), end)) => starts.push(end as usize - h.len()),
            Some((mkv::Event::FragmentStart(f), _)) => numbers.push(f.number),
            Some(_) => {}
            None => break,
        }
    }
    let k = numbers.iter().position(|n| n == number).unwrap();
    let end = starts.get(k + 1).copied().unwrap_or(data.len());
    let mut cut = data[..starts[k]].to_vec();
    cut.extend_from_slice(&data[end..]);
    std::fs::write(path, cut).unwrap();
}

#[test]
fn verify_passes_an_untouched_manifest_and_catches_a_deleted_fragment() {
    let all = with_a_gap();
    let w = World::new(vec![Stream {
        idle_close: IDLE,
        ..Stream::archive("cam", all.clone())
    }]);
    let out = fetch(
        &w,
        "out.raw",
        &[
            "--start",
            "earliest",
            "--end",
            "now",
            "--format",
            "raw",
            "--manifest",
            "m.jsonl",
        ],
    );
    assert_exit(&out, 0);
    assert!(requests(&w, "GetMediaForFragmentList") > 0);

    let out = subcommand(&w, &["verify", "--manifest", "m.jsonl"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("20 fragments listed, 1 gap; 20 held"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("complete"), "{text}");

    // Fragment 12 deleted from the manifest and from the file: exit 7, named.
    let gone = all[12].number();
    let manifest = std::fs::read_to_string(w.path("m.jsonl")).unwrap();
    let kept: String = manifest
        .lines()
        .filter(|l| !l.contains(gone))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(kept.lines().count(), manifest.lines().count() - 1);
    std::fs::write(w.path("m.jsonl"), &kept).unwrap();
    cut_raw_fragment(&w.path("out.raw"), gone);
    let out = subcommand(&w, &["verify", "--manifest", "m.jsonl"]);
    assert_exit(&out, 7);
    let text = stdout(&out);
    assert!(text.contains(&format!("missing {gone}")), "{text}");
    assert_eq!(text.matches("missing 9").count(), 1, "{text}");
    assert!(stderr(&out).contains("incomplete"), "{}", stderr(&out));
    let out = subcommand(&w, &["verify", "--manifest", "m.jsonl", "--json"]);
    assert_exit(&out, 7);
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines.len(), 2, "{}", stdout(&out));
    assert_eq!(lines[0]["kind"], "missing");
    assert_eq!(lines[0]["number"], gone);
    assert_eq!(lines[0]["reason"], "not_in_manifest");
    assert_eq!(lines[1]["kind"], "summary");
    assert_eq!(lines[1]["complete"], false);
    assert_eq!(lines[1]["exit_code"], 7);
    assert_eq!(lines[1]["listed"], 20);
    assert_eq!(lines[1]["held"], 19);

    // A fragment at the edge of the range is covered by --start/--end: drop the first one too,
    // which the manifest's own range no longer reaches.
    let first = all[0].number();
    let kept: String = kept
        .lines()
        .filter(|l| !l.contains(first))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(w.path("m.jsonl"), &kept).unwrap();
    let out = subcommand(&w, &["verify", "--manifest", "m.jsonl", "--json"]);
    assert_exit(&out, 7);
    assert_eq!(json_lines(&stdout(&out)).len(), 2, "{}", stdout(&out));
    let out = subcommand(
        &w,
        &[
            "verify",
            "--manifest",
            "m.jsonl",
            "--json",
            "--start",
            "earliest",
            "--end",
            "now",
        ],
    );
    assert_exit(&out, 7);
    let missing: Vec<String> = json_lines(&stdout(&out))
        .iter()
        .filter(|l| l["kind"] == "missing")
        .map(|l| l["number"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(missing, [first.to_owned(), gone.to_owned()]);

    // The file itself gone: every fragment is missing.
    std::fs::remove_file(w.path("out.raw")).unwrap();
    let out = subcommand(&w, &["verify", "--manifest", "m.jsonl", "--json"]);
    assert_exit(&out, 7);
    let lines = json_lines(&stdout(&out));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["reason"] == "file_missing")
            .count(),
        18,
        "{}",
        stdout(&out)
    );

    // Usage errors: exit 2.
    assert_exit(&subcommand(&w, &["verify", "--manifest", "nope.jsonl"]), 2);
    assert_exit(&subcommand(&w, &["verify"]), 2);
}

#[test]
fn verify_reports_what_the_stream_no_longer_lists_without_failing() {
    let all = sized(30, 20_000);
    let w = World::new(vec![backfill()]);
    let out = fetch(
        &w,
        "seg-%H%M%S.mkv",
        &[
            "--start",
            "earliest",
            "--end",
            "now",
            "--segment",
            "10s",
            "--manifest",
            "m.jsonl",
        ],
    );
    assert_exit(&out, 0);
    // A fragment the stream does not have (expired, say), inside the range.
    let mut manifest = std::fs::read_to_string(w.path("m.jsonl")).unwrap();
    let file = serde_json::from_str::<serde_json::Value>(manifest.lines().nth(1).unwrap()).unwrap()
        ["file"]
        .clone();
    manifest.push_str(
        &serde_json::json!({
            "kind": "fragment",
            "file": file,
            "number": "91343852333181430000000000000000000000000000001",
            "server_timestamp_ms": all[5].server_ms() + 1,
            "producer_timestamp_ms": all[5].producer_ms() + 1,
            "duration_ms": 0, "bytes": 0, "sha256": "",
        })
        .to_string(),
    );
    manifest.push('\n');
    std::fs::write(w.path("m.jsonl"), &manifest).unwrap();
    let out = subcommand(&w, &["verify", "--manifest", "m.jsonl"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("unlisted 91343852333181430000000000000000000000000000001"),
        "{text}"
    );
    assert!(text.contains("30 held in 6 files"), "{text}");
    // One segment deleted: its five fragments are missing.
    let first = file.as_str().unwrap();
    std::fs::remove_file(w.path(first)).unwrap();
    let out = subcommand(&w, &["verify", "--manifest", "m.jsonl"]);
    assert_exit(&out, 7);
    assert_eq!(
        stdout(&out)
            .matches(&format!("its file {first} is gone"))
            .count(),
        5,
        "{}",
        stdout(&out)
    );
}
