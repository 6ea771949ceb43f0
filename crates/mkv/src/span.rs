//! How long a fragment's media lasts, from its cluster and block timestamps: the last frame's
//! time plus one frame, per track. Producers often leave DefaultDuration out, so the frame
//! length is the track's average block spacing in the fragment, or DefaultDuration when there
//! is a single block.

use crate::tracks::Track;

#[derive(Debug, Clone, Copy)]
struct TrackSpan {
    number: u64,
    first: i64,
    last: i64,
    blocks: u64,
    default_ticks: Option<i64>,
}

/// Follows one fragment's clusters and blocks. Times are in Segment ticks, relative to the
/// fragment's first cluster.
#[derive(Debug, Clone, Default)]
pub struct Span {
    first_cluster: Option<u64>,
    cluster: i64,
    tracks: Vec<TrackSpan>,
}

impl Span {
    /// A span for a fragment with these tracks and TimestampScale (ns per tick). Blocks of
    /// tracks the Tracks element does not declare are not counted: a list that grew with every
    /// new track number a hostile body invents would have no bound.
    pub fn new(tracks: &[Track], timecode_scale: u64) -> Span {
        let scale = timecode_scale.max(1);
        Span {
            tracks: tracks
                .iter()
                .map(|t| TrackSpan {
                    number: t.number,
                    first: i64::MAX,
                    last: i64::MIN,
                    blocks: 0,
                    default_ticks: t.default_duration.map(|d| (d / scale).max(1) as i64),
                })
                .collect(),
            ..Span::default()
        }
    }

    /// A cluster starts at this (source) timestamp.
    pub fn cluster(&mut self, timecode: u64) {
        let first = *self.first_cluster.get_or_insert(timecode);
        // Timestamps come from the producer: never trust them not to overflow.
        self.cluster = (i128::from(timecode) - i128::from(first))
            .clamp(i128::from(i64::MIN / 2), i128::from(i64::MAX / 2))
            as i64;
    }

    /// Ticks from the fragment's first cluster to the current one.
    pub fn cluster_offset(&self) -> i64 {
        self.cluster
    }

    /// A block of `track` at `timecode` ticks from its cluster. Returns its time from the
    /// fragment's first cluster.
    pub fn block(&mut self, track: u64, timecode: i16) -> i64 {
        let at = self.cluster.saturating_add(i64::from(timecode));
        if let Some(t) = self.tracks.iter_mut().find(|t| t.number == track) {
            t.first = t.first.min(at);
            t.last = t.last.max(at);
            t.blocks += 1;
        }
        at
    }

    /// Ticks from the first cluster to the end of the last frame; 0 without blocks.
    pub fn length(&self) -> i64 {
        self.tracks
            .iter()
            .filter(|t| t.blocks > 0)
            .map(|t| {
                let frame = match (t.blocks, t.default_ticks) {
                    (1, Some(d)) => d,
                    (1, None) => 0,
                    (n, _) => t.last.saturating_sub(t.first) / (n as i64 - 1),
                };
                t.last.saturating_add(frame)
            })
            .max()
            .unwrap_or(0)
            .max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(number: u64, default_duration: Option<u64>) -> crate::tracks::Track {
        crate::tracks::Track {
            number,
            kind: 1,
            codec_id: "V_MPEG4/ISO/AVC".into(),
            codec_private: vec![],
            default_duration,
            width: None,
            height: None,
            sampling_frequency: None,
            channels: None,
            bit_depth: None,
        }
    }

    #[test]
    fn length_is_last_frame_plus_average_spacing() {
        let mut s = Span::new(&[track(1, None), track(2, None)], 1_000_000);
        s.cluster(5000);
        for t in [0i16, 40, 80, 120] {
            s.block(1, t);
        }
        for t in [0i16, 21, 42] {
            s.block(2, t);
        }
        assert_eq!(s.length(), 160);
        s.cluster(5160);
        assert_eq!(s.block(1, 0), 160);
        assert_eq!(s.length(), 200);
    }

    #[test]
    fn blocks_of_undeclared_tracks_are_not_counted() {
        let mut s = Span::new(&[track(1, None)], 1_000_000);
        s.cluster(0);
        s.block(1, 0);
        s.block(1, 40);
        for n in 2..1000 {
            s.block(n, 30_000);
        }
        assert_eq!(s.tracks.len(), 1);
        assert_eq!(s.length(), 80);
    }

    #[test]
    fn a_lone_block_lasts_its_default_duration() {
        let mut s = Span::new(&[track(1, Some(33_333_333))], 1_000_000);
        s.cluster(0);
        s.block(1, 0);
        assert_eq!(s.length(), 33);
    }
}
