//! The Matroska writer behind `--format mkv`, without I/O: fragments in, one clean Matroska
//! file out, in a single pass and bounded memory.
//!
//! The output has one EBML header and one Segment; the Tracks of the first fragment; one
//! cluster per source cluster, moved onto a continuous timeline that starts at 0 and follows
//! the producer timestamps (so gaps stay gaps); Cues for every cluster that starts with a
//! keyframe; Tags naming the stream and the first and last fragments. Clusters pass through:
//! only the cue list grows, a few bytes per fragment.
//!
//! Bytes come out through [`Muxer::drain`]. Some values are only known later (cluster sizes,
//! the Segment size, the Duration, where Cues and Tags landed); a seekable output gets them as
//! [`Patch`]es to apply at earlier offsets. A streaming output (`seekable: false`) gets
//! unknown-size elements instead and never needs to seek.
//!
//! A fragment is written between [`Muxer::start_fragment`] and [`Muxer::end_fragment`]; when
//! the connection drops in between, [`Muxer::discard`] forgets it (the caller drops the bytes).

use crate::chunk::Chunk;
use crate::ebml::{self, id};
use crate::parser::{Block, Event, Fragment, Millis, Parser};
use crate::span::Span;
use crate::timeline::{self, Placement};
use crate::tracks::{self, Track};

/// Nanoseconds between the Unix epoch and Matroska's DateUTC origin, 2001-01-01T00:00:00Z.
const DATE_UTC_ORIGIN_MS: i64 = 978_307_200_000;

const TAG_TARGETS: u32 = id::TARGETS;
const TARGET_TYPE_VALUE: u32 = 0x68CA;

/// How the file is laid out.
#[derive(Debug, Clone)]
pub struct Options {
    /// Known sizes, Duration, SeekHead and Cues, patched in place at the end. Off for pipes.
    pub seekable: bool,
    /// MuxingApp and WritingApp, e.g. `kvs-dl 0.1.0`.
    pub app: String,
    /// The SimpleTag naming the stream, e.g. (`KVS_STREAM_ARN`, `arn:aws:...`).
    pub stream_tag: (String, String),
}

/// Bytes to write over earlier output, at `offset` from the start of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Why a fragment cannot go into this file.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Its Tracks differ from the file's (codec, codec private data, resolution, track set).
    TracksChanged,
    /// Its Tracks element could not be read.
    BadTracks(&'static str),
}

/// Where in the output the values patched at the end live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    segment_size_at: u64,
    segment_data: u64,
    duration_at: u64,
    cues_seek_at: u64,
    tags_seek_at: u64,
}

/// Length of the SeekHead a seekable file starts with: four entries of [`SEEK_LEN`].
const SEEK_HEAD_LEN: u64 = 4 + 1 + 4 * SEEK_LEN as u64;

impl Layout {
    /// The layout of every seekable file this writer starts at offset 0.
    const FIXED: Layout = {
        let header = EBML_HEADER_LEN as u64;
        let segment_data = header + 4 + 8;
        let seeks = segment_data + 5;
        Layout {
            segment_size_at: header + 4,
            segment_data,
            duration_at: segment_data + SEEK_HEAD_LEN + 4 + 8 + 3,
            cues_seek_at: seeks + 2 * SEEK_LEN as u64,
            tags_seek_at: seeks + 3 * SEEK_LEN as u64,
        }
    };

    /// The same layout for a file starting at `start`.
    fn at(self, start: u64) -> Layout {
        Layout {
            segment_size_at: self.segment_size_at + start,
            segment_data: self.segment_data + start,
            duration_at: self.duration_at + start,
            cues_seek_at: self.cues_seek_at + start,
            tags_seek_at: self.tags_seek_at + start,
        }
    }
}

/// The 8-byte form of "size unknown", so that the real size can be patched over it.
const UNKNOWN_SIZE_8: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// Length of [`ebml_header`].
const EBML_HEADER_LEN: usize = 40;

/// The EBML header of every Matroska document kvs-dl writes (and the emulator's own chunks).
pub fn ebml_header() -> Vec<u8> {
    let mut header = Vec::new();
    ebml::write_uint(&mut header, id::EBML_VERSION, 1);
    ebml::write_uint(&mut header, id::EBML_READ_VERSION, 1);
    ebml::write_uint(&mut header, id::EBML_MAX_ID_LENGTH, 4);
    ebml::write_uint(&mut header, id::EBML_MAX_SIZE_LENGTH, 8);
    ebml::write_string(&mut header, id::DOC_TYPE, "matroska");
    ebml::write_uint(&mut header, id::DOC_TYPE_VERSION, 4);
    ebml::write_uint(&mut header, id::DOC_TYPE_READ_VERSION, 2);
    let mut out = Vec::new();
    ebml::write_element(&mut out, id::EBML, &header);
    debug_assert_eq!(out.len(), EBML_HEADER_LEN);
    out
}

/// Per-file state that a discarded fragment must not change.
#[derive(Debug, Clone, Default)]
struct Committed {
    written: u64,
    cues: usize,
    end_ticks: i64,
    last_block_ticks: Option<i64>,
    first: Option<Fragment>,
    last: Option<Fragment>,
    fragments: u64,
    non_monotonic: u64,
}

/// The fragment being written.
#[derive(Debug, Clone)]
struct Current {
    start_ticks: i64,
    /// Its producer timestamp did not move past what was written: it follows on instead.
    moved: bool,
    span: Span,
    /// Offset of the open cluster's ID, and of its data (for the size patch).
    cluster: Option<(u64, u64)>,
    /// A cue was considered for the open cluster.
    cued: bool,
    last_block_ticks: Option<i64>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Muxer {
    opts: Options,
    out: Vec<u8>,
    patches: Vec<Patch>,
    /// Offset of `out[0]` in the file.
    written: u64,
    layout: Option<Layout>,
    scale: u64,
    tracks: Vec<Track>,
    primary: u64,
    /// (time, track, cluster position in the Segment) of every cluster that starts with a
    /// keyframe of the primary track.
    cues: Vec<(i64, u64, u64)>,
    committed: Committed,
    current: Option<Current>,
    /// The headers of the chunk being read, for its fragment's start.
    chunk: Chunk,
}

impl Muxer {
    pub fn new(opts: Options) -> Muxer {
        Muxer {
            opts,
            out: Vec::with_capacity(256 * 1024),
            patches: Vec::new(),
            written: 0,
            layout: None,
            scale: 1_000_000,
            tracks: Vec::new(),
            primary: 0,
            cues: Vec::new(),
            committed: Committed::default(),
            current: None,
            chunk: Chunk::default(),
        }
    }

    /// Feeds one parser event of a fragment to be written. A fragment whose tracks do not fit
    /// this file is refused at its `FragmentStart`, with nothing changed: the caller can start
    /// a new file and feed the event again.
    pub fn event(&mut self, event: &Event<'_>) -> Result<(), Refusal> {
        match event {
            Event::EbmlHeader(_) | Event::Info { .. } | Event::Tracks(_) => self.chunk.event(event),
            Event::FragmentStart(f) => {
                let chunk = std::mem::take(&mut self.chunk);
                let started = self.start_fragment(f, chunk.timecode_scale, &chunk.tracks);
                self.chunk = chunk;
                started?;
            }
            Event::Cluster { timecode } => self.cluster(*timecode),
            Event::BlockStart(block) => self.block(block),
            Event::BlockData(data) => self.block_data(data),
            Event::FragmentEnd(f) => self.end_fragment(f),
            Event::ServiceError(_) => {}
        }
        Ok(())
    }

    /// A muxer for the next file, which goes on reading the chunk this one is in.
    pub fn next_file(&self) -> Muxer {
        Muxer {
            chunk: self.chunk.clone(),
            ..Muxer::new(self.opts.clone())
        }
    }

    /// The Tracks element of the chunk being read.
    pub fn chunk_tracks(&self) -> &[u8] {
        &self.chunk.tracks
    }

    /// Whether a fragment with this Tracks element can go into this file.
    pub fn accepts(&self, tracks_element: &[u8]) -> Result<(), Refusal> {
        let tracks = tracks::parse(tracks_element).map_err(Refusal::BadTracks)?;
        if self.layout.is_some() && tracks != self.tracks {
            return Err(Refusal::TracksChanged);
        }
        Ok(())
    }

    /// Begins a fragment, given its chunk's TimestampScale and Tracks. The first fragment also
    /// writes the file's headers.
    pub fn start_fragment(
        &mut self,
        fragment: &Fragment,
        timecode_scale: u64,
        tracks_element: &[u8],
    ) -> Result<(), Refusal> {
        self.accepts(tracks_element)?;
        if self.layout.is_none() {
            self.scale = timecode_scale.max(1);
            self.tracks = tracks::parse(tracks_element).map_err(Refusal::BadTracks)?;
            self.primary = tracks::primary(&self.tracks).unwrap_or(1);
            self.write_headers(fragment, tracks_element);
        }
        let Placement { start_ticks, moved } = timeline::place(
            fragment.producer_ms,
            self.committed.first.as_ref().map(|f| f.producer_ms),
            self.scale,
            self.committed.last_block_ticks,
            self.committed.end_ticks,
        );
        self.current = Some(Current {
            start_ticks,
            moved,
            span: Span::new(&self.tracks, self.scale),
            cluster: None,
            cued: false,
            last_block_ticks: None,
        });
        Ok(())
    }

    /// A source cluster begins with this timestamp.
    pub fn cluster(&mut self, source_timecode: u64) {
        self.close_cluster();
        let at = self.position();
        let seekable = self.opts.seekable;
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        cur.span.cluster(source_timecode);
        let ticks = cur.start_ticks.saturating_add(cur.span.cluster_offset());
        cur.cued = false;
        ebml::write_id(&mut self.out, id::CLUSTER);
        if seekable {
            // Unknown until the fragment ends: a reader of the unfinished file still copes.
            self.out.extend_from_slice(&UNKNOWN_SIZE_8);
        } else {
            self.out.push(0xFF);
        }
        cur.cluster = Some((at, self.written + self.out.len() as u64));
        ebml::write_uint(&mut self.out, id::TIMESTAMP, ticks.max(0) as u64);
    }

    /// A block begins; its payload follows through [`Muxer::block_data`].
    pub fn block(&mut self, block: &Block<'_>) {
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        let at = cur
            .start_ticks
            .saturating_add(cur.span.block(block.track, block.timecode));
        cur.last_block_ticks = Some(cur.last_block_ticks.map_or(at, |l| l.max(at)));
        // Cues only where they will be written: a pipe's list would grow for ever, unused.
        if !cur.cued && block.track == self.primary && self.opts.seekable {
            cur.cued = true;
            if let (true, Some((cluster_at, _)), Some(layout)) =
                (block.keyframe, cur.cluster, self.layout)
            {
                self.cues
                    .push((at.max(0), block.track, cluster_at - layout.segment_data));
            }
        }
        self.out.extend_from_slice(block.header);
    }

    /// The next piece of the current block's payload.
    pub fn block_data(&mut self, data: &[u8]) {
        if self.current.is_some() {
            self.out.extend_from_slice(data);
        }
    }

    /// The fragment is whole: its bytes stay.
    pub fn end_fragment(&mut self, fragment: &Fragment) {
        let Some(moved) = self.close_fragment() else {
            return;
        };
        let c = &mut self.committed;
        c.non_monotonic += u64::from(moved);
        c.first.get_or_insert_with(|| fragment.clone());
        c.last = Some(fragment.clone());
        c.fragments += 1;
    }

    /// Commits the open fragment's media; says whether its start was moved.
    fn close_fragment(&mut self) -> Option<bool> {
        self.close_cluster();
        let cur = self.current.take()?;
        let c = &mut self.committed;
        c.end_ticks = c
            .end_ticks
            .max(cur.start_ticks.saturating_add(cur.span.length()));
        if let Some(l) = cur.last_block_ticks {
            c.last_block_ticks = Some(c.last_block_ticks.map_or(l, |p| p.max(l)));
        }
        c.written = self.written + self.out.len() as u64;
        c.cues = self.cues.len();
        Some(cur.moved)
    }

    /// Forgets the fragment in progress. The caller drops the bytes it already took since the
    /// last whole fragment.
    pub fn discard(&mut self) {
        self.current = None;
        self.cues.truncate(self.committed.cues);
        let keep = self.committed.written;
        if keep >= self.written {
            self.out.truncate((keep - self.written) as usize);
        } else {
            self.out.clear();
            self.written = keep;
        }
        self.patches.retain(|p| p.offset < keep);
        if self.committed.fragments == 0 {
            self.layout = None;
        }
    }

    /// Ends the file: Cues, Tags and the values only known now. Returns false when no fragment
    /// was written, and then there is nothing to write at all.
    pub fn finish(&mut self) -> bool {
        self.discard();
        let Some(layout) = self.layout else {
            return false;
        };
        let cues_at = self.position();
        let write_cues = self.opts.seekable && !self.cues.is_empty();
        if write_cues {
            let mut points = Vec::new();
            for &(time, track, cluster) in &self.cues {
                let mut positions = Vec::new();
                ebml::write_uint(&mut positions, id::CUE_TRACK, track);
                ebml::write_uint(&mut positions, id::CUE_CLUSTER_POSITION, cluster);
                let mut point = Vec::new();
                ebml::write_uint(&mut point, id::CUE_TIME, time as u64);
                ebml::write_element(&mut point, id::CUE_TRACK_POSITIONS, &positions);
                ebml::write_element(&mut points, id::CUE_POINT, &point);
            }
            ebml::write_element(&mut self.out, id::CUES, &points);
        }
        let tags_at = self.position();
        let tags = self.tags();
        ebml::write_element(&mut self.out, id::TAGS, &tags);
        if self.opts.seekable {
            let end = self.position();
            let mut size = Vec::new();
            ebml::write_size_fixed(&mut size, end - layout.segment_data, 8);
            self.patch(layout.segment_size_at, size);
            let duration = (self.committed.end_ticks as f64).to_be_bytes().to_vec();
            self.patch(layout.duration_at, duration);
            let cues = match write_cues {
                true => seek(id::CUES, cues_at - layout.segment_data),
                false => void_seek(),
            };
            self.patch(layout.cues_seek_at, cues);
            self.patch(
                layout.tags_seek_at,
                seek(id::TAGS, tags_at - layout.segment_data),
            );
        }
        self.committed.written = self.position();
        true
    }

    /// Hands the output produced since the last call to `f`: new bytes to append, then patches
    /// of earlier bytes.
    pub fn drain<R>(&mut self, f: impl FnOnce(&[u8], &[Patch]) -> R) -> R {
        let r = f(&self.out, &self.patches);
        self.written += self.out.len() as u64;
        self.out.clear();
        self.patches.clear();
        r
    }

    /// Fragments written whole.
    pub fn fragments(&self) -> u64 {
        self.committed.fragments
    }

    /// Media time written, in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        (self.committed.end_ticks.max(0) as u128 * u128::from(self.scale) / 1_000_000) as u64
    }

    /// Fragments whose producer timestamp did not move forward and were placed right after the
    /// one before.
    pub fn non_monotonic(&self) -> u64 {
        self.committed.non_monotonic
    }

    /// The first and last fragments written.
    pub fn first_last(&self) -> (Option<&Fragment>, Option<&Fragment>) {
        (self.committed.first.as_ref(), self.committed.last.as_ref())
    }

    /// Bytes produced so far (taken or pending).
    fn position(&self) -> u64 {
        self.written + self.out.len() as u64
    }

    fn patch(&mut self, offset: u64, bytes: Vec<u8>) {
        if offset >= self.written {
            let at = (offset - self.written) as usize;
            self.out[at..at + bytes.len()].copy_from_slice(&bytes);
        } else {
            self.patches.push(Patch { offset, bytes });
        }
    }

    /// Gives the open cluster its size, now that it is known.
    fn close_cluster(&mut self) {
        let end = self.position();
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        if let (Some((cluster_at, data_at)), true) = (cur.cluster.take(), self.opts.seekable) {
            let mut size = Vec::new();
            ebml::write_size_fixed(&mut size, end - data_at, 8);
            self.patch(cluster_at + 4, size);
        }
    }

    /// EBML header, Segment, SeekHead, Info and Tracks. Everything patched later sits at a
    /// fixed offset (see [`Layout::FIXED`]), so a file cut off by a crash can be finished
    /// without knowing how it began.
    fn write_headers(&mut self, first: &Fragment, tracks_element: &[u8]) {
        let start = self.position();
        self.out.extend_from_slice(&ebml_header());
        // Unknown until the end (for a pipe, for good); a seekable file gets its size patched in.
        ebml::write_id(&mut self.out, id::SEGMENT);
        self.out.extend_from_slice(&UNKNOWN_SIZE_8);

        // Info: Duration first, and an 8-byte size, so Duration's offset never varies.
        let mut info = Vec::new();
        ebml::write_float(&mut info, id::DURATION, 0.0);
        ebml::write_uint(&mut info, id::TIMESTAMP_SCALE, self.scale);
        let date = (i128::from(first.producer_ms - DATE_UTC_ORIGIN_MS) * 1_000_000) as i64;
        ebml::write_element(&mut info, id::DATE_UTC, &date.to_be_bytes());
        ebml::write_string(&mut info, id::MUXING_APP, &self.opts.app);
        ebml::write_string(&mut info, id::WRITING_APP, &self.opts.app);
        let mut info_element = Vec::new();
        ebml::write_id(&mut info_element, id::INFO);
        ebml::write_size_fixed(&mut info_element, info.len() as u64, 8);
        info_element.extend_from_slice(&info);

        let layout = Layout::FIXED.at(start);
        if self.opts.seekable {
            // Info and Tracks follow the SeekHead; Cues and Tags are patched in at the end.
            let info_at = layout.segment_data + SEEK_HEAD_LEN;
            let tracks_at = info_at + info_element.len() as u64;
            let mut seeks = Vec::new();
            seeks.extend(seek(id::INFO, info_at - layout.segment_data));
            seeks.extend(seek(id::TRACKS, tracks_at - layout.segment_data));
            seeks.extend(void_seek());
            seeks.extend(void_seek());
            ebml::write_element(&mut self.out, id::SEEK_HEAD, &seeks);
        }
        self.out.extend_from_slice(&info_element);
        self.out.extend_from_slice(tracks_element);
        self.layout = Some(layout);
    }

    /// The file's Tags: the stream and the first and last fragments, for the whole Segment.
    fn tags(&self) -> Vec<u8> {
        let mut tag = Vec::new();
        let mut targets = Vec::new();
        ebml::write_uint(&mut targets, TARGET_TYPE_VALUE, 50);
        ebml::write_element(&mut tag, TAG_TARGETS, &targets);
        let (name, value) = &self.opts.stream_tag;
        simple_tag(&mut tag, name, value);
        let c = &self.committed;
        simple_tag(&mut tag, "KVS_FRAGMENTS", &c.fragments.to_string());
        for (which, f) in [("FIRST", &c.first), ("LAST", &c.last)] {
            if let Some(f) = f {
                simple_tag(&mut tag, &format!("KVS_{which}_FRAGMENT_NUMBER"), &f.number);
                simple_tag(
                    &mut tag,
                    &format!("KVS_{which}_SERVER_TIMESTAMP"),
                    &seconds(f.server_ms),
                );
                simple_tag(
                    &mut tag,
                    &format!("KVS_{which}_PRODUCER_TIMESTAMP"),
                    &seconds(f.producer_ms),
                );
            }
        }
        let mut tags = Vec::new();
        ebml::write_element(&mut tags, id::TAG, &tag);
        tags
    }
}

/// Why a cut-off file could not be finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryError(pub String);

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RecoveryError {}

/// Rebuilds the writer's state from a seekable file it wrote, cut off (by a crash) after the
/// last whole fragment, so that [`Muxer::finish`] can complete it in place. The file's bytes
/// are replayed through the same code that wrote them, so the cues and the duration come out
/// exactly as an uninterrupted run would have made them. Memory stays bounded: feed the file
/// in pieces.
#[derive(Debug)]
pub struct Recovery {
    parser: Parser,
    muxer: Muxer,
    headers: usize,
    /// Where the file's clusters begin (the end of its Tracks).
    clusters_at: Option<u64>,
}

impl Recovery {
    pub fn new(opts: Options) -> Recovery {
        Recovery {
            parser: Parser::new(),
            muxer: Muxer::new(Options {
                seekable: true,
                ..opts
            }),
            headers: 0,
            clusters_at: None,
        }
    }

    /// The next bytes of the file, from its start.
    pub fn push(&mut self, data: &[u8]) -> Result<(), RecoveryError> {
        self.parser.push(data);
        while let Some((event, at)) = self
            .parser
            .next_event_at()
            .map_err(|e| RecoveryError(e.to_string()))?
        {
            let m = &mut self.muxer;
            match event {
                Event::EbmlHeader(h) => {
                    self.headers += 1;
                    if self.headers > 1 || h != ebml_header().as_slice() {
                        return Err(RecoveryError("not a file kvs-dl wrote".into()));
                    }
                }
                Event::Info { timecode_scale } => m.scale = timecode_scale,
                Event::Tracks(tracks) => {
                    m.tracks = tracks::parse(tracks).map_err(|e| RecoveryError(e.into()))?;
                    m.primary = tracks::primary(&m.tracks).unwrap_or(1);
                    m.layout = Some(Layout::FIXED);
                    m.written = at;
                    self.clusters_at = Some(at);
                }
                Event::Cluster { timecode } => {
                    if self.clusters_at.is_none() {
                        return Err(RecoveryError("a cluster before the Tracks".into()));
                    }
                    m.close_fragment();
                    m.current = Some(Current {
                        start_ticks: timecode as i64,
                        moved: false,
                        span: Span::new(&m.tracks, m.scale),
                        cluster: None,
                        cued: false,
                        last_block_ticks: None,
                    });
                    m.cluster(0);
                }
                Event::BlockStart(b) => m.block(&b),
                Event::BlockData(d) => m.block_data(d),
                _ => {}
            }
            // The replayed bytes are the file's own: only the offsets matter.
            m.drain(|_, _| ());
        }
        Ok(())
    }

    /// The writer, ready to finish the file: `bytes` long, holding `fragments` fragments from
    /// `first` to `last`.
    pub fn finish(
        mut self,
        bytes: u64,
        first: Fragment,
        last: Fragment,
        fragments: u64,
    ) -> Result<Muxer, RecoveryError> {
        let whole = matches!(self.parser.finish(), Ok(crate::Finish::Clean));
        let m = &mut self.muxer;
        m.close_fragment();
        if !whole || m.layout.is_none() || m.position() != bytes {
            return Err(RecoveryError(format!(
                "the file does not end after a whole cluster at byte {bytes}"
            )));
        }
        m.committed.first = Some(first);
        m.committed.last = Some(last);
        m.committed.fragments = fragments;
        Ok(self.muxer)
    }
}

/// Bytes of one Seek entry: 4-byte ID and 8-byte position, always the same length.
const SEEK_LEN: usize = 2 + 1 + (2 + 1 + 4) + (2 + 1 + 8);

fn seek(target: u32, position: u64) -> Vec<u8> {
    let mut body = Vec::new();
    ebml::write_element(&mut body, id::SEEK_ID, &target.to_be_bytes());
    ebml::write_element(&mut body, id::SEEK_POSITION, &position.to_be_bytes());
    let mut out = Vec::new();
    ebml::write_element(&mut out, id::SEEK, &body);
    debug_assert_eq!(out.len(), SEEK_LEN);
    out
}

/// A Void the size of a Seek entry: holds the place of one that may not be needed.
fn void_seek() -> Vec<u8> {
    let mut out = Vec::new();
    ebml::write_element(&mut out, id::VOID, &[0; SEEK_LEN - 2]);
    out
}

fn simple_tag(out: &mut Vec<u8>, name: &str, value: &str) {
    let mut body = Vec::new();
    ebml::write_string(&mut body, id::TAG_NAME, name);
    ebml::write_string(&mut body, id::TAG_STRING, value);
    ebml::write_element(out, id::SIMPLE_TAG, &body);
}

/// Milliseconds as KVS writes seconds: `1511852109.126`.
fn seconds(ms: Millis) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}
