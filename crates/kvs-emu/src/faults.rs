//! Scripted failures and the service's per-stream, per-API limits: what a client must survive.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use mkv::ebml::{self, id};
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

/// What happens to one fragment when a body serves it. The fragment is still listed by
/// ListFragments: these are the service's "listed, but not (yet) readable" cases
/// (GetMediaForFragmentList), and a fragment stored damaged (GetMedia).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FragmentFault {
    /// The fragment at `fragment` (an index into [`crate::Stream::fragments`]) answers the
    /// in-band FRAGMENT_NOT_FOUND the first `times` times it is requested, then is served: the
    /// eventual consistency a client meets on a fragment it listed (aws-sdk-js #3217), which a
    /// retry gets past.
    NotFoundFirst { fragment: usize, times: usize },
    /// The fragment at `fragment` always answers FRAGMENT_NOT_FOUND: a loss, which a client must
    /// report rather than retry for ever.
    Lost { fragment: usize },
    /// The fragment at `fragment` is stored damaged: every GetMedia body that serves it sends
    /// its chunk whole in length, tags intact, but with the first byte inside its Cluster (the
    /// header of the Cluster's first child) replaced by `0x00`, which no EBML element ID starts
    /// with. A parser fails inside that fragment, after its start; the next chunk is whole.
    Corrupt { fragment: usize },
}

impl FragmentFault {
    /// The index of the fragment it is about.
    pub fn fragment(&self) -> usize {
        match *self {
            FragmentFault::NotFoundFirst { fragment, .. }
            | FragmentFault::Lost { fragment }
            | FragmentFault::Corrupt { fragment } => fragment,
        }
    }
}

/// One fragment's chunk, given as pieces, as [`FragmentFault::Corrupt`] serves it: the byte
/// after its Cluster's header zeroed. A chunk without a Cluster is returned as it is.
pub(crate) fn corrupt(pieces: Vec<Bytes>) -> Vec<Bytes> {
    let mut chunk = pieces.concat();
    let Some(at) = cluster_data(&chunk) else {
        return pieces;
    };
    chunk[at] = 0x00;
    vec![Bytes::from(chunk)]
}

/// Where the data of the chunk's first Cluster starts: past the EBML header and the Segment's
/// children before it.
fn cluster_data(chunk: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while pos < chunk.len() {
        let h = ebml::read_header(&chunk[pos..]).ok()??;
        pos += h.len;
        match h.id {
            id::CLUSTER => return (pos < chunk.len()).then_some(pos),
            // Into the Segment: its children follow.
            id::SEGMENT => {}
            _ => pos += usize::try_from(h.size?).ok()?,
        }
    }
    None
}

/// The per-stream APIs whose calls the service limits, each with its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    GetMedia,
    ListFragments,
    GetMediaForFragmentList,
}

impl Api {
    pub const ALL: [Api; 3] = [
        Api::GetMedia,
        Api::ListFragments,
        Api::GetMediaForFragmentList,
    ];

    /// The name the service's limit messages use.
    pub fn name(self) -> &'static str {
        match self {
            Api::GetMedia => "GetMedia",
            Api::ListFragments => "ListFragments",
            Api::GetMediaForFragmentList => "GetMediaForFragmentList",
        }
    }

    /// The limits that apply to this API on a stream (DOC-limits): 5 calls/s for each; 3 open
    /// GetMedia bodies, 5 open GetMediaForFragmentList bodies, of which `held` are taken by
    /// another consumer. `enforce` turns the whole table on; `held` alone turns on the
    /// connection limit it reduces, so that the fault works without the rate limit.
    pub fn limits(self, enforce: bool, held: usize) -> Limits {
        let calls_per_second = enforce.then_some(CALLS_PER_SECOND);
        let connections = match self {
            Api::GetMedia => enforce.then_some(GET_MEDIA_CONNECTIONS),
            Api::ListFragments => None,
            Api::GetMediaForFragmentList => {
                (enforce || held > 0).then(|| FRAGMENT_LIST_CONNECTIONS.saturating_sub(held))
            }
        };
        Limits {
            calls_per_second,
            connections,
        }
    }
}

/// Calls allowed per stream per second, for each API.
const CALLS_PER_SECOND: usize = 5;
/// Open GetMedia bodies allowed per stream.
const GET_MEDIA_CONNECTIONS: usize = 3;
/// Open GetMediaForFragmentList bodies allowed per stream.
const FRAGMENT_LIST_CONNECTIONS: usize = 5;

/// What a call book refuses; `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub calls_per_second: Option<usize>,
    pub connections: Option<usize>,
}

/// Why a call was refused by the service's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Rate,
    Connections,
}

/// One stream's calls of one API: how many there were, which were recent, which are still open.
#[derive(Debug, Default)]
pub struct CallBook {
    calls: usize,
    /// Admitted calls in the last second.
    recent: VecDeque<Instant>,
    open: usize,
}

impl CallBook {
    /// Numbers a new call and applies `limits` to it. An admitted call that is answered with a
    /// body must [`CallBook::open`] and later [`CallBook::close`] it.
    pub fn admit(&mut self, now: Instant, limits: Limits) -> (usize, Result<(), Refusal>) {
        let index = self.calls;
        self.calls += 1;
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        if limits
            .calls_per_second
            .is_some_and(|max| self.recent.len() >= max)
        {
            return (index, Err(Refusal::Rate));
        }
        if limits.connections.is_some_and(|max| self.open >= max) {
            return (index, Err(Refusal::Connections));
        }
        if limits.calls_per_second.is_some() {
            self.recent.push_back(now);
        }
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
    fn a_corrupt_chunk_fails_to_parse_inside_its_fragment() {
        let fragments = crate::synthetic(&crate::SyntheticSpec {
            fragments: 2,
            ..crate::SyntheticSpec::default()
        });
        let whole = fragments[0].chunk(0);
        let damaged = corrupt(fragments[0].pieces(0)).concat();
        assert_eq!(damaged.len(), whole.len());
        assert_eq!(
            whole.iter().zip(&damaged).filter(|(a, b)| a != b).count(),
            1,
            "one byte changed"
        );
        let mut parser = mkv::Parser::new();
        parser.push(&damaged);
        parser.push(&fragments[1].chunk(0));
        let mut started = None;
        let err = loop {
            match parser.next_event() {
                Ok(Some(mkv::Event::FragmentStart(f))) => started = Some(f.number),
                Ok(Some(_)) => {}
                Ok(None) => panic!("the damaged chunk parsed"),
                Err(e) => break e,
            }
        };
        assert_eq!(started.as_deref(), Some(fragments[0].number()), "{err}");
        // The next chunk reads again.
        parser.resync();
        let mut ended = Vec::new();
        while let Some(e) = parser.next_event().unwrap() {
            if let mkv::Event::FragmentEnd(f) = e {
                ended.push(f.number);
            }
        }
        assert_eq!(ended, [fragments[1].number()]);
    }

    #[test]
    fn calls_are_numbered_and_unlimited_by_default() {
        let mut book = CallBook::default();
        let now = Instant::now();
        for i in 0..20 {
            assert_eq!(book.admit(now, Limits::default()), (i, Ok(())));
        }
    }

    const GET_MEDIA: Limits = Limits {
        calls_per_second: Some(5),
        connections: Some(3),
    };

    #[test]
    fn five_calls_per_second() {
        let mut book = CallBook::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(book.admit(t0, GET_MEDIA).1, Ok(()));
        }
        assert_eq!(book.admit(t0, GET_MEDIA).1, Err(Refusal::Rate));
        let later = t0 + Duration::from_millis(999);
        assert_eq!(book.admit(later, GET_MEDIA).1, Err(Refusal::Rate));
        assert_eq!(
            book.admit(t0 + Duration::from_secs(1), GET_MEDIA),
            (7, Ok(()))
        );
    }

    #[test]
    fn three_open_bodies() {
        let mut book = CallBook::default();
        let mut t = Instant::now();
        for _ in 0..3 {
            assert_eq!(book.admit(t, GET_MEDIA).1, Ok(()));
            book.open();
            t += Duration::from_secs(1);
        }
        assert_eq!(book.admit(t, GET_MEDIA).1, Err(Refusal::Connections));
        book.close();
        assert_eq!(book.admit(t, GET_MEDIA).1, Ok(()));
    }

    #[test]
    fn each_api_has_its_limits() {
        assert_eq!(Api::GetMedia.limits(true, 0), GET_MEDIA);
        assert_eq!(Api::GetMedia.limits(false, 2), Limits::default());
        assert_eq!(
            Api::ListFragments.limits(true, 0),
            Limits {
                calls_per_second: Some(5),
                connections: None
            }
        );
        assert_eq!(
            Api::GetMediaForFragmentList.limits(true, 2),
            Limits {
                calls_per_second: Some(5),
                connections: Some(3)
            }
        );
        // Another consumer's connections count even when the rate limit is off.
        assert_eq!(
            Api::GetMediaForFragmentList.limits(false, 4),
            Limits {
                calls_per_second: None,
                connections: Some(1)
            }
        );
        assert_eq!(
            Api::GetMediaForFragmentList.limits(false, 0),
            Limits::default()
        );
    }
}
