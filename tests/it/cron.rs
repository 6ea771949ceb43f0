//! Cron safety: two runs of one state never overlap, a segment spans runs until it is over, and
//! whatever the runs leave on disk holds every fragment exactly once. A state is never taken
//! for another stream's, and an unreadable fragment is a reported gap, not a stuck job.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use kvs_emu::{FragmentFault, Ingest, Live, StoredFragment, Stream};

use crate::support::*;

/// The cron job: everything not downloaded yet, up to now, resuming where `s.json` says.
const CRON: [&str; 8] = [
    "--stream-name",
    "cam",
    "--start",
    "earliest",
    "--end",
    "now",
    "--state-file",
    "s.json",
];

/// The cron job writing `output`.
fn cron(w: &World, output: &[&str]) -> Command {
    let mut cmd = w.kvs_dl();
    cmd.args(CRON).args(output);
    cmd
}

/// The cron job's arguments with `output` and `more`, for [`spawn_json`].
fn cron_args<'a>(output: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    CRON.iter().chain(output).chain(more).copied().collect()
}

/// A live stream `cam` of `n` fragments whose bodies are slow: eight fragments are stored, then
/// one arrives every 0.5 s, and a body sends one fragment in 0.2 s. A run starting at once
/// takes about 3 s to catch up with the head (where it stops, with `--end now`), well before
/// the stream ends (after `(n - 9) / 2` s).
fn slow_live(n: usize) -> Stream {
    let fragments = synthetic(n, Ingest::default());
    let size = fragments[0].size();
    Stream {
        live: Some(Live {
            speed: 4.0,
            backlog: 8,
        }),
        bandwidth: Some(5 * size),
        idle_close: IDLE,
        ..Stream::archive("cam", fragments)
    }
}

/// The names of the files in `w`'s directory.
fn files(w: &World) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "home")
        .collect();
    names.sort();
    names
}

/// The global SimpleTags of a Matroska file kvs-dl finished (one known-size Segment).
fn file_tags(data: &[u8]) -> BTreeMap<String, String> {
    use mkv::ebml::{children, id, read_header};
    let ebml = read_header(data).unwrap().unwrap();
    let at = ebml.len + ebml.size.unwrap() as usize;
    let segment = read_header(&data[at..]).unwrap().unwrap();
    let from = at + segment.len;
    let to = from + segment.size.expect("a finished file") as usize;
    let mut tags = BTreeMap::new();
    let level = |data| children(data).map(Result::unwrap);
    for (_, tag) in level(&data[from..to]).filter(|(i, _)| *i == id::TAGS) {
        for (_, simple) in level(tag).filter(|(i, _)| *i == id::TAG) {
            for (_, fields) in level(simple).filter(|(i, _)| *i == id::SIMPLE_TAG) {
                let field = |wanted| {
                    level(fields)
                        .find(|(i, _)| *i == wanted)
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                };
                if let (Some(name), Some(value)) = (field(id::TAG_NAME), field(id::TAG_STRING)) {
                    tags.insert(name, value);
                }
            }
        }
    }
    tags
}

/// Checks what the runs left in `w`'s directory: no `.part`; each `.mkv` holds consecutive
/// fragments of `fragments`, exactly (their blocks, and its Tags say which); and together the
/// files hold the first fragments of the stream, each once. Returns how many they hold.
fn each_fragment_once(w: &World, fragments: &[StoredFragment]) -> usize {
    let all = numbers(fragments);
    let names = files(w);
    assert!(
        names.iter().all(|n| !n.ends_with(".part")),
        "no .part left: {names:?}"
    );
    let mut held = Vec::new();
    for name in names.iter().filter(|n| n.ends_with(".mkv")) {
        let path = w.path(name);
        let tags = file_tags(&std::fs::read(&path).unwrap());
        let first = &tags["KVS_FIRST_FRAGMENT_NUMBER"];
        let from = all
            .iter()
            .position(|n| n == first)
            .expect("a fragment of the stream");
        let to = from + tags["KVS_FRAGMENTS"].parse::<usize>().unwrap();
        assert!(to > from, "{name} holds a fragment: {tags:?}");
        assert_eq!(
            all.get(to - 1),
            Some(&tags["KVS_LAST_FRAGMENT_NUMBER"]),
            "{name}: consecutive fragments: {tags:?}"
        );
        holds_exactly(&path, &fragments[from..to]);
        held.push((from, to, name.clone()));
    }
    held.sort();
    let mut next = 0;
    for (from, to, name) in &held {
        assert_eq!(
            *from, next,
            "{name} starts right after the file before it: {held:?}"
        );
        next = *to;
    }
    next
}

/// Runs the cron job (writing `output(k)` on run `k`) until the state says the whole stream was
/// downloaded; every run exits 0.
fn chain_to_the_end(
    w: &World,
    all: &[String],
    first_run: usize,
    output: &dyn Fn(usize) -> Vec<String>,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for k in first_run.. {
        let out = run(&mut cron(w, &arg_refs(&output(k))));
        assert_exit(&out, 0);
        if state(w)["last"]["fragment_number"] == all[all.len() - 1].as_str() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the chain never reached the end of the stream"
        );
    }
}

fn arg_refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The number of the last `fragment` event.
fn last_fragment(events: &[serde_json::Value]) -> String {
    events
        .iter()
        .rev()
        .find(|e| e["event"] == "fragment")
        .expect("a fragment event")["number"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Two overlapping runs of the cron job writing `output(0)`: the second exits 6 at once,
/// naming the lock, with no request; the first finishes; later runs (`output(1)`, ...) continue
/// the chain to the end of the stream, and the files hold every fragment once.
fn a_second_run_is_refused_while_the_first_downloads(
    output: &dyn Fn(usize) -> Vec<String>,
) -> World {
    let stream = slow_live(24);
    let fragments = stream.fragments.clone();
    let all = numbers(&fragments);
    let w = World::new(vec![stream]);
    let first_output = output(0);
    let (mut first, mut err) = spawn_json(&w, &cron_args(&arg_refs(&first_output), &[]));
    wait_fragments(&mut err, 1);

    let requests = w.emu.requests().len();
    let out = run(&mut cron(&w, &arg_refs(&first_output)));
    assert_exit(&out, 6);
    assert_eq!(
        w.emu.requests().len(),
        requests,
        "the second run sent no request"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run was still downloading when the second ended"
    );
    let text = stderr(&out);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {text}");
    assert!(
        errors[0].starts_with("kvs-dl: error:") && errors[0].contains("s.json.lock"),
        "{text}"
    );

    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(first.wait().unwrap().code(), Some(0), "{rest}");
    let events = json_lines(&rest);
    let first_last = last_fragment(&events);
    assert_ne!(
        first_last,
        all[all.len() - 1],
        "the first run stopped before the stream's end"
    );

    // The third run goes on right after the first's last fragment.
    let calls = w.get_media().len();
    chain_to_the_end(&w, &all, 1, output);
    let sel = &w.selectors()[calls];
    assert_eq!(sel["StartSelectorType"], "CONTINUATION_TOKEN", "{sel}");
    assert_eq!(sel["ContinuationToken"], first_last.as_str(), "{sel}");
    assert_eq!(each_fragment_once(&w, &fragments), all.len());
    w
}

/// Hourly segments named by their hour: the whole stream (24 fragments of 2 s from 22:13:20)
/// falls in hour 22.
const HOURLY: [&str; 4] = ["--segment", "1h", "-o", "cam-%H.mkv"];

#[test]
fn an_overlapping_segmented_run_exits_6_and_the_chain_holds_every_fragment_once() {
    // A run that stops caught up finishes its segment (the live edge, the local clock, is
    // past its end), so the next run's part of the same hour gets the next free name.
    let w =
        a_second_run_is_refused_while_the_first_downloads(&|_| HOURLY.map(String::from).to_vec());
    let names = files(&w);
    assert!(
        names.contains(&"cam-22.mkv".into()) && names.contains(&"cam-22.1.mkv".into()),
        "{names:?}"
    );
}

#[test]
fn an_overlapping_run_to_a_fixed_file_exits_6_and_the_chain_holds_every_fragment_once() {
    // A fixed -o is written once: later runs of the chain name their own files.
    a_second_run_is_refused_while_the_first_downloads(&|k| {
        let name = match k {
            0 => "out.mkv".to_owned(),
            k => format!("run{k}.mkv"),
        };
        vec!["-o".to_owned(), name]
    });
}

#[test]
fn with_wait_lock_a_second_run_waits_for_the_first_then_continues_after_it() {
    let stream = slow_live(24);
    let fragments = stream.fragments.clone();
    let all = numbers(&fragments);
    let w = World::new(vec![stream]);
    let output = HOURLY;
    let (mut first, mut err) = spawn_json(&w, &cron_args(&output, &[]));
    wait_fragments(&mut err, 1);
    let (mut second, mut second_err) = spawn_json(&w, &cron_args(&output, &["--wait-lock", "60s"]));

    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(first.wait().unwrap().code(), Some(0), "{rest}");
    let first_last = last_fragment(&json_lines(&rest));
    let mut rest = String::new();
    second_err.read_to_string(&mut rest).unwrap();
    assert_eq!(second.wait().unwrap().code(), Some(0), "{rest}");
    // It read the state the first run left when it ended: it had waited for the lock.
    let events = json_lines(&rest);
    let start = events
        .iter()
        .find(|e| e["event"] == "start")
        .expect("a start event");
    assert_eq!(
        start["selector"],
        format!("CONTINUATION_TOKEN {first_last}"),
        "{events:?}"
    );

    chain_to_the_end(&w, &all, 2, &|_| output.map(String::from).to_vec());
    assert_eq!(each_fragment_once(&w, &fragments), all.len());
}

#[test]
fn without_a_state_a_second_run_to_the_same_file_exits_6_naming_its_part() {
    let stream = slow_live(24);
    let w = World::new(vec![stream]);
    let args = [
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "now",
        "-o",
        "out.mkv",
    ];
    let (mut first, mut err) = spawn_json(&w, &args);
    wait_fragments(&mut err, 1);
    let requests = w.emu.requests().len();
    let out = run(w.kvs_dl().args(args));
    assert_exit(&out, 6);
    assert_eq!(
        w.emu.requests().len(),
        requests,
        "the second run sent no request"
    );
    assert!(first.try_wait().unwrap().is_none());
    let text = stderr(&out);
    assert!(text.contains("out.mkv.part"), "{text}");
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(first.wait().unwrap().code(), Some(0), "{rest}");
    assert!(w.path("out.mkv").exists() && !w.path("out.mkv.part").exists());
}

#[test]
fn an_hourly_segment_spans_four_runs_and_is_finished_once() {
    // Fragments start at 1_700_000_000_150 ms on the server clock (2023-11-14 22:13:20.150 UTC):
    // the hour from 22:00 ends at 1_700_002_800_000, 1400 fragments of 2 s later.
    const HOUR_END_MS: i64 = 1_700_002_800_000;
    let stream = archive("cam", 16);
    let fragments = stream.fragments.clone();
    assert!(fragments.iter().all(|f| f.server_ms() < HOUR_END_MS));
    let w = World::new(vec![stream]);
    let output = ["--segment", "1h", "-o", "cam-%Y%m%d-%H.mkv"];
    let name = "cam-20231114-22.mkv";
    for k in 1..=3 {
        let out = run(cron(&w, &output).args(["--max-fragments", "4"]));
        assert_exit(&out, 0);
        assert_eq!(
            files(&w),
            [
                format!("{name}.part"),
                "s.json".into(),
                "s.json.lock".into()
            ],
            "run {k}: the hour is not over: it stays open"
        );
        let saved = state(&w);
        assert_eq!(saved["file"]["path"], name, "{saved}");
        assert_eq!(saved["file"]["fragments"], 4 * k, "{saved}");
        assert_eq!(saved["file"]["segment_end_ms"], HOUR_END_MS, "{saved}");
        assert_eq!(
            saved["last"]["fragment_number"],
            fragments[4 * k - 1].number()
        );
    }
    // Caught up, with the live edge (the local clock) long past the hour: finished.
    let out = run(&mut cron(&w, &output));
    assert_exit(&out, 0);
    assert_eq!(files(&w), [name, "s.json", "s.json.lock"]);
    holds_exactly(&w.path(name), &fragments);
    assert!(state(&w)["file"].is_null());
}

#[test]
fn force_with_a_state_file_and_a_fixed_output_is_refused() {
    let w = World::new(vec![archive("cam", 3)]);
    let out = run(&mut cron(&w, &["-o", "out.mkv", "--force"]));
    assert_exit(&out, 2);
    let text = stderr(&out);
    assert!(
        text.contains("--force") && text.contains("--state-file"),
        "{text}"
    );
    assert!(files(&w).is_empty(), "nothing written: {:?}", files(&w));
    assert!(w.emu.requests().is_empty(), "no request");
}

#[test]
fn a_state_of_another_stream_is_refused() {
    let other = Ingest {
        fragment_number_base: 1_000_000,
        ..Ingest::default()
    };
    let b = Stream {
        idle_close: IDLE,
        ..Stream::archive("b", synthetic(3, other))
    };
    let w = World::new(vec![archive("a", 3), b]);
    let on = |stream: &str, output: &str| {
        let mut cmd = w.kvs_dl();
        cmd.args([
            "--stream-name",
            stream,
            "--start",
            "earliest",
            "--end",
            "now",
        ])
        .args(["--state-file", "s.json", "-o", output]);
        cmd
    };
    assert_exit(&run(&mut on("a", "a.mkv")), 0);
    let saved = std::fs::read(w.path("s.json")).unwrap();
    let calls = w.get_media().len();

    let out = run(&mut on("b", "b.mkv"));
    assert_exit(&out, 2);
    let text = stderr(&out);
    assert!(
        text.contains("stream a") && text.contains("stream b"),
        "{text}"
    );
    assert_eq!(w.get_media().len(), calls, "no GetMedia for b");
    assert_eq!(std::fs::read(w.path("s.json")).unwrap(), saved);
    assert_eq!(files(&w), ["a.mkv", "s.json", "s.json.lock"]);

    // The same stream name in another region is another stream.
    let out = run(on("a", "a2.mkv").args(["--region", "eu-west-1"]));
    assert_exit(&out, 2);
    let text = stderr(&out);
    assert!(
        text.contains("us-east-1") && text.contains("eu-west-1"),
        "{text}"
    );
    assert_eq!(w.get_media().len(), calls, "no GetMedia in eu-west-1");
    assert_eq!(std::fs::read(w.path("s.json")).unwrap(), saved);
    assert_eq!(files(&w), ["a.mkv", "s.json", "s.json.lock"]);
}

/// An archive `cam` of eight fragments whose GetMedia chunks for fragments 3 and 7 (the last)
/// are damaged.
fn corrupt_archive() -> Stream {
    Stream {
        fragment_faults: vec![
            FragmentFault::Corrupt { fragment: 3 },
            FragmentFault::Corrupt { fragment: 7 },
        ],
        ..archive("cam", 8)
    }
}

/// The timestamps of a file's Clusters (one per fragment), in ticks.
fn cluster_times(path: &std::path::Path) -> Vec<u64> {
    let mut parser = mkv::Parser::new();
    parser.push(&std::fs::read(path).unwrap());
    let mut times = Vec::new();
    while let Some(e) = parser.next_event().unwrap() {
        if let mkv::Event::Cluster { timecode } = e {
            times.push(timecode);
        }
    }
    times
}

/// The reasons of the `gap` events.
fn gaps(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "gap")
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_unreadable_fragment_is_a_gap_and_the_next_run_goes_on() {
    let stream = corrupt_archive();
    let fragments = stream.fragments.clone();
    let all = numbers(&fragments);
    let w = World::new(vec![stream]);
    let out = run(&mut cron(&w, &["-o", "out.mkv", "--progress", "json"]));
    assert_exit(&out, 0);
    let events = json_lines(&stderr(&out));
    let gaps = gaps(&events);
    assert_eq!(gaps.len(), 2, "{events:?}");
    assert!(gaps[0].contains(&all[3]), "{gaps:?}");
    assert!(gaps[1].contains(&all[7]), "{gaps:?}");
    let done = events.iter().find(|e| e["event"] == "done").unwrap();
    assert_eq!(done["gaps"], 2, "{done}");
    assert_eq!(done["fragments"], 6, "{done}");
    assert_eq!(
        done["reconnects"], 0,
        "read on within the same body: {done}"
    );
    let readable: Vec<StoredFragment> = [0, 1, 2, 4, 5, 6]
        .iter()
        .map(|&k| fragments[k].clone())
        .collect();
    holds_exactly(&w.path("out.mkv"), &readable);
    // The blocks of every fragment are alike: the media times show which one is missing.
    assert_eq!(
        cluster_times(&w.path("out.mkv")),
        [0, 2000, 4000, 8000, 10000, 12000]
    );
    assert_eq!(state(&w)["last"]["fragment_number"], all[6].as_str());

    // The next run meets the damaged last fragment again: a gap again, not a failure.
    let out = run(&mut cron(&w, &["-o", "next.mkv", "--progress", "json"]));
    assert_exit(&out, 0);
    let gaps = self::gaps(&json_lines(&stderr(&out)));
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(gaps[0].contains(&all[7]), "{gaps:?}");
    assert_eq!(state(&w)["last"]["fragment_number"], all[6].as_str());
    assert_eq!(files(&w), ["out.mkv", "s.json", "s.json.lock"]);
}

#[test]
fn with_strict_an_unreadable_fragment_ends_the_run() {
    let stream = corrupt_archive();
    let fragments = stream.fragments.clone();
    let all = numbers(&fragments);
    let w = World::new(vec![stream]);
    let out = run(&mut cron(&w, &["-o", "out.mkv", "--strict"]));
    assert_exit(&out, 1);
    let text = stderr(&out);
    assert!(
        text.contains("could not be read") && text.contains("invalid element ID"),
        "{text}"
    );
    // What came before it is kept, and the state points there.
    holds_exactly(&w.path("out.mkv"), &fragments[..3]);
    assert_eq!(state(&w)["last"]["fragment_number"], all[2].as_str());
}
