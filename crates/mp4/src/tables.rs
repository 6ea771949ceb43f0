//! What a track keeps about the samples already written: the decode timeline (to place the
//! next run), and, for faststart and the index, compact per-sample tables: 4 bytes of size and
//! 4 of duration per sample, plus one entry per change of composition offset, per video sync
//! sample, per run (chunk) and per indexed moof.

/// One sample of a run, as its `trun` entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSample {
    pub size: u32,
    pub duration: u32,
    pub sync: bool,
    pub cto: i32,
}

/// A run of one track's samples stored contiguously: a chunk of the progressive file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub samples: u32,
    pub bytes: u64,
    /// Where its bytes are in the fragmented file.
    pub src: u64,
}

/// The timeline values that a discarded fragment must not change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeline {
    /// Decode time of the last sample written, in track units.
    pub last_dts: Option<i64>,
    pub first_dts: Option<i64>,
    /// End of the latest presentation (pts + duration), in track units.
    pub end: i64,
    /// Reorder delay found so far (decode times = sorted presentation times − delay).
    pub delay: i64,
    /// Average sample spacing of the last run, for the last sample of the next.
    pub spacing: Option<i64>,
    pub samples: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub keep_samples: bool,
    pub keep_index: bool,
    pub video: bool,
    pub timeline: Timeline,
    pub sizes: Vec<u32>,
    pub durations: Vec<u32>,
    /// Run-length composition offsets: (count, offset).
    pub ctts: Vec<(u32, i32)>,
    /// 1-based numbers of the sync samples (video only; audio samples all are).
    pub syncs: Vec<u32>,
    pub chunks: Vec<Chunk>,
    /// (presentation time, moof offset, traf number) of moofs starting with a sync sample.
    pub tfra: Vec<(u64, u64, u8)>,
}

/// Where the tables stood at the last whole fragment.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    timeline: Timeline,
    sizes: usize,
    last_duration: Option<u32>,
    ctts: usize,
    ctts_last: Option<(u32, i32)>,
    syncs: usize,
    chunks: usize,
    tfra: usize,
}

impl Tables {
    pub fn mark(&self) -> Mark {
        Mark {
            timeline: self.timeline,
            sizes: self.sizes.len(),
            last_duration: self.durations.last().copied(),
            ctts: self.ctts.len(),
            ctts_last: self.ctts.last().copied(),
            syncs: self.syncs.len(),
            chunks: self.chunks.len(),
            tfra: self.tfra.len(),
        }
    }

    pub fn rollback(&mut self, m: &Mark) {
        self.timeline = m.timeline;
        self.sizes.truncate(m.sizes);
        self.durations.truncate(m.sizes);
        if let (Some(d), Some(last)) = (m.last_duration, self.durations.last_mut()) {
            *last = d;
        }
        self.ctts.truncate(m.ctts);
        if let (Some(c), Some(last)) = (m.ctts_last, self.ctts.last_mut()) {
            *last = c;
        }
        self.syncs.truncate(m.syncs);
        self.chunks.truncate(m.chunks);
        self.tfra.truncate(m.tfra);
    }

    /// Records a run written as `trun` entries from decode time `dts0`, its bytes at `src`,
    /// in the moof at `moof` (its `traf`-th traf, 1-based).
    pub fn record(&mut self, dts0: i64, samples: &[RunSample], src: u64, moof: u64, traf: u8) {
        let Some(first) = samples.first() else {
            return;
        };
        let t = &mut self.timeline;
        if let (true, Some(last), Some(d)) =
            (self.keep_samples, t.last_dts, self.durations.last_mut())
        {
            // The last run's final duration was an estimate: now the real gap is known.
            *d = dts0.saturating_sub(last).clamp(0, i64::from(u32::MAX)) as u32;
        }
        if self.keep_index && first.sync {
            let pts = dts0.saturating_add(i64::from(first.cto)).max(0) as u64;
            self.tfra.push((pts, moof, traf));
        }
        t.first_dts.get_or_insert(dts0);
        let mut dts = dts0;
        let mut bytes = 0u64;
        for (i, s) in samples.iter().enumerate() {
            t.end = t.end.max(
                dts.saturating_add(i64::from(s.cto))
                    .saturating_add(i64::from(s.duration)),
            );
            t.last_dts = Some(dts);
            bytes += u64::from(s.size);
            if self.keep_samples {
                self.sizes.push(s.size);
                self.durations.push(s.duration);
                match self.ctts.last_mut() {
                    Some((n, o)) if *o == s.cto && *n < u32::MAX => *n += 1,
                    _ => self.ctts.push((1, s.cto)),
                }
                if self.video && s.sync {
                    self.syncs
                        .push((self.sizes.len()).min(u32::MAX as usize) as u32);
                }
            }
            if i + 1 < samples.len() {
                dts = dts.saturating_add(i64::from(s.duration));
            }
        }
        t.samples += samples.len() as u64;
        if self.keep_samples {
            self.chunks.push(Chunk {
                samples: samples.len().min(u32::MAX as usize) as u32,
                bytes,
                src,
            });
        }
    }
}
