//! `--format mp4` and `--faststart` judged by ffprobe, ffmpeg and Chromium, against the mkv
//! output of the same fragments: every packet byte-identical and in order, the duration within
//! a frame, the audio/video offset to the millisecond, clean decoding, a seek to the middle.

use std::path::Path;

use kvs_emu::{Ingest, MkvOptions, StoredFragment, Stream};

use crate::browser::assert_plays;
use crate::support::*;

/// Downloads all of `fragments` (an archive stream) with `args`.
fn download(fragments: Vec<StoredFragment>, args: &[&str]) -> (World, std::process::Output) {
    let w = World::new(vec![Stream {
        idle_close: IDLE,
        ..Stream::archive("cam", fragments)
    }]);
    let out = download_into(&w, args);
    (w, out)
}

fn cut(name: &str) -> Option<Vec<StoredFragment>> {
    let opts = MkvOptions {
        ingest: Ingest {
            producer_start_ms: 1_700_000_000_000,
            ..Ingest::default()
        },
        ..MkvOptions::default()
    };
    Some(kvs_emu::from_mkv(&generated(name)?, &opts).unwrap())
}

/// Per stream, the (size, MD5) of every packet in order, as ffmpeg copies them out.
fn packets(path: &Path) -> Vec<Vec<(String, String)>> {
    let (rc, out, err) = tool(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-i",
            path.to_str().unwrap(),
            "-map",
            "0",
            "-c",
            "copy",
            "-f",
            "framemd5",
            "-",
        ],
    );
    assert_eq!(rc, 0, "{}: {err}", path.display());
    let mut streams: Vec<Vec<(String, String)>> = Vec::new();
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        let index: usize = cols[0].parse().unwrap();
        if streams.len() <= index {
            streams.resize(index + 1, Vec::new());
        }
        streams[index].push((cols[4].to_owned(), cols[5].to_owned()));
    }
    streams
}

/// One video frame of `path`, in seconds (from its average frame rate).
fn video_frame(path: &Path) -> f64 {
    let (_, out, _) = tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=avg_frame_rate",
            "-of",
            "csv=p=0",
            path.to_str().unwrap(),
        ],
    );
    let (num, den) = out.trim().split_once('/').unwrap();
    den.parse::<f64>().unwrap() / num.parse::<f64>().unwrap()
}

/// ffprobe's view: (format duration, start time per stream, stderr).
fn probe(path: &Path) -> (f64, Vec<f64>, String) {
    let (rc, out, err) = tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=start_time",
            "-of",
            "json",
            path.to_str().unwrap(),
        ],
    );
    assert_eq!(rc, 0, "{}: {err}", path.display());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let number = |v: &serde_json::Value| v.as_str().unwrap().parse::<f64>().unwrap();
    let starts = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| number(&s["start_time"]))
        .collect();
    (number(&v["format"]["duration"]), starts, err)
}

/// ffmpeg decodes all of it without a complaint, and a frame from its middle.
fn decodes(path: &Path, middle: f64) {
    let p = path.to_str().unwrap();
    let (rc, _, err) = tool("ffmpeg", &["-v", "error", "-i", p, "-f", "null", "-"]);
    assert!(rc == 0 && err.is_empty(), "{p}: decoding says {err}");
    let at = format!("{middle:.3}");
    let (rc, out, err) = tool(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-ss",
            &at,
            "-i",
            p,
            "-frames:v",
            "1",
            "-f",
            "framemd5",
            "-",
        ],
    );
    assert!(
        rc == 0 && out.lines().any(|l| !l.starts_with('#')),
        "{p}: no frame at {at} s: {err}"
    );
}

/// Downloads `fragments` as mkv, mp4 and faststart mp4 and holds both mp4 files to the mkv one.
/// `browser`: the video is H.264, so Chromium must play the files.
fn judge_against_mkv(name: &str, fragments: Vec<StoredFragment>, browser: bool) {
    if !have("ffprobe") || !have("ffmpeg") {
        return;
    }
    let (w, out) = download(fragments.clone(), &["-o", "ref.mkv"]);
    assert_exit(&out, 0);
    let reference = packets(&w.path("ref.mkv"));
    let (mkv_duration, mkv_starts, _) = probe(&w.path("ref.mkv"));
    let frame = video_frame(&w.path("ref.mkv"));
    for args in [
        &["--format", "mp4", "-o", "out.mp4"][..],
        &["--format", "mp4", "--faststart", "-o", "fast.mp4"][..],
    ] {
        let file = w.path(args[args.len() - 1]);
        let out = download_into(&w, args);
        assert_exit(&out, 0);
        let label = format!("{name} {}", args.join(" "));
        let (duration, starts, err) = probe(&file);
        assert!(err.is_empty(), "{label}: ffprobe says {err}");
        assert_eq!(
            packets(&file),
            reference,
            "{label}: packets differ from mkv"
        );
        // ffmpeg adds a late track's start to a fragmented file's duration (it does not read
        // mehd): the progressive file's duration is the exact one.
        if args.contains(&"--faststart") || starts.iter().all(|&s| s == starts[0]) {
            assert!(
                (duration - mkv_duration).abs() <= frame + 1e-3,
                "{label}: duration {duration} s, mkv {mkv_duration} s"
            );
        }
        let offsets = |s: &[f64]| s.iter().map(|t| t - s[0]).collect::<Vec<_>>();
        for (got, want) in offsets(&starts).iter().zip(offsets(&mkv_starts)) {
            assert!(
                (got - want).abs() <= 0.0011,
                "{label}: track offsets {starts:?}, mkv {mkv_starts:?}"
            );
        }
        decodes(&file, duration / 2.0);
        if browser {
            assert_plays(&file, duration, frame * 2.0 + 0.05);
        }
        eprintln!(
            "{label}: {} packets equal to mkv, {duration:.3} s (mkv {mkv_duration:.3} s), starts {starts:?} (mkv {mkv_starts:?})",
            reference.iter().map(Vec::len).sum::<usize>()
        );
    }
}

/// Downloads the whole stream of `w` again, with `args`.
fn download_into(w: &World, args: &[&str]) -> std::process::Output {
    run(w
        .kvs_dl()
        .args([
            "--stream-name",
            "cam",
            "--start",
            "earliest",
            "--end",
            "now",
        ])
        .args(args))
}

#[test]
fn generated_h264_and_h265_become_the_same_packets_in_mp4() {
    for (name, browser) in [("h264-aac.mkv", true), ("h265-aac-bf.mkv", false)] {
        let Some(fragments) = cut(name) else { return };
        judge_against_mkv(name, fragments, browser);
    }
}

#[test]
fn h264_captures_become_the_same_packets_in_mp4() {
    for name in [
        "output_get_media.mkv",
        "output_get_media_sparse_fragments.mkv",
        "kinesis_video_renderer_example_output.mkv",
    ] {
        let Some(body) = capture(name) else { return };
        judge_against_mkv(name, kvs_emu::from_capture(&body).unwrap(), true);
    }
}

#[test]
fn a_codec_mp4_cannot_carry_stops_the_run_before_anything_is_written() {
    // The synthetic stream is 16-bit PCM audio.
    let (w, out) = download(
        synthetic(3, Ingest::default()),
        &["--format", "mp4", "-o", "a.mp4"],
    );
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("A_PCM/INT/LIT") && err.contains("--format mkv"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("error")).count(),
        1,
        "{err}"
    );
    assert!(!w.path("a.mp4").exists() && !w.path("a.mp4.part").exists());
}

#[test]
fn mp4_segments_hold_every_fragment_once_and_stdout_is_a_fragmented_stream() {
    let Some(fragments) = cut("h264-aac.mkv") else {
        return;
    };
    let (w, out) = download(
        fragments.clone(),
        &[
            "--format",
            "mp4",
            "--segment",
            "4s",
            "-o",
            "seg-{fragment}.mp4",
        ],
    );
    assert_exit(&out, 0);
    let mut files: Vec<_> = std::fs::read_dir(w.path(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mp4"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let video: usize = files.iter().map(|f| packets(f)[0].len()).sum();
    for f in &files {
        let (_, _, err) = probe(f);
        assert!(err.is_empty(), "{}: {err}", f.display());
    }
    let out = download_into(&w, &["-o", "ref.mkv"]);
    assert_exit(&out, 0);
    assert_eq!(
        video,
        packets(&w.path("ref.mkv"))[0].len(),
        "every frame once"
    );

    // Standard output: init segment then fragments, read by ffmpeg from a pipe.
    let out = download_into(&w, &["--format", "mp4", "-o", "-"]);
    assert_exit(&out, 0);
    std::fs::write(w.path("piped.mp4"), &out.stdout).unwrap();
    assert_eq!(&out.stdout[4..8], b"ftyp");
    let mut ffmpeg = std::process::Command::new("ffmpeg")
        .args([
            "-v", "error", "-i", "pipe:0", "-map", "0", "-c", "copy", "-f", "framemd5", "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    ffmpeg.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let piped = ffmpeg.wait_with_output().unwrap();
    assert!(
        piped.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    let lines = String::from_utf8_lossy(&piped.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    assert_eq!(lines, blocks_of(&fragments));
}

fn blocks_of(fragments: &[StoredFragment]) -> usize {
    fragments.iter().map(|f| f.blocks()).sum()
}

#[test]
fn after_kill_9_mp4_is_continued_by_the_same_command_and_finished_by_another() {
    let Some(fragments) = cut("h264-aac.mkv") else {
        return;
    };
    // What an uninterrupted run writes.
    let (uninterrupted, out) = download(fragments.clone(), &["-o", "ref.mkv"]);
    assert_exit(&out, 0);
    let reference = packets(&uninterrupted.path("ref.mkv"));
    assert_exit(
        &download_into(&uninterrupted, &["--format", "mp4", "-o", "ref.mp4"]),
        0,
    );
    let (uninterrupted_duration, _, _) = probe(&uninterrupted.path("ref.mp4"));
    let stream = Stream {
        live: Some(kvs_emu::Live {
            speed: 2.0,
            backlog: 2,
        }),
        idle_close: IDLE,
        ..Stream::archive("cam", fragments.clone())
    };
    for same_command in [true, false] {
        let w = World::new(vec![stream.clone()]);
        let args = [
            "--stream-name",
            "cam",
            "--start",
            "earliest",
            "--state-file",
            "s.json",
            "--format",
            "mp4",
            "-o",
            "out.mp4",
        ];
        let (mut child, mut err) = spawn_json(&w, &args);
        wait_fragments(&mut err, 3);
        wait_for_state(&w);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(w.path("out.mp4.part").exists() && !w.path("out.mp4").exists());
        let recorded = state(&w)["file"]["fragments"].as_u64().unwrap() as usize;

        let mut rerun = args;
        if !same_command {
            rerun[9] = "rest.mp4";
        }
        // The rest of the stream, as it arrives.
        let rest = (fragments.len() - recorded).to_string();
        let out = run(w.kvs_dl().args(rerun).args(["--max-fragments", &rest]));
        assert_exit(&out, 0);
        assert!(!w.path("out.mp4.part").exists());
        let mut files = vec![w.path("out.mp4")];
        if !same_command {
            files.push(w.path("rest.mp4"));
            let first: usize = packets(&files[0]).iter().map(Vec::len).sum();
            let blocks: usize = fragments[..recorded].iter().map(|f| f.blocks()).sum();
            assert_eq!(
                first, blocks,
                "the killed file holds exactly the recorded fragments"
            );
        }
        // Every packet once, in order, across the files.
        let mut got: Vec<Vec<(String, String)>> = vec![Vec::new(); reference.len()];
        for file in &files {
            let (_, _, err) = probe(file);
            assert!(err.is_empty(), "{}: {err}", file.display());
            for (stream, packets) in packets(file).into_iter().enumerate() {
                got[stream].extend(packets);
            }
        }
        assert_eq!(got, reference, "same command: {same_command}");
        if same_command {
            // Continued where it stopped: the same timeline as an uninterrupted run.
            let (duration, _, _) = probe(&files[0]);
            assert!(
                (duration - uninterrupted_duration).abs() < 0.002,
                "the continued file lasts {duration} s, an uninterrupted one {uninterrupted_duration} s"
            );
            let out = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.contains("0 fragment timestamps that did not move forward"),
                "{out}"
            );
        }
    }
}

/// Per stream, the (size, MD5) of every packet ffmpeg reads from `bytes` through a pipe, and
/// what it said on stderr.
fn piped_packets(bytes: &[u8]) -> (Vec<Vec<(String, String)>>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("piped");
    std::fs::write(&path, bytes).unwrap();
    let (rc, out, err) = tool(
        "sh",
        &[
            "-c",
            "ffmpeg -v error -i pipe:0 -map 0 -c copy -f framemd5 - < \"$0\"",
            path.to_str().unwrap(),
        ],
    );
    assert_eq!(rc, 0, "{err}");
    let mut streams: Vec<Vec<(String, String)>> = Vec::new();
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        let index: usize = cols[0].parse().unwrap();
        if streams.len() <= index {
            streams.resize(index + 1, Vec::new());
        }
        streams[index].push((cols[4].to_owned(), cols[5].to_owned()));
    }
    (streams, err)
}

#[test]
fn live_stdout_sends_every_frame_once_across_reconnects() {
    let Some(fragments) = cut("h264-aac.mkv") else {
        return;
    };
    let (reference_world, out) = download(fragments.clone(), &["-o", "ref.mkv"]);
    assert_exit(&out, 0);
    let reference = packets(&reference_world.path("ref.mkv"));
    for format in ["mkv", "mp4"] {
        // Cut twice in the middle of a fragment: frames of it were already on the pipe.
        let w = World::new(vec![Stream {
            idle_close: IDLE,
            faults: vec![
                kvs_emu::CallFault::CutInFragment {
                    index: 2,
                    at_fraction: 0.5,
                },
                kvs_emu::CallFault::CutInFragment {
                    index: 1,
                    at_fraction: 0.7,
                },
            ],
            ..Stream::archive("cam", fragments.clone())
        }]);
        let out = download_into(&w, &["--format", format, "-o", "-"]);
        assert_exit(&out, 0);
        assert!(stderr(&out).contains("2 reconnects"), "{}", stderr(&out));
        let (got, err) = piped_packets(&out.stdout);
        assert_eq!(
            got, reference,
            "{format}: every frame once, in order ({err})"
        );
    }
}
