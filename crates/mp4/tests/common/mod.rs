//! Shared by the tests: feeding GetMedia bodies through the parser into a muxer, building
//! bodies from ffmpeg-made Matroska files, and the tools that judge the output.
#![allow(dead_code)]

pub mod body;

use std::path::{Path, PathBuf};
use std::process::Command;

use mkv::{Event, Parser};
use mp4::{Muxer, Options, Rewrite};

pub fn opts(seekable: bool, faststart: bool) -> Options {
    Options {
        seekable,
        faststart,
        app: "kvs-dl test".into(),
        stream_tag: (
            "KVS_STREAM_ARN".into(),
            "arn:aws:kinesisvideo:us-west-2:123456789012:stream/demo/1700000000000".into(),
        ),
    }
}

fn ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// The captures directory; `None` (skip) only when it is absent outside CI.
pub fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/kvs-getmedia");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(!ci(), "fixtures missing under CI: {}", dir.display());
    eprintln!("skipped: no fixtures at {}", dir.display());
    None
}

/// Whether a tool can be run; under CI a missing tool fails the test.
pub fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("-version").output().is_ok();
    assert!(ok || !ci(), "{tool} missing under CI");
    if !ok {
        eprintln!("skipped: {tool} not installed");
    }
    ok
}

/// A file being written: bytes appended and patched as the muxer says.
#[derive(Default)]
pub struct File {
    pub bytes: Vec<u8>,
}

impl File {
    pub fn take(&mut self, m: &mut Muxer) {
        m.drain(|bytes, patches| {
            self.bytes.extend_from_slice(bytes);
            for p in patches {
                let at = p.offset as usize;
                self.bytes[at..at + p.bytes.len()].copy_from_slice(&p.bytes);
            }
        });
    }
}

/// What was fed: per track number, the frames (block payloads without their headers).
pub type Fed = Vec<(u64, Vec<u8>)>;

/// Feeds a GetMedia body to a new muxer; stops after `limit` fragments; finishes when asked.
pub fn mux(body: &[u8], options: Options, limit: Option<u64>, finish: bool) -> (Muxer, File, Fed) {
    let mut parser = Parser::new();
    let mut m = Muxer::new(options);
    let mut file = File::default();
    let mut fed: Fed = Vec::new();
    let mut block: Option<(u64, Vec<u8>, u64)> = None;
    let mut ended = 0;
    for piece in body.chunks(7919) {
        parser.push(piece);
        while let Some(event) = parser.next_event().expect("parses") {
            if limit.is_some_and(|l| ended >= l) {
                break;
            }
            match &event {
                Event::BlockStart(b) => block = Some((b.track, Vec::new(), b.size)),
                Event::BlockData(d) => {
                    if let Some((_, buf, _)) = block.as_mut() {
                        buf.extend_from_slice(d);
                    }
                }
                Event::FragmentEnd(_) => ended += 1,
                _ => {}
            }
            if let Some((track, buf, size)) = &block
                && buf.len() as u64 == *size
            {
                {
                    let head = (buf[0].leading_zeros() as usize + 1) + 3;
                    fed.push((*track, buf[head..].to_vec()));
                    block = None;
                }
            }
            m.event(&event).expect("accepted");
            file.take(&mut m);
        }
    }
    if finish {
        m.finish();
        file.take(&mut m);
    }
    (m, file, fed)
}

/// The progressive file a rewrite describes.
pub fn rewrite(file: &[u8], r: &Rewrite) -> Vec<u8> {
    let mut out = r.head.clone();
    for range in &r.ranges {
        out.extend_from_slice(&file[range.start as usize..range.end as usize]);
    }
    out
}

/// A GetMedia body (KVS chunks) cut from a plain Matroska file.
pub fn body_from_mkv(mkv_bytes: &[u8]) -> Vec<u8> {
    let fragments = kvs_emu::from_mkv(mkv_bytes, &kvs_emu::MkvOptions::default()).expect("cuts");
    fragments.iter().flat_map(|f| f.chunk(0)).collect()
}

/// The Matroska file our mkv writer makes from the same body: the reference.
pub fn mkv_reference(body: &[u8]) -> Vec<u8> {
    let mut parser = Parser::new();
    parser.push(body);
    let mut m = mkv::Muxer::new(mkv::Options {
        seekable: true,
        app: "ref".into(),
        stream_tag: ("A".into(), "B".into()),
    });
    let mut out = Vec::new();
    let mut take = |m: &mut mkv::Muxer| {
        m.drain(|bytes, patches| {
            out.extend_from_slice(bytes);
            for p in patches {
                let at = p.offset as usize;
                out[at..at + p.bytes.len()].copy_from_slice(&p.bytes);
            }
        })
    };
    while let Some(event) = parser.next_event().expect("parses") {
        m.event(&event).expect("accepted");
        take(&mut m);
    }
    m.finish();
    take(&mut m);
    out
}

pub fn run(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// ffprobe and a full decode print nothing.
pub fn assert_clean(path: &Path) {
    let (o, e) = run(Command::new("ffprobe").args(["-v", "error"]).arg(path));
    assert_eq!(format!("{o}{e}"), "", "ffprobe on {}", path.display());
    let (o, e) = run(Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"]));
    assert_eq!(format!("{o}{e}"), "", "ffmpeg decode of {}", path.display());
}

/// Per stream, the packet hashes in order (`ffmpeg -c copy -f framemd5`).
pub fn hashes(path: &Path) -> Vec<Vec<String>> {
    let (o, _) = run(Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0", "-c", "copy", "-f", "framemd5", "-"]));
    let mut per: Vec<Vec<String>> = Vec::new();
    for line in o.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        let stream: usize = cols[0].parse().unwrap();
        if per.len() <= stream {
            per.resize(stream + 1, Vec::new());
        }
        per[stream].push(cols[5].to_string());
    }
    per
}

/// Per stream, (codec type, start time in seconds); and the format duration.
pub fn streams(path: &Path) -> (Vec<(String, f64)>, f64) {
    let (o, _) = run(Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,start_time:format=duration",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path));
    let mut s = Vec::new();
    let mut duration = 0.0;
    for line in o.lines() {
        let cols: Vec<&str> = line.split(',').collect();
        match cols.as_slice() {
            [kind, start] => s.push((kind.to_string(), start.parse().unwrap_or(f64::NAN))),
            [d] => duration = d.parse().unwrap_or(f64::NAN),
            _ => {}
        }
    }
    (s, duration)
}

/// The format tags ffprobe shows.
pub fn tags(path: &Path) -> String {
    run(Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format_tags",
            "-of",
            "default=nw=1",
        ])
        .arg(path))
    .0
}

/// Samples as shiguredo_mp4's fMP4 file demuxer reads them: (track id, dts, cto, key, bytes).
/// (track id, dts, composition offset, keyframe, bytes).
pub type Demuxed = (u32, u64, Option<i64>, bool, Vec<u8>);

pub fn demux_fmp4(file: &[u8]) -> Vec<Demuxed> {
    use shiguredo_mp4::demux::{DemuxError, Fmp4FileDemuxer, Input};
    // shiguredo_mp4 reads no mfra: leave it out.
    let mut file = file;
    if file.len() > 16 && &file[file.len() - 12..file.len() - 8] == b"mfro" {
        let size = u32::from_be_bytes(file[file.len() - 4..].try_into().unwrap()) as usize;
        file = &file[..file.len() - size];
    }
    let mut d = Fmp4FileDemuxer::new();
    // It wants exactly the ranges it asks for.
    let input = |r: shiguredo_mp4::demux::RequiredInput| {
        let start = (r.position as usize).min(file.len());
        let end = r.size.map_or(file.len(), |s| (start + s).min(file.len()));
        Input {
            position: r.position,
            data: &file[start..end],
        }
    };
    let mut out = Vec::new();
    let mut asks = 0;
    loop {
        match d.next_sample() {
            Ok(Some(s)) => {
                asks = 0;
                let at = s.data_offset as usize;
                out.push((
                    s.track.track_id,
                    s.timestamp,
                    s.composition_time_offset,
                    s.keyframe,
                    file[at..at + s.data_size].to_vec(),
                ));
            }
            Ok(None) => break,
            Err(DemuxError::InputRequired(r)) => {
                asks += 1;
                assert!(asks < 1000, "demuxer wants {r:?}");
                d.handle_input(input(r))
            }
            Err(e) => panic!("demux: {e:?}"),
        }
    }
    out
}
