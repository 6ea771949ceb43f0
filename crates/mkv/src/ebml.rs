//! EBML primitives (RFC 8794): element IDs, variable-size integers, and the few value types
//! Matroska needs. Reading works on byte slices and reports "need more" as `None`, so the
//! incremental parser can call it on whatever has arrived so far.

/// Element IDs used by kvs-dl, with their marker bits, as they appear on the wire.
pub mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const VOID: u32 = 0xEC;
    pub const CRC32: u32 = 0xBF;

    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const SEEK: u32 = 0x4DBB;
    pub const SEEK_ID: u32 = 0x53AB;
    pub const SEEK_POSITION: u32 = 0x53AC;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2AD7B1;
    pub const DURATION: u32 = 0x4489;
    pub const DATE_UTC: u32 = 0x4461;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const SEGMENT_UUID: u32 = 0x73A4;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const DEFAULT_DURATION: u32 = 0x23E383;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const POSITION: u32 = 0xA7;
    pub const PREV_SIZE: u32 = 0xAB;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const BLOCK_GROUP: u32 = 0xA0;
    pub const BLOCK: u32 = 0xA1;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const CUE_POINT: u32 = 0xBB;
    pub const CUE_TIME: u32 = 0xB3;
    pub const CUE_TRACK_POSITIONS: u32 = 0xB7;
    pub const CUE_TRACK: u32 = 0xF7;
    pub const CUE_CLUSTER_POSITION: u32 = 0xF1;
    pub const CHAPTERS: u32 = 0x1043_A770;
    pub const ATTACHMENTS: u32 = 0x1941_A469;
    pub const TAGS: u32 = 0x1254_C367;
    pub const TAG: u32 = 0x7373;
    pub const TARGETS: u32 = 0x63C0;
    pub const SIMPLE_TAG: u32 = 0x67C8;
    pub const TAG_NAME: u32 = 0x45A3;
    pub const TAG_STRING: u32 = 0x4487;
}

/// The top-level children of a Segment. One of these (or an EBML header) ends an unknown-size
/// Cluster.
pub fn is_segment_child(id: u32) -> bool {
    matches!(
        id,
        id::SEEK_HEAD
            | id::INFO
            | id::TRACKS
            | id::CLUSTER
            | id::CUES
            | id::CHAPTERS
            | id::ATTACHMENTS
            | id::TAGS
    )
}

/// The size value that means "unknown" for a size field of `len` bytes (all value bits set).
pub fn unknown_size(len: usize) -> u64 {
    (1u64 << (7 * len)) - 1
}

/// Reads an element ID (1 to 4 bytes, marker bits kept). `Ok(None)`: more bytes are needed.
pub fn read_id(buf: &[u8]) -> Result<Option<(u32, usize)>, &'static str> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let len = first.leading_zeros() as usize + 1;
    if len > 4 {
        return Err("invalid element ID");
    }
    if buf.len() < len {
        return Ok(None);
    }
    let id = buf[..len]
        .iter()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    Ok(Some((id, len)))
}

/// Reads an element data size (1 to 8 bytes). `Some((None, len))` is the unknown size.
pub fn read_size(buf: &[u8]) -> Result<Option<(Option<u64>, usize)>, &'static str> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return Err("invalid element size");
    }
    if buf.len() < len {
        return Ok(None);
    }
    let mask = if len == 8 { 0 } else { 0xFFu8 >> len };
    let value = buf[1..len]
        .iter()
        .fold(u64::from(first & mask), |acc, &b| (acc << 8) | u64::from(b));
    let size = (value != unknown_size(len)).then_some(value);
    Ok(Some((size, len)))
}

/// An element header: its ID, data size (`None` when unknown) and header length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u32,
    pub size: Option<u64>,
    pub len: usize,
}

/// Reads a whole element header. `Ok(None)`: more bytes are needed.
pub fn read_header(buf: &[u8]) -> Result<Option<Header>, &'static str> {
    let Some((id, id_len)) = read_id(buf)? else {
        return Ok(None);
    };
    let Some((size, size_len)) = read_size(&buf[id_len..])? else {
        return Ok(None);
    };
    Ok(Some(Header {
        id,
        size,
        len: id_len + size_len,
    }))
}

/// Iterates over the children of a fully buffered master element's data.
/// Yields `(id, data)`; stops with an error on a malformed or overrunning child.
pub fn children(data: &[u8]) -> impl Iterator<Item = Result<(u32, &[u8]), &'static str>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let item = match read_header(rest) {
            Ok(Some(Header {
                id,
                size: Some(size),
                len,
            })) if size <= (rest.len() - len) as u64 => {
                let end = len + size as usize;
                let item = (id, &rest[len..end]);
                rest = &rest[end..];
                Ok(item)
            }
            Ok(Some(Header { size: None, .. })) => Err("unknown size inside a buffered element"),
            Ok(_) => Err("child element overruns its parent"),
            Err(e) => Err(e),
        };
        if item.is_err() {
            rest = &[];
        }
        Some(item)
    })
}

/// A big-endian unsigned integer of 0 to 8 bytes.
pub fn read_uint(data: &[u8]) -> Option<u64> {
    (data.len() <= 8).then(|| data.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// A 4- or 8-byte float, as Matroska stores Duration.
pub fn read_float(data: &[u8]) -> Option<f64> {
    match data.len() {
        0 => Some(0.0),
        4 => Some(f64::from(f32::from_be_bytes(data.try_into().ok()?))),
        8 => Some(f64::from_be_bytes(data.try_into().ok()?)),
        _ => None,
    }
}

/// Appends the shortest encoding of an element ID (IDs keep their marker bits).
pub fn write_id(out: &mut Vec<u8>, id: u32) {
    let len = (4 - id.leading_zeros() as usize / 8).max(1);
    out.extend_from_slice(&id.to_be_bytes()[4 - len..]);
}

/// Appends `size` as a data-size vint of exactly `len` bytes (1..=8).
pub fn write_size_fixed(out: &mut Vec<u8>, size: u64, len: usize) {
    debug_assert!((1..=8).contains(&len) && size < unknown_size(len));
    let marked = size | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

/// Appends `size` as the shortest data-size vint.
pub fn write_size(out: &mut Vec<u8>, size: u64) {
    let len = (1..=8).find(|&l| size < unknown_size(l)).unwrap_or(8);
    write_size_fixed(out, size, len);
}

/// Appends a whole element with the given data.
pub fn write_element(out: &mut Vec<u8>, id: u32, data: &[u8]) {
    write_id(out, id);
    write_size(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// Appends an unsigned-integer element in its shortest form.
pub fn write_uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = (value.leading_zeros() as usize / 8).min(7);
    write_element(out, id, &bytes[skip..]);
}

/// Appends a float element (8 bytes).
pub fn write_float(out: &mut Vec<u8>, id: u32, value: f64) {
    write_element(out, id, &value.to_be_bytes());
}

/// Appends a string element.
pub fn write_string(out: &mut Vec<u8>, id: u32, value: &str) {
    write_element(out, id, value.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip_in_every_width() {
        for size in [
            0u64,
            1,
            126,
            127,
            128,
            16_382,
            16_383,
            1 << 20,
            (1 << 56) - 2,
        ] {
            let mut out = Vec::new();
            write_size(&mut out, size);
            assert_eq!(read_size(&out), Ok(Some((Some(size), out.len()))), "{size}");
        }
    }

    #[test]
    fn unknown_sizes_in_one_and_eight_bytes() {
        assert_eq!(read_size(&[0xFF]), Ok(Some((None, 1))));
        assert_eq!(
            read_size(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            Ok(Some((None, 8)))
        );
        assert_eq!(read_size(&[0x00]), Err("invalid element size"));
        assert_eq!(read_size(&[0x10, 0x00]), Ok(None));
    }

    #[test]
    fn ids_keep_their_marker_bits() {
        let mut out = Vec::new();
        write_id(&mut out, id::SEGMENT);
        write_id(&mut out, id::SIMPLE_BLOCK);
        assert_eq!(out, [0x18, 0x53, 0x80, 0x67, 0xA3]);
        assert_eq!(read_id(&out), Ok(Some((id::SEGMENT, 4))));
        assert_eq!(read_id(&[0x08]), Err("invalid element ID"));
    }

    #[test]
    fn uints_are_shortest() {
        let mut out = Vec::new();
        write_uint(&mut out, id::TIMESTAMP, 0);
        write_uint(&mut out, id::TIMESTAMP, 1_000_000);
        assert_eq!(out, [0xE7, 0x81, 0x00, 0xE7, 0x83, 0x0F, 0x42, 0x40]);
    }
}
