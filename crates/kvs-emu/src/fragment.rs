//! What a stream is made of: stored fragments, each the exact bytes GetMedia sends for it plus
//! the metadata selectors look at. Fragments come from a capture ([`crate::from_capture`]), a
//! plain Matroska file ([`crate::from_mkv`]) or a generator ([`crate::synthetic`]); the last two
//! share the chunk layout built here.

use std::fmt;

use bytes::Bytes;
use mkv::ebml::{self, id};

use crate::tags;

/// Distance between consecutive fragment numbers the emulator makes. Real numbers grow by
/// irregular, large steps; a step above 1 catches a client that computes "the next number".
pub const FRAGMENT_NUMBER_STEP: u64 = 10_000;

/// The leading digits of every fragment number the emulator makes; with the 31-digit counter
/// after them a number has 47 digits, as in every capture.
const FRAGMENT_NUMBER_PREFIX: &str = "9134385233318143";

/// One fragment as the service stores it.
#[derive(Debug, Clone)]
pub struct StoredFragment {
    number: String,
    server_ms: i64,
    producer_ms: i64,
    duration_ms: u64,
    blocks: usize,
    body: Body,
}

#[derive(Clone)]
enum Body {
    /// A chunk cut from a capture, served byte for byte (its closing tags included), and the
    /// length of it before those closing tags.
    Verbatim(Bytes, usize),
    /// A chunk the emulator built, up to the end of its cluster. The closing tags depend on the
    /// stream head at the moment it is served, so they are added then.
    Built(Vec<Bytes>),
}

/// The bytes are far too many to print: show their shape.
impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Verbatim(chunk, _) => write!(f, "Verbatim({} bytes)", chunk.len()),
            Body::Built(parts) => {
                let sizes: Vec<usize> = parts.iter().map(Bytes::len).collect();
                write!(f, "Built({sizes:?} bytes + closing tags)")
            }
        }
    }
}

impl StoredFragment {
    /// A fragment served byte for byte: `chunk` already ends with its KVS closing tags.
    pub(crate) fn verbatim(meta: Meta, chunk: Bytes) -> Self {
        let archived = tags::without_post_tags(&chunk);
        Self::new(meta, Body::Verbatim(chunk, archived))
    }

    fn new(meta: Meta, body: Body) -> Self {
        StoredFragment {
            number: meta.number,
            server_ms: meta.server_ms,
            producer_ms: meta.producer_ms,
            duration_ms: meta.duration_ms,
            blocks: meta.blocks,
            body,
        }
    }

    /// AWS_KINESISVIDEO_FRAGMENT_NUMBER (decimal digits; also the continuation token).
    pub fn number(&self) -> &str {
        &self.number
    }

    /// AWS_KINESISVIDEO_SERVER_TIMESTAMP in epoch milliseconds.
    pub fn server_ms(&self) -> i64 {
        self.server_ms
    }

    /// AWS_KINESISVIDEO_PRODUCER_TIMESTAMP in epoch milliseconds.
    pub fn producer_ms(&self) -> i64 {
        self.producer_ms
    }

    /// How long the fragment's media lasts.
    pub fn duration_ms(&self) -> u64 {
        self.duration_ms
    }

    /// How many blocks (frames) its cluster holds.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// The chunk's size in bytes as served at the stream head (MILLIS_BEHIND_NOW `0`); a
    /// built fragment served further behind carries a few more digits.
    pub fn size(&self) -> u64 {
        self.pieces(0).iter().map(|p| p.len() as u64).sum()
    }

    /// The whole chunk as GetMedia sends it when the fragment is `millis_behind_now` behind the
    /// head. Captured chunks keep the value they were captured with.
    pub fn chunk(&self, millis_behind_now: u64) -> Vec<u8> {
        self.pieces(millis_behind_now).concat()
    }

    /// The chunk as a few shared buffers, so that serving does not copy the media.
    pub(crate) fn pieces(&self, millis_behind_now: u64) -> Vec<Bytes> {
        match &self.body {
            Body::Verbatim(chunk, _) => vec![chunk.clone()],
            Body::Built(parts) => {
                let mut pieces = parts.clone();
                pieces.push(tags::post_tags(millis_behind_now, &self.number).into());
                pieces
            }
        }
    }

    /// The chunk as GetMediaForFragmentList sends it: GetMedia's chunk without the closing tags
    /// (MILLIS_BEHIND_NOW and CONTINUATION_TOKEN mean nothing outside a GetMedia session).
    pub(crate) fn archived_pieces(&self) -> Vec<Bytes> {
        match &self.body {
            Body::Verbatim(chunk, archived) => vec![chunk.slice(..*archived)],
            Body::Built(parts) => parts.clone(),
        }
    }

    /// The size of [`StoredFragment::archived_pieces`]: ListFragments' FragmentSizeInBytes.
    pub fn archived_size(&self) -> u64 {
        match &self.body {
            Body::Verbatim(_, archived) => *archived as u64,
            Body::Built(parts) => parts.iter().map(|p| p.len() as u64).sum(),
        }
    }
}

/// A fragment's metadata, before it gets its bytes.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub number: String,
    pub server_ms: i64,
    pub producer_ms: i64,
    pub duration_ms: u64,
    pub blocks: usize,
}

/// How the simulated producer and service stamp the fragments the emulator builds: their
/// clocks, numbers and cluster timecodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingest {
    /// The producer's clock (epoch ms) at the first frame: PRODUCER_TIMESTAMP of fragment 0.
    pub producer_start_ms: i64,
    /// SERVER_TIMESTAMP − PRODUCER_TIMESTAMP: the upload delay.
    pub server_offset_ms: i64,
    /// Fragment `k` gets number `base + k × FRAGMENT_NUMBER_STEP` (padded to 47 digits). Give
    /// streams different bases to make their numbers distinct.
    pub fragment_number_base: u64,
    /// Cluster timecodes as epoch milliseconds, like the C producer SDK (`true`), or relative to
    /// the first frame, starting at 0 (`false`).
    pub absolute_timecodes: bool,
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest {
            producer_start_ms: 1_700_000_000_000,
            server_offset_ms: 150,
            fragment_number_base: 0,
            absolute_timecodes: true,
        }
    }
}

impl Ingest {
    /// The number of the `k`-th fragment made with these settings.
    pub fn fragment_number(&self, k: u64) -> String {
        let value = u128::from(self.fragment_number_base)
            + u128::from(k) * u128::from(FRAGMENT_NUMBER_STEP);
        format!("{FRAGMENT_NUMBER_PREFIX}{value:031}")
    }
}

pub use mkv::cmp_fragment_numbers;

/// The parts every chunk of one built stream shares: the EBML header, Info and Tracks that KVS
/// repeats at the start of each chunk.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    ebml_header: Bytes,
    info: Bytes,
    tracks: Bytes,
    /// Nanoseconds per timecode tick.
    pub timecode_scale: u64,
}

impl Layout {
    /// `tracks` is a whole Tracks element.
    pub fn new(ebml_header: Vec<u8>, timecode_scale: u64, tracks: Vec<u8>) -> Self {
        let mut info_data = Vec::new();
        ebml::write_uint(&mut info_data, id::TIMESTAMP_SCALE, timecode_scale);
        ebml::write_string(&mut info_data, id::MUXING_APP, "kvs-emu");
        ebml::write_string(&mut info_data, id::WRITING_APP, "kvs-emu");
        let mut info = Vec::new();
        ebml::write_element(&mut info, id::INFO, &info_data);
        Layout {
            ebml_header: ebml_header.into(),
            info: info.into(),
            tracks: tracks.into(),
            timecode_scale,
        }
    }

    /// Milliseconds in `ticks` timecode ticks (rounded down).
    pub fn ticks_to_ms(&self, ticks: u64) -> u64 {
        (u128::from(ticks) * u128::from(self.timecode_scale) / 1_000_000) as u64
    }

    /// Timecode ticks in `ms` milliseconds (rounded down).
    pub fn ms_to_ticks(&self, ms: u64) -> u64 {
        (u128::from(ms) * 1_000_000 / u128::from(self.timecode_scale)) as u64
    }

    /// The `k`-th fragment, starting `media_ticks` after the first frame of the media, whose
    /// cluster holds `blocks` (already-encoded SimpleBlocks/BlockGroups, timecodes relative to
    /// the fragment start).
    pub fn fragment(
        &self,
        ingest: &Ingest,
        k: u64,
        media_ticks: u64,
        blocks: Bytes,
        block_count: usize,
        duration_ms: u64,
    ) -> StoredFragment {
        let producer_ms = ingest
            .producer_start_ms
            .saturating_add_unsigned(self.ticks_to_ms(media_ticks));
        let meta = Meta {
            number: ingest.fragment_number(k),
            server_ms: producer_ms.saturating_add(ingest.server_offset_ms),
            producer_ms,
            duration_ms,
            blocks: block_count,
        };
        let cluster_ticks = if ingest.absolute_timecodes {
            let start = u64::try_from(ingest.producer_start_ms).unwrap_or(0);
            self.ms_to_ticks(start).saturating_add(media_ticks)
        } else {
            media_ticks
        };
        let mut head =
            Vec::with_capacity(self.ebml_header.len() + self.info.len() + self.tracks.len() + 300);
        head.extend_from_slice(&self.ebml_header);
        head.extend_from_slice(&tags::SEGMENT_UNKNOWN_SIZE);
        head.extend_from_slice(&self.info);
        head.extend_from_slice(&self.tracks);
        head.extend(tags::pre_tags(
            &meta.number,
            meta.server_ms,
            meta.producer_ms,
        ));
        // A Cluster of unknown size (1-byte form) with an 8-byte Timestamp, as the KVS producer
        // SDK writes it.
        ebml::write_id(&mut head, id::CLUSTER);
        head.push(0xFF);
        ebml::write_element(&mut head, id::TIMESTAMP, &cluster_ticks.to_be_bytes());
        StoredFragment::new(meta, Body::Built(vec![head.into(), blocks]))
    }
}

/// Collects the block times of one fragment to tell how long its media lasts.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Span {
    /// The track of the fragment's first block; the frame interval is measured on it.
    track: Option<u64>,
    first: i64,
    last: i64,
    count: u64,
}

impl Span {
    /// A block of `track` at `ticks` (absolute).
    pub fn add(&mut self, track: u64, ticks: i64) {
        match self.track {
            None => {
                *self = Span {
                    track: Some(track),
                    first: ticks,
                    last: ticks,
                    count: 1,
                }
            }
            Some(t) if t == track => {
                self.last = self.last.max(ticks);
                self.count += 1;
            }
            Some(_) => {}
        }
    }

    /// Last frame time − `start` + one average frame interval, when at least two frames of the
    /// measured track were seen.
    pub fn ticks_from(&self, start: i64) -> Option<u64> {
        (self.count >= 2).then(|| {
            let interval = self.last.saturating_sub(self.first) / (self.count as i64 - 1);
            self.last
                .saturating_sub(start)
                .saturating_add(interval)
                .max(0) as u64
        })
    }
}

/// The duration of a fragment (in any one unit): measured on its frames, but never past the
/// start of the next fragment (the frame-interval estimate can overshoot); the gap alone when
/// the frames say nothing.
pub(crate) fn fragment_duration(from_frames: Option<u64>, gap_to_next: Option<i64>) -> u64 {
    let gap = gap_to_next
        .and_then(|g| u64::try_from(g).ok())
        .filter(|&g| g > 0);
    match (from_frames, gap) {
        (Some(d), Some(g)) => d.min(g),
        (Some(d), None) => d,
        (None, Some(g)) => g,
        (None, None) => 0,
    }
}

/// Why media could not be turned into fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// The bytes are not readable Matroska.
    Parse(mkv::ParseError),
    /// Something the fragments need is missing or unusable.
    Media(String),
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::Parse(e) => write!(f, "not readable as Matroska: {e}"),
            SourceError::Media(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SourceError::Parse(e) => Some(e),
            SourceError::Media(_) => None,
        }
    }
}

impl From<mkv::ParseError> for SourceError {
    fn from(e: mkv::ParseError) -> Self {
        SourceError::Parse(e)
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::*;

    #[test]
    fn numbers_have_47_digits_and_grow() {
        let ingest = Ingest::default();
        let a = ingest.fragment_number(0);
        let b = ingest.fragment_number(1);
        assert_eq!(a.len(), 47);
        assert_eq!(b.len(), 47);
        assert_eq!(cmp_fragment_numbers(&a, &b), Ordering::Less);
    }

    #[test]
    fn numbers_compare_as_integers() {
        assert_eq!(cmp_fragment_numbers("10", "9"), Ordering::Greater);
        assert_eq!(cmp_fragment_numbers("0010", "10"), Ordering::Equal);
        assert_eq!(cmp_fragment_numbers("123", "124"), Ordering::Less);
    }

    #[test]
    fn durations_prefer_frames_but_stop_at_the_next_fragment() {
        assert_eq!(fragment_duration(Some(2033), Some(2000)), 2000);
        assert_eq!(fragment_duration(Some(2000), Some(4000)), 2000);
        assert_eq!(fragment_duration(None, Some(1500)), 1500);
        assert_eq!(fragment_duration(None, Some(-10)), 0);
        let mut span = Span::default();
        for t in [100, 133, 166, 200] {
            span.add(1, t);
        }
        span.add(2, 500);
        assert_eq!(span.ticks_from(100), Some(133));
    }
}
