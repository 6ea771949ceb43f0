//! Where a fragment goes on the timeline of the file it is written into: the rule every muxer
//! of KVS fragments keeps (Matroska here, MP4 in the `mp4` crate), so that the same fragments
//! get the same timestamps whatever the format.

use crate::Millis;

/// A fragment's start in a file, in ticks of the file's TimestampScale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub start_ticks: i64,
    /// Its producer timestamp did not move past what was written (the producer's clock went
    /// back, or fragments overlap): it follows on at the end instead, and counts as
    /// non-monotonic.
    pub moved: bool,
}

/// Places a fragment with producer time `producer_ms` in a file whose first fragment had
/// `first_ms` (`None`: this is the first), whose TimestampScale is `scale` ns, and whose
/// written blocks reach `last_block_ticks` and end at `end_ticks`. Gaps stay gaps: a fragment
/// starts at its own time from the file's first, unless that would not be after the last
/// block written.
pub fn place(
    producer_ms: Millis,
    first_ms: Option<Millis>,
    scale: u64,
    last_block_ticks: Option<i64>,
    end_ticks: i64,
) -> Placement {
    let offset_ms = producer_ms.saturating_sub(first_ms.unwrap_or(producer_ms));
    // Clamped far inside i64, so that the sums later made with it cannot overflow.
    let wanted = (i128::from(offset_ms) * 1_000_000 / i128::from(scale.max(1)))
        .clamp(i128::from(i64::MIN / 4), i128::from(i64::MAX / 4)) as i64;
    match last_block_ticks {
        Some(last) if wanted <= last => Placement {
            start_ticks: end_ticks,
            moved: true,
        },
        _ => Placement {
            start_ticks: wanted.max(0),
            moved: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_keep_their_gaps_and_a_clock_that_goes_back_follows_on() {
        // Milliseconds as ticks (TimestampScale 1,000,000 ns).
        let ms = 1_000_000;
        assert_eq!(place(5_000, None, ms, None, 0).start_ticks, 0, "the first");
        let later = place(9_000, Some(5_000), ms, Some(1_900), 2_000);
        assert_eq!(
            (later.start_ticks, later.moved),
            (4_000, false),
            "a gap stays"
        );
        let back = place(5_500, Some(5_000), ms, Some(4_900), 5_000);
        assert_eq!((back.start_ticks, back.moved), (5_000, true), "follows on");
        let before = place(1_000, Some(5_000), ms, None, 0);
        assert_eq!(before.start_ticks, 0, "never before the file's start");
        let far = place(i64::MAX, Some(i64::MIN), 1, None, 0);
        assert_eq!(far.start_ticks, i64::MAX / 4, "clamped, not wrapped");
    }
}
