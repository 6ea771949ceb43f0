//! What a Tracks element says about the media, reduced to what decides whether two chunks can
//! share one file: the track set, codecs, codec private data, resolution and audio format.
//! Byte-for-byte comparison would split a file over a CRC or a new TrackUID after a producer
//! restart, although players would not notice.

use crate::ebml::{self, id};

const AUDIO: u32 = 0xE1;
const SAMPLING_FREQUENCY: u32 = 0xB5;
const CHANNELS: u32 = 0x9F;
const BIT_DEPTH: u32 = 0x6264;

/// One track, as far as players care.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub number: u64,
    /// 1 video, 2 audio, 17 subtitle, ...
    pub kind: u64,
    pub codec_id: String,
    pub codec_private: Vec<u8>,
    /// Nanoseconds per frame, when the producer says.
    pub default_duration: Option<u64>,
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub sampling_frequency: Option<f64>,
    pub channels: Option<u64>,
    pub bit_depth: Option<u64>,
}

/// The tracks of a whole Tracks element (header included).
pub fn parse(tracks: &[u8]) -> Result<Vec<Track>, &'static str> {
    let header = ebml::read_header(tracks)?.ok_or("truncated Tracks")?;
    if header.id != id::TRACKS {
        return Err("not a Tracks element");
    }
    let mut out = Vec::new();
    for entry in ebml::children(&tracks[header.len..]) {
        let (eid, data) = entry?;
        if eid != id::TRACK_ENTRY {
            continue;
        }
        let mut t = Track {
            number: 0,
            kind: 0,
            codec_id: String::new(),
            codec_private: Vec::new(),
            default_duration: None,
            width: None,
            height: None,
            sampling_frequency: None,
            channels: None,
            bit_depth: None,
        };
        for field in ebml::children(data) {
            let (fid, value) = field?;
            match fid {
                id::TRACK_NUMBER => t.number = ebml::read_uint(value).ok_or("bad TrackNumber")?,
                id::TRACK_TYPE => t.kind = ebml::read_uint(value).ok_or("bad TrackType")?,
                id::CODEC_ID => {
                    t.codec_id = String::from_utf8_lossy(value).trim_end_matches('\0').into();
                }
                id::CODEC_PRIVATE => t.codec_private = value.to_vec(),
                id::DEFAULT_DURATION => t.default_duration = ebml::read_uint(value),
                id::VIDEO => {
                    for v in ebml::children(value) {
                        let (vid, vv) = v?;
                        match vid {
                            id::PIXEL_WIDTH => t.width = ebml::read_uint(vv),
                            id::PIXEL_HEIGHT => t.height = ebml::read_uint(vv),
                            _ => {}
                        }
                    }
                }
                AUDIO => {
                    for a in ebml::children(value) {
                        let (aid, av) = a?;
                        match aid {
                            SAMPLING_FREQUENCY => t.sampling_frequency = ebml::read_float(av),
                            CHANNELS => t.channels = ebml::read_uint(av),
                            BIT_DEPTH => t.bit_depth = ebml::read_uint(av),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        out.push(t);
    }
    if out.is_empty() {
        return Err("Tracks without a TrackEntry");
    }
    out.sort_by_key(|t| t.number);
    Ok(out)
}

/// The track seeks point at: the first video track, else the first track.
pub fn primary(tracks: &[Track]) -> Option<u64> {
    tracks
        .iter()
        .find(|t| t.kind == 1)
        .or(tracks.first())
        .map(|t| t.number)
}
