//! A range of the archive as ListFragments describes it: the fragments, sorted and de-duplicated,
//! trimmed to the contract's start and end rules, the gaps between them, and the batches a
//! parallel fetch asks for. Pure: the calls are in `aws`, the fetching in `source::archive`.

use serde::Serialize;

use crate::config::Clock;

/// The longest fragment the service makes: a listing is widened by it at the start, because
/// ListFragments returns the fragments that *start* in the range.
pub const MAX_FRAGMENT_MS: i64 = 10_000;

/// A stretch with no fragment longer than this is a gap (the producer was off).
pub const GAP_MS: i64 = 1_000;

/// How long after a fragment starts it is surely listed: the longest fragment plus the
/// service's "typically less than one second" of eventual consistency, with a margin.
pub const SETTLE_MS: i64 = MAX_FRAGMENT_MS + 2_000;

/// One entry of a ListFragments answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub number: String,
    pub bytes: u64,
    pub server_timestamp_ms: i64,
    pub producer_timestamp_ms: i64,
    /// FragmentLengthInMilliseconds: a hint only, it can be 0.
    pub duration_ms: u64,
}

impl Listed {
    /// Its start on `clock`.
    pub fn at(&self, clock: Clock) -> i64 {
        match clock {
            Clock::Server => self.server_timestamp_ms,
            Clock::Producer => self.producer_timestamp_ms,
        }
    }

    /// Its end on `clock`, as far as the listing says.
    pub fn end(&self, clock: Clock) -> i64 {
        self.at(clock).saturating_add(self.duration_ms as i64)
    }
}

/// A stretch of the range without fragments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Where the fragment before it ends (or the range starts), on the listing's clock.
    pub from_ms: i64,
    /// Where the fragment after it starts.
    pub to_ms: i64,
    pub after_fragment: Option<String>,
    pub before_fragment: Option<String>,
}

/// Sorts a listing into stream order (fragment numbers grow with ingestion, which is the
/// order GetMedia delivers) and drops the entries listed twice.
pub fn sort(mut listed: Vec<Listed>) -> Vec<Listed> {
    listed.sort_by(|a, b| mkv::cmp_fragment_numbers(&a.number, &b.number));
    listed.dedup_by(|a, b| mkv::cmp_fragment_numbers(&a.number, &b.number).is_eq());
    listed
}

/// Keeps what docs/cli.md keeps of a sorted listing: from the fragment that contains `start`
/// (or the first one after it where none does), up to the last one before `end`.
/// `start: None` is the earliest fragment.
pub fn trim(
    listed: Vec<Listed>,
    clock: Clock,
    start: Option<i64>,
    end: Option<i64>,
) -> Vec<Listed> {
    let first = match start {
        None => 0,
        Some(t) => listed
            .iter()
            .position(|f| f.at(clock) <= t && t < f.end(clock))
            .or_else(|| listed.iter().position(|f| f.at(clock) > t))
            .unwrap_or(listed.len()),
    };
    let mut kept: Vec<Listed> = listed.into_iter().skip(first).collect();
    if let Some(end) = end
        && let Some(stop) = kept.iter().position(|f| f.at(clock) >= end)
    {
        // The first fragment at or after --end ends the run: neither it nor anything after.
        kept.truncate(stop);
    }
    kept
}

/// The stretches of more than [`GAP_MS`] between consecutive fragments.
pub fn gaps(listed: &[Listed], clock: Clock) -> Vec<Gap> {
    listed
        .windows(2)
        .filter_map(|w| {
            let (a, b) = (&w[0], &w[1]);
            let from = a.end(clock);
            let to = b.at(clock);
            (to - from > GAP_MS).then(|| Gap {
                from_ms: from,
                to_ms: to,
                after_fragment: Some(a.number.clone()),
                before_fragment: Some(b.number.clone()),
            })
        })
        .collect()
}

/// The service's limit of fragments in one GetMediaForFragmentList call.
pub const MAX_BATCH_FRAGMENTS: usize = 1000;

/// Plans contiguous batches of about `target` bytes each (design-notes §3.2): ~64 MB for a
/// large range, `max(min, total / 5)` for a smaller one so that every connection gets work
/// and no call is shorter than about a second; never more than 1000 fragments.
pub fn batches(listed: &[Listed], min: u64, max: u64) -> Vec<std::ops::Range<usize>> {
    let total: u64 = listed.iter().map(|f| f.bytes).sum();
    let target = (total / 5).clamp(min, max.max(min)).max(1);
    let mut out = Vec::new();
    let mut from = 0;
    let mut bytes = 0u64;
    for (i, f) in listed.iter().enumerate() {
        bytes += f.bytes;
        if bytes >= target || i + 1 - from >= MAX_BATCH_FRAGMENTS {
            out.push(from..i + 1);
            from = i + 1;
            bytes = 0;
        }
    }
    if from < listed.len() {
        out.push(from..listed.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(n: u64, at: i64, len: u64) -> Listed {
        Listed {
            number: n.to_string(),
            bytes: 100,
            server_timestamp_ms: at + 5,
            producer_timestamp_ms: at,
            duration_ms: len,
        }
    }

    #[test]
    fn sorted_by_number_and_deduplicated() {
        let listed = sort(vec![f(10, 20, 2), f(9, 18, 2), f(10, 20, 2), f(100, 22, 2)]);
        let numbers: Vec<_> = listed.iter().map(|f| f.number.as_str()).collect();
        assert_eq!(numbers, ["9", "10", "100"]);
    }

    #[test]
    fn trimmed_to_the_contract() {
        let all: Vec<Listed> = (0..6).map(|i| f(i, 1000 * i as i64, 1000)).collect();
        let numbers = |v: Vec<Listed>| v.into_iter().map(|f| f.number).collect::<Vec<_>>();
        let p = Clock::Producer;
        // The fragment containing the start is kept; the first at or after the end is not.
        assert_eq!(
            numbers(trim(all.clone(), p, Some(1500), Some(3500))),
            ["1", "2", "3"]
        );
        assert_eq!(
            numbers(trim(all.clone(), p, Some(1000), Some(3000))),
            ["1", "2"]
        );
        assert_eq!(
            numbers(trim(all.clone(), p, None, Some(1))),
            ["0", "1"][..1].to_vec()
        );
        // In a gap: the first after it.
        let gappy = vec![f(0, 0, 1000), f(1, 5000, 1000)];
        assert_eq!(numbers(trim(gappy, p, Some(2000), None)), ["1"]);
        // A length of 0 (unknown) does not contain its start time... except exactly at it.
        let unknown = vec![f(0, 0, 0), f(1, 2000, 0)];
        assert_eq!(numbers(trim(unknown, p, Some(1000), None)), ["1"]);
    }

    #[test]
    fn gaps_are_stretches_without_fragments() {
        let listed = vec![f(0, 0, 1000), f(1, 1000, 1000), f(2, 9000, 1000)];
        let g = gaps(&listed, Clock::Producer);
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].from_ms, g[0].to_ms), (2000, 9000));
        assert_eq!(g[0].after_fragment.as_deref(), Some("1"));
    }

    #[test]
    fn batches_by_size() {
        let listed: Vec<Listed> = (0..20).map(|i| f(i, 0, 0)).collect();
        // 2000 bytes, min 300: 400 per batch.
        let b = batches(&listed, 300, 64_000);
        assert_eq!(b.len(), 5);
        assert_eq!(b[0], 0..4);
        // Large ranges: capped by max.
        let b = batches(&listed, 100, 200);
        assert_eq!(b.len(), 10);
        assert!(batches(&[], 1, 1).is_empty());
        let many: Vec<Listed> = (0..2500).map(|i| f(i, 0, 0)).collect();
        let b = batches(&many, u64::MAX / 2, u64::MAX / 2);
        assert_eq!(
            b.iter().map(|r| r.len()).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
    }
}
