//! Which Matroska tracks MP4 can carry, and how: the sample entry (avc1, hvc1, mp4a, alaw,
//! ulaw) built from CodecID and CodecPrivate, the track's timescale, and how its sample
//! durations are found.

use mkv::tracks::Track;
use shiguredo_mp4::boxes::{
    AudioSampleEntryFields, AvccBox, EsdsBox, HvccBox, Mp4aBox, SampleEntry,
};
use shiguredo_mp4::descriptors::{
    DecoderConfigDescriptor, DecoderSpecificInfo, EsDescriptor, SlConfigDescriptor,
};
use shiguredo_mp4::{Decode, Encode, FixedPointNumber, Uint};

use crate::Refusal;
use crate::bmff;

/// Video samples are timed in 1/90000 s, as MPEG systems do: a millisecond is 90 units.
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// How a track's sample durations are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// From the next sample's timestamp (video): decode times are the sorted presentation times.
    Stamps,
    /// Every sample lasts this many units (AAC: 1024 samples per frame).
    Frame(u32),
    /// A sample lasts its size divided by this (G.711: one byte per channel per sample).
    Bytes(u32),
}

/// One track as the MP4 file carries it.
#[derive(Debug, Clone)]
pub struct TrackConfig {
    /// The Matroska TrackNumber.
    pub number: u64,
    /// The MP4 track_ID (1-based position in the Tracks).
    pub id: u32,
    pub video: bool,
    pub timescale: u32,
    pub timing: Timing,
    /// The encoded sample entry box.
    pub entry: Vec<u8>,
    pub width: u16,
    pub height: u16,
    /// DefaultDuration in units, when the producer gave it.
    pub default_units: Option<i64>,
}

/// The MP4 form of every track, or why one cannot be carried.
pub fn configure(tracks: &[Track]) -> Result<Vec<TrackConfig>, Refusal> {
    if tracks.len() > 255 {
        return Err(Refusal::BadTracks("more than 255 tracks"));
    }
    tracks
        .iter()
        .enumerate()
        .map(|(i, t)| configure_one(t, i as u32 + 1))
        .collect()
}

fn configure_one(t: &Track, id: u32) -> Result<TrackConfig, Refusal> {
    let codec = || Refusal::Codec(t.codec_id.clone());
    let width = t.width.unwrap_or(0).min(u64::from(u16::MAX)) as u16;
    let height = t.height.unwrap_or(0).min(u64::from(u16::MAX)) as u16;
    let (video, timescale, timing, entry) = match t.codec_id.as_str() {
        "V_MPEG4/ISO/AVC" => {
            decode_config::<AvccBox>(b"avcC", &t.codec_private)
                .ok_or(Refusal::BadTracks("unreadable AVC CodecPrivate (avcC)"))?;
            let e = visual_entry(b"avc1", b"avcC", &t.codec_private, width, height);
            (true, VIDEO_TIMESCALE, Timing::Stamps, e)
        }
        "V_MPEGH/ISO/HEVC" => {
            decode_config::<HvccBox>(b"hvcC", &t.codec_private)
                .ok_or(Refusal::BadTracks("unreadable HEVC CodecPrivate (hvcC)"))?;
            let e = visual_entry(b"hvc1", b"hvcC", &t.codec_private, width, height);
            (true, VIDEO_TIMESCALE, Timing::Stamps, e)
        }
        "A_AAC" | "A_AAC/MPEG4/LC" | "A_AAC/MPEG2/LC" => {
            if t.codec_private.is_empty() {
                return Err(Refusal::BadTracks("AAC without CodecPrivate"));
            }
            let rate = sample_rate(t).or_else(|| aac_rate(&t.codec_private));
            let rate = rate.ok_or(Refusal::BadTracks("AAC without a sampling frequency"))?;
            let channels = t.channels.unwrap_or(2).clamp(1, 255) as u16;
            let e = SampleEntry::Mp4a(Mp4aBox {
                audio: audio_fields(channels, 16, rate),
                esds_box: EsdsBox {
                    es: EsDescriptor {
                        es_id: EsDescriptor::MIN_ES_ID,
                        stream_priority: EsDescriptor::LOWEST_STREAM_PRIORITY,
                        depends_on_es_id: None,
                        url_string: None,
                        ocr_es_id: None,
                        dec_config_descr: DecoderConfigDescriptor {
                            object_type_indication:
                                DecoderConfigDescriptor::OBJECT_TYPE_INDICATION_AUDIO_ISO_IEC_14496_3,
                            stream_type: DecoderConfigDescriptor::STREAM_TYPE_AUDIO,
                            up_stream: DecoderConfigDescriptor::UP_STREAM_FALSE,
                            buffer_size_db: Uint::new(0),
                            max_bitrate: 0,
                            avg_bitrate: 0,
                            dec_specific_info: Some(DecoderSpecificInfo {
                                payload: t.codec_private.clone(),
                            }),
                        },
                        sl_config_descr: SlConfigDescriptor,
                    },
                },
                unknown_boxes: Vec::new(),
            });
            (false, rate, Timing::Frame(1024), encode(&e)?)
        }
        "A_MS/ACM" => {
            let p = &t.codec_private;
            if p.len() < 16 {
                return Err(codec());
            }
            let tag = u16::from_le_bytes([p[0], p[1]]);
            let channels = u16::from_le_bytes([p[2], p[3]]).max(1);
            let rate = u32::from_le_bytes([p[4], p[5], p[6], p[7]]);
            let kind = match tag {
                6 => b"alaw",
                7 => b"ulaw",
                _ => return Err(Refusal::Codec(format!("A_MS/ACM (format tag {tag})"))),
            };
            if rate == 0 || rate > 0xFFFF {
                return Err(Refusal::BadTracks("G.711 with an unusable sample rate"));
            }
            let mut e = Vec::new();
            bmff::boxed(&mut e, kind, |o| {
                o.extend_from_slice(&[0; 6]);
                bmff::u16(o, 1); // data_reference_index
                o.extend_from_slice(&[0; 8]);
                bmff::u16(o, channels);
                bmff::u16(o, 16);
                o.extend_from_slice(&[0; 4]);
                bmff::u32(o, rate << 16);
            });
            (false, rate, Timing::Bytes(u32::from(channels)), e)
        }
        _ => return Err(codec()),
    };
    let default_units = t.default_duration.map(|ns| {
        (i128::from(ns) * i128::from(timescale) / 1_000_000_000).clamp(1, i128::from(u32::MAX))
            as i64
    });
    Ok(TrackConfig {
        number: t.number,
        id,
        video,
        timescale,
        timing,
        entry,
        width,
        height,
        default_units,
    })
}

/// A visual sample entry whose configuration record is the CodecPrivate, verbatim (after it
/// was checked to decode): what the producer wrote is what players get, including the
/// high-profile avcC fields some producers leave out.
fn visual_entry(kind: &[u8; 4], config: &[u8; 4], private: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut e = Vec::new();
    bmff::boxed(&mut e, kind, |o| {
        o.extend_from_slice(&[0; 6]);
        bmff::u16(o, 1); // data_reference_index
        o.extend_from_slice(&[0; 16]);
        bmff::u16(o, w);
        bmff::u16(o, h);
        bmff::u32(o, 0x0048_0000);
        bmff::u32(o, 0x0048_0000);
        bmff::u32(o, 0);
        bmff::u16(o, 1); // frame_count
        o.extend_from_slice(&[0; 32]);
        bmff::u16(o, 0x18);
        bmff::u16(o, 0xFFFF);
        bmff::boxed(o, config, |o| o.extend_from_slice(private));
    });
    e
}

fn audio_fields(channels: u16, bits: u16, rate: u32) -> AudioSampleEntryFields {
    AudioSampleEntryFields {
        data_reference_index: AudioSampleEntryFields::DEFAULT_DATA_REFERENCE_INDEX,
        channelcount: channels,
        samplesize: bits,
        samplerate: FixedPointNumber::new(u16::try_from(rate).unwrap_or(0), 0),
    }
}

fn sample_rate(t: &Track) -> Option<u32> {
    let f = t.sampling_frequency?;
    (1.0..=1_000_000.0).contains(&f).then_some(f.round() as u32)
}

/// The sampling frequency an AudioSpecificConfig names.
fn aac_rate(asc: &[u8]) -> Option<u32> {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let index = (u16::from_be_bytes([*asc.first()?, *asc.get(1)?]) >> 7) & 0x0F;
    RATES.get(usize::from(index)).copied()
}

/// Decodes a configuration record given as CodecPrivate by wrapping it in its box header.
fn decode_config<B: Decode>(kind: &[u8; 4], private: &[u8]) -> Option<B> {
    let mut wrapped = Vec::with_capacity(private.len() + 8);
    bmff::boxed(&mut wrapped, kind, |o| o.extend_from_slice(private));
    B::decode(&wrapped).ok().map(|(b, _)| b)
}

fn encode(e: &SampleEntry) -> Result<Vec<u8>, Refusal> {
    e.encode_to_vec()
        .map_err(|_| Refusal::BadTracks("sample entry could not be encoded"))
}
