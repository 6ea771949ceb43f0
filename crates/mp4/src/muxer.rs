//! The fragmented writer: parser events in, `ftyp` + `moov` + (`moof` + `mdat`)* + `mfra` out.

use mkv::ebml;
use mkv::span::Span;
use mkv::timeline::{self, Placement};
use mkv::tracks::{self, Track};
use mkv::{Chunk, Event, Fragment, Millis, Patch};

use crate::Refusal;
use crate::bmff::{self, boxed, full};
use crate::entry::{self, Timing, TrackConfig};
use crate::tables::{Mark, RunSample, Tables};

/// A run of buffered samples is written out (as one more moof + mdat of the same fragment)
/// once it holds this many bytes.
pub const FLUSH_BYTES: usize = 4 << 20;

/// Values in the metadata are cut to this many characters, so that the reserved slot fits.
const MAX_VALUE: usize = 64;

/// Seconds between 1904-01-01 (MP4 times) and 1970-01-01.
const MP4_EPOCH_OFFSET: i64 = 2_082_844_800;

/// Identifies the private box (in moov) holding the source Tracks, for recovery.
pub const PRIVATE_UUID: [u8; 16] = *b"kvs-dl/mp4/mkv\0\x01";

/// The layout of the private box: version, TimestampScale, shift, the length of a resume
/// record, two resume record slots ([`Resume`]), Tracks element.
pub const PRIVATE_VERSION: u8 = 3;

/// How the file is laid out.
#[derive(Debug, Clone)]
pub struct Options {
    /// The output can seek: `mehd`, the metadata slot and `mfra` get their final values. Off
    /// for pipes, which get only the init segment and small fragments for a live viewer: one
    /// per group of video frames that reorder among themselves (one per frame without
    /// B-frames), or per audio frame in an audio-only stream.
    pub seekable: bool,
    /// Keep the per-sample tables so that [`Muxer::faststart`] can describe a progressive file.
    pub faststart: bool,
    /// The encoder tag, e.g. `kvs-dl 0.1.0`.
    pub app: String,
    /// The tag naming the stream, e.g. (`KVS_STREAM_ARN`, `arn:aws:...`).
    pub stream_tag: (String, String),
}

/// Where the values patched at the end live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The u64 fragment_duration of `mehd`.
    pub mehd_at: Option<u64>,
    /// The `udta` box holding the metadata, and its fixed length.
    pub udta_at: u64,
    pub udta_len: u64,
    /// The i64 shift in the private box, so that recovery places what follows as the writer
    /// placed what came before.
    pub shift_at: Option<u64>,
    /// The first of the two [`Resume`] slots in the private box (seekable files).
    pub resume_at: Option<u64>,
}

/// What placing the next fragment needs and the file's boxes cannot tell (they hold track
/// units and durations, not the Matroska block times the writer places fragments by, nor the
/// reorder delay and spacing it carries from run to run). A seekable file records it in the
/// private box at the end of every fragment, alternating between two slots, each tagged with
/// the file's length and fragment count after its fragment: a crash after a fragment was
/// written and before the state file recorded it leaves the record of the fragment before
/// intact. [`Muxer::finish`] clears both slots, so that a finished file does not depend on
/// where a run was interrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resume {
    /// The file's length and the fragments in it after the fragment described.
    pub bytes: u64,
    pub fragments: u64,
    pub end_ticks: i64,
    pub last_block_ticks: Option<i64>,
    /// Per track: the reorder delay and the last run's spacing, in track units.
    pub tracks: Vec<(i64, Option<i64>)>,
}

/// An absent value in a [`Resume`] record.
const NONE: i64 = i64::MIN;

impl Resume {
    /// The length of a record for this many tracks.
    pub fn len(tracks: usize) -> usize {
        32 + 16 * tracks
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(Resume::len(self.tracks.len()));
        bmff::u64(&mut o, self.bytes);
        bmff::u64(&mut o, self.fragments);
        o.extend_from_slice(&self.end_ticks.to_be_bytes());
        o.extend_from_slice(&self.last_block_ticks.unwrap_or(NONE).to_be_bytes());
        for &(delay, spacing) in &self.tracks {
            o.extend_from_slice(&delay.to_be_bytes());
            o.extend_from_slice(&spacing.unwrap_or(NONE).to_be_bytes());
        }
        o
    }

    /// A record for `tracks` tracks; `None` when the slot was never written (or is cleared).
    pub fn decode(b: &[u8], tracks: usize) -> Option<Resume> {
        if b.len() != Resume::len(tracks) || b.iter().all(|&x| x == 0) {
            return None;
        }
        let mut words = b
            .chunks_exact(8)
            .map(|w| i64::from_be_bytes(w.try_into().unwrap_or_default()));
        let mut next = || words.next().unwrap_or(0);
        let some = |v: i64| (v != NONE).then_some(v);
        let bytes = next() as u64;
        let fragments = next() as u64;
        let end_ticks = next();
        let last_block_ticks = some(next());
        let tracks = (0..tracks).map(|_| (next(), some(next()))).collect();
        Some(Resume {
            bytes,
            fragments,
            end_ticks,
            last_block_ticks,
            tracks,
        })
    }
}

/// Per-file state that a discarded fragment must not change.
#[derive(Debug, Clone, Default)]
pub(crate) struct Committed {
    pub written: u64,
    pub end_ticks: i64,
    pub last_block_ticks: Option<i64>,
    pub first: Option<Fragment>,
    pub last: Option<Fragment>,
    pub fragments: u64,
    pub non_monotonic: u64,
    pub sequence: u32,
    pub shift: Option<i64>,
    pub marks: Vec<Mark>,
    /// The private box's slot (0 or 1) holding the [`Resume`] record of the last fragment.
    pub resume_slot: usize,
}

/// A sample waiting in the current run.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Presentation time in Segment ticks from the file's start (before the shift); in
    /// track units once the run is being written.
    ticks: i64,
    size: u32,
    sync: bool,
}

/// One track: its form, the run being buffered and what was written.
#[derive(Debug, Clone)]
pub(crate) struct TrackState {
    pub cfg: TrackConfig,
    run: Vec<Pending>,
    data: Vec<u8>,
    /// Bytes of `data` that belong to samples already in `run`.
    pushed: usize,
    pub tables: Tables,
}

/// The block being received.
#[derive(Debug)]
struct Incoming {
    /// Index of its track, `None` for a track the Tracks do not declare.
    track: Option<usize>,
    pts: i64,
    keyframe: bool,
    group: bool,
    left: u64,
    /// SimpleBlock header bytes (track number, timecode, flags) still being gathered.
    head: Vec<u8>,
    head_len: Option<usize>,
    /// Whole payload kept for BlockGroups and laced blocks.
    whole: Option<Vec<u8>>,
    /// Where its frame starts in the track's run data (unlaced SimpleBlocks).
    data_at: usize,
}

/// The fragment being written.
#[derive(Debug, Clone)]
struct Current {
    start_ticks: i64,
    moved: bool,
    span: Span,
    last_block_ticks: Option<i64>,
}

/// See the crate docs.
#[derive(Debug)]
pub struct Muxer {
    pub(crate) opts: Options,
    pub(crate) out: Vec<u8>,
    pub(crate) patches: Vec<Patch>,
    /// Offset of `out[0]` in the file.
    pub(crate) written: u64,
    pub(crate) layout: Option<Layout>,
    pub(crate) scale: u64,
    pub(crate) tracks: Vec<Track>,
    pub(crate) states: Vec<TrackState>,
    pub(crate) committed: Committed,
    pub(crate) sequence: u32,
    /// Ticks added to every time so that none is negative (a track may start before the
    /// first cluster): set when the first run is written.
    pub(crate) shift: Option<i64>,
    /// The earliest time in the run being buffered.
    run_min: Option<i64>,
    current: Option<Current>,
    incoming: Option<Incoming>,
    run_bytes: usize,
    pub(crate) finished: bool,
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
            states: Vec::new(),
            committed: Committed::default(),
            sequence: 0,
            shift: None,
            run_min: None,
            current: None,
            incoming: None,
            run_bytes: 0,
            finished: false,
            chunk: Chunk::default(),
        }
    }

    /// Feeds one parser event of a fragment to be written. A fragment whose tracks do not fit
    /// this file (changed tracks, or a codec MP4 cannot carry) is refused at its
    /// `FragmentStart`, with nothing changed: the caller can start a new file and feed the
    /// event again.
    pub fn event(&mut self, event: &Event<'_>) -> Result<(), Refusal> {
        match event {
            Event::EbmlHeader(_) | Event::Info { .. } | Event::Tracks(_) => self.chunk.event(event),
            Event::FragmentStart(f) => {
                let chunk = std::mem::take(&mut self.chunk);
                let started = self.start_fragment(f, chunk.timecode_scale, &chunk.tracks);
                self.chunk = chunk;
                started?;
            }
            Event::Cluster { timecode } => {
                self.end_block();
                if let Some(cur) = self.current.as_mut() {
                    cur.span.cluster(*timecode);
                }
            }
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

    /// Whether a fragment with this Tracks element can go into this file: the same tracks as
    /// the file's, each of a codec MP4 can carry.
    pub fn accepts(&self, tracks_element: &[u8]) -> Result<(), Refusal> {
        let tracks = tracks::parse(tracks_element).map_err(Refusal::BadTracks)?;
        entry::configure(&tracks)?;
        if self.layout.is_some() && tracks != self.tracks {
            return Err(Refusal::TracksChanged);
        }
        Ok(())
    }

    fn start_fragment(
        &mut self,
        fragment: &Fragment,
        timecode_scale: u64,
        tracks_element: &[u8],
    ) -> Result<(), Refusal> {
        self.accepts(tracks_element)?;
        if self.finished {
            return Err(Refusal::BadTracks("the file is finished"));
        }
        self.drop_fragment();
        if self.layout.is_none() {
            let tracks = tracks::parse(tracks_element).map_err(Refusal::BadTracks)?;
            let configs = entry::configure(&tracks)?;
            self.scale = timecode_scale.max(1);
            self.tracks = tracks;
            self.states = self.track_states(configs);
            self.committed.marks = self.states.iter().map(|s| s.tables.mark()).collect();
            self.write_init(fragment, tracks_element);
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
            last_block_ticks: None,
        });
        Ok(())
    }

    pub(crate) fn track_states(&self, configs: Vec<TrackConfig>) -> Vec<TrackState> {
        configs
            .into_iter()
            .map(|cfg| TrackState {
                tables: Tables {
                    keep_samples: self.opts.seekable && self.opts.faststart,
                    keep_index: self.opts.seekable,
                    video: cfg.video,
                    ..Tables::default()
                },
                cfg,
                run: Vec::new(),
                data: Vec::new(),
                pushed: 0,
            })
            .collect()
    }

    fn block(&mut self, block: &mkv::Block<'_>) {
        self.end_block();
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        let track = self.states.iter().position(|s| s.cfg.number == block.track);
        let mut pts = 0;
        if track.is_some() {
            let at = cur
                .start_ticks
                .saturating_add(cur.span.block(block.track, block.timecode));
            cur.last_block_ticks = Some(cur.last_block_ticks.map_or(at, |l| l.max(at)));
            pts = at;
        }
        if let Some(i) = track
            && !self.opts.seekable
            && self.states[i].cfg.video
            && !self.states[i].run.is_empty()
            && self.states[i].run.iter().all(|p| p.ticks < pts)
        {
            // A pipe is watched live: a video frame that comes after every frame buffered
            // (an I or P frame) closes the group before it, whose decode times are now known
            // (B-frames reorder only within it). Without B-frames, each frame goes out as the
            // next begins.
            self.flush_run();
        }
        if track.is_some() {
            self.run_min = Some(self.run_min.map_or(pts, |m| m.min(pts)));
        }
        if self.run_bytes >= FLUSH_BYTES {
            self.flush_run();
        }
        let group = block.kind == mkv::BlockKind::Group;
        self.incoming = Some(Incoming {
            track,
            pts,
            keyframe: block.keyframe,
            group,
            left: block.size,
            head: Vec::new(),
            head_len: None,
            whole: group.then(Vec::new),
            data_at: track.map_or(0, |i| self.states[i].data.len()),
        });
        if block.size == 0 {
            self.end_block();
        }
    }

    fn block_data(&mut self, mut data: &[u8]) {
        let Some(inc) = self.incoming.as_mut() else {
            return;
        };
        let n = (data.len() as u64).min(inc.left) as usize;
        data = &data[..n];
        inc.left -= n as u64;
        if let Some(i) = inc.track {
            if let Some(whole) = inc.whole.as_mut() {
                whole.extend_from_slice(data);
            } else {
                // A SimpleBlock: gather its header, then its frame goes straight to the run.
                while inc.head_len.is_none_or(|l| inc.head.len() < l) && !data.is_empty() {
                    inc.head.push(data[0]);
                    data = &data[1..];
                    if inc.head.len() == 1 {
                        inc.head_len = Some(vint_len(inc.head[0]) + 3);
                    }
                }
                if inc.head_len == Some(inc.head.len()) && inc.whole.is_none() {
                    let flags = inc.head[inc.head.len() - 1];
                    if flags & 0x06 != 0 {
                        // Laced: the frames are split once the block is whole.
                        inc.whole = Some(inc.head.clone());
                    }
                }
                match inc.whole.as_mut() {
                    Some(whole) => whole.extend_from_slice(data),
                    None => self.states[i].data.extend_from_slice(data),
                }
            }
        }
        if inc.left == 0 {
            self.end_block();
        }
    }

    /// The block being received is whole (or cut short): its samples join the run.
    fn end_block(&mut self) {
        let Some(inc) = self.incoming.take() else {
            return;
        };
        let Some(i) = inc.track else {
            return;
        };
        let st = &mut self.states[i];
        if inc.left > 0 {
            st.data.truncate(inc.data_at);
            return;
        }
        let video = st.cfg.video;
        let push = |st: &mut TrackState, pts: i64, frame: Option<&[u8]>, sync: bool| {
            if let Some(f) = frame {
                st.data.extend_from_slice(f);
            }
            let size = st.data.len() - st.pushed;
            st.pushed = st.data.len();
            let sync = sync || !video;
            st.run.push(Pending {
                ticks: pts,
                size: size.min(u32::MAX as usize) as u32,
                sync,
            });
            size
        };
        let added: usize = match inc.whole {
            None => push(st, inc.pts, None, inc.keyframe),
            Some(whole) => {
                let (body, keyframe) = if inc.group {
                    match group_block(&whole) {
                        Some(v) => v,
                        None => return,
                    }
                } else {
                    (whole.as_slice(), inc.keyframe)
                };
                let Some(frames) = unlace(body) else {
                    return;
                };
                let step = self.tracks[i]
                    .default_duration
                    .map_or(0, |ns| (ns / self.scale.max(1)).min(1 << 40) as i64);
                let mut total = 0;
                for (k, f) in frames.iter().enumerate() {
                    let pts = inc.pts.saturating_add(step.saturating_mul(k as i64));
                    total += push(st, pts, Some(f), keyframe && k == 0);
                }
                total
            }
        };
        self.run_bytes += added;
        if !self.opts.seekable && !self.states.iter().any(|s| s.cfg.video) {
            // A pipe of audio alone: every frame goes out in a fragment of its own, at once.
            self.flush_run();
        }
    }

    fn end_fragment(&mut self, fragment: &Fragment) {
        self.end_block();
        let Some(cur) = self.current.take() else {
            return;
        };
        self.flush_run();
        let c = &mut self.committed;
        c.end_ticks = c
            .end_ticks
            .max(cur.start_ticks.saturating_add(cur.span.length()));
        if let Some(l) = cur.last_block_ticks {
            c.last_block_ticks = Some(c.last_block_ticks.map_or(l, |p| p.max(l)));
        }
        c.non_monotonic += u64::from(cur.moved);
        c.first.get_or_insert_with(|| fragment.clone());
        c.last = Some(fragment.clone());
        c.fragments += 1;
        self.commit();
        self.record_resume();
    }

    /// What placing the next fragment needs, as of the last whole fragment.
    pub(crate) fn resume(&self) -> Resume {
        let c = &self.committed;
        Resume {
            bytes: c.written,
            fragments: c.fragments,
            end_ticks: c.end_ticks,
            last_block_ticks: c.last_block_ticks,
            tracks: self
                .states
                .iter()
                .map(|st| (st.tables.timeline.delay, st.tables.timeline.spacing))
                .collect(),
        }
    }

    /// Writes the [`Resume`] record of the fragment just committed into the slot that does not
    /// hold the one before.
    fn record_resume(&mut self) {
        let Some(at) = self.layout.and_then(|l| l.resume_at) else {
            return;
        };
        let slot = self.committed.resume_slot ^ 1;
        self.committed.resume_slot = slot;
        let record = self.resume().encode();
        self.patch(at + (slot * record.len()) as u64, record);
    }

    /// The current state becomes the one a discard returns to.
    pub(crate) fn commit(&mut self) {
        let c = &mut self.committed;
        c.written = self.written + self.out.len() as u64;
        c.sequence = self.sequence;
        c.shift = self.shift;
        c.marks = self.states.iter().map(|s| s.tables.mark()).collect();
    }

    /// Writes the buffered run as one moof + mdat.
    fn flush_run(&mut self) {
        self.run_bytes = 0;
        if self.states.iter().all(|s| s.run.is_empty()) {
            return;
        }
        let shift = match self.shift {
            Some(shift) => shift,
            None => {
                let shift = self.run_min.map_or(0, |m| m.saturating_neg().max(0));
                self.shift = Some(shift);
                if let Some(at) = self.layout.and_then(|l| l.shift_at) {
                    self.patch(at, shift.to_be_bytes().to_vec());
                }
                shift
            }
        };
        self.run_min = None;
        self.sequence = self.sequence.wrapping_add(1);
        let moof_at = self.position();
        let mut runs = Vec::new();
        for (i, st) in self.states.iter_mut().enumerate() {
            if st.run.is_empty() {
                continue;
            }
            let (dts0, samples) = timed(st, self.scale, shift);
            runs.push((i, dts0, samples));
        }
        // moof with data offsets filled in once its size is known.
        let mut moof = Vec::new();
        let mut offset_at = Vec::new();
        boxed(&mut moof, b"moof", |o| {
            full(o, b"mfhd", 0, 0, |o| bmff::u32(o, self.sequence));
            for (i, dts0, samples) in &runs {
                let cfg = &self.states[*i].cfg;
                boxed(o, b"traf", |o| {
                    full(o, b"tfhd", 0, 0x02_0000, |o| bmff::u32(o, cfg.id));
                    full(o, b"tfdt", 1, 0, |o| bmff::u64(o, (*dts0).max(0) as u64));
                    let flags = 0x001 | 0x100 | 0x200 | if cfg.video { 0x400 | 0x800 } else { 0 };
                    full(o, b"trun", 1, flags, |o| {
                        bmff::u32(o, samples.len() as u32);
                        offset_at.push(o.len());
                        bmff::u32(o, 0);
                        for s in samples {
                            bmff::u32(o, s.duration);
                            bmff::u32(o, s.size);
                            if cfg.video {
                                bmff::u32(o, if s.sync { 0x0200_0000 } else { 0x0101_0000 });
                                o.extend_from_slice(&s.cto.to_be_bytes());
                            }
                        }
                    });
                });
            }
        });
        let data_len: u64 = runs
            .iter()
            .map(|(i, _, _)| self.states[*i].data.len() as u64)
            .sum();
        let large = data_len + 8 > u64::from(u32::MAX);
        let mdat_header = if large { 16 } else { 8 };
        let mut data_offset = moof.len() as u64 + mdat_header;
        for ((i, dts0, samples), at) in runs.iter().zip(&offset_at) {
            let v = u32::try_from(data_offset).unwrap_or(u32::MAX);
            moof[*at..*at + 4].copy_from_slice(&v.to_be_bytes());
            let src = moof_at + data_offset;
            let traf = runs.iter().position(|r| r.0 == *i).unwrap_or(0) as u8 + 1;
            self.states[*i]
                .tables
                .record(*dts0, samples, src, moof_at, traf);
            data_offset += self.states[*i].data.len() as u64;
        }
        self.out.extend_from_slice(&moof);
        if large {
            bmff::u32(&mut self.out, 1);
            self.out.extend_from_slice(b"mdat");
            bmff::u64(&mut self.out, data_len + 16);
        } else {
            bmff::u32(&mut self.out, (data_len + 8) as u32);
            self.out.extend_from_slice(b"mdat");
        }
        for (i, _, _) in &runs {
            let st = &mut self.states[*i];
            self.out.extend_from_slice(&st.data);
            st.data.clear();
            st.run.clear();
            st.pushed = 0;
        }
    }

    /// Drops the fragment in progress from memory (not from the output).
    fn drop_fragment(&mut self) {
        self.current = None;
        self.incoming = None;
        self.run_bytes = 0;
        self.run_min = None;
        for st in &mut self.states {
            st.run.clear();
            st.data.clear();
            st.pushed = 0;
        }
    }

    /// Forgets the fragment in progress. The caller drops the bytes it already took since the
    /// last whole fragment.
    pub fn discard(&mut self) {
        self.drop_fragment();
        let keep = self.committed.written;
        if keep >= self.written {
            self.out.truncate((keep - self.written) as usize);
        } else {
            self.out.clear();
            self.written = keep;
        }
        self.patches.retain(|p| p.offset < keep);
        self.sequence = self.committed.sequence;
        self.shift = self.committed.shift;
        for (st, m) in self.states.iter_mut().zip(&self.committed.marks) {
            st.tables.rollback(m);
        }
        if self.committed.fragments == 0 {
            self.layout = None;
        }
    }

    /// Ends the file: `mfra`, the duration in `mehd` and the final metadata. Returns false when
    /// no fragment was written, and then there is nothing to write at all.
    pub fn finish(&mut self) -> bool {
        self.discard();
        let Some(layout) = self.layout else {
            return false;
        };
        if self.finished {
            return true;
        }
        self.finished = true;
        if self.opts.seekable {
            let mut mfra = Vec::new();
            boxed(&mut mfra, b"mfra", |o| {
                for st in &self.states {
                    if st.tables.tfra.is_empty() {
                        continue;
                    }
                    full(o, b"tfra", 1, 0, |o| {
                        bmff::u32(o, st.cfg.id);
                        bmff::u32(o, 0); // 1-byte traf, trun and sample numbers
                        bmff::u32(o, st.tables.tfra.len().min(u32::MAX as usize) as u32);
                        for &(time, moof, traf) in &st.tables.tfra {
                            bmff::u64(o, time);
                            bmff::u64(o, moof);
                            o.extend_from_slice(&[traf, 1, 1]);
                        }
                    });
                }
                full(o, b"mfro", 0, 0, |o| bmff::u32(o, 0));
            });
            let len = mfra.len() as u32;
            let at = mfra.len() - 4;
            mfra[at..].copy_from_slice(&len.to_be_bytes());
            self.out.extend_from_slice(&mfra);
            if let Some(at) = layout.mehd_at {
                self.patch(at, self.duration_ms().to_be_bytes().to_vec());
            }
            let udta = self.final_udta(Some(layout.udta_len as usize));
            self.patch(layout.udta_at, udta);
            if let Some(at) = layout.resume_at {
                self.patch(at, vec![0; 2 * Resume::len(self.states.len())]);
            }
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

    /// Media time written, in milliseconds: the latest end of a sample, over all tracks.
    pub fn duration_ms(&self) -> u64 {
        self.states
            .iter()
            .map(|st| units_to_ms(st.tables.timeline.end, st.cfg.timescale))
            .max()
            .unwrap_or(0)
    }

    /// Whole frames taken in and not yet written out (the run a pipe holds until its decode
    /// times are known).
    pub fn held_frames(&self) -> usize {
        self.states.iter().map(|s| s.run.len()).sum()
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

    pub(crate) fn position(&self) -> u64 {
        self.written + self.out.len() as u64
    }

    fn patch(&mut self, offset: u64, bytes: Vec<u8>) {
        if offset >= self.written {
            let at = (offset - self.written) as usize;
            if let Some(dst) = self.out.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(&bytes);
            }
        } else {
            self.patches.push(Patch { offset, bytes });
        }
    }

    /// ftyp and the init moov: every track of the Tracks, empty sample tables, `mvex`, the
    /// metadata slot and the private box with the source Tracks.
    fn write_init(&mut self, first: &Fragment, tracks_element: &[u8]) {
        let start = self.position();
        let mut o = ftyp(true);
        let creation = mp4_time(first.producer_ms);
        let mut mehd_at = None;
        let mut udta_at = 0;
        let mut udta_len = 0;
        let mut shift_at = None;
        let mut resume_at = None;
        boxed(&mut o, b"moov", |o| {
            mvhd(o, creation, 0, self.states.len() as u32 + 1);
            for st in &self.states {
                trak(o, &st.cfg, creation, 0, 0, None, None);
            }
            boxed(o, b"mvex", |o| {
                if self.opts.seekable {
                    full(o, b"mehd", 1, 0, |o| {
                        mehd_at = Some(start + o.len() as u64);
                        bmff::u64(o, 0);
                    });
                }
                for st in &self.states {
                    full(o, b"trex", 0, 0, |o| {
                        for v in [st.cfg.id, 1, 0, 0, 0] {
                            bmff::u32(o, v);
                        }
                    });
                }
            });
            udta_at = start + o.len() as u64;
            let slot = self.opts.seekable.then(|| self.udta_slot());
            let udta = self.udta_for(first, slot);
            udta_len = udta.len() as u64;
            o.extend_from_slice(&udta);
            boxed(o, b"uuid", |o| {
                o.extend_from_slice(&PRIVATE_UUID);
                o.push(PRIVATE_VERSION);
                bmff::u64(o, self.scale);
                if self.opts.seekable {
                    shift_at = Some(start + o.len() as u64);
                }
                bmff::u64(o, 0);
                let slot = Resume::len(self.states.len());
                bmff::u32(o, slot as u32);
                if self.opts.seekable {
                    resume_at = Some(start + o.len() as u64);
                }
                o.resize(o.len() + 2 * slot, 0);
                o.extend_from_slice(tracks_element);
            });
        });
        self.out.extend_from_slice(&o);
        self.layout = Some(Layout {
            mehd_at,
            udta_at,
            udta_len,
            shift_at,
            resume_at,
        });
    }

    /// The metadata at the start: what the first fragment tells.
    fn udta_for(&self, first: &Fragment, pad_to: Option<usize>) -> Vec<u8> {
        let mut items = vec![(
            self.opts.stream_tag.0.clone(),
            self.opts.stream_tag.1.clone(),
        )];
        items.extend(fragment_items("FIRST", first));
        udta(&self.opts.app, &items, pad_to)
    }

    /// Length of the metadata slot: room for every value at its longest.
    fn udta_slot(&self) -> usize {
        let long = "0".repeat(MAX_VALUE);
        let mut items = vec![(
            self.opts.stream_tag.0.clone(),
            self.opts.stream_tag.1.clone(),
        )];
        items.push(("KVS_FRAGMENTS".into(), long.clone()));
        for which in ["FIRST", "LAST"] {
            for what in ["FRAGMENT_NUMBER", "SERVER_TIMESTAMP", "PRODUCER_TIMESTAMP"] {
                items.push((format!("KVS_{which}_{what}"), long.clone()));
            }
        }
        udta(&self.opts.app, &items, None).len() + 8
    }

    /// The final metadata (padded to the slot when `pad_to`).
    pub(crate) fn final_udta(&self, pad_to: Option<usize>) -> Vec<u8> {
        let c = &self.committed;
        let mut items = vec![(
            self.opts.stream_tag.0.clone(),
            self.opts.stream_tag.1.clone(),
        )];
        items.push(("KVS_FRAGMENTS".into(), c.fragments.to_string()));
        for (which, f) in [("FIRST", &c.first), ("LAST", &c.last)] {
            if let Some(f) = f {
                items.extend(fragment_items(which, f));
            }
        }
        udta(&self.opts.app, &items, pad_to)
    }
}

/// Decode times and durations for a track's run: `(tfdt, trun entries)`.
fn timed(st: &mut TrackState, scale: u64, shift: i64) -> (i64, Vec<RunSample>) {
    let ts = st.cfg.timescale;
    for p in &mut st.run {
        p.ticks = to_units(p.ticks.saturating_add(shift), scale, ts);
    }
    let t = &mut st.tables.timeline;
    let floor = t.last_dts.map_or(0, |l| l.saturating_add(1));
    let n = st.run.len();
    let mut dts: Vec<i64> = Vec::with_capacity(n);
    match st.cfg.timing {
        Timing::Stamps => {
            let mut sorted: Vec<i64> = st.run.iter().map(|p| p.ticks).collect();
            sorted.sort_unstable();
            let delay = sorted
                .iter()
                .zip(&st.run)
                .map(|(s, p)| s.saturating_sub(p.ticks))
                .max()
                .unwrap_or(0);
            t.delay = t.delay.max(delay);
            let mut prev = floor.saturating_sub(1);
            for s in &sorted {
                let d = s.saturating_sub(t.delay).max(prev.saturating_add(1)).max(0);
                dts.push(d);
                prev = d;
            }
        }
        Timing::Frame(_) | Timing::Bytes(_) => {
            let mut d = st.run[0].ticks.max(floor).max(0);
            for p in &st.run {
                dts.push(d);
                d = d.saturating_add(fixed_duration(st.cfg.timing, p.size));
            }
        }
    }
    // The last sample lasts the average spacing, DefaultDuration, or what the last run had.
    let spacing = if n >= 2 {
        Some((dts[n - 1] - dts[0]) / (n as i64 - 1))
    } else {
        st.cfg.default_units.or(t.spacing)
    };
    if n >= 2 {
        t.spacing = spacing;
    }
    let last_duration = match st.cfg.timing {
        Timing::Stamps => spacing.unwrap_or(i64::from(st.cfg.timescale / 25)),
        _ => fixed_duration(st.cfg.timing, st.run[n - 1].size),
    };
    let dts0 = dts[0];
    // Only video carries composition offsets (`trun` has none for audio): audio is presented
    // at its decode times, and what the writer keeps must be what the file says.
    let video = st.cfg.video;
    let mut at = dts0;
    let mut samples = Vec::with_capacity(n);
    for (i, p) in st.run.iter().enumerate() {
        let duration = match dts.get(i + 1) {
            Some(next) => next.saturating_sub(dts[i]),
            None => last_duration,
        }
        .clamp(0, i64::from(u32::MAX)) as u32;
        let cto = match video {
            true => p
                .ticks
                .saturating_sub(at)
                .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            false => 0,
        };
        samples.push(RunSample {
            size: p.size,
            duration,
            sync: p.sync,
            cto,
        });
        at = at.saturating_add(i64::from(duration));
    }
    (dts0, samples)
}

fn fixed_duration(timing: Timing, size: u32) -> i64 {
    match timing {
        Timing::Frame(f) => i64::from(f),
        Timing::Bytes(ch) => i64::from((size / ch.max(1)).max(1)),
        Timing::Stamps => 0,
    }
}

/// Segment ticks to track units, rounded to nearest.
pub(crate) fn to_units(ticks: i64, scale: u64, timescale: u32) -> i64 {
    let num = i128::from(ticks) * i128::from(scale) * i128::from(timescale);
    let v = (num + 500_000_000).div_euclid(1_000_000_000);
    v.clamp(i128::from(i64::MIN / 4), i128::from(i64::MAX / 4)) as i64
}

pub(crate) fn units_to_ms(units: i64, timescale: u32) -> u64 {
    let ts = u64::from(timescale.max(1));
    let u = units.max(0) as u64;
    ((u128::from(u) * 1000 + u128::from(ts / 2)) / u128::from(ts)).min(u128::from(u64::MAX)) as u64
}

fn mp4_time(ms: Millis) -> u64 {
    (ms.div_euclid(1000))
        .saturating_add(MP4_EPOCH_OFFSET)
        .max(0) as u64
}

/// The length in bytes of an EBML-coded number whose first byte is `b`.
fn vint_len(b: u8) -> usize {
    (b.leading_zeros() as usize + 1).min(8)
}

/// The Block inside a BlockGroup (its track number, timecode and flags included), and whether
/// it is a keyframe (no ReferenceBlock).
fn group_block(group: &[u8]) -> Option<(&[u8], bool)> {
    let mut block = None;
    let mut keyframe = true;
    for child in ebml::children(group) {
        let (id, data) = child.ok()?;
        match id {
            0xA1 => block = Some(data),
            0xFB => keyframe = false,
            _ => {}
        }
    }
    Some((block?, keyframe))
}

/// The frames of a block body (track number, timecode, flags, then the frames, maybe laced).
fn unlace(body: &[u8]) -> Option<Vec<&[u8]>> {
    let head = vint_len(*body.first()?) + 3;
    let flags = *body.get(head - 1)?;
    let data = body.get(head..)?;
    let lacing = (flags >> 1) & 3;
    if lacing == 0 {
        return Some(vec![data]);
    }
    let count = usize::from(*data.first()?) + 1;
    let mut pos = 1usize;
    let mut sizes = Vec::with_capacity(count);
    match lacing {
        1 => {
            for _ in 0..count - 1 {
                let mut size = 0usize;
                loop {
                    let b = *data.get(pos)?;
                    pos += 1;
                    size += usize::from(b);
                    if b != 255 {
                        break;
                    }
                }
                sizes.push(size);
            }
        }
        3 => {
            let (first, n) = read_vint(data.get(pos..)?)?;
            pos += n;
            let mut size = first as i64;
            sizes.push(size.max(0) as usize);
            for _ in 1..count - 1 {
                let (raw, n) = read_vint(data.get(pos..)?)?;
                pos += n;
                let bias = (1i64 << (7 * n - 1)) - 1;
                size = size.checked_add(raw as i64 - bias)?;
                sizes.push(usize::try_from(size).ok()?);
            }
        }
        _ => {
            let each = (data.len().checked_sub(1)?) / count;
            sizes.resize(count - 1, each);
        }
    }
    let used: usize = sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s))?;
    let rest = data.len().checked_sub(pos)?.checked_sub(used)?;
    sizes.push(rest);
    let mut frames = Vec::with_capacity(count);
    for s in sizes {
        frames.push(data.get(pos..pos + s)?);
        pos += s;
    }
    Some(frames)
}

fn read_vint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    if first == 0 {
        return None;
    }
    let n = vint_len(first);
    let mut v = u64::from(first) & ((1u64 << (8 - n)) - 1);
    for &b in buf.get(1..n)? {
        v = (v << 8) | u64::from(b);
    }
    Some((v, n))
}

pub(crate) fn ftyp(fragmented: bool) -> Vec<u8> {
    let mut o = Vec::new();
    boxed(&mut o, b"ftyp", |o| {
        o.extend_from_slice(b"isom");
        bmff::u32(o, 0x200);
        let brands: &[&[u8; 4]] = match fragmented {
            true => &[b"isom", b"iso6", b"mp41"],
            false => &[b"isom", b"iso2", b"mp41"],
        };
        for b in brands {
            o.extend_from_slice(*b);
        }
    });
    o
}

pub(crate) fn mvhd(o: &mut Vec<u8>, creation: u64, duration_ms: u64, next_id: u32) {
    full(o, b"mvhd", 1, 0, |o| {
        bmff::u64(o, creation);
        bmff::u64(o, creation);
        bmff::u32(o, 1000);
        bmff::u64(o, duration_ms);
        bmff::u32(o, 0x0001_0000);
        bmff::u16(o, 0x0100);
        o.extend_from_slice(&[0; 10]);
        bmff::matrix(o);
        o.extend_from_slice(&[0; 24]);
        bmff::u32(o, next_id);
    });
}

/// Writes a track's sample tables into its `stbl`.
pub(crate) type WriteTables<'a> = &'a dyn Fn(&mut Vec<u8>);

/// A track's `trak`. `tables` writes its sample tables (empty in an init segment); `edit` is
/// (empty edit in ms, media duration in ms) for an edit list.
pub(crate) fn trak(
    o: &mut Vec<u8>,
    cfg: &TrackConfig,
    creation: u64,
    duration_ms: u64,
    media_duration: u64,
    edit: Option<(u64, u64)>,
    tables: Option<WriteTables<'_>>,
) {
    boxed(o, b"trak", |o| {
        full(o, b"tkhd", 1, 3, |o| {
            bmff::u64(o, creation);
            bmff::u64(o, creation);
            bmff::u32(o, cfg.id);
            bmff::u32(o, 0);
            bmff::u64(o, duration_ms);
            o.extend_from_slice(&[0; 8]);
            bmff::u16(o, 0); // layer
            bmff::u16(o, 0); // alternate group
            bmff::u16(o, if cfg.video { 0 } else { 0x0100 });
            bmff::u16(o, 0);
            bmff::matrix(o);
            bmff::u32(o, u32::from(cfg.width) << 16);
            bmff::u32(o, u32::from(cfg.height) << 16);
        });
        if let Some((empty, media)) = edit {
            boxed(o, b"edts", |o| {
                full(o, b"elst", 1, 0, |o| {
                    bmff::u32(o, if empty > 0 { 2 } else { 1 });
                    if empty > 0 {
                        bmff::u64(o, empty);
                        bmff::u64(o, u64::MAX); // -1: empty
                        bmff::u32(o, 0x0001_0000);
                    }
                    bmff::u64(o, media);
                    bmff::u64(o, 0);
                    bmff::u32(o, 0x0001_0000);
                });
            });
        }
        boxed(o, b"mdia", |o| {
            full(o, b"mdhd", 1, 0, |o| {
                bmff::u64(o, creation);
                bmff::u64(o, creation);
                bmff::u32(o, cfg.timescale);
                bmff::u64(o, media_duration);
                bmff::u16(o, 0x55C4); // und
                bmff::u16(o, 0);
            });
            full(o, b"hdlr", 0, 0, |o| {
                bmff::u32(o, 0);
                o.extend_from_slice(if cfg.video { b"vide" } else { b"soun" });
                o.extend_from_slice(&[0; 12]);
                o.extend_from_slice(if cfg.video {
                    b"VideoHandler\0"
                } else {
                    b"SoundHandler\0"
                });
            });
            boxed(o, b"minf", |o| {
                if cfg.video {
                    full(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8]));
                } else {
                    full(o, b"smhd", 0, 0, |o| o.extend_from_slice(&[0; 4]));
                }
                boxed(o, b"dinf", |o| {
                    full(o, b"dref", 0, 0, |o| {
                        bmff::u32(o, 1);
                        full(o, b"url ", 0, 1, |_| {});
                    });
                });
                boxed(o, b"stbl", |o| {
                    full(o, b"stsd", 0, 0, |o| {
                        bmff::u32(o, 1);
                        o.extend_from_slice(&cfg.entry);
                    });
                    match tables {
                        Some(write) => write(o),
                        None => {
                            full(o, b"stts", 0, 0, |o| bmff::u32(o, 0));
                            full(o, b"stsc", 0, 0, |o| bmff::u32(o, 0));
                            full(o, b"stsz", 0, 0, |o| bmff::u64(o, 0));
                            full(o, b"stco", 0, 0, |o| bmff::u32(o, 0));
                        }
                    }
                });
            });
        });
    });
}

fn fragment_items(which: &str, f: &Fragment) -> Vec<(String, String)> {
    vec![
        (
            format!("KVS_{which}_FRAGMENT_NUMBER"),
            cut(&f.number).to_string(),
        ),
        (
            format!("KVS_{which}_SERVER_TIMESTAMP"),
            seconds(f.server_ms),
        ),
        (
            format!("KVS_{which}_PRODUCER_TIMESTAMP"),
            seconds(f.producer_ms),
        ),
    ]
}

/// `udta` with an iTunes-style `meta`/`ilst`: `©too` for the app and one `----` item per tag,
/// padded with a `free` box to `pad_to` bytes.
pub(crate) fn udta(app: &str, items: &[(String, String)], pad_to: Option<usize>) -> Vec<u8> {
    let mut o = Vec::new();
    boxed(&mut o, b"udta", |o| {
        full(o, b"meta", 0, 0, |o| {
            full(o, b"hdlr", 0, 0, |o| {
                bmff::u32(o, 0);
                o.extend_from_slice(b"mdir");
                o.extend_from_slice(b"appl");
                o.extend_from_slice(&[0; 9]);
            });
            boxed(o, b"ilst", |o| {
                boxed(o, b"\xA9too", |o| data(o, app));
                for (name, value) in items {
                    boxed(o, b"----", |o| {
                        full(o, b"mean", 0, 0, |o| {
                            o.extend_from_slice(b"com.amazon.kinesisvideo")
                        });
                        full(o, b"name", 0, 0, |o| o.extend_from_slice(name.as_bytes()));
                        data(o, value);
                    });
                }
            });
        });
        if let Some(total) = pad_to {
            let free = total.saturating_sub(o.len());
            if free >= 8 {
                boxed(o, b"free", |o| o.resize(o.len() + free - 8, 0));
            }
        }
    });
    o
}

fn data(o: &mut Vec<u8>, value: &str) {
    boxed(o, b"data", |o| {
        bmff::u32(o, 1); // UTF-8
        bmff::u32(o, 0);
        o.extend_from_slice(value.as_bytes());
    });
}

fn cut(s: &str) -> &str {
    match s.char_indices().nth(MAX_VALUE) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Milliseconds as KVS writes seconds: `1511852109.126`.
fn seconds(ms: Millis) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}
