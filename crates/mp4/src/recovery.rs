//! Finishing a seekable file cut off (by a crash) after a whole fragment: its boxes are read
//! back, in pieces and bounded memory, and the writer's state (positions, the per-sample
//! tables, the index, the duration and the offsets to patch) is rebuilt from them, so that
//! [`Muxer::finish`] gives the bytes an uninterrupted run would have.
//!
//! Everything `finish()` and the faststart rewrite use is what the boxes say (`tfdt`, the
//! `trun` durations, sizes and composition offsets): the writer keeps no more than it writes.
//! What only placing further fragments needs (the block times the writer places fragments by,
//! the reorder delay and spacing it carries from run to run) is read from the private box's
//! [`Resume`] record of the last fragment, so that a continued file goes on exactly as an
//! uninterrupted run would.

use mkv::Fragment;
use mkv::tracks;

use crate::bmff::{self, Reader};
use crate::entry;
use crate::muxer::{self, Layout, Muxer, Options, Resume};
use crate::tables::RunSample;

/// The largest moov and moof read back whole.
const MAX_BOX: u64 = 64 << 20;

/// Why a cut-off file could not be finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryError(pub String);

impl std::fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RecoveryError {}

/// A moof's runs waiting for their mdat: (track index, tfdt, entries, data offset).
type Runs = Vec<(usize, i64, Vec<RunSample>, u64)>;

/// Rebuilds the writer's state from a seekable file it wrote. See the module docs.
#[derive(Debug)]
pub struct Recovery {
    muxer: Muxer,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    pos: u64,
    /// mdat payload bytes still to pass.
    skip: u64,
    /// Boxes read so far.
    boxes: u64,
    moof: Option<(u64, u32, Runs)>,
    /// The last whole box was an mdat (or the moov).
    at_fragment_end: bool,
    fragments: u64,
    /// The private box's two [`Resume`] slots.
    resume: [Option<Resume>; 2],
    failed: Option<RecoveryError>,
}

fn err(s: impl Into<String>) -> RecoveryError {
    RecoveryError(s.into())
}

impl Recovery {
    pub fn new(opts: Options) -> Recovery {
        Recovery {
            muxer: Muxer::new(Options {
                seekable: true,
                ..opts
            }),
            buf: Vec::new(),
            pos: 0,
            skip: 0,
            boxes: 0,
            moof: None,
            at_fragment_end: false,
            fragments: 0,
            resume: [None, None],
            failed: None,
        }
    }

    /// The next bytes of the file, from its start.
    pub fn push(&mut self, data: &[u8]) -> Result<(), RecoveryError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.push_inner(data);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn push_inner(&mut self, mut data: &[u8]) -> Result<(), RecoveryError> {
        if self.skip > 0 {
            let n = (data.len() as u64).min(self.skip);
            self.skip -= n;
            self.pos += n;
            data = &data[n as usize..];
            if self.skip > 0 {
                return Ok(());
            }
        }
        self.buf.extend_from_slice(data);
        let mut used = 0usize;
        let result = loop {
            let rest_len = self.buf.len() - used;
            let h = match bmff::header(&self.buf[used..]) {
                Ok(Some(h)) => h,
                Ok(None) => break Ok(()),
                Err(e) => break Err(err(format!("{e} at byte {}", self.pos))),
            };
            if &h.kind == b"mdat" {
                if let Err(e) = self.mdat(h.size) {
                    break Err(e);
                }
                let have = (rest_len as u64).min(h.size);
                used += have as usize;
                self.pos += have;
                self.skip = h.size - have;
                continue;
            }
            if h.size > MAX_BOX {
                break Err(err(format!(
                    "box '{}' too large at byte {}",
                    bmff::name(&h.kind),
                    self.pos
                )));
            }
            if (rest_len as u64) < h.size {
                break Ok(());
            }
            let whole = self.buf[used..used + h.size as usize].to_vec();
            if let Err(e) = self.whole_box(h, &whole) {
                break Err(e);
            }
            used += h.size as usize;
            self.pos += h.size;
        };
        self.buf.drain(..used);
        result
    }

    fn whole_box(&mut self, h: bmff::Header, b: &[u8]) -> Result<(), RecoveryError> {
        let at = self.pos;
        self.boxes += 1;
        let payload = &b[h.header_len..];
        match (&h.kind, self.boxes) {
            (b"ftyp", 1) if b == muxer::ftyp(true).as_slice() => Ok(()),
            (b"moov", 2) => self.moov(at + h.header_len as u64, payload),
            (b"moof", n) if n > 2 && self.at_fragment_end => {
                self.at_fragment_end = false;
                self.moof = Some(self.parse_moof(at, payload)?);
                Ok(())
            }
            _ => Err(err(format!(
                "not a file kvs-dl wrote: unexpected box '{}' at byte {at}",
                bmff::name(&h.kind)
            ))),
        }
    }

    fn moov(&mut self, payload_at: u64, payload: &[u8]) -> Result<(), RecoveryError> {
        let mut mehd_at = None;
        let mut udta = None;
        let mut private = None;
        for child in bmff::children(payload) {
            let (kind, data, off) = child.map_err(err)?;
            let child_at = payload_at + off as u64;
            match &kind {
                b"mvex" => {
                    for c in bmff::children(data) {
                        let (k, _, o) = c.map_err(err)?;
                        if &k == b"mehd" {
                            mehd_at = Some(child_at + 8 + o as u64 + 8 + 4);
                        }
                    }
                }
                b"udta" => udta = Some((child_at, data.len() as u64 + 8)),
                b"uuid" if data.starts_with(&muxer::PRIVATE_UUID) => private = Some(data),
                _ => {}
            }
        }
        let (Some(mehd_at), Some((udta_at, udta_len)), Some(private)) = (mehd_at, udta, private)
        else {
            return Err(err("not a seekable MP4 file kvs-dl wrote"));
        };
        let mut r = Reader::new(&private[16..]);
        if r.u8().map_err(err)? != muxer::PRIVATE_VERSION {
            return Err(err("an MP4 file from another kvs-dl version"));
        }
        let scale = r.u64().map_err(err)?.max(1);
        let shift = (r.u64().map_err(err)? as i64).clamp(0, i64::MAX / 4);
        let slot = r.u32().map_err(err)? as usize;
        let slots = r.take(slot.saturating_mul(2)).map_err(err)?;
        let element = &private[16 + r.pos..];
        let tracks = tracks::parse(element).map_err(err)?;
        if slot != Resume::len(tracks.len()) {
            return Err(err("a private box of the wrong size"));
        }
        let configs = entry::configure(&tracks).map_err(|e| err(e.to_string()))?;
        let (slot0, slot1) = slots.split_at(slot);
        self.resume = [slot0, slot1].map(|s| Resume::decode(s, tracks.len()));
        // In the private box's payload: UUID, version, scale, then the shift, the length of a
        // slot and the slots.
        let shift_at = payload_at + private_offset(payload)? + 16 + 1 + 8;
        let m = &mut self.muxer;
        m.scale = scale;
        m.tracks = tracks;
        m.states = m.track_states(configs);
        m.layout = Some(Layout {
            mehd_at: Some(mehd_at),
            udta_at,
            udta_len,
            shift_at: Some(shift_at),
            resume_at: Some(shift_at + 8 + 4),
        });
        m.shift = Some(shift);
        self.at_fragment_end = true;
        Ok(())
    }

    fn parse_moof(&self, at: u64, payload: &[u8]) -> Result<(u64, u32, Runs), RecoveryError> {
        let mut sequence = 0;
        let mut runs = Runs::new();
        for child in bmff::children(payload) {
            let (kind, data, _) = child.map_err(err)?;
            match &kind {
                b"mfhd" => {
                    sequence = Reader::new(data.get(4..).unwrap_or(&[]))
                        .u32()
                        .map_err(err)?
                }
                b"traf" => runs.push(self.parse_traf(data)?),
                _ => return Err(err(format!("unexpected box in moof at byte {at}"))),
            }
        }
        Ok((at, sequence, runs))
    }

    fn parse_traf(&self, traf: &[u8]) -> Result<(usize, i64, Vec<RunSample>, u64), RecoveryError> {
        let (mut track, mut dts0, mut run) = (None, None, None);
        for child in bmff::children(traf) {
            let (kind, data, _) = child.map_err(err)?;
            let mut r = Reader::new(data);
            let version = r.u8().map_err(err)?;
            let f = r.take(3).map_err(err)?;
            let flags = u32::from_be_bytes([0, f[0], f[1], f[2]]);
            match &kind {
                b"tfhd" => {
                    let id = r.u32().map_err(err)?;
                    let i = self.muxer.states.iter().position(|s| s.cfg.id == id);
                    track = Some(i.ok_or_else(|| err(format!("unknown track {id}")))?);
                }
                b"tfdt" if version == 1 => {
                    dts0 = Some(r.u64().map_err(err)?.min(i64::MAX as u64 / 4) as i64);
                }
                b"trun" => {
                    let count = r.u32().map_err(err)? as usize;
                    if flags & 0x1 == 0 || count > data.len() / 4 {
                        return Err(err("a trun kvs-dl does not write"));
                    }
                    let offset = u64::from(r.u32().map_err(err)?);
                    let mut samples = Vec::with_capacity(count);
                    for _ in 0..count {
                        let duration = match flags & 0x100 {
                            0 => 0,
                            _ => r.u32().map_err(err)?,
                        };
                        let size = match flags & 0x200 {
                            0 => 0,
                            _ => r.u32().map_err(err)?,
                        };
                        let sync = match flags & 0x400 {
                            0 => true,
                            _ => r.u32().map_err(err)? & 0x0001_0000 == 0,
                        };
                        let cto = match flags & 0x800 {
                            0 => 0,
                            _ => r.u32().map_err(err)? as i32,
                        };
                        samples.push(RunSample {
                            size,
                            duration,
                            sync,
                            cto,
                        });
                    }
                    run = Some((samples, offset));
                }
                _ => return Err(err("a traf kvs-dl does not write")),
            }
        }
        match (track, dts0, run) {
            (Some(t), Some(d), Some((s, o))) => Ok((t, d, s, o)),
            _ => Err(err("an incomplete traf")),
        }
    }

    /// An mdat of `size` bytes starts at `self.pos`: the moof before it gets its data.
    fn mdat(&mut self, size: u64) -> Result<(), RecoveryError> {
        let at = self.pos;
        let Some((moof_at, sequence, runs)) = self.moof.take() else {
            return Err(err(format!("an mdat without a moof at byte {at}")));
        };
        let header = if size > u64::from(u32::MAX) { 16 } else { 8 };
        let mut expect = at + header;
        for (_, _, samples, offset) in &runs {
            let src = moof_at + offset;
            if src != expect {
                return Err(err(format!("sample data outside its mdat at byte {at}")));
            }
            expect += samples.iter().map(|s| u64::from(s.size)).sum::<u64>();
        }
        if expect != at + size {
            return Err(err(format!("an mdat of the wrong size at byte {at}")));
        }
        let m = &mut self.muxer;
        for (traf, (t, dts0, samples, offset)) in runs.iter().enumerate() {
            let traf = (traf + 1).min(255) as u8;
            m.states[*t]
                .tables
                .record(*dts0, samples, moof_at + offset, moof_at, traf);
        }
        m.sequence = sequence;
        m.written = at + size;
        m.commit();
        self.fragments += 1;
        self.at_fragment_end = true;
        Ok(())
    }

    /// The writer, ready to finish the file: `bytes` long, holding `fragments` fragments from
    /// `first` to `last`.
    pub fn finish(
        mut self,
        bytes: u64,
        first: Fragment,
        last: Fragment,
        fragments: u64,
    ) -> Result<Muxer, RecoveryError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let whole = self.skip == 0 && self.buf.is_empty() && self.at_fragment_end;
        if !whole || self.fragments == 0 || self.pos != bytes || self.muxer.position() != bytes {
            return Err(err(format!(
                "the file does not end after a whole fragment at byte {bytes}"
            )));
        }
        let m = &mut self.muxer;
        let committed = &mut m.committed;
        committed.first = Some(first);
        committed.last = Some(last);
        committed.fragments = fragments;
        let record = self.resume.iter_mut().enumerate().find_map(|(slot, r)| {
            Some((
                slot,
                r.take_if(|r| (r.bytes, r.fragments) == (bytes, fragments))?,
            ))
        });
        match record {
            Some((slot, r)) => {
                let c = &mut m.committed;
                c.resume_slot = slot;
                c.end_ticks = r.end_ticks;
                c.last_block_ticks = r.last_block_ticks;
                for (st, (delay, spacing)) in m.states.iter_mut().zip(r.tracks) {
                    st.tables.timeline.delay = delay;
                    st.tables.timeline.spacing = spacing;
                }
            }
            // No record of this fragment (the state file lags the file by more than one
            // fragment): finishing is still exact, and what follows is placed from the
            // samples' times.
            None => estimate(m),
        }
        m.commit();
        Ok(self.muxer)
    }
}

/// The placement state estimated from the samples' times, for a file whose [`Resume`] record
/// is lost.
fn estimate(m: &mut Muxer) {
    // The tables are on the shifted timeline; the writer places fragments before the shift.
    let shift = m.shift.unwrap_or(0);
    let end = i128::from(m.duration_ms()) * 1_000_000 / i128::from(m.scale);
    m.committed.end_ticks = (end as i64).saturating_sub(shift);
    // Where the last sample began (not where the media ends: an AAC frame may run past the
    // next fragment's start).
    m.committed.last_block_ticks = m
        .states
        .iter()
        .filter_map(|st| {
            let t = &st.tables.timeline;
            let units = t.last_dts?.saturating_add(t.delay);
            let ticks = i128::from(units) * 1_000_000_000
                / (i128::from(m.scale) * i128::from(st.cfg.timescale.max(1)));
            Some((ticks as i64).saturating_sub(shift))
        })
        .max();
}

/// Where the private box's payload starts in the moov payload.
fn private_offset(moov: &[u8]) -> Result<u64, RecoveryError> {
    for child in bmff::children(moov) {
        let (kind, data, off) = child.map_err(err)?;
        if &kind == b"uuid" && data.starts_with(&muxer::PRIVATE_UUID) {
            return Ok(off as u64 + 8);
        }
    }
    Err(err("no private box"))
}
