//! Streams made from any plain Matroska file: the media is cut into fragments at key frames and
//! each fragment is rewritten as the chunk a KVS producer upload would give back (one unknown-size
//! cluster per fragment, block timecodes re-based on it, KVS tags around it).

use bytes::Bytes;
use mkv::ebml::{self, id};
use mkv::{BlockKind, Event, Parser};

use crate::fragment::{Ingest, Layout, SourceError, Span, StoredFragment, fragment_duration};

/// Element ID of a BlockGroup's ReferenceBlock: its presence means "not a key frame".
const REFERENCE_BLOCK: u32 = 0xFB;

/// How a plain file becomes a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MkvOptions {
    pub ingest: Ingest,
    /// How many times the media is played back to back, each pass with fresh fragment numbers and
    /// timestamps continuing from the previous one (for long or large streams from a short file;
    /// the media bytes are shared, not copied).
    pub repeat: usize,
    /// For files without a video track: cut at the first key frame at least this long after the
    /// fragment's start, rather than at every (audio) key frame.
    pub audio_fragment_ms: u64,
}

impl Default for MkvOptions {
    fn default() -> Self {
        MkvOptions {
            ingest: Ingest::default(),
            repeat: 1,
            audio_fragment_ms: 2000,
        }
    }
}

/// Cuts a plain Matroska file into KVS fragments: a new fragment starts at each key frame of the
/// first video track (or, without video, of the first track once the fragment is
/// `audio_fragment_ms` long).
pub fn from_mkv(bytes: &[u8], opts: &MkvOptions) -> Result<Vec<StoredFragment>, SourceError> {
    let mut parser = Parser::new();
    parser.push(bytes);

    let mut ebml_header = None;
    let mut timecode_scale = 1_000_000;
    let mut tracks: Option<Vec<u8>> = None;
    let mut cutter: Option<Cutter> = None;
    let mut cluster = 0i64;
    let mut block: Option<PendingBlock> = None;

    while let Some(event) = parser.next_event()? {
        match event {
            Event::EbmlHeader(header) => {
                if ebml_header.is_some() {
                    return Err(SourceError::Media(
                        "the file holds more than one Matroska document".into(),
                    ));
                }
                ebml_header = Some(header.to_vec());
            }
            Event::Info {
                timecode_scale: scale,
            } => timecode_scale = scale,
            Event::Tracks(bytes) => tracks = Some(bytes.to_vec()),
            Event::Cluster { timecode } => {
                cluster = i64::try_from(timecode)
                    .map_err(|_| SourceError::Media(format!("cluster timecode {timecode}")))?;
            }
            Event::BlockStart(start) => {
                block = Some(PendingBlock {
                    kind: start.kind,
                    track: start.track,
                    ticks: cluster.saturating_add(i64::from(start.timecode)),
                    keyframe: start.keyframe,
                    size: start.size as usize,
                    data: Vec::with_capacity(start.size.min(1 << 24) as usize),
                });
            }
            Event::BlockData(piece) => {
                if let Some(pending) = &mut block {
                    pending.data.extend_from_slice(piece);
                }
            }
            Event::FragmentStart(_) | Event::FragmentEnd(_) | Event::ServiceError(_) => {
                return Err(SourceError::Media(
                    "this is a GetMedia capture (it has KVS tags), not a plain file".into(),
                ));
            }
        }
        if block.as_ref().is_some_and(|b| b.data.len() >= b.size) {
            let complete = block.take().expect("checked above");
            if cutter.is_none() {
                let tracks = tracks
                    .as_deref()
                    .ok_or_else(|| SourceError::Media("no Tracks before the first block".into()))?;
                let scale_ms = 1_000_000f64 / timecode_scale as f64;
                cutter = Some(Cutter::new(
                    tracks,
                    (opts.audio_fragment_ms as f64 * scale_ms) as i64,
                )?);
            }
            cutter.as_mut().expect("set above").push(complete)?;
        }
    }

    let (Some(ebml_header), Some(tracks), Some(cutter)) = (ebml_header, tracks, cutter) else {
        return Err(SourceError::Media("the file has no media blocks".into()));
    };
    let layout = Layout::new(ebml_header, timecode_scale, tracks);
    Ok(cutter.finish(&layout, opts))
}

/// A block whose payload is still arriving.
struct PendingBlock {
    kind: BlockKind,
    track: u64,
    /// Absolute time, in timecode ticks.
    ticks: i64,
    keyframe: bool,
    size: usize,
    data: Vec<u8>,
}

/// Groups blocks into fragments.
struct Cutter {
    track: u64,
    has_video: bool,
    /// Minimum fragment length when cutting on a non-video track, in ticks.
    min_ticks: i64,
    current: Cut,
    done: Vec<Cut>,
}

/// One fragment's blocks, already encoded against its start.
#[derive(Default)]
struct Cut {
    start: i64,
    blocks: Vec<u8>,
    count: usize,
    span: Span,
}

impl Cutter {
    fn new(tracks: &[u8], min_ticks: i64) -> Result<Self, SourceError> {
        let (track, has_video) = cut_track(tracks)
            .ok_or_else(|| SourceError::Media("Tracks has no track entry".into()))?;
        Ok(Cutter {
            track,
            has_video,
            min_ticks,
            current: Cut::default(),
            done: Vec::new(),
        })
    }

    fn push(&mut self, mut block: PendingBlock) -> Result<(), SourceError> {
        let keyframe = match block.kind {
            BlockKind::Simple => block.keyframe,
            BlockKind::Group => group_block(&block.data).is_some_and(|(_, key)| key),
        };
        let cut_here = block.track == self.track
            && keyframe
            && (self.has_video || block.ticks.saturating_sub(self.current.start) >= self.min_ticks);
        if cut_here && self.current.count > 0 {
            self.done.push(std::mem::take(&mut self.current));
        }
        let cut = &mut self.current;
        if cut.count == 0 {
            cut.start = block.ticks;
        }
        let relative = i16::try_from(block.ticks.saturating_sub(cut.start)).map_err(|_| {
            SourceError::Media(format!(
                "a fragment would span more than 32767 timecode ticks (block at tick {}); \
                 the file needs more key frames",
                block.ticks
            ))
        })?;
        let offset = match block.kind {
            BlockKind::Simple => Some(0),
            BlockKind::Group => group_block(&block.data).map(|(offset, _)| offset),
        };
        let patched = offset.and_then(|offset| {
            let data = block.data.get(offset..)?;
            let (_, track_len) = ebml::read_size(data).ok()??;
            let at = offset + track_len;
            block
                .data
                .get_mut(at..at + 2)?
                .copy_from_slice(&relative.to_be_bytes());
            Some(())
        });
        if patched.is_none() {
            return Err(SourceError::Media(format!(
                "malformed block at tick {}",
                block.ticks
            )));
        }
        let element = match block.kind {
            BlockKind::Simple => id::SIMPLE_BLOCK,
            BlockKind::Group => id::BLOCK_GROUP,
        };
        ebml::write_element(&mut cut.blocks, element, &block.data);
        cut.span.add(block.track, block.ticks);
        cut.count += 1;
        Ok(())
    }

    fn finish(mut self, layout: &Layout, opts: &MkvOptions) -> Vec<StoredFragment> {
        if self.current.count > 0 {
            self.done.push(self.current);
        }
        let cuts = self.done;
        let durations: Vec<u64> = cuts
            .iter()
            .enumerate()
            .map(|(i, cut)| {
                let gap = cuts
                    .get(i + 1)
                    .map(|next| next.start.saturating_sub(cut.start));
                fragment_duration(cut.span.ticks_from(cut.start), gap)
            })
            .collect();
        let (Some(first), Some(last)) = (cuts.first(), cuts.last()) else {
            return Vec::new();
        };
        let origin = first.start;
        let since_origin = |start: i64| start.saturating_sub(origin).max(0) as u64;
        let pass_ticks = since_origin(last.start).saturating_add(durations[durations.len() - 1]);
        // Every pass serves the same block bytes: share them.
        let cuts: Vec<(u64, Bytes, usize)> = cuts
            .into_iter()
            .map(|cut| (since_origin(cut.start), Bytes::from(cut.blocks), cut.count))
            .collect();
        let mut out = Vec::new();
        for pass in 0..opts.repeat as u64 {
            for (i, (offset, blocks, count)) in cuts.iter().enumerate() {
                let k = pass * cuts.len() as u64 + i as u64;
                let media_ticks = pass.saturating_mul(pass_ticks).saturating_add(*offset);
                out.push(layout.fragment(
                    &opts.ingest,
                    k,
                    media_ticks,
                    blocks.clone(),
                    *count,
                    layout.ticks_to_ms(durations[i]),
                ));
            }
        }
        out
    }
}

/// The track to cut on: the first video track, else the first track. `(number, is_video)`.
fn cut_track(tracks: &[u8]) -> Option<(u64, bool)> {
    let header = ebml::read_header(tracks).ok()??;
    let data = tracks.get(header.len..)?;
    let mut first = None;
    for entry in ebml::children(data) {
        let (entry_id, entry) = entry.ok()?;
        if entry_id != id::TRACK_ENTRY {
            continue;
        }
        let (mut number, mut kind) = (None, None);
        for field in ebml::children(entry).flatten() {
            match field.0 {
                id::TRACK_NUMBER => number = ebml::read_uint(field.1),
                id::TRACK_TYPE => kind = ebml::read_uint(field.1),
                _ => {}
            }
        }
        let Some(number) = number else { continue };
        if kind == Some(1) {
            return Some((number, true));
        }
        first = first.or(Some((number, false)));
    }
    first
}

/// In a BlockGroup's payload: the offset of its Block's data, and whether it is a key frame
/// (no ReferenceBlock).
fn group_block(mut data: &[u8]) -> Option<(usize, bool)> {
    let mut offset = 0;
    let mut block = None;
    let mut referenced = false;
    while !data.is_empty() {
        let header = ebml::read_header(data).ok()??;
        let size = usize::try_from(header.size?).ok()?;
        let end = header.len.checked_add(size)?;
        if end > data.len() {
            return None;
        }
        match header.id {
            id::BLOCK => block = Some(offset + header.len),
            REFERENCE_BLOCK => referenced = true,
            _ => {}
        }
        offset += end;
        data = &data[end..];
    }
    block.map(|at| (at, !referenced))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIDEO: u64 = 1;
    const AUDIO: u64 = 2;

    /// A plain Matroska file starting at 5 s: one video track at 25 fps with a key frame every
    /// `gop` frames (key frames and every other frame in BlockGroups, the rest in SimpleBlocks)
    /// and one audio track at 50 frames/s, in clusters of one second. Each block's payload ends
    /// with its absolute time, to recognise it after the rewrite.
    fn plain_file(seconds: i64, gop: i64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut header = Vec::new();
        ebml::write_string(&mut header, id::DOC_TYPE, "matroska");
        ebml::write_element(&mut out, id::EBML, &header);

        let mut segment = Vec::new();
        let mut info = Vec::new();
        ebml::write_uint(&mut info, id::TIMESTAMP_SCALE, 1_000_000);
        ebml::write_element(&mut segment, id::INFO, &info);
        let mut entries = Vec::new();
        for (number, kind, codec) in [(VIDEO, 1, "V_TEST"), (AUDIO, 2, "A_TEST")] {
            let mut entry = Vec::new();
            ebml::write_uint(&mut entry, id::TRACK_NUMBER, number);
            ebml::write_uint(&mut entry, id::TRACK_TYPE, kind);
            ebml::write_string(&mut entry, id::CODEC_ID, codec);
            ebml::write_element(&mut entries, id::TRACK_ENTRY, &entry);
        }
        ebml::write_element(&mut segment, id::TRACKS, &entries);

        for second in 0..seconds {
            let start = 5000 + second * 1000;
            let mut cluster = Vec::new();
            ebml::write_uint(&mut cluster, id::TIMESTAMP, start as u64);
            for ms in (0..1000).step_by(20) {
                let t = start + ms;
                if ms % 40 == 0 {
                    let frame = (t - 5000) / 40;
                    let key = frame % gop == 0;
                    let payload = block_payload(VIDEO, ms as i16, key, t);
                    if key || frame % 2 == 0 {
                        let mut group = Vec::new();
                        ebml::write_element(&mut group, id::BLOCK, &payload);
                        if !key {
                            ebml::write_uint(&mut group, REFERENCE_BLOCK, 40);
                        }
                        ebml::write_element(&mut cluster, id::BLOCK_GROUP, &group);
                    } else {
                        ebml::write_element(&mut cluster, id::SIMPLE_BLOCK, &payload);
                    }
                }
                let payload = block_payload(AUDIO, ms as i16, true, t);
                ebml::write_element(&mut cluster, id::SIMPLE_BLOCK, &payload);
            }
            ebml::write_element(&mut segment, id::CLUSTER, &cluster);
        }
        ebml::write_element(&mut out, id::SEGMENT, &segment);
        out
    }

    fn block_payload(track: u64, timecode: i16, key: bool, marker: i64) -> Vec<u8> {
        let mut payload = Vec::new();
        ebml::write_size(&mut payload, track);
        payload.extend(timecode.to_be_bytes());
        payload.push(if key { 0x80 } else { 0 });
        payload.extend(marker.to_be_bytes());
        payload
    }

    /// (track, absolute ms, payload marker) of every block, and the KVS fragments, of a body.
    fn read_back(body: &[u8]) -> (Vec<(u64, i64, i64)>, Vec<mkv::Fragment>) {
        let mut parser = Parser::new();
        parser.push(body);
        let (mut blocks, mut fragments) = (Vec::new(), Vec::new());
        let mut cluster = 0i64;
        let mut current = None;
        while let Some(event) = parser.next_event().unwrap() {
            match event {
                Event::Cluster { timecode } => cluster = timecode as i64,
                Event::BlockStart(b) => {
                    current = Some((b.track, cluster + i64::from(b.timecode), Vec::new()))
                }
                Event::BlockData(d) => current.as_mut().unwrap().2.extend_from_slice(d),
                Event::FragmentEnd(f) => fragments.push(f),
                _ => {}
            }
            if let Some((track, t, data)) = &current
                && data.len() >= 8
            {
                let marker = i64::from_be_bytes(data[data.len() - 8..].try_into().unwrap());
                blocks.push((*track, *t, marker));
                current = None;
            }
        }
        assert_eq!(parser.finish().unwrap(), mkv::Finish::Clean);
        (blocks, fragments)
    }

    #[test]
    fn fragments_start_at_video_key_frames_and_keep_every_block() {
        let file = plain_file(6, 50);
        let opts = MkvOptions {
            ingest: Ingest {
                absolute_timecodes: false,
                ..Ingest::default()
            },
            ..MkvOptions::default()
        };
        let stored = from_mkv(&file, &opts).unwrap();
        assert_eq!(stored.len(), 3);
        assert_eq!(
            stored.iter().map(StoredFragment::blocks).sum::<usize>(),
            6 * 75
        );
        assert!(stored.iter().all(|f| f.duration_ms() == 2000));

        let body: Vec<u8> = stored.iter().flat_map(|f| f.chunk(0)).collect();
        let (blocks, fragments) = read_back(&body);
        let (original, _) = read_back(&file);
        // Relative cluster timecodes start at 0: the media's first frame was at 5000 ms.
        let shifted: Vec<_> = original
            .iter()
            .map(|&(tr, t, m)| (tr, t - 5000, m))
            .collect();
        assert_eq!(blocks, shifted);
        for (f, s) in fragments.iter().zip(&stored) {
            assert_eq!(f.number, s.number());
            assert_eq!(f.producer_ms, s.producer_ms());
            assert_eq!(f.server_ms, s.producer_ms() + 150);
            assert_eq!(f.continuation_token.as_deref(), Some(s.number()));
            assert_eq!(f.millis_behind_now, Some(0));
        }
        assert_eq!(fragments[1].producer_ms - fragments[0].producer_ms, 2000);
    }

    #[test]
    fn absolute_timecodes_and_repeats_continue_the_clock() {
        let file = plain_file(4, 25);
        let opts = MkvOptions {
            repeat: 3,
            ..MkvOptions::default()
        };
        let stored = from_mkv(&file, &opts).unwrap();
        assert_eq!(stored.len(), 12);
        let body: Vec<u8> = stored.iter().flat_map(|f| f.chunk(7)).collect();
        let (blocks, fragments) = read_back(&body);
        assert_eq!(blocks.len(), 3 * 4 * 75);
        let starts: Vec<i64> = fragments.iter().map(|f| f.producer_ms).collect();
        let expected: Vec<i64> = (0..12).map(|k| 1_700_000_000_000 + k * 1000).collect();
        assert_eq!(starts, expected);
        // Absolute cluster timecodes: the first video frame sits at the producer timestamp.
        assert_eq!(blocks[0], (VIDEO, 1_700_000_000_000, 5000));
        let mut numbers: Vec<&str> = stored.iter().map(StoredFragment::number).collect();
        numbers.dedup();
        assert_eq!(numbers.len(), 12);
    }

    #[test]
    fn audio_only_files_are_cut_by_duration() {
        let file = plain_file(5, 25);
        // Turn the video track into a second audio track (TrackType 1 → 2): the file then has
        // no video, and track 1's key frames come every second.
        let audio_only = {
            let at = file
                .windows(3)
                .position(|w| w == [0x83, 0x81, 0x01])
                .unwrap();
            let mut f = file.clone();
            f[at + 2] = 2;
            f
        };
        let stored = from_mkv(&audio_only, &MkvOptions::default()).unwrap();
        assert_eq!(stored.len(), 3);
        assert_eq!(stored[0].duration_ms(), 2000);
    }

    #[test]
    fn captures_and_garbage_are_refused() {
        let capture = crate::synthetic(&crate::SyntheticSpec {
            fragments: 1,
            ..crate::SyntheticSpec::default()
        })[0]
            .chunk(0);
        assert!(matches!(
            from_mkv(&capture, &MkvOptions::default()),
            Err(SourceError::Media(_))
        ));
        assert!(matches!(
            from_mkv(
                &[0x1A, 0x45, 0xDF, 0xA3, 0x80, 0x42],
                &MkvOptions::default()
            ),
            Err(SourceError::Media(_))
        ));
        assert!(matches!(
            from_mkv(b"not matroska at all", &MkvOptions::default()),
            Err(SourceError::Parse(_))
        ));
    }

    /// Runs a media tool; `None` when it is not installed (a failure under CI).
    fn tool(name: &str, args: &[&str]) -> Option<std::process::Output> {
        match std::process::Command::new(name).args(args).output() {
            Ok(out) => Some(out),
            Err(e) if std::env::var_os("CI").is_some() => panic!("{name}: {e}"),
            Err(_) => None,
        }
    }

    #[test]
    fn ffmpeg_files_become_fragments_that_tools_read() {
        let dir = tempfile::tempdir().unwrap();
        let encodes: [(&str, &[&str]); 2] = [
            (
                "h264-aac.mkv",
                &[
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc=size=160x120:rate=25",
                    "-f",
                    "lavfi",
                    "-i",
                    "sine=frequency=440:sample_rate=48000",
                    "-t",
                    "4",
                    "-c:v",
                    "libx264",
                    "-x264-params",
                    "keyint=25:min-keyint=25:scenecut=0",
                    "-c:a",
                    "aac",
                ],
            ),
            (
                "h265.mkv",
                &[
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc=size=160x120:rate=25",
                    "-t",
                    "3",
                    "-c:v",
                    "libx265",
                    "-x265-params",
                    "keyint=25:min-keyint=25:scenecut=0:open-gop=0:log-level=error",
                ],
            ),
        ];
        for (name, args) in encodes {
            let source = dir.path().join(name);
            let source_arg = source.to_str().unwrap();
            let mut ffmpeg = vec!["-v", "error", "-y"];
            ffmpeg.extend(args);
            ffmpeg.push(source_arg);
            let Some(out) = tool("ffmpeg", &ffmpeg) else {
                return;
            };
            assert!(out.status.success(), "{name}: {out:?}");

            let stored =
                from_mkv(&std::fs::read(&source).unwrap(), &MkvOptions::default()).unwrap();
            let seconds = if name.starts_with("h264") { 4 } else { 3 };
            assert_eq!(stored.len(), seconds, "{name}: one fragment per 1 s GOP");
            assert!(
                stored.iter().all(|f| f.duration_ms() == 1000),
                "{name}: {stored:?}"
            );

            let chunk = dir.path().join(format!("chunk-{name}"));
            std::fs::write(&chunk, stored[1].chunk(0)).unwrap();
            let chunk_arg = chunk.to_str().unwrap();
            let Some(out) = tool(
                "ffprobe",
                &[
                    "-v",
                    "error",
                    "-skip_frame",
                    "nokey",
                    "-select_streams",
                    "v",
                    "-show_entries",
                    "frame=pts_time",
                    "-of",
                    "csv=p=0",
                    chunk_arg,
                ],
            ) else {
                return;
            };
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "{name}: {out:?}"
            );
            // The fragment's key frame is its first frame, at the (absolute) cluster time.
            let stdout = String::from_utf8_lossy(&out.stdout);
            let first_key: f64 = stdout
                .lines()
                .next()
                .unwrap()
                .trim_end_matches(',')
                .parse()
                .unwrap();
            assert!(
                (first_key - 1_700_000_001.0).abs() < 0.001,
                "{name}: {stdout}"
            );
            if let Some(out) = tool("mkvmerge", &["-J", chunk_arg]) {
                let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(info["errors"], serde_json::json!([]), "{name}: {info}");
                assert_eq!(info["container"]["recognized"], true, "{name}: {info}");
            }
        }
    }

    #[test]
    fn corrupted_input_is_an_error_not_a_panic() {
        let plain = plain_file(2, 25);
        let capture: Vec<u8> = crate::synthetic(&crate::SyntheticSpec {
            fragments: 2,
            frames_per_fragment: 5,
            ..crate::SyntheticSpec::default()
        })
        .iter()
        .flat_map(|f| f.chunk(0))
        .collect();
        // xorshift64: reproducible without a dependency.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        for input in [&plain, &capture] {
            for _ in 0..300 {
                let mut bytes = input.clone();
                for _ in 0..4 {
                    let at = random() % bytes.len();
                    bytes[at] = random() as u8;
                }
                let bytes = &bytes[..1 + random() % bytes.len()];
                let _ = from_mkv(bytes, &MkvOptions::default());
                let _ = crate::from_capture(bytes);
                let _ = crate::is_capture(bytes);
            }
        }
    }
}
