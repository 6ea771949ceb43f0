//! When each fragment of a stream exists: live streams receive their fragments over time, on a
//! clock mapped from their server timestamps; every stream forgets fragments past its retention.
//! Everything here is a pure function of the time elapsed since the emulator started.

use std::time::Duration;

use crate::config::Stream;
use crate::fragment::StoredFragment;

#[derive(Debug, Clone)]
pub struct Timeline {
    /// When each fragment arrives, after the emulator's start (never decreasing; all zero for an
    /// archive stream).
    arrivals: Vec<Duration>,
    /// Stream time (server epoch ms) at the emulator's start, and how fast it runs.
    clock: Option<(i64, f64)>,
    /// Stream time of an archive stream: the end of its last fragment.
    archive_now_ms: i64,
    /// How many fragments the stream held before the emulator started (all of an archive, a
    /// live stream's backlog): they were ingested long ago, so listing sees them at once.
    settled: usize,
}

impl Timeline {
    pub fn new(stream: &Stream) -> Self {
        let fragments = &stream.fragments;
        let archive_now_ms = fragments
            .iter()
            .map(|f| f.server_ms().saturating_add_unsigned(f.duration_ms()))
            .max()
            .unwrap_or(0);
        let Some(live) = &stream.live else {
            return Timeline {
                arrivals: vec![Duration::ZERO; fragments.len()],
                clock: None,
                archive_now_ms,
                settled: fragments.len(),
            };
        };
        let speed = live.speed;
        let origin = fragments
            .get(live.backlog.min(fragments.len().saturating_sub(1)))
            .map_or(0, StoredFragment::server_ms);
        let mut latest = Duration::ZERO;
        let arrivals = fragments
            .iter()
            .map(|f| {
                let ahead_ms = f.server_ms().saturating_sub(origin).max(0) as f64 / speed;
                latest = latest
                    .max(Duration::try_from_secs_f64(ahead_ms / 1000.0).unwrap_or(Duration::MAX));
                latest
            })
            .collect();
        Timeline {
            arrivals,
            clock: Some((origin, speed)),
            archive_now_ms,
            settled: live.backlog.min(fragments.len()),
        }
    }

    /// When fragment `index` arrives (or arrived), after the emulator's start.
    pub fn arrival(&self, index: usize) -> Option<Duration> {
        self.arrivals.get(index).copied()
    }

    /// How many fragments have arrived `elapsed` after the emulator's start.
    pub fn arrived(&self, elapsed: Duration) -> usize {
        self.arrivals.partition_point(|&a| a <= elapsed)
    }

    /// How many fragments the archived-media APIs see `elapsed` after the emulator's start: those
    /// that arrived at least `delay` ago, and every one the stream held before it started.
    pub fn visible(&self, elapsed: Duration, delay: Duration) -> usize {
        let seen = self
            .arrivals
            .partition_point(|&a| a.saturating_add(delay) <= elapsed);
        seen.max(self.settled)
    }

    /// The stream's own clock (server epoch ms).
    fn now_ms(&self, elapsed: Duration) -> i64 {
        match self.clock {
            Some((origin, speed)) => {
                origin.saturating_add((elapsed.as_secs_f64() * 1000.0 * speed) as i64)
            }
            None => self.archive_now_ms,
        }
    }

    /// Index of the oldest fragment still stored: those whose server timestamp is more than
    /// `retention_ms` before the stream's clock are gone.
    pub fn oldest(
        &self,
        fragments: &[StoredFragment],
        elapsed: Duration,
        retention_ms: Option<u64>,
    ) -> usize {
        let Some(retention) = retention_ms else {
            return 0;
        };
        let horizon = self.now_ms(elapsed).saturating_sub_unsigned(retention);
        fragments
            .iter()
            .position(|f| f.server_ms() >= horizon)
            .unwrap_or(fragments.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Live;
    use crate::{SyntheticSpec, synthetic};

    fn fragments() -> Vec<StoredFragment> {
        synthetic(&SyntheticSpec {
            fragments: 5,
            frames_per_fragment: 1,
            ..SyntheticSpec::default()
        })
    }

    #[test]
    fn archive_streams_have_everything_at_once() {
        let stream = Stream::archive("a", fragments());
        let timeline = Timeline::new(&stream);
        assert_eq!(timeline.arrived(Duration::ZERO), 5);
        // The archive's clock is the end of its last fragment (10 s of media): 4 s of
        // retention keeps the fragments starting at 6 s and 8 s.
        assert_eq!(
            timeline.oldest(&stream.fragments, Duration::ZERO, Some(4000)),
            3
        );
        assert_eq!(timeline.oldest(&stream.fragments, Duration::ZERO, None), 0);
        // Stored before the emulator started: visible at once, whatever the delay.
        assert_eq!(timeline.visible(Duration::ZERO, Duration::from_secs(5)), 5);
    }

    #[test]
    fn live_streams_arrive_on_their_server_clock() {
        let mut stream = Stream::live("l", fragments(), 4.0);
        let timeline = Timeline::new(&stream);
        assert_eq!(timeline.arrived(Duration::ZERO), 1);
        assert_eq!(timeline.arrival(1), Some(Duration::from_millis(500)));
        assert_eq!(timeline.arrived(Duration::from_millis(999)), 2);
        assert_eq!(timeline.arrived(Duration::from_secs(10)), 5);
        assert_eq!(timeline.arrival(5), None);
        // After 2 s at speed 4 the clock is 8 s past the first fragment.
        let later = Duration::from_secs(2);
        assert_eq!(timeline.oldest(&stream.fragments, later, Some(3000)), 3);

        stream.live = Some(Live {
            speed: 1.0,
            backlog: 3,
        });
        let timeline = Timeline::new(&stream);
        assert_eq!(timeline.arrived(Duration::ZERO), 4);
        assert_eq!(timeline.arrival(4), Some(Duration::from_secs(2)));
        // The backlog is visible at once; fragment 3 arrived at the start, 4 at 2 s.
        let delay = Duration::from_millis(500);
        assert_eq!(timeline.visible(Duration::ZERO, delay), 3);
        assert_eq!(timeline.visible(Duration::from_millis(500), delay), 4);
        assert_eq!(timeline.visible(Duration::from_millis(2499), delay), 4);
        assert_eq!(timeline.visible(Duration::from_millis(2500), delay), 5);
        assert_eq!(timeline.visible(Duration::ZERO, Duration::ZERO), 4);
    }
}
