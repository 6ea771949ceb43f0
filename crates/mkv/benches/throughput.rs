//! Parser and writer throughput on one core, in bytes of GetMedia body per second.
//!
//! `cargo bench -p mkv` prints a figure per input: every capture in
//! `../shared/fixtures/kvs-getmedia` (when present) and a large generated body shaped like a
//! camera stream (2 s fragments of 25 frames, mostly 40 KB blocks). Nothing is asserted: these
//! are figures to read and compare, not a test.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mkv::ebml::{self, id};
use mkv::{Muxer, Options, Parser};

/// How much body each measurement reads, at least.
const VOLUME: usize = 1 << 30;
/// The size of each push, about what the HTTP client hands over.
const PUSH: usize = 64 * 1024;

fn main() {
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/kvs-getmedia");
    for name in [
        "output_get_media.mkv",
        "kinesis_video_renderer_example_output.mkv",
        "test_mixed_tags.mkv",
    ] {
        if let Ok(data) = std::fs::read(dir.join(name)) {
            inputs.push((name.into(), data));
        }
    }
    inputs.push(("generated 40 KB frames".into(), generated(25, 40_000)));
    inputs.push(("generated 1 MB frames".into(), generated(5, 1_000_000)));

    println!("{:<44} {:>12} {:>16}", "input", "parser", "parser + writer");
    for (name, body) in &inputs {
        let repeat = VOLUME.div_ceil(body.len()).max(1);
        let parse = measure(body, repeat, false);
        let both = measure(body, repeat, true);
        println!(
            "{name:<44} {:>9.2} GB/s {:>13.2} GB/s",
            rate(body.len() * repeat, parse),
            rate(body.len() * repeat, both)
        );
    }
}

fn rate(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e9
}

/// Reads `body` `repeat` times in pushes of [`PUSH`] bytes; with `mux`, also writes it.
fn measure(body: &[u8], repeat: usize, mux: bool) -> Duration {
    let mut muxer = Muxer::new(Options {
        seekable: true,
        app: "bench".into(),
        stream_tag: ("KVS_STREAM_NAME".into(), "bench".into()),
    });
    let mut written = 0usize;
    let start = Instant::now();
    let mut events = 0usize;
    for _ in 0..repeat {
        let mut p = Parser::new();
        for piece in body.chunks(PUSH) {
            p.push(piece);
            while let Some(e) = p.next_event().expect("parses") {
                events += 1;
                if mux {
                    // Each repetition restarts the fragment numbers; the writer only checks tracks.
                    let _ = muxer.event(&e);
                    written += muxer.drain(|bytes, _| bytes.len());
                }
                black_box(&e);
            }
        }
    }
    black_box((events, written));
    start.elapsed()
}

/// A GetMedia body of 50 chunks of 2 s: `frames` blocks of `frame_bytes` per cluster.
fn generated(frames: usize, frame_bytes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut tracks = Vec::new();
    let mut entry = Vec::new();
    ebml::write_uint(&mut entry, id::TRACK_NUMBER, 1);
    ebml::write_uint(&mut entry, id::TRACK_TYPE, 1);
    ebml::write_string(&mut entry, id::CODEC_ID, "V_MPEG4/ISO/AVC");
    ebml::write_element(&mut tracks, id::TRACK_ENTRY, &entry);
    let payload = vec![0x5Au8; frame_bytes];
    for k in 0..50u64 {
        let mut header = Vec::new();
        ebml::write_string(&mut header, id::DOC_TYPE, "matroska");
        ebml::write_element(&mut out, id::EBML, &header);
        ebml::write_id(&mut out, id::SEGMENT);
        out.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        let mut info = Vec::new();
        ebml::write_uint(&mut info, id::TIMESTAMP_SCALE, 1_000_000);
        ebml::write_element(&mut out, id::INFO, &info);
        ebml::write_element(&mut out, id::TRACKS, &tracks);
        let number = format!("{:047}", 91_343_852_333_181_432u64 + k);
        let ts = format!("{}.000", 1_700_000_000 + 2 * k);
        out.extend(tags(&[
            ("AWS_KINESISVIDEO_FRAGMENT_NUMBER", &number),
            ("AWS_KINESISVIDEO_SERVER_TIMESTAMP", &ts),
            ("AWS_KINESISVIDEO_PRODUCER_TIMESTAMP", &ts),
        ]));
        let mut cluster = Vec::new();
        ebml::write_uint(&mut cluster, id::TIMESTAMP, 2000 * k);
        for f in 0..frames {
            let mut block = vec![0x81];
            block.extend(((f * 2000 / frames) as i16).to_be_bytes());
            block.push(if f == 0 { 0x80 } else { 0 });
            block.extend_from_slice(&payload);
            ebml::write_element(&mut cluster, id::SIMPLE_BLOCK, &block);
        }
        ebml::write_element(&mut out, id::CLUSTER, &cluster);
        out.extend(tags(&[
            ("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", "0"),
            ("AWS_KINESISVIDEO_CONTINUATION_TOKEN", &number),
        ]));
    }
    out
}

fn tags(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut tag = Vec::new();
    for (name, value) in pairs {
        let mut simple = Vec::new();
        ebml::write_string(&mut simple, id::TAG_NAME, name);
        ebml::write_string(&mut simple, id::TAG_STRING, value);
        ebml::write_element(&mut tag, id::SIMPLE_TAG, &simple);
    }
    let mut tags = Vec::new();
    ebml::write_element(&mut tags, id::TAG, &tag);
    let mut out = Vec::new();
    ebml::write_element(&mut out, id::TAGS, &tags);
    out
}
