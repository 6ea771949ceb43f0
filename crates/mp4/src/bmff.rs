//! Writing ISO BMFF boxes by hand: the few boxes whose layout this crate controls byte by byte
//! (fixed offsets for patches, 64-bit fields everywhere so sizes never depend on values).

/// Appends a box of type `kind` whose payload `body` writes; fills in the 32-bit size.
pub fn boxed(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let size = u32::try_from(out.len() - at).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
}

/// A full box: version and flags, then `body`.
pub fn full(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    boxed(out, kind, |o| {
        o.push(version);
        o.extend_from_slice(&flags.to_be_bytes()[1..]);
        body(o);
    });
}

pub fn u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// The unity transformation matrix of mvhd and tkhd.
pub fn matrix(out: &mut Vec<u8>) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        u32(out, v);
    }
}

/// A box header read from bytes: its type, its header length and its total size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: [u8; 4],
    pub header_len: usize,
    pub size: u64,
}

/// Reads a box header; `Ok(None)` when more bytes are needed.
pub fn header(buf: &[u8]) -> Result<Option<Header>, String> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let size32 = u32::from_be_bytes(buf[0..4].try_into().unwrap_or_default());
    let kind: [u8; 4] = buf[4..8].try_into().unwrap_or_default();
    let (size, header_len) = match size32 {
        1 => {
            if buf.len() < 16 {
                return Ok(None);
            }
            (
                u64::from_be_bytes(buf[8..16].try_into().unwrap_or_default()),
                16,
            )
        }
        0 => return Err(format!("box '{}' of size 0 (to end of file)", name(&kind))),
        s => (u64::from(s), 8),
    };
    if size < header_len as u64 {
        return Err(format!("box '{}' smaller than its header", name(&kind)));
    }
    Ok(Some(Header {
        kind,
        header_len,
        size,
    }))
}

/// The children of a box payload, as (type, payload, offset of the child in `data`).
pub fn children(data: &[u8]) -> impl Iterator<Item = Result<([u8; 4], &[u8], usize), String>> {
    let mut pos = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= data.len() {
            return None;
        }
        let rest = &data[pos..];
        let r = match header(rest) {
            Ok(Some(h)) if h.size <= rest.len() as u64 => {
                let at = pos;
                pos += h.size as usize;
                Ok((h.kind, &rest[h.header_len..h.size as usize], at))
            }
            Ok(_) => Err("truncated box".to_string()),
            Err(e) => Err(e),
        };
        failed = r.is_err();
        Some(r)
    })
}

/// A box type for messages.
pub fn name(kind: &[u8; 4]) -> String {
    kind.iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

/// A big-endian reader over a box payload that never panics.
pub struct Reader<'a> {
    pub data: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| "box payload too short".to_string())?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
}
