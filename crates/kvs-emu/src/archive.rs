//! The archived-media APIs (kvs-protocol.md §6.1, §6.2): ListFragments lists the fragments whose
//! start lies in a time range, in no order and in pages; GetMediaForFragmentList sends the chunks
//! of the fragments it names, in the order named.
//!
//! Both see the stream as the eventually consistent archive does: fragments that arrived at
//! least the stream's `visibility_delay` ago and are still within retention.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream as FutureStream;
use serde_json::Value;
use tokio::time::Instant;

use crate::error::{ApiError, null_member};
use crate::faults::{Api, FragmentFault};
use crate::fragment::StoredFragment;
use crate::java_double;
use crate::pace::Pace;
use crate::requests::BodyEnd;
use crate::selector::{epoch_ms, is_fragment_number, pattern};
use crate::server::{Shared, StreamState, json_response, member, require_object};
use crate::session::PIECE;
use crate::tags;
use crate::token;

/// ERROR_ID and ERROR_CODE of a fragment GetMediaForFragmentList cannot serve. The id is 3000,
/// as in the one real body observed (aws-sdk-js #3217), where GetMedia's table says 4000.
const FRAGMENT_NOT_FOUND: (u64, &str) = (3000, "FRAGMENT_NOT_FOUND");
/// Fragment numbers per GetMediaForFragmentList call (the model's list bounds, DOC-limits' hard
/// FragmentLimitExceeded).
const MAX_FRAGMENTS: usize = 1000;
/// ListFragments' MaxResults bounds.
const MAX_RESULTS: i64 = 1000;
/// ListFragments' page size when MaxResults is not given. The documentation gives none; 100 is
/// what the AWS APIs with this range commonly use. Clients should not depend on it.
const DEFAULT_MAX_RESULTS: usize = 100;
/// The first field of a ListFragments NextToken.
const TOKEN_KIND: &str = "ListFragments/1";

/// Which timestamp a FragmentSelector compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Clock {
    Producer,
    Server,
}

impl Clock {
    fn name(self) -> &'static str {
        match self {
            Clock::Producer => "PRODUCER_TIMESTAMP",
            Clock::Server => "SERVER_TIMESTAMP",
        }
    }

    fn of(self, fragment: &StoredFragment) -> i64 {
        match self {
            Clock::Producer => fragment.producer_ms(),
            Clock::Server => fragment.server_ms(),
        }
    }
}

/// A FragmentSelector: fragments whose start on `clock` is in `start_ms..=end_ms`. The service
/// includes both ends and looks at the start only: a fragment that began before `start_ms` is
/// not listed even if it runs past it (the model's FragmentSelector example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Range {
    clock: Clock,
    start_ms: i64,
    end_ms: i64,
}

impl Range {
    fn holds(&self, fragment: &StoredFragment) -> bool {
        (self.start_ms..=self.end_ms).contains(&self.clock.of(fragment))
    }

    /// Reads `FragmentSelector`; `None` when the request has none (then every fragment is
    /// listed: the model requires a selector only on a first page, and says nothing of a first
    /// page without one).
    fn parse(body: &Value) -> Result<Option<Range>, ApiError> {
        let Some(selector) = member(body, "FragmentSelector") else {
            return Ok(None);
        };
        let path = "fragmentSelector";
        let kind = member(selector, "FragmentSelectorType")
            .ok_or_else(|| invalid(null_member(&format!("{path}.fragmentSelectorType"))))?;
        let clock = match kind.as_str() {
            Some("PRODUCER_TIMESTAMP") => Clock::Producer,
            Some("SERVER_TIMESTAMP") => Clock::Server,
            _ => {
                return Err(invalid(format!(
                    "1 validation error detected: Value {kind} at \
                     '{path}.fragmentSelectorType' failed to satisfy constraint: Member must \
                     satisfy enum value set: [PRODUCER_TIMESTAMP, SERVER_TIMESTAMP]"
                )));
            }
        };
        let range = member(selector, "TimestampRange")
            .ok_or_else(|| invalid(null_member(&format!("{path}.timestampRange"))))?;
        let time = |name: &str, field: &str| {
            let field = format!("{path}.timestampRange.{field}");
            let value = member(range, name).ok_or_else(|| invalid(null_member(&field)))?;
            epoch_ms(value).ok_or_else(|| {
                invalid(format!(
                    "{name} {value} is not a timestamp in epoch seconds."
                ))
            })
        };
        let start_ms = time("StartTimestamp", "startTimestamp")?;
        let end_ms = time("EndTimestamp", "endTimestamp")?;
        if start_ms > end_ms {
            return Err(invalid(
                "StartTimestamp must not be later than EndTimestamp.",
            ));
        }
        Ok(Some(Range {
            clock,
            start_ms,
            end_ms,
        }))
    }
}

/// Where a listing is: what it selects, the moment whose view of the stream it pages through
/// (so that fragments becoming visible or expiring between pages neither repeat nor vanish),
/// and how many results were already returned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    stream: String,
    range: Option<Range>,
    /// Since the emulator's start, in whole milliseconds (as the token carries it).
    at: Duration,
    offset: usize,
}

impl Cursor {
    fn token(&self) -> String {
        let (clock, start, end) = match self.range {
            Some(r) => (r.clock.name(), r.start_ms, r.end_ms),
            None => ("ALL", 0, 0),
        };
        token::encode(&[
            TOKEN_KIND.to_owned(),
            self.stream.clone(),
            clock.to_owned(),
            start.to_string(),
            end.to_string(),
            self.at.as_millis().to_string(),
            self.offset.to_string(),
        ])
    }

    /// The cursor a NextToken holds; `None` when it is not one this emulator gave out.
    fn read(next_token: &str) -> Option<Cursor> {
        let fields = token::decode(next_token)?;
        let [kind, stream, clock, start, end, at, offset] = <[String; 7]>::try_from(fields).ok()?;
        if kind != TOKEN_KIND {
            return None;
        }
        let clock = match clock.as_str() {
            "ALL" => None,
            "PRODUCER_TIMESTAMP" => Some(Clock::Producer),
            "SERVER_TIMESTAMP" => Some(Clock::Server),
            _ => return None,
        };
        let range = match clock {
            None => None,
            Some(clock) => Some(Range {
                clock,
                start_ms: start.parse().ok()?,
                end_ms: end.parse().ok()?,
            }),
        };
        Some(Cursor {
            stream,
            range,
            at: Duration::from_millis(at.parse().ok()?),
            offset: offset.parse().ok()?,
        })
    }
}

/// `POST /listFragments`.
pub fn list_fragments(
    shared: &Arc<Shared>,
    body: &Value,
    entry: usize,
) -> Result<Response, ApiError> {
    require_object(body)?;
    let range = Range::parse(body)?;
    let max_results = match member(body, "MaxResults") {
        None => DEFAULT_MAX_RESULTS,
        Some(value) => value
            .as_i64()
            .filter(|n| (1..=MAX_RESULTS).contains(n))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "1 validation error detected: Value {value} at 'maxResults' failed to \
                     satisfy constraint: Member must have value between 1 and {MAX_RESULTS}"
                ))
            })?,
    };
    let next_token = match member(body, "NextToken") {
        None => None,
        Some(Value::String(t)) if t.is_empty() => None,
        Some(Value::String(t)) => Some(t.as_str()),
        Some(other) => {
            return Err(invalid(pattern("nextToken", other, "[a-zA-Z0-9+/]+={0,2}")));
        }
    };
    let index = shared.find_stream(body)?;
    let now = Instant::now();
    shared.admit(index, Api::ListFragments, entry, now)?;
    let stream = &shared.streams[index];

    let cursor = match next_token {
        None => Cursor {
            stream: stream.spec.name.clone(),
            range,
            at: Duration::from_millis(
                u64::try_from((now - shared.started).as_millis()).unwrap_or(u64::MAX),
            ),
            offset: 0,
        },
        Some(t) => {
            let cursor = Cursor::read(t)
                .filter(|c| c.stream == stream.spec.name)
                .ok_or_else(|| invalid("NextToken is not valid."))?;
            // A client that pages with a different selector than it started with has a bug
            // the service would not answer sensibly either.
            if range.is_some() && range != cursor.range {
                return Err(invalid(
                    "The FragmentSelector does not match the one the NextToken was issued for.",
                ));
            }
            cursor
        }
    };

    let listed = listing(stream, cursor.range, cursor.at);
    let end = cursor.offset.saturating_add(max_results).min(listed.len());
    let page = listed.get(cursor.offset..end).unwrap_or_default();
    let fragments: Vec<String> = page
        .iter()
        .map(|&i| fragment_json(&stream.spec.fragments[i]))
        .collect();
    let mut json = format!("{{\"Fragments\":[{}]", fragments.join(","));
    if end < listed.len() {
        let next = Cursor {
            offset: end,
            ..cursor
        };
        json.push_str(&format!(",\"NextToken\":{}", Value::from(next.token())));
    }
    json.push('}');
    Ok(json_response(json))
}

/// The fragment indices a listing returns, in the order it returns them: those visible at
/// `at` (since the emulator's start) whose start lies in `range`, shuffled unless the stream
/// says not to.
fn listing(stream: &StreamState, range: Option<Range>, at: Duration) -> Vec<usize> {
    let fragments = &stream.spec.fragments;
    let (oldest, visible) = held(stream, at);
    let mut found: Vec<usize> = (oldest..visible)
        .filter(|&i| range.is_none_or(|r| r.holds(&fragments[i])))
        .collect();
    if stream.spec.shuffle_listings {
        let mut hasher = DefaultHasher::new();
        (&stream.spec.name, range).hash(&mut hasher);
        shuffle(&mut found, hasher.finish());
    }
    found
}

/// The fragments the archived-media APIs see at `at`: `oldest..visible`.
fn held(stream: &StreamState, at: Duration) -> (usize, usize) {
    let spec = &stream.spec;
    let oldest = stream
        .timeline
        .oldest(&spec.fragments, at, spec.retention_ms);
    let visible = stream
        .timeline
        .visible(at, spec.visibility_delay)
        .min(spec.fragments.len());
    (oldest, visible)
}

/// Fisher–Yates with a SplitMix64 generator: the same seed gives the same order on every page.
fn shuffle(items: &mut [usize], seed: u64) {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// One `Fragment` of a ListFragments answer, timestamps in the service's Java-double notation.
/// FragmentSizeInBytes is the size of the chunk GetMediaForFragmentList sends for it.
fn fragment_json(fragment: &StoredFragment) -> String {
    format!(
        "{{\"FragmentNumber\":{},\"FragmentSizeInBytes\":{},\"ProducerTimestamp\":{},\
         \"ServerTimestamp\":{},\"FragmentLengthInMilliseconds\":{}}}",
        Value::from(fragment.number()),
        fragment.archived_size(),
        java_double::seconds(fragment.producer_ms()),
        java_double::seconds(fragment.server_ms()),
        fragment.duration_ms(),
    )
}

/// `POST /getMediaForFragmentList`.
pub fn get_media_for_fragment_list(
    shared: &Arc<Shared>,
    body: &Value,
    entry: usize,
) -> Result<Response, ApiError> {
    require_object(body)?;
    let numbers = requested_numbers(body)?;
    let index = shared.find_stream(body)?;
    let stream = &shared.streams[index];
    // Numbers of another stream's fragments: the service answers this (parser-library #50).
    let foreign: Vec<&str> = numbers
        .iter()
        .map(String::as_str)
        .filter(|n| stream.fragment_index(n).is_none())
        .filter(|n| shared.streams.iter().any(|s| s.fragment_index(n).is_some()))
        .collect();
    if !foreign.is_empty() {
        return Err(invalid(format!(
            "Fragment numbers are invalid : {}",
            foreign.join(", ")
        )));
    }
    let now = Instant::now();
    shared.admit(index, Api::GetMediaForFragmentList, entry, now)?;

    let (oldest, visible) = held(stream, now - shared.started);
    let chunks = numbers
        .iter()
        .map(|number| {
            let served = stream
                .fragment_index(number)
                .filter(|i| (oldest..visible).contains(i))
                .filter(|&i| !withheld(stream, i));
            match served {
                Some(i) => Chunk::Fragment(stream.spec.fragments[i].archived_pieces()),
                None => {
                    let (id, code) = FRAGMENT_NOT_FOUND;
                    Chunk::NotFound(tags::error_chunk(code, id, Some(number)).into())
                }
            }
        })
        .collect();
    let body = FragmentListBody::new(Arc::clone(shared), index, entry, chunks);
    let mut response = Body::from_stream(body.into_stream()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    Ok(response)
}

/// The `Fragments` member, checked against the model: 1 to 1000 strings of digits.
fn requested_numbers(body: &Value) -> Result<Vec<String>, ApiError> {
    let list = member(body, "Fragments").ok_or_else(|| invalid(null_member("fragments")))?;
    let constraint = |what: &str| {
        invalid(format!(
            "1 validation error detected: Value at 'fragments' failed to satisfy constraint: \
             {what}"
        ))
    };
    let list = list
        .as_array()
        .ok_or_else(|| constraint("Member must be a list of fragment numbers"))?;
    if list.is_empty() {
        return Err(constraint(
            "Member must have length greater than or equal to 1",
        ));
    }
    if list.len() > MAX_FRAGMENTS {
        return Err(constraint(&format!(
            "Member must have length less than or equal to {MAX_FRAGMENTS}"
        )));
    }
    list.iter()
        .map(|n| {
            n.as_str()
                .filter(|n| is_fragment_number(n))
                .map(str::to_owned)
                .ok_or_else(|| invalid(pattern("fragments.member", n, "^[0-9]+$")))
        })
        .collect()
}

/// Whether a [`FragmentFault`] keeps fragment `index` from this request (counting the request).
fn withheld(stream: &StreamState, index: usize) -> bool {
    let faults = stream
        .spec
        .fragment_faults
        .iter()
        .filter(|f| f.fragment() == index);
    let mut asked = None;
    for fault in faults {
        match fault {
            FragmentFault::Lost { .. } => return true,
            // GetMedia's fault: the archived-media APIs serve the fragment whole.
            FragmentFault::Corrupt { .. } => {}
            FragmentFault::NotFoundFirst { times, .. } => {
                let before = *asked.get_or_insert_with(|| stream.ask(index));
                if before < *times {
                    return true;
                }
            }
        }
    }
    false
}

/// What the body says about one requested fragment.
enum Chunk {
    /// The fragment's chunk, as a few shared buffers.
    Fragment(Vec<Bytes>),
    /// An in-band FRAGMENT_NOT_FOUND chunk.
    NotFound(Bytes),
}

/// One GetMediaForFragmentList body as it streams: the chunks in request order, paced by the
/// stream's bandwidth cap, holding one of the stream's connections until it ends.
struct FragmentListBody {
    shared: Arc<Shared>,
    stream: usize,
    /// This call's entry in the request log.
    entry: usize,
    queue: VecDeque<Bytes>,
    /// Body offsets where the fragment chunks (not the error chunks) end.
    fragment_ends: VecDeque<u64>,
    sent: u64,
    fragments_sent: usize,
    pace: Option<Pace>,
    ended: bool,
}

impl FragmentListBody {
    fn new(shared: Arc<Shared>, stream: usize, entry: usize, chunks: Vec<Chunk>) -> Self {
        let (mut queue, mut fragment_ends, mut size) = (VecDeque::new(), VecDeque::new(), 0u64);
        for chunk in chunks {
            match chunk {
                Chunk::Fragment(pieces) => {
                    for piece in pieces {
                        size += piece.len() as u64;
                        queue.push_back(piece);
                    }
                    fragment_ends.push_back(size);
                }
                Chunk::NotFound(bytes) => {
                    size += bytes.len() as u64;
                    queue.push_back(bytes);
                }
            }
        }
        let state = &shared.streams[stream];
        let pace = state.spec.bandwidth.map(Pace::new);
        state.calls(Api::GetMediaForFragmentList).open();
        FragmentListBody {
            shared,
            stream,
            entry,
            queue,
            fragment_ends,
            sent: 0,
            fragments_sent: 0,
            pace,
            ended: false,
        }
    }

    fn into_stream(self) -> impl FutureStream<Item = io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(self, |mut body| async move {
            let piece = body.next_piece().await?;
            Some((Ok(piece), body))
        })
    }

    async fn next_piece(&mut self) -> Option<Bytes> {
        loop {
            if self.ended {
                return None;
            }
            let Some(mut piece) = self.queue.pop_front() else {
                self.finish(BodyEnd::Complete);
                return None;
            };
            let max = self.pace.as_ref().map_or(PIECE, |p| p.piece(PIECE));
            if piece.len() > max {
                self.queue.push_front(piece.split_off(max));
            }
            if let Some(pace) = &mut self.pace {
                pace.wait(piece.len()).await;
            }
            self.sent += piece.len() as u64;
            while self.fragment_ends.front().is_some_and(|&e| e <= self.sent) {
                self.fragment_ends.pop_front();
                self.fragments_sent += 1;
            }
            let (sent, fragments) = (self.sent, self.fragments_sent);
            self.shared.log.update(self.entry, |r| {
                r.bytes_sent = sent;
                r.fragments_sent = fragments;
            });
            if !piece.is_empty() {
                return Some(piece);
            }
        }
    }

    fn finish(&mut self, end: BodyEnd) {
        self.ended = true;
        self.shared
            .log
            .update(self.entry, |r| r.body_end = Some(end));
    }
}

impl Drop for FragmentListBody {
    fn drop(&mut self) {
        if !self.ended {
            self.finish(BodyEnd::ClientGone);
        }
        self.shared.streams[self.stream]
            .calls(Api::GetMediaForFragmentList)
            .close();
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid_argument(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cursors_round_trip_through_tokens() {
        let cursor = Cursor {
            stream: "cam-1.x_y".into(),
            range: Some(Range {
                clock: Clock::Server,
                start_ms: 1_700_000_000_000,
                end_ms: 1_700_000_100_500,
            }),
            at: Duration::from_millis(1234),
            offset: 300,
        };
        assert_eq!(Cursor::read(&cursor.token()), Some(cursor.clone()));
        let all = Cursor {
            range: None,
            ..cursor
        };
        assert_eq!(Cursor::read(&all.token()), Some(all));
        assert_eq!(Cursor::read("00"), None);
        assert_eq!(Cursor::read(&token::encode(&["x".into()])), None);
    }

    #[test]
    fn selectors_are_checked() {
        let parse = |selector: Value| Range::parse(&json!({ "FragmentSelector": selector }));
        assert_eq!(Range::parse(&json!({})), Ok(None));
        assert_eq!(
            parse(json!({"FragmentSelectorType": "SERVER_TIMESTAMP",
                "TimestampRange": {"StartTimestamp": 1.5, "EndTimestamp": 2}})),
            Ok(Some(Range {
                clock: Clock::Server,
                start_ms: 1500,
                end_ms: 2000
            }))
        );
        let message = |selector| parse(selector).unwrap_err().message;
        assert!(message(json!({})).contains("fragmentSelectorType"));
        assert!(message(json!({"FragmentSelectorType": "NOW"})).contains("enum value set"));
        assert!(
            message(json!({"FragmentSelectorType": "SERVER_TIMESTAMP"})).contains("timestampRange")
        );
        assert!(
            message(json!({"FragmentSelectorType": "SERVER_TIMESTAMP",
                "TimestampRange": {"StartTimestamp": 1}}))
            .contains("endTimestamp")
        );
        assert!(
            message(json!({"FragmentSelectorType": "SERVER_TIMESTAMP",
                "TimestampRange": {"StartTimestamp": 3, "EndTimestamp": 2}}))
            .contains("later")
        );
    }

    #[test]
    fn ranges_include_both_ends_and_look_at_starts() {
        let fragments = crate::synthetic(&crate::SyntheticSpec {
            fragments: 4,
            frames_per_fragment: 1,
            ..crate::SyntheticSpec::default()
        });
        // Producer starts at base + 0, 2000, 4000, 6000 (the model's example, in seconds).
        let base = fragments[0].producer_ms();
        let range = Range {
            clock: Clock::Producer,
            start_ms: base + 1000,
            end_ms: base + 4000,
        };
        let held: Vec<bool> = fragments.iter().map(|f| range.holds(f)).collect();
        assert_eq!(held, [false, true, true, false]);
    }

    #[test]
    fn shuffles_are_permutations_fixed_by_the_seed() {
        let mut a: Vec<usize> = (0..50).collect();
        let mut b = a.clone();
        shuffle(&mut a, 7);
        shuffle(&mut b, 7);
        assert_eq!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
        a.sort_unstable();
        assert_eq!(a, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn fragment_lists_are_checked() {
        let check = |fragments: Value| requested_numbers(&json!({ "Fragments": fragments }));
        assert_eq!(
            check(json!(["1", "0002"])),
            Ok(vec!["1".into(), "0002".into()])
        );
        let message = |fragments| check(fragments).unwrap_err().message;
        assert!(
            requested_numbers(&json!({}))
                .unwrap_err()
                .message
                .contains("fragments")
        );
        assert!(message(json!([])).contains("greater than or equal to 1"));
        assert!(message(json!(vec!["1"; 1001])).contains("less than or equal to 1000"));
        assert!(message(json!(["12a"])).contains("pattern"));
        assert!(message(json!([12])).contains("pattern"));
        assert!(message(json!("12")).contains("list"));
    }
}
