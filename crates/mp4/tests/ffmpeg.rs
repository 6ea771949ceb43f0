//! H.264 + AAC and H.265 + AAC (both with B-frames) made by ffmpeg, cut into KVS fragments,
//! muxed, and judged by ffprobe and ffmpeg against the Matroska made from the same fragments.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Six seconds of test video and a sine, the audio starting `delay` seconds late.
fn make(dir: &Path, name: &str, delay: &str, video: &[&str], audio: &[&str]) -> Vec<u8> {
    let path = dir.join(name);
    run(Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
        ])
        .args([
            "-itsoffset",
            delay,
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
        ])
        .args(["-t", "6"])
        .args(video)
        .args(audio)
        .arg(&path));
    std::fs::read(&path).unwrap()
}

fn judge(dir: &Path, name: &str, source: &[u8]) {
    let body = body_from_mkv(source);
    let (m, file, fed) = mux(&body, opts(true, true), None, true);
    let frag = dir.join(format!("{name}.mp4"));
    std::fs::write(&frag, &file.bytes).unwrap();
    let fast = dir.join(format!("{name}.fast.mp4"));
    std::fs::write(&fast, rewrite(&file.bytes, &m.faststart().unwrap())).unwrap();
    let reference = dir.join(format!("{name}.ref.mkv"));
    std::fs::write(&reference, mkv_reference(&body)).unwrap();
    // A pipe's form too.
    let (_, piped, _) = mux(&body, opts(false, false), None, true);
    let pipe = dir.join(format!("{name}.pipe.mp4"));
    std::fs::write(&pipe, &piped.bytes).unwrap();

    assert_eq!(
        demux_fmp4(&file.bytes).len(),
        fed.len(),
        "{name}: samples = blocks"
    );
    let want = hashes(&reference);
    for path in [&frag, &fast, &pipe] {
        assert_clean(path);
        let got = hashes(path);
        assert_eq!(got.len(), want.len(), "{}", path.display());
        for (s, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g == w,
                "{}: stream {s}: {} vs {} packets",
                path.display(),
                g.len(),
                w.len()
            );
        }
    }
    // The offset the blocks say (ffprobe's Matroska start times also subtract CodecDelay).
    let firsts = first_block_ms(&body);
    let want_offset = (firsts[1] - firsts[0]) as f64 / 1000.0;
    let (ref_streams, ref_duration) = streams(&reference);
    for path in [&frag, &fast] {
        let (s, duration) = streams(path);
        eprintln!(
            "{}: starts {s:?} (blocks: audio {want_offset} s after video; mkv {ref_streams:?}), duration {duration} (mkv {ref_duration}), {} fragments, {} ms, {} samples",
            path.display(),
            m.fragments(),
            m.duration_ms(),
            fed.len(),
        );
        assert!(
            (s[1].1 - s[0].1 - want_offset).abs() <= 0.001,
            "{}: A/V offset",
            path.display()
        );
        // ffmpeg's mov demuxer adds a late track's start to its tfdt-based end, so the
        // fragmented file is judged by the muxer's figure (written to mehd) instead.
        let duration = if path == &fast {
            duration
        } else {
            m.duration_ms() as f64 / 1000.0
        };
        assert!(
            (duration - ref_duration).abs() <= 0.04,
            "{}: duration {duration}",
            path.display()
        );
    }
    // Reading from a pipe.
    let (o, e) = run(Command::new("sh").arg("-c").arg(format!(
        "cat '{}' | ffmpeg -v error -i - -f null -",
        pipe.display()
    )));
    assert_eq!(format!("{o}{e}"), "", "{name}: from a pipe");
}

/// The time (ms, TimestampScale 1 ms) of each track's first block, in track order.
fn first_block_ms(body: &[u8]) -> Vec<i64> {
    let mut parser = mkv::Parser::new();
    parser.push(body);
    let mut cluster = 0i64;
    let mut firsts: Vec<(u64, i64)> = Vec::new();
    while let Some(event) = parser.next_event().unwrap() {
        match event {
            mkv::Event::Cluster { timecode } => cluster = timecode as i64,
            mkv::Event::BlockStart(b) => {
                let at = cluster + i64::from(b.timecode);
                match firsts.iter_mut().find(|f| f.0 == b.track) {
                    Some(f) => f.1 = f.1.min(at),
                    None => firsts.push((b.track, at)),
                }
            }
            _ => {}
        }
    }
    firsts.sort();
    firsts.into_iter().map(|f| f.1).collect()
}

#[test]
fn h264_aac_with_b_frames() {
    if !have("ffmpeg") || !have("ffprobe") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = make(
        dir.path(),
        "h264.mkv",
        "0.5",
        &[
            "-c:v", "libx264", "-g", "25", "-bf", "2", "-pix_fmt", "yuv420p",
        ],
        &["-c:a", "aac"],
    );
    judge(dir.path(), "h264", &src);
}

#[test]
fn h265_aac_with_b_frames() {
    if !have("ffmpeg") || !have("ffprobe") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = make(
        dir.path(),
        "h265.mkv",
        "0",
        &[
            "-c:v",
            "libx265",
            "-x265-params",
            "keyint=25:min-keyint=25:bframes=3:log-level=error",
        ],
        &["-c:a", "aac", "-ac", "1"],
    );
    judge(dir.path(), "h265", &src);
}

#[test]
fn g711_alaw() {
    if !have("ffmpeg") || !have("ffprobe") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = make(
        dir.path(),
        "alaw.mkv",
        "0.25",
        &["-c:v", "libx264", "-g", "25", "-bf", "0"],
        &["-c:a", "pcm_alaw", "-ar", "8000"],
    );
    judge(dir.path(), "alaw", &src);
}
