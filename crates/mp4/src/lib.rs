//! MP4 (ISO BMFF) for kvs-dl, without I/O: the events of [`mkv::Parser`] in, a fragmented MP4
//! file out, in one pass and bounded memory; optionally a progressive ("faststart") file
//! described as a rewrite of the fragmented one.
//!
//! # The file
//!
//! `ftyp`, then an init `moov` that lists every track of the Matroska Tracks (never only the
//! tracks the first fragment happens to hold), with empty sample tables and `mvex` (`mehd`,
//! one `trex` per track); then one `moof` + `mdat` per KVS fragment (more when a fragment's
//! buffered samples pass [`FLUSH_BYTES`]); at the end of a seekable file an `mfra` index.
//!
//! * **Timeline.** As in the Matroska writer: the file starts at 0 at the first fragment's
//!   producer timestamp and each fragment is placed by its own (gaps stay gaps; a fragment that
//!   does not move forward follows the one before and is counted in
//!   [`Muxer::non_monotonic`]). Every `traf` carries a `tfdt` in its track's timescale, so the
//!   offset between tracks is kept (video 1/90000 s, audio its sample rate).
//! * **Decode times.** Matroska blocks carry presentation times only. Per run, a video
//!   track's decode times are its sorted presentation times shifted by the reorder delay found
//!   so far (never below the previous decode time), and `trun` (version 1, signed) carries the
//!   composition offsets. AAC frames last 1024 samples, G.711 samples one byte per channel;
//!   audio has no composition offsets: it plays at its decode times, from the run's first block
//!   time. The last sample of a run lasts the run's average spacing (or DefaultDuration); the
//!   next `tfdt` keeps errors from adding up.
//! * **Index: `mfra`.** A `sidx` must come before the fragments, which a one-pass writer
//!   cannot do; `mfra` (one `tfra` per track, one entry per moof starting with a sync sample,
//!   and `mfro`) is written at the end and is what ffmpeg's mov demuxer reads to seek without
//!   visiting every moof. A pipe (`seekable: false`) gets no `mehd` and no `mfra`: the init
//!   segment and fragments only, as Media Source Extensions want them.
//! * **Metadata: `moov/udta/meta/ilst`.** The encoder (`©too` = [`Options::app`]) and one
//!   iTunes-style freeform item (`----`, mean `com.amazon.kinesisvideo`) per tag: the stream
//!   tag, `KVS_FRAGMENTS`, and `KVS_{FIRST,LAST}_{FRAGMENT_NUMBER,SERVER_TIMESTAMP,
//!   PRODUCER_TIMESTAMP}`; ffprobe shows them as format tags. Values known only at the end
//!   are patched in: a seekable file's `udta` is written at a fixed size (room for every value
//!   at 64 characters, the rest a `free` box) and rewritten whole by [`Muxer::finish`]. A pipe
//!   gets the stream tag and the first fragment's values.
//! * **Recovery.** A private `uuid` box in the moov keeps the source Tracks element and
//!   TimestampScale, so [`Recovery`] can rebuild the writer from the file alone: the sample
//!   tables, index and duration from the boxes (the writer keeps nothing the boxes do not
//!   say), and what placing further fragments needs (block times, reorder delay, spacing) from
//!   a record the box keeps for the last fragment, patched in at every fragment's end.
//!
//! Codecs: `V_MPEG4/ISO/AVC` (avc1), `V_MPEGH/ISO/HEVC` (hvc1), `A_AAC` (mp4a), and G.711 in
//! `A_MS/ACM` (alaw, ulaw). Any other track is refused with [`Refusal::Codec`].

mod bmff;
mod entry;
mod muxer;
mod progressive;
mod recovery;
mod tables;

pub use mkv::Patch;
pub use muxer::{FLUSH_BYTES, Muxer, Options};
pub use progressive::Rewrite;
pub use recovery::{Recovery, RecoveryError};

/// Why a fragment cannot go into this file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its Tracks differ from the file's (codec, codec private data, resolution, track set).
    TracksChanged,
    /// Its Tracks element could not be read, or described something unusable.
    BadTracks(&'static str),
    /// A track's codec (its Matroska CodecID) that MP4 output cannot carry.
    Codec(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TracksChanged => f.write_str("the tracks changed"),
            Refusal::BadTracks(why) => write!(f, "unusable Tracks: {why}"),
            Refusal::Codec(codec) => write!(f, "MP4 cannot carry codec {codec}"),
        }
    }
}

impl std::error::Error for Refusal {}
