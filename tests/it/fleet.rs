//! Fleets: many streams in one run, and a fleet split into shards over N processes, as a
//! Kubernetes Indexed Job (or a Batch array, or Nomad) runs them.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvs_emu::{Ingest, Live, Stream};

use crate::s3::{BUCKET, Weed, prefix, weed};
use crate::support::*;

/// The fragment numbers in every finished raw file under `dir`, in file-name order (a `.part`
/// is not an output).
fn fragments_under(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none_or(|x| x != "part"))
            .collect(),
        Err(_) => return Vec::new(),
    };
    names.sort();
    names
        .iter()
        .flat_map(|p| contents(&std::fs::read(p).unwrap()).fragments)
        .collect()
}

/// `stream` is in `dir`/NAME/ with each of its fragments exactly once.
#[track_caller]
fn each_once(dir: &Path, stream: &Stream) {
    let mut got = fragments_under(&dir.join(&stream.name));
    got.sort();
    let mut want = numbers(&stream.fragments);
    want.sort();
    let files: Vec<_> = std::fs::read_dir(dir.join(&stream.name))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), e.metadata().unwrap().len())
        })
        .collect();
    assert_eq!(
        got, want,
        "{}: every fragment exactly once: {files:?}",
        stream.name
    );
}

#[test]
fn one_run_downloads_every_stream_once_and_a_missing_one_exits_8() {
    let streams: Vec<Stream> = ["cam-a", "cam-b", "cam-c"]
        .iter()
        .map(|n| archive(n, 6))
        .collect();
    let w = World::new(streams.clone());
    std::fs::write(
        w.path("fleet.txt"),
        "# site 1\ncam-a\ncam-b\n\nnosuch\ncam-c\n",
    )
    .unwrap();
    let out = run(w.kvs_dl().args([
        "--streams-from",
        "fleet.txt",
        "--start",
        "earliest",
        "--end",
        "now",
        "--format",
        "raw",
        "-o",
        "out/{stream}/all.raw",
        "--state-dir",
        "st",
        "--max-concurrent",
        "2",
        "--progress",
        "json",
    ]));
    assert_exit(&out, 8);
    for s in &streams {
        let data = std::fs::read(w.path(&format!("out/{}/all.raw", s.name))).unwrap();
        assert_whole_raw(&data, &numbers(&s.fragments));
        assert!(w.path(&format!("st/{}.json", s.name)).is_file());
    }
    let nothing = std::fs::read_dir(w.path("out/nosuch")).map_or(0, |d| d.count());
    assert_eq!(nothing, 0, "no file for the missing stream");
    let text = stderr(&out);
    let events = json_lines(&text);
    assert!(
        events.iter().all(|e| e.get("stream").is_some()),
        "every event names its stream: {text}"
    );
    for s in &streams {
        let fragments = events
            .iter()
            .filter(|e| e["event"] == "fragment" && e["stream"] == s.name.as_str())
            .count();
        assert_eq!(fragments, 6, "{}: {text}", s.name);
    }
    let done = events.last().expect("a done event");
    assert_eq!(done["event"], "done", "{text}");
    assert_eq!(done["stream"], serde_json::Value::Null);
    assert_eq!(done["exit_code"], 8);
    assert_eq!(done["fragments"], 18);
    let results: Vec<(String, u64)> = done["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["stream"].as_str().unwrap().to_owned(),
                r["exit_code"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("cam-a".into(), 0),
            ("cam-b".into(), 0),
            ("nosuch".into(), 4),
            ("cam-c".into(), 0)
        ]
    );
    let stream_done = events
        .iter()
        .filter(|e| e["event"] == "stream_done")
        .count();
    assert_eq!(stream_done, 4, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("kvs-dl: nosuch: error: stream nosuch not found")),
        "the failing stream's reason, naming it: {text}"
    );
}

#[test]
fn streams_matching_a_prefix_end_with_a_table() {
    let streams: Vec<Stream> = ["cam-1", "cam-2", "door"]
        .iter()
        .map(|n| archive(n, 3))
        .collect();
    let w = World::new(streams.clone());
    let out = run(w.kvs_dl().args([
        "--streams-matching",
        "cam-",
        "--start",
        "earliest",
        "--end",
        "now",
        "--format",
        "raw",
        "-o",
        "out/{stream}/x.raw",
        "--progress",
        "log",
    ]));
    assert_exit(&out, 0);
    each_once(&w.path("out"), &streams[0]);
    each_once(&w.path("out"), &streams[1]);
    assert!(!w.path("out/door").exists());
    let text = stderr(&out);
    let lines: Vec<&str> = text.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("STREAM "))
        .expect("a table");
    assert!(lines[header + 1].starts_with("cam-1 "), "{text}");
    assert!(lines[header + 2].starts_with("cam-2 "), "{text}");
    assert!(
        lines[header + 3].starts_with("kvs-dl: done in ")
            && lines[header + 3].contains("2 streams, 0 failed"),
        "{text}"
    );
    assert!(
        lines[..header]
            .iter()
            .all(|l| l.starts_with("kvs-dl: cam-1: ") || l.starts_with("kvs-dl: cam-2: ")),
        "log lines name their stream: {text}"
    );
    assert_eq!(
        w.emu
            .requests()
            .iter()
            .filter(|r| r.operation == "ListStreams")
            .count(),
        1
    );
}

#[test]
fn a_fleet_needs_stream_in_the_output() {
    let w = World::new(vec![archive("a", 1), archive("b", 1)]);
    let out = run(w
        .kvs_dl()
        .args(["--stream-name", "a", "--stream-name", "b", "-o", "x.mkv"]));
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("{stream}"), "{}", stderr(&out));
    assert!(w.emu.requests().is_empty());
}

/// `n` stream names spread over `shards` shards with at least two in each.
fn fleet_names(shards: u32) -> Vec<String> {
    let mut names = Vec::new();
    let mut per = vec![0; shards as usize];
    for i in 0.. {
        let name = format!("cam-{i}");
        let k = kvs_dl::fleet::shard_of(&name, shards) as usize;
        if per[k] < 2 {
            per[k] += 1;
            names.push(name);
        }
        if per.iter().all(|&c| c == 2) {
            return names;
        }
    }
    unreachable!()
}

#[test]
fn shards_prints_a_disjoint_covering_assignment() {
    let w = World::new(vec![]);
    let names: Vec<String> = (0..40).map(|i| format!("cam-{i}")).collect();
    std::fs::write(w.path("fleet.txt"), names.join("\n")).unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_kvs-dl"))
        .current_dir(w.dir.path())
        .args([
            "shards",
            "--shard-count",
            "4",
            "--streams-from",
            "fleet.txt",
        ]));
    assert_exit(&out, 0);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut last_shard = 0;
    for line in text.lines() {
        let (k, stream) = line.split_once('\t').expect("SHARD<TAB>STREAM");
        let k: u32 = k.parse().unwrap();
        assert!(k < 4 && k >= last_shard, "sorted by shard: {text}");
        last_shard = k;
        assert_eq!(k, kvs_dl::fleet::shard_of(stream, 4));
        seen.push(stream.to_owned());
    }
    seen.sort();
    let mut all = names.clone();
    all.sort();
    assert_eq!(seen, all, "every stream once");
    // Frozen: FNV-1a 64 of the name, mod N.
    assert_eq!(kvs_dl::fleet::fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

/// A live stream of `n` fragments: eight stored, then one every 0.5 s, bodies slowed so a run
/// takes a few seconds to catch up.
fn slow_live(name: &str, n: usize) -> Stream {
    let fragments = synthetic(n, Ingest::default());
    let size = fragments[0].size();
    Stream {
        live: Some(Live {
            speed: 4.0,
            backlog: 8,
        }),
        bandwidth: Some(5 * size),
        idle_close: IDLE,
        ..Stream::archive(name, fragments)
    }
}

const SHARDS: u32 = 3;

/// Pod `index` of the Indexed Job: the same command line, the index in the environment, the
/// states in S3 under `states`.
fn pod(w: &World, s3: &Weed, states: &str, index: u32) -> Command {
    let mut cmd = crate::s3::kvs_dl(w, s3);
    cmd.env("JOB_COMPLETION_INDEX", index.to_string()).args([
        "--streams-from",
        "fleet.txt",
        "--shard-count",
        &SHARDS.to_string(),
        "--start",
        "earliest",
        "--end",
        "now",
        "--format",
        "raw",
        "--segment",
        "1h",
        "-o",
        "out/{stream}/%H%M%S.raw",
        "--state-dir",
        &format!("s3://{BUCKET}/{states}/"),
        "--progress",
        "json",
    ]);
    cmd
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads `child`'s JSON events until one is a fragment.
fn first_fragment(child: &mut Child) -> std::io::BufReader<std::process::ChildStderr> {
    use std::io::BufRead;
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "ended before a fragment: {seen}"
        );
        seen.push_str(&line);
        if line.contains("\"event\":\"fragment\"") {
            return err;
        }
        assert!(Instant::now() < deadline);
    }
}

/// The state of `stream` the pods keep in S3, once there is one.
fn s3_state(s3: &Weed, states: &str, stream: &str) -> Option<serde_json::Value> {
    let key = format!("{states}/{stream}.json");
    s3.keys(&key)
        .contains(&key)
        .then(|| serde_json::from_slice(&s3.get(&key)).unwrap())
}

/// The local Indexed-Job harness of issue 13: N pods against one emulator serving the fleet,
/// with their states in SeaweedFS.
#[test]
fn an_indexed_job_splits_the_fleet_survives_a_killed_pod_and_refuses_a_duplicate() {
    let Some(s3) = weed() else { return };
    let states = prefix("indexed-job");
    let names = fleet_names(SHARDS);
    let streams: Vec<Stream> = names.iter().map(|n| slow_live(n, 24)).collect();
    let w = World::new(streams.clone());
    std::fs::write(w.path("fleet.txt"), names.join("\n")).unwrap();
    let pod = |k| pod(&w, s3, &states, k);

    let mut pods: Vec<Child> = (0..SHARDS).map(|k| spawn(&mut pod(k))).collect();
    let mut readers = Vec::new();
    for p in pods.iter_mut() {
        readers.push(first_fragment(p));
    }
    // Pod 1 dies (kill -9) mid-download; the Job controller starts index 1 again.
    pods[1].kill().unwrap();
    pods[1].wait().unwrap();
    pods[1] = spawn(&mut pod(1));
    let shard0: Vec<&str> = names
        .iter()
        .filter(|n| kvs_dl::fleet::shard_of(n, SHARDS) == 0)
        .map(String::as_str)
        .collect();
    // Until pod 0 has saved a state for each of its streams, a duplicate could start one of
    // them afresh beside it (and one of the two would lose its first save).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !shard0.iter().all(|n| s3_state(s3, &states, n).is_some()) {
        assert!(Instant::now() < deadline, "pod 0 never saved its states");
        std::thread::yield_now();
    }
    // An overlapping duplicate of index 0 (two Job runs at once): every file it would go on
    // with is held by pod 0, so it exits 6 before it claims a state, and writes nothing.
    let dup = run(&mut pod(0));
    let text = stderr(&dup);
    assert!(
        pods[0].try_wait().unwrap().is_none(),
        "pod 0 still runs: the test must overlap it"
    );
    assert_exit(&dup, 6);
    let events = json_lines(&text);
    assert!(!events.iter().any(|e| e["event"] == "fragment"), "{text}");
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done");
    let held: Vec<&str> = done["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["stream"].as_str().unwrap())
        .collect();
    assert_eq!(held, shard0, "index 0 takes only its shard");
    assert!(
        done["streams"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["exit_code"] == 6),
        "{text}"
    );

    for (k, p) in pods.iter_mut().enumerate() {
        let mut rest = String::new();
        if let Some(mut e) = p.stderr.take() {
            e.read_to_string(&mut rest).unwrap();
        } else {
            readers[k].read_to_string(&mut rest).unwrap();
        }
        assert_eq!(p.wait().unwrap().code(), Some(0), "pod {k}: {rest}");
    }
    // Later runs of the CronJob take the rest of each stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = streams.iter().all(|s| {
            let state = s3_state(s3, &states, &s.name).expect("a state for every stream");
            state["last"]["fragment_number"] == s.fragments.last().unwrap().number()
        });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the runs never reached the end");
        for k in 0..SHARDS {
            assert_exit(&run(&mut pod(k)), 0);
        }
    }
    for s in &streams {
        each_once(&w.path("out"), s);
        // The one `.part` left is the open segment the state names: a pod killed before its
        // state named a file left no orphan beside it.
        let parts: Vec<String> = std::fs::read_dir(w.path(&format!("out/{}", s.name)))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect();
        let state = s3_state(s3, &states, &s.name).unwrap();
        let named: Vec<String> = state["file"]["path"]
            .as_str()
            .map(|p| {
                format!(
                    "{}.part",
                    Path::new(p).file_name().unwrap().to_string_lossy()
                )
            })
            .into_iter()
            .collect();
        assert_eq!(parts, named, "{}", s.name);
    }
}

/// A fleet with no disk: its outputs and its states in S3 (SeaweedFS). A second run of the
/// same command finds every stream caught up and writes nothing more.
#[test]
fn a_fleet_with_its_outputs_and_states_in_s3() {
    let Some(s3) = weed() else { return };
    let streams: Vec<Stream> = ["cam-a", "cam-b", "cam-c"]
        .iter()
        .map(|n| archive(n, 5))
        .collect();
    let w = World::new(streams.clone());
    let p = prefix("fleet-s3");
    let fleet = || {
        let mut cmd = crate::s3::kvs_dl(&w, s3);
        cmd.args([
            "--stream-name",
            "cam-a",
            "--stream-name",
            "cam-b",
            "--stream-name",
            "cam-c",
            "--start",
            "earliest",
            "--end",
            "now",
            "-o",
            &format!("s3://{BUCKET}/{p}/out/{{stream}}/%H%M%S.raw"),
            "--segment",
            "1h",
            "--format",
            "raw",
            "--state-dir",
            &format!("s3://{BUCKET}/{p}/state"),
            "--progress",
            "json",
        ]);
        cmd
    };
    let first = run(&mut fleet());
    assert_exit(&first, 0);
    for s in &streams {
        let keys = s3.keys(&format!("{p}/out/{}/", s.name));
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_whole_raw(&s3.get(&keys[0]), &numbers(&s.fragments));
        let state = s3.get(&format!("{p}/state/{}.json", s.name));
        let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
        assert_eq!(
            state["last"]["fragment_number"],
            s.fragments.last().unwrap().number()
        );
    }
    // Nothing newer: nothing is written again.
    let again = run(&mut fleet());
    assert_exit(&again, 0);
    let events = json_lines(&stderr(&again));
    assert!(
        !events.iter().any(|e| e["event"] == "fragment"),
        "{events:?}"
    );
    assert_eq!(s3.keys(&format!("{p}/out/")).len(), 3);
    assert_eq!(s3.uploads(&p), Vec::<String>::new(), "no upload left open");
}
