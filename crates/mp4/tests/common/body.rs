//! Small GetMedia bodies built by hand (nothing third-party): H.264, AAC and G.711 tracks,
//! any TimestampScale, and fragments whose producer timestamps and block times are given.

use mkv::ebml::{self, id};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// H.264, avcC of baseline profile.
    Avc,
    /// AAC LC at 44.1 kHz, stereo.
    Aac,
    /// G.711 A-law at 8 kHz, mono.
    Alaw,
}

/// One block: its track (index into the tracks), its time in ticks from the fragment's
/// cluster, its payload length, and whether it is a keyframe.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    pub track: usize,
    pub ticks: i16,
    pub size: usize,
    pub key: bool,
}

pub fn block(track: usize, ticks: i16, size: usize) -> Block {
    Block {
        track,
        ticks,
        size,
        key: true,
    }
}

/// One fragment: its producer timestamp, its cluster's timestamp (ticks) and its blocks.
#[derive(Debug, Clone)]
pub struct Frag {
    pub producer_ms: i64,
    pub cluster: u64,
    pub blocks: Vec<Block>,
}

/// avcC: baseline profile, 4-byte lengths, one SPS and one PPS.
const AVCC: [u8; 25] = [
    1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0x00, 0x0A, 0x67, 0x42, 0xC0, 0x1E, 0xD9, 0x00, 0xA0, 0x47,
    0xFE, 0xC8, 0x01, 0x00, 0x04, 0x68, 0xCE, 0x38, 0x80,
];
const AUDIO: u32 = 0xE1;
const SAMPLING_FREQUENCY: u32 = 0xB5;
const CHANNELS: u32 = 0x9F;

fn track(out: &mut Vec<u8>, number: u64, codec: Codec) {
    let mut e = Vec::new();
    ebml::write_uint(&mut e, id::TRACK_NUMBER, number);
    ebml::write_uint(&mut e, 0x73C5, number); // TrackUID
    match codec {
        Codec::Avc => {
            ebml::write_uint(&mut e, id::TRACK_TYPE, 1);
            ebml::write_string(&mut e, id::CODEC_ID, "V_MPEG4/ISO/AVC");
            ebml::write_element(&mut e, id::CODEC_PRIVATE, &AVCC);
            let mut v = Vec::new();
            ebml::write_uint(&mut v, id::PIXEL_WIDTH, 320);
            ebml::write_uint(&mut v, id::PIXEL_HEIGHT, 240);
            ebml::write_element(&mut e, id::VIDEO, &v);
        }
        Codec::Aac => {
            ebml::write_uint(&mut e, id::TRACK_TYPE, 2);
            ebml::write_string(&mut e, id::CODEC_ID, "A_AAC");
            ebml::write_element(&mut e, id::CODEC_PRIVATE, &[0x12, 0x10]);
            let mut a = Vec::new();
            ebml::write_float(&mut a, SAMPLING_FREQUENCY, 44_100.0);
            ebml::write_uint(&mut a, CHANNELS, 2);
            ebml::write_element(&mut e, AUDIO, &a);
        }
        Codec::Alaw => {
            ebml::write_uint(&mut e, id::TRACK_TYPE, 2);
            ebml::write_string(&mut e, id::CODEC_ID, "A_MS/ACM");
            let mut wf = Vec::new();
            wf.extend(6u16.to_le_bytes()); // A-law
            wf.extend(1u16.to_le_bytes()); // channels
            wf.extend(8000u32.to_le_bytes()); // rate
            wf.extend(8000u32.to_le_bytes()); // bytes per second
            wf.extend(1u16.to_le_bytes()); // block align
            wf.extend(8u16.to_le_bytes()); // bits
            wf.extend(0u16.to_le_bytes()); // cbSize
            ebml::write_element(&mut e, id::CODEC_PRIVATE, &wf);
            let mut a = Vec::new();
            ebml::write_float(&mut a, SAMPLING_FREQUENCY, 8000.0);
            ebml::write_uint(&mut a, CHANNELS, 1);
            ebml::write_element(&mut e, AUDIO, &a);
        }
    }
    ebml::write_element(out, id::TRACK_ENTRY, &e);
}

/// An element with a 4-byte size, as KVS writes its tags.
fn element4(out: &mut Vec<u8>, element: u32, data: &[u8]) {
    ebml::write_id(out, element);
    ebml::write_size_fixed(out, data.len() as u64, 4);
    out.extend_from_slice(data);
}

fn tags(out: &mut Vec<u8>, pairs: &[(&str, &str)]) {
    let mut tag = Vec::new();
    for (name, value) in pairs {
        let mut simple = Vec::new();
        element4(&mut simple, id::TAG_NAME, name.as_bytes());
        element4(&mut simple, id::TAG_STRING, value.as_bytes());
        element4(&mut tag, id::SIMPLE_TAG, &simple);
    }
    let mut t = Vec::new();
    element4(&mut t, id::TAG, &tag);
    element4(out, id::TAGS, &t);
}

fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

const SEGMENT_UNKNOWN: [u8; 12] = [
    0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
];

/// A GetMedia body: one chunk (EBML header, Segment, Info, Tracks, tags, one cluster, the
/// closing tags) per fragment. Track numbers are 1, 2, … in `codecs` order.
pub fn build(scale: u64, codecs: &[Codec], fragments: &[Frag]) -> Vec<u8> {
    let mut tracks_body = Vec::new();
    for (i, &codec) in codecs.iter().enumerate() {
        track(&mut tracks_body, i as u64 + 1, codec);
    }
    let mut tracks = Vec::new();
    ebml::write_element(&mut tracks, id::TRACKS, &tracks_body);
    let mut info_body = Vec::new();
    ebml::write_uint(&mut info_body, id::TIMESTAMP_SCALE, scale);
    let mut info = Vec::new();
    ebml::write_element(&mut info, id::INFO, &info_body);
    let mut byte = 0u8;
    let mut body = Vec::new();
    for (f, frag) in fragments.iter().enumerate() {
        let number = format!("91343852333181432392682062607743920146159{:06}", f * 17 + 3);
        body.extend(mkv::writer::ebml_header());
        body.extend(SEGMENT_UNKNOWN);
        body.extend_from_slice(&info);
        body.extend_from_slice(&tracks);
        tags(
            &mut body,
            &[
                ("AWS_KINESISVIDEO_FRAGMENT_NUMBER", &number),
                (
                    "AWS_KINESISVIDEO_SERVER_TIMESTAMP",
                    &seconds(frag.producer_ms + 150),
                ),
                (
                    "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP",
                    &seconds(frag.producer_ms),
                ),
            ],
        );
        ebml::write_id(&mut body, id::CLUSTER);
        body.push(0xFF);
        ebml::write_element(&mut body, id::TIMESTAMP, &frag.cluster.to_be_bytes());
        for b in &frag.blocks {
            let mut block = vec![0x80 | (b.track as u8 + 1)];
            block.extend(b.ticks.to_be_bytes());
            block.push(if b.key { 0x80 } else { 0 });
            block.extend((0..b.size).map(|_| {
                byte = byte.wrapping_mul(31).wrapping_add(17);
                byte
            }));
            ebml::write_element(&mut body, id::SIMPLE_BLOCK, &block);
        }
        tags(
            &mut body,
            &[
                ("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", "1234"),
                ("AWS_KINESISVIDEO_CONTINUATION_TOKEN", &number),
            ],
        );
    }
    body
}
