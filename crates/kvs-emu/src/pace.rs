//! The per-connection bandwidth cap: a body's pieces leave no faster than the configured rate,
//! as the service caps each GetMedia or GetMediaForFragmentList session (25 MB/s), so a client's
//! parallelism can be measured against a single session.

use std::time::Duration;

use tokio::time::{Instant, sleep_until};

/// Paces one connection. Sending `n` bytes keeps the link busy for `n / rate`; the next piece
/// waits until it is free. Idle time earns no credit, so a live body that waited for a fragment
/// does not burst afterwards.
#[derive(Debug)]
pub struct Pace {
    bytes_per_second: u64,
    free_at: Option<Instant>,
}

impl Pace {
    /// A cap of `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Self {
        Pace {
            bytes_per_second: bytes_per_second.max(1),
            free_at: None,
        }
    }

    /// The largest piece to send at once: about 50 ms at the rate, so that the cap holds over
    /// short windows too, but never below 512 bytes or above `max`.
    pub fn piece(&self, max: usize) -> usize {
        let slot = usize::try_from(self.bytes_per_second / 20).unwrap_or(usize::MAX);
        slot.clamp(512, max.max(512))
    }

    /// Waits until the link is free, then books it for `len` bytes.
    pub async fn wait(&mut self, len: usize) {
        let now = Instant::now();
        let start = self.free_at.map_or(now, |free| free.max(now));
        sleep_until(start).await;
        let busy = Duration::from_secs_f64(len as f64 / self.bytes_per_second as f64);
        self.free_at = Some(start + busy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_about_50_ms() {
        assert_eq!(Pace::new(1_000_000).piece(65536), 50_000);
        assert_eq!(Pace::new(100).piece(65536), 512);
        assert_eq!(Pace::new(100_000_000).piece(65536), 65536);
    }

    #[tokio::test]
    async fn the_rate_holds() {
        let mut pace = Pace::new(100_000);
        let start = Instant::now();
        for _ in 0..5 {
            pace.wait(2000).await;
        }
        // Five pieces of 2000 bytes: the fifth starts after four have taken 20 ms each.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(80), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    }
}
