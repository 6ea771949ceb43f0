//! Faststart: the progressive file (moov first, then one mdat) described from the finished
//! fragmented one, so that the caller can build it by copying byte ranges.

use crate::bmff::{self, boxed, full};
use crate::muxer::{self, Muxer, units_to_ms};
use crate::tables::Tables;

/// A file rebuilt from another: `head` followed by the listed byte ranges of the original
/// file, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub head: Vec<u8>,
    pub ranges: Vec<std::ops::Range<u64>>,
}

impl Rewrite {
    /// The length of the rewritten file.
    pub fn len(&self) -> u64 {
        self.head.len() as u64 + self.ranges.iter().map(|r| r.end - r.start).sum::<u64>()
    }

    /// Whether the rewritten file is empty (it never is: `head` holds at least `ftyp`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Muxer {
    /// With faststart, after [`Muxer::finish`]: the progressive file to build from the finished
    /// fragmented one. Chunk offsets are 64-bit (`co64`), so the moov's length does not depend
    /// on where the data lands and one pass computes them.
    pub fn faststart(&self) -> Option<Rewrite> {
        if !(self.finished && self.opts.faststart && self.opts.seekable) {
            return None;
        }
        let first = self.committed.first.as_ref()?;
        // Chunks in the order their bytes have in the fragmented file.
        let mut order: Vec<(u64, u64, usize, usize)> = Vec::new();
        for (t, st) in self.states.iter().enumerate() {
            for (c, chunk) in st.tables.chunks.iter().enumerate() {
                order.push((chunk.src, chunk.bytes, t, c));
            }
        }
        order.sort_unstable();
        let total: u64 = order.iter().map(|o| o.1).sum();
        let ftyp = muxer::ftyp(false);
        let creation = (first.producer_ms.div_euclid(1000) + 2_082_844_800).max(0) as u64;
        let offsets = |base: u64| {
            let mut per: Vec<Vec<u64>> = self
                .states
                .iter()
                .map(|s| vec![0; s.tables.chunks.len()])
                .collect();
            let mut at = base;
            for &(_, bytes, t, c) in &order {
                per[t][c] = at;
                at += bytes;
            }
            per
        };
        let probe = self.progressive_moov(creation, &offsets(0));
        let data_start = (ftyp.len() + probe.len() + 16) as u64;
        let moov = self.progressive_moov(creation, &offsets(data_start));
        let mut head = ftyp;
        head.extend_from_slice(&moov);
        bmff::u32(&mut head, 1);
        head.extend_from_slice(b"mdat");
        bmff::u64(&mut head, total + 16);
        let mut ranges: Vec<std::ops::Range<u64>> = Vec::new();
        for &(src, bytes, _, _) in &order {
            match ranges.last_mut() {
                Some(r) if r.end == src => r.end += bytes,
                _ => ranges.push(src..src + bytes),
            }
        }
        Some(Rewrite { head, ranges })
    }

    fn progressive_moov(&self, creation: u64, offsets: &[Vec<u64>]) -> Vec<u8> {
        let mut o = Vec::new();
        boxed(&mut o, b"moov", |o| {
            muxer::mvhd(
                o,
                creation,
                self.duration_ms(),
                self.states.len() as u32 + 1,
            );
            for (st, offs) in self.states.iter().zip(offsets) {
                let t = &st.tables;
                let ts = st.cfg.timescale;
                let media: u64 = t.durations.iter().map(|&d| u64::from(d)).sum();
                let media_ms = units_to_ms(media.min(i64::MAX as u64) as i64, ts);
                let empty_ms = units_to_ms(t.timeline.first_dts.unwrap_or(0), ts);
                let edit = (empty_ms > 0).then_some((empty_ms, media_ms));
                let write = |o: &mut Vec<u8>| sample_tables(o, t, offs);
                let duration = empty_ms + media_ms;
                muxer::trak(o, &st.cfg, creation, duration, media, edit, Some(&write));
            }
            o.extend_from_slice(&self.final_udta(None));
        });
        o
    }
}

fn sample_tables(o: &mut Vec<u8>, t: &Tables, offsets: &[u64]) {
    let mut stts: Vec<(u32, u32)> = Vec::new();
    for &d in &t.durations {
        match stts.last_mut() {
            Some((n, v)) if *v == d && *n < u32::MAX => *n += 1,
            _ => stts.push((1, d)),
        }
    }
    full(o, b"stts", 0, 0, |o| {
        bmff::u32(o, stts.len() as u32);
        for (n, d) in &stts {
            bmff::u32(o, *n);
            bmff::u32(o, *d);
        }
    });
    if t.ctts.iter().any(|&(_, c)| c != 0) {
        let version = u8::from(t.ctts.iter().any(|&(_, c)| c < 0));
        full(o, b"ctts", version, 0, |o| {
            bmff::u32(o, t.ctts.len() as u32);
            for (n, c) in &t.ctts {
                bmff::u32(o, *n);
                o.extend_from_slice(&c.to_be_bytes());
            }
        });
    }
    if t.video && t.syncs.len() < t.sizes.len() {
        full(o, b"stss", 0, 0, |o| {
            bmff::u32(o, t.syncs.len() as u32);
            for s in &t.syncs {
                bmff::u32(o, *s);
            }
        });
    }
    full(o, b"stsz", 0, 0, |o| {
        bmff::u32(o, 0);
        bmff::u32(o, t.sizes.len() as u32);
        for s in &t.sizes {
            bmff::u32(o, *s);
        }
    });
    let mut stsc: Vec<(u32, u32)> = Vec::new();
    for (i, c) in t.chunks.iter().enumerate() {
        if stsc.last().is_none_or(|l| l.1 != c.samples) {
            stsc.push((i as u32 + 1, c.samples));
        }
    }
    full(o, b"stsc", 0, 0, |o| {
        bmff::u32(o, stsc.len() as u32);
        for (first, n) in &stsc {
            bmff::u32(o, *first);
            bmff::u32(o, *n);
            bmff::u32(o, 1);
        }
    });
    full(o, b"co64", 0, 0, |o| {
        bmff::u32(o, offsets.len() as u32);
        for off in offsets {
            bmff::u64(o, *off);
        }
    });
}
