//! A stream generated in pure Rust, so that the emulator serves something playable on a machine
//! with no media files and no tools: mono 16-bit PCM with a short beep at the start of every
//! fragment (fragment boundaries are audible), every frame a key frame.

use std::f64::consts::TAU;

use bytes::Bytes;
use mkv::ebml::{self, id};

use crate::fragment::{Ingest, Layout, StoredFragment};

const TRACK_UID: u32 = 0x73C5;
const FLAG_LACING: u32 = 0x9C;
const LANGUAGE: u32 = 0x22B59C;
const AUDIO: u32 = 0xE1;
const SAMPLING_FREQUENCY: u32 = 0xB5;
const CHANNELS: u32 = 0x9F;
const BIT_DEPTH: u32 = 0x6264;

/// The sample rate when no fragment size asks for more.
const BASE_RATE: u64 = 16_000;
/// The beep: 880 Hz for the first 150 ms of each fragment, at a quarter of full scale.
const BEEP_HZ: f64 = 880.0;
const BEEP_MS: u64 = 150;
/// KVS refuses fragments longer than this.
const MAX_FRAGMENT_MS: u64 = 10_000;

/// The shape of a synthetic stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticSpec {
    pub fragments: usize,
    /// Media length of each fragment, 1 to 10 000 ms (clamped: KVS's maximum is 10 s).
    pub fragment_ms: u64,
    /// Frames (blocks) per fragment, at least one; at most one per millisecond.
    pub frames_per_fragment: usize,
    /// Make each chunk about this many bytes by raising the sample rate (for memory and
    /// throughput tests with large fragments). The PCM of all fragments is shared, so a stream of
    /// many 40 MB fragments costs 40 MB.
    pub target_fragment_bytes: Option<usize>,
    pub ingest: Ingest,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            fragments: 60,
            fragment_ms: 2000,
            frames_per_fragment: 50,
            target_fragment_bytes: None,
            ingest: Ingest::default(),
        }
    }
}

/// Generates the stream described by `spec`.
pub fn synthetic(spec: &SyntheticSpec) -> Vec<StoredFragment> {
    let fragment_ms = spec.fragment_ms.clamp(1, MAX_FRAGMENT_MS);
    let frames = (spec.frames_per_fragment as u64).clamp(1, fragment_ms);
    let base_samples = BASE_RATE * fragment_ms / 1000;
    // Block headers take about 16 bytes per frame, the chunk's headers and tags about 1 KiB.
    let wanted = spec.target_fragment_bytes.map_or(0, |t| {
        t.saturating_sub(1024 + 16 * frames as usize) as u64 / 2
    });
    let samples = base_samples.max(wanted).max(frames);
    let rate = samples as f64 * 1000.0 / fragment_ms as f64;

    let pcm = beep(samples, rate);
    let mut blocks = Vec::with_capacity(pcm.len() + 16 * frames as usize);
    for frame in 0..frames {
        let first = (frame * samples / frames) as usize;
        let end = ((frame + 1) * samples / frames) as usize;
        let timecode = (frame * fragment_ms / frames) as i16;
        ebml::write_id(&mut blocks, id::SIMPLE_BLOCK);
        ebml::write_size(&mut blocks, 4 + 2 * (end - first) as u64);
        blocks.push(0x81); // track 1
        blocks.extend(timecode.to_be_bytes());
        blocks.push(0x80); // key frame
        blocks.extend_from_slice(&pcm[2 * first..2 * end]);
    }
    let blocks = Bytes::from(blocks);

    let layout = Layout::new(mkv::writer::ebml_header(), 1_000_000, tracks(rate));
    (0..spec.fragments as u64)
        .map(|k| {
            layout.fragment(
                &spec.ingest,
                k,
                k * fragment_ms,
                blocks.clone(),
                frames as usize,
                fragment_ms,
            )
        })
        .collect()
}

/// One fragment of little-endian samples: the beep, then silence.
fn beep(samples: u64, rate: f64) -> Vec<u8> {
    let beep_samples = (rate * BEEP_MS as f64 / 1000.0) as u64;
    let mut pcm = vec![0u8; 2 * samples as usize];
    for i in 0..beep_samples.min(samples) {
        let value = (0.25 * f64::from(i16::MAX) * (TAU * BEEP_HZ * i as f64 / rate).sin()) as i16;
        let at = 2 * i as usize;
        pcm[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }
    pcm
}

/// Tracks with the single PCM audio track.
fn tracks(rate: f64) -> Vec<u8> {
    let mut audio = Vec::new();
    ebml::write_float(&mut audio, SAMPLING_FREQUENCY, rate);
    ebml::write_uint(&mut audio, CHANNELS, 1);
    ebml::write_uint(&mut audio, BIT_DEPTH, 16);
    let mut entry = Vec::new();
    ebml::write_uint(&mut entry, id::TRACK_NUMBER, 1);
    ebml::write_uint(&mut entry, TRACK_UID, 1);
    ebml::write_uint(&mut entry, id::TRACK_TYPE, 2);
    ebml::write_uint(&mut entry, FLAG_LACING, 0);
    ebml::write_string(&mut entry, LANGUAGE, "und");
    ebml::write_string(&mut entry, id::CODEC_ID, "A_PCM/INT/LIT");
    ebml::write_element(&mut entry, AUDIO, &audio);
    let mut entries = Vec::new();
    ebml::write_element(&mut entries, id::TRACK_ENTRY, &entry);
    let mut out = Vec::new();
    ebml::write_element(&mut out, id::TRACKS, &entries);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn fragments_follow_the_spec() {
        let stored = synthetic(&SyntheticSpec {
            fragments: 3,
            fragment_ms: 1000,
            frames_per_fragment: 10,
            ..SyntheticSpec::default()
        });
        assert_eq!(stored.len(), 3);
        for (k, f) in stored.iter().enumerate() {
            assert_eq!(f.blocks(), 10);
            assert_eq!(f.duration_ms(), 1000);
            assert_eq!(f.producer_ms(), 1_700_000_000_000 + 1000 * k as i64);
            assert_eq!(f.server_ms(), f.producer_ms() + 150);
        }
        let mut parser = mkv::Parser::new();
        parser.push(&stored[1].chunk(1000));
        let mut seen = (0, None);
        while let Some(event) = parser.next_event().unwrap() {
            match event {
                mkv::Event::BlockStart(b) => {
                    assert!(b.keyframe);
                    seen.0 += 1;
                }
                mkv::Event::FragmentEnd(f) => seen.1 = Some(f),
                _ => {}
            }
        }
        let fragment = seen.1.unwrap();
        assert_eq!(seen.0, 10);
        assert_eq!(fragment.number, stored[1].number());
        assert_eq!(fragment.millis_behind_now, Some(1000));
    }

    #[test]
    fn a_target_size_makes_big_fragments() {
        let target = 4 << 20;
        let stored = synthetic(&SyntheticSpec {
            fragments: 2,
            target_fragment_bytes: Some(target),
            ..SyntheticSpec::default()
        });
        let size = stored[0].size() as f64;
        assert!((size / target as f64 - 1.0).abs() < 0.01, "{size}");
    }

    /// Runs `tool args… file` when the tool exists; `None` when it does not (fails under CI).
    fn run(tool: &str, args: &[&str], file: &std::path::Path) -> Option<std::process::Output> {
        match Command::new(tool).args(args).arg(file).output() {
            Ok(out) => Some(out),
            Err(e) if std::env::var_os("CI").is_some() => panic!("{tool}: {e}"),
            Err(_) => None,
        }
    }

    #[test]
    fn a_chunk_is_valid_matroska_for_ffprobe_and_mkvmerge() {
        // The default stream, and 2 MiB fragments (their sample rate is raised to about 524 kHz).
        for (target, rate) in [(None, "16000"), (Some(2 << 20), "523832")] {
            let stored = synthetic(&SyntheticSpec {
                fragments: 1,
                target_fragment_bytes: target,
                ..SyntheticSpec::default()
            });
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("chunk.mkv");
            std::fs::write(&file, stored[0].chunk(0)).unwrap();

            let entries = [
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,sample_rate,channels",
            ];
            if let Some(out) = run(
                "ffprobe",
                &[&entries[..], &["-of", "csv=p=0"]].concat(),
                &file,
            ) {
                assert!(out.status.success(), "{out:?}");
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(stderr.is_empty(), "{stderr}");
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert_eq!(stdout.trim(), format!("pcm_s16le,{rate},1"));
            }
            if let Some(out) = run("mkvmerge", &["-J"], &file) {
                assert!(out.status.success(), "{out:?}");
                let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(info["container"]["recognized"], true, "{info}");
                let codec = &info["tracks"][0]["properties"]["codec_id"];
                assert_eq!(codec, "A_PCM/INT/LIT", "{info}");
                assert_eq!(info["errors"], serde_json::json!([]), "{info}");
            }
        }
    }
}
