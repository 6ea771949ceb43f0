//! Scripted failures and the service's per-stream GetMedia limits: what a client must survive.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// What happens to one GetMedia call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallFault {
    /// Served normally.
    None,
    /// 200, then the connection is dropped after this many body bytes (no final chunk: the
    /// client sees an incomplete body, not an end).
    Cut { after_bytes: u64 },
    /// 200, then the connection is dropped inside the `index`-th fragment of this body (0 is
    /// the first), after `at_fraction` (0.0–1.0) of its bytes. Nothing is cut if the body ends
    /// before that fragment.
    CutInFragment { index: usize, at_fraction: f64 },
    /// 500 InternalFailure.
    Status500,
    /// 400 ClientLimitExceededException.
    Throttle,
    /// 400 ConnectionLimitExceededException.
    ConnectionLimit,
    /// 200, then the body pauses for `ms` halfway through its first fragment.
    Stall { ms: u64 },
    /// 200, `after_fragments` fragments, then an in-band error chunk (ERROR_CODE `code`,
    /// ERROR_ID `id`, FRAGMENT_NUMBER of the fragment that would have come next), then the body
    /// ends cleanly.
    InBandError {
        after_fragments: usize,
        id: u64,
        code: String,
    },
    /// 400 InvalidEndpointException (the client should ask GetDataEndpoint again).
    InvalidEndpoint,
    /// 401 NotAuthorizedException.
    NotAuthorized,
    /// 400 InvalidArgumentException with this message.
    InvalidArgument { message: String },
    /// 401 NotAuthorizedException "The security token included in the request is expired", as
    /// KVS answers when the credentials a streaming call was signed with aged out: a client
    /// should resolve the data endpoint again and retry once.
    ExpiredToken,
}

/// GetMedia calls allowed per stream per second.
const CALLS_PER_SECOND: usize = 5;
/// Open GetMedia bodies allowed per stream.
const CONNECTIONS: usize = 3;

/// Why a call was refused by the service's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Rate,
    Connections,
}

/// One stream's GetMedia calls: how many there were, which were recent, which are still open.
#[derive(Debug, Default)]
pub struct CallBook {
    calls: usize,
    /// Admitted calls in the last second.
    recent: VecDeque<Instant>,
    open: usize,
}

impl CallBook {
    /// Numbers a new call and, when `enforce`, applies the limits to it. An admitted call must
    /// be ended with [`CallBook::close`] once it is answered with a body.
    pub fn admit(&mut self, now: Instant, enforce: bool) -> (usize, Result<(), Refusal>) {
        let index = self.calls;
        self.calls += 1;
        if !enforce {
            return (index, Ok(()));
        }
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= CALLS_PER_SECOND {
            return (index, Err(Refusal::Rate));
        }
        if self.open >= CONNECTIONS {
            return (index, Err(Refusal::Connections));
        }
        self.recent.push_back(now);
        (index, Ok(()))
    }

    /// A body starts streaming.
    pub fn open(&mut self) {
        self.open += 1;
    }

    /// A body ended or its connection went away.
    pub fn close(&mut self) {
        self.open = self.open.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_numbered_and_unlimited_by_default() {
        let mut book = CallBook::default();
        let now = Instant::now();
        for i in 0..20 {
            assert_eq!(book.admit(now, false), (i, Ok(())));
        }
    }

    #[test]
    fn five_calls_per_second() {
        let mut book = CallBook::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(book.admit(t0, true).1, Ok(()));
        }
        assert_eq!(book.admit(t0, true).1, Err(Refusal::Rate));
        let later = t0 + Duration::from_millis(999);
        assert_eq!(book.admit(later, true).1, Err(Refusal::Rate));
        assert_eq!(book.admit(t0 + Duration::from_secs(1), true), (7, Ok(())));
    }

    #[test]
    fn three_open_bodies() {
        let mut book = CallBook::default();
        let mut t = Instant::now();
        for _ in 0..3 {
            assert_eq!(book.admit(t, true).1, Ok(()));
            book.open();
            t += Duration::from_secs(1);
        }
        assert_eq!(book.admit(t, true).1, Err(Refusal::Connections));
        book.close();
        assert_eq!(book.admit(t, true).1, Ok(()));
    }
}
