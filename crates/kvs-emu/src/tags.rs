//! The bytes Kinesis Video Streams itself writes into a GetMedia body: its Tags elements around
//! each cluster and the chunk it sends for an in-band error (kvs-protocol.md §4.3–§4.5).
//!
//! KVS writes these with a 4-byte size on every element and no `Targets` (which the Matroska spec
//! wants, but the service leaves out); clients are tested against exactly that, so it is copied.

use mkv::ebml::{self, id};

/// A Segment header as KVS writes it in every chunk: unknown size in the 8-byte form.
pub const SEGMENT_UNKNOWN_SIZE: [u8; 12] = [
    0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
];

const FRAGMENT_NUMBER: &str = "AWS_KINESISVIDEO_FRAGMENT_NUMBER";
const SERVER_TIMESTAMP: &str = "AWS_KINESISVIDEO_SERVER_TIMESTAMP";
const PRODUCER_TIMESTAMP: &str = "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP";
const MILLIS_BEHIND_NOW: &str = "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW";
const CONTINUATION_TOKEN: &str = "AWS_KINESISVIDEO_CONTINUATION_TOKEN";
const ERROR_CODE: &str = "AWS_KINESISVIDEO_ERROR_CODE";
const ERROR_ID: &str = "AWS_KINESISVIDEO_ERROR_ID";

/// The Tags KVS puts before a fragment's cluster.
pub fn pre_tags(number: &str, server_ms: i64, producer_ms: i64) -> Vec<u8> {
    tags(&[
        (FRAGMENT_NUMBER, number),
        (SERVER_TIMESTAMP, &seconds(server_ms)),
        (PRODUCER_TIMESTAMP, &seconds(producer_ms)),
    ])
}

/// The Tags KVS puts after a fragment's cluster. The continuation token is the fragment number,
/// as in every capture.
pub fn post_tags(millis_behind_now: u64, token: &str) -> Vec<u8> {
    tags(&[
        (MILLIS_BEHIND_NOW, &millis_behind_now.to_string()),
        (CONTINUATION_TOKEN, token),
    ])
}

/// A whole error chunk: EBML header, unknown-size Segment, and one Tags element with the error
/// code, id and (when known) the fragment it is about; no Info, Tracks or Cluster.
pub fn error_chunk(code: &str, error_id: u64, fragment_number: Option<&str>) -> Vec<u8> {
    let error_id = error_id.to_string();
    let mut pairs = vec![(ERROR_CODE, code), (ERROR_ID, error_id.as_str())];
    pairs.extend(fragment_number.map(|n| (FRAGMENT_NUMBER, n)));
    let mut out = mkv::writer::ebml_header();
    out.extend_from_slice(&SEGMENT_UNKNOWN_SIZE);
    out.extend(tags(&pairs));
    out
}

/// How much of a captured GetMedia chunk comes before its closing KVS tags: the whole chunk when
/// it does not end with a Tags element holding MILLIS_BEHIND_NOW or CONTINUATION_TOKEN. Finding
/// the last element that ends exactly at the chunk's end is enough: KVS writes those tags last.
pub fn without_post_tags(chunk: &[u8]) -> usize {
    let tags_id = id::TAGS.to_be_bytes();
    let mut search = chunk.len();
    while let Some(at) = chunk[..search].windows(4).rposition(|w| w == tags_id) {
        search = at;
        let Ok(Some(header)) = ebml::read_header(&chunk[at..]) else {
            continue;
        };
        let ends_chunk = header
            .size
            .is_some_and(|size| (at + header.len) as u64 + size == chunk.len() as u64);
        let element = &chunk[at..];
        let closing = [MILLIS_BEHIND_NOW, CONTINUATION_TOKEN]
            .iter()
            .any(|name| element.windows(name.len()).any(|w| w == name.as_bytes()));
        if ends_chunk && closing {
            return at;
        }
    }
    chunk.len()
}

/// KVS's timestamp text: epoch seconds with exactly three decimals (`1511852109.126`).
pub fn seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    format!("{sign}{}.{:03}", ms / 1000, ms % 1000)
}

/// `Tags { Tag { SimpleTag(name, value)... } }`, every size in 4 bytes, no Targets.
fn tags(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut tag = Vec::new();
    for (name, value) in pairs {
        let mut simple = Vec::new();
        element4(&mut simple, id::TAG_NAME, name.as_bytes());
        element4(&mut simple, id::TAG_STRING, value.as_bytes());
        element4(&mut tag, id::SIMPLE_TAG, &simple);
    }
    let mut tags = Vec::new();
    element4(&mut tags, id::TAG, &tag);
    let mut out = Vec::new();
    element4(&mut out, id::TAGS, &tags);
    out
}

fn element4(out: &mut Vec<u8>, element: u32, data: &[u8]) {
    ebml::write_id(out, element);
    ebml::write_size_fixed(out, data.len() as u64, 4);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NUMBER: &str = "91343852333181432392682062607743920146159169392";

    #[test]
    fn pre_tags_match_the_documented_bytes() {
        let bytes = pre_tags(NUMBER, 1_511_852_109_126, 1_511_852_108_513);
        let mut expected = vec![0x12, 0x54, 0xC3, 0x67, 0x10, 0x00, 0x00, 0xEB];
        expected.extend([0x73, 0x73, 0x10, 0x00, 0x00, 0xE5]);
        expected.extend([0x67, 0xC8, 0x10, 0x00, 0x00, 0x5B]);
        expected.extend([0x45, 0xA3, 0x10, 0x00, 0x00, 0x20]);
        expected.extend(FRAGMENT_NUMBER.as_bytes());
        expected.extend([0x44, 0x87, 0x10, 0x00, 0x00, 0x2F]);
        expected.extend(NUMBER.as_bytes());
        expected.extend([0x67, 0xC8, 0x10, 0x00, 0x00, 0x3B]);
        expected.extend([0x45, 0xA3, 0x10, 0x00, 0x00, 0x21]);
        expected.extend(SERVER_TIMESTAMP.as_bytes());
        expected.extend([0x44, 0x87, 0x10, 0x00, 0x00, 0x0E]);
        expected.extend(b"1511852109.126");
        expected.extend([0x67, 0xC8, 0x10, 0x00, 0x00, 0x3D]);
        expected.extend([0x45, 0xA3, 0x10, 0x00, 0x00, 0x23]);
        expected.extend(PRODUCER_TIMESTAMP.as_bytes());
        expected.extend([0x44, 0x87, 0x10, 0x00, 0x00, 0x0E]);
        expected.extend(b"1511852108.513");
        assert_eq!(bytes, expected);
        assert_eq!(bytes.len(), 8 + 235);
    }

    #[test]
    fn post_tags_have_the_documented_shape() {
        let bytes = post_tags(15858, NUMBER);
        assert_eq!(
            &bytes[..14],
            &[
                0x12, 0x54, 0xC3, 0x67, 0x10, 0x00, 0x00, 0xA3, 0x73, 0x73, 0x10, 0x00, 0x00, 0x9D
            ]
        );
        assert_eq!(bytes.len(), 8 + 0xA3);
    }

    #[test]
    fn closing_tags_are_found_at_the_end_of_a_chunk() {
        let mut chunk = mkv::writer::ebml_header();
        chunk.extend_from_slice(&SEGMENT_UNKNOWN_SIZE);
        chunk.extend(pre_tags(NUMBER, 1, 2));
        let before = chunk.len();
        chunk.extend(post_tags(15858, NUMBER));
        assert_eq!(without_post_tags(&chunk), before);
        assert_eq!(without_post_tags(&chunk[..before]), before);
        assert_eq!(without_post_tags(&[]), 0);
    }

    #[test]
    fn seconds_have_three_decimals() {
        assert_eq!(seconds(1_511_852_109_126), "1511852109.126");
        assert_eq!(seconds(5000), "5.000");
        assert_eq!(seconds(7), "0.007");
        assert_eq!(seconds(-1500), "-1.500");
    }

    #[test]
    fn error_chunk_reads_back_as_a_service_error() {
        let chunk = error_chunk("FRAGMENT_NOT_FOUND", 4000, Some(NUMBER));
        let mut parser = mkv::Parser::new();
        parser.push(&chunk);
        let mut errors = Vec::new();
        while let Some(event) = parser.next_event().unwrap() {
            if let mkv::Event::ServiceError(e) = event {
                errors.push(e);
            }
        }
        assert_eq!(
            errors,
            [mkv::ServiceError {
                id: Some(4000),
                code: Some("FRAGMENT_NOT_FOUND".into()),
                fragment_number: Some(NUMBER.into()),
            }]
        );
        assert_eq!(parser.finish().unwrap(), mkv::Finish::Clean);
    }
}
