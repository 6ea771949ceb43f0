//! `--format mkv` judged by ffprobe, mkvmerge and ffmpeg: on every capture that has media and on
//! streams cut from media made with ffmpeg; track changes, `--segment` files and stdout.

use std::path::{Path, PathBuf};

use kvs_emu::{Ingest, MkvOptions, StoredFragment, Stream};

use crate::support::*;

/// Downloads all of `fragments` as mkv with `args` and returns the world and the output.
fn download(fragments: Vec<StoredFragment>, args: &[&str]) -> (World, std::process::Output) {
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
    (w, out)
}

fn blocks(fragments: &[StoredFragment]) -> u64 {
    fragments.iter().map(|f| f.blocks() as u64).sum()
}

/// Media time from the first fragment's start to the last one's end.
fn media_seconds(fragments: &[StoredFragment]) -> f64 {
    let (first, last) = (&fragments[0], &fragments[fragments.len() - 1]);
    (last.producer_ms() + last.duration_ms() as i64 - first.producer_ms()) as f64 / 1000.0
}

/// One frame of the first fragment, in seconds: the tolerance on durations.
fn frame_seconds(fragments: &[StoredFragment]) -> f64 {
    fragments[0].duration_ms() as f64 / fragments[0].blocks() as f64 / 1000.0
}

/// The checks every mkv download must pass, for `fragments` served whole.
fn judge(path: &Path, fragments: &[StoredFragment], clean_payloads: bool) -> Option<Verdict> {
    let v = verdict(path, true, clean_payloads)?;
    let name = path.display();
    assert_eq!(
        v.packets,
        blocks(fragments),
        "{name}: every block served, once"
    );
    let expected = media_seconds(fragments);
    let frame = frame_seconds(fragments);
    assert!(
        (v.duration - expected).abs() <= frame + 1e-3,
        "{name}: duration {} s, media {expected} s, frame {frame} s",
        v.duration
    );
    assert_eq!(v.start_time, 0.0, "{name}");
    assert_eq!(
        v.tags["KVS_FIRST_FRAGMENT_NUMBER"],
        fragments[0].number(),
        "{name}"
    );
    assert_eq!(
        v.tags["KVS_LAST_FRAGMENT_NUMBER"],
        fragments[fragments.len() - 1].number(),
        "{name}"
    );
    assert_eq!(
        v.tags["KVS_FRAGMENTS"],
        fragments.len().to_string(),
        "{name}"
    );
    if clean_payloads {
        assert!(
            v.ffprobe_stderr.is_empty(),
            "{name}: ffprobe says {}",
            v.ffprobe_stderr
        );
    }
    eprintln!(
        "{name}: served {} blocks, {expected:.3} s; ffprobe {} packets, {:.3} s",
        blocks(fragments),
        v.packets,
        v.duration
    );
    Some(v)
}

#[test]
fn every_capture_with_media_becomes_one_clean_file() {
    for name in [
        "output_get_media.mkv",
        "output_get_media_sparse_fragments.mkv",
        "output-get-media-equal-timecode.mkv",
        "output-get-media-non-increasing-timecode.mkv",
        "kinesis_video_renderer_example_output.mkv",
        "test_mixed_tags.mkv",
    ] {
        let Some(body) = capture(name) else { return };
        let fragments = kvs_emu::from_capture(&body).unwrap();
        let (w, out) = download(fragments.clone(), &["-o", "out.mkv"]);
        assert_exit(&out, 0);
        // test_mixed_tags.mkv carries placeholder bytes, not JPEG images: its decoder complains
        // about the payload, whatever the container.
        judge(
            &w.path("out.mkv"),
            &fragments,
            name != "test_mixed_tags.mkv",
        );
    }
}

/// Fragments cut from a generated file, their clock continuing from `after`.
fn cut(name: &str, number_base: u64, start_ms: i64) -> Option<Vec<StoredFragment>> {
    let media = generated(name)?;
    let opts = MkvOptions {
        ingest: Ingest {
            producer_start_ms: start_ms,
            fragment_number_base: number_base,
            ..Ingest::default()
        },
        ..MkvOptions::default()
    };
    Some(kvs_emu::from_mkv(&media, &opts).unwrap())
}

#[test]
fn generated_h264_with_aac_and_h265_become_clean_files() {
    for (name, tracks) in [("h264-aac.mkv", 2), ("h265.mkv", 1)] {
        let Some(fragments) = cut(name, 0, 1_700_000_000_000) else {
            return;
        };
        assert!(fragments.len() >= 10, "{name}: a fragment per key frame");
        let (w, out) = download(fragments.clone(), &["-o", "out.mkv"]);
        assert_exit(&out, 0);
        let v = judge(&w.path("out.mkv"), &fragments, true).unwrap();
        assert_eq!(v.tracks, tracks, "{name}");
    }
}

/// 10 s at 320x240 then 10 s at 640x480, one stream.
fn resolution_change() -> Option<(Vec<StoredFragment>, Vec<StoredFragment>)> {
    let small = cut("h264-aac.mkv", 0, 1_700_000_000_000)?;
    let large = cut("h264-640.mkv", 1_000_000, 1_700_000_010_000)?;
    Some((small, large))
}

#[test]
fn a_track_change_ends_the_run_naming_the_fragment_to_start_from() {
    let Some((small, large)) = resolution_change() else {
        return;
    };
    let all = [small.clone(), large.clone()].concat();
    let (w, out) = download(all, &["-o", "out.mkv"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("--start fragment:{}", large[0].number())),
        "{err}"
    );
    judge(&w.path("out.mkv"), &small, true);
}

#[test]
fn with_segment_a_track_change_starts_a_new_file() {
    let Some((small, large)) = resolution_change() else {
        return;
    };
    let all = [small.clone(), large.clone()].concat();
    let (w, out) = download(all, &["--segment", "1h", "-o", "seg-{fragment}.mkv"]);
    assert_exit(&out, 0);
    judge(
        &w.path(&format!("seg-{}.mkv", small[0].number())),
        &small,
        true,
    );
    judge(
        &w.path(&format!("seg-{}.mkv", large[0].number())),
        &large,
        true,
    );
}

#[test]
fn segments_cut_at_the_first_fragment_boundary_after_the_duration() {
    let fragments = synthetic(17, Ingest::default());
    let (w, out) = download(
        fragments.clone(),
        &[
            "--segment",
            "10s",
            "-o",
            "{stream}/%Y%m%dT%H%M%S-{fragment}.mkv",
            "--progress",
            "json",
        ],
    );
    assert_exit(&out, 0);
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let reported = events.iter().filter(|e| e["event"] == "file").count();
    let done = events.last().unwrap();
    assert_eq!(
        (reported, &done["files"], &done["fragments"]),
        (4, &serde_json::json!(4), &serde_json::json!(17))
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(w.path("cam"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // 2 s fragments: 10 s is five of them; the last file has the remaining two.
    assert_eq!(files.len(), 4, "{files:?}");
    for (i, group) in fragments.chunks(5).enumerate() {
        let time = jiff::Timestamp::from_millisecond(group[0].server_ms()).unwrap();
        let name = format!(
            "{}-{}.mkv",
            time.strftime("%Y%m%dT%H%M%S"),
            group[0].number()
        );
        assert_eq!(files[i].file_name().unwrap().to_str().unwrap(), name);
        judge(&files[i], group, true);
    }
}

#[test]
fn stdout_is_a_stream_ffmpeg_reads_from_a_pipe() {
    let Some(fragments) = cut("h264-aac.mkv", 0, 1_700_000_000_000) else {
        return;
    };
    let (_w, out) = download(fragments.clone(), &["-o", "-"]);
    assert_exit(&out, 0);
    assert_eq!(contents(&out.stdout).ebml_headers, 1);
    let mut probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
            "-i",
            "pipe:0",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    probe.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let probed = probe.wait_with_output().unwrap();
    assert!(
        probed.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&probed.stderr)
    );
    let packets: u64 = String::from_utf8_lossy(&probed.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',').parse::<u64>().unwrap())
        .sum();
    assert_eq!(packets, blocks(&fragments));
}
