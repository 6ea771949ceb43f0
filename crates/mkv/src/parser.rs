//! The incremental, sans-IO reader of GetMedia bodies: bytes in, [`Event`]s out.
//!
//! A GetMedia body is a sequence of *chunks*, one per fragment, each a complete Matroska document:
//! EBML header, an unknown-size Segment, the producer's Info and Tracks, KVS tags (fragment number,
//! server and producer timestamps), the producer's Cluster, then KVS tags again (millis behind now,
//! continuation token). The same reader also reads a plain Matroska file, which is how the emulator
//! cuts media into fragments.
//!
//! GetMediaForFragmentList bodies are the same chunks without the closing tags. A parser made with
//! [`Parser::archived`] reads those: a fragment there is complete when the next chunk's EBML
//! header starts or when the body ends cleanly ([`Parser::finish`]). A GetMedia parser
//! ([`Parser::new`]) still requires the closing tags at the end of a body: a fragment the body
//! ends in without them was cut off.
//!
//! The parser never holds more than one unconsumed push plus one small metadata element (EBML
//! header, Info, Tracks or Tags, each capped at [`MAX_BUFFERED`]): block payloads and skipped
//! elements stream through as slices, so a 50 MB fragment passes in bounded memory.

use std::fmt;

use crate::ebml::{self, Header, id};

/// The largest metadata element (EBML header, Info, Tracks, Tags, cluster Timestamp) buffered whole.
pub const MAX_BUFFERED: u64 = 1 << 20;

/// A millisecond count since the Unix epoch, as KVS writes its timestamps.
pub type Millis = i64;

/// What the parser found, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A chunk (an EBML document) begins; the whole EBML header element, as received.
    EbmlHeader(&'a [u8]),
    /// The Segment Info of the chunk.
    Info { timecode_scale: u64 },
    /// The whole Tracks element, as received (codec private data included).
    Tracks(&'a [u8]),
    /// A KVS fragment begins: its pre-cluster tags have been read and its cluster starts.
    FragmentStart(Fragment),
    /// A cluster begins, with its timestamp in Segment ticks.
    Cluster { timecode: u64 },
    /// A SimpleBlock or BlockGroup begins. Its payload follows in [`Event::BlockData`] pieces
    /// that add up to `size` bytes.
    BlockStart(Block<'a>),
    /// The next piece of the current block's payload.
    BlockData(&'a [u8]),
    /// The current KVS fragment is complete; every byte of it has been delivered.
    FragmentEnd(Fragment),
    /// The service reported an error inside the body (AWS_KINESISVIDEO_ERROR_* tags).
    ServiceError(ServiceError),
}

/// The KVS tags of one fragment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fragment {
    /// AWS_KINESISVIDEO_FRAGMENT_NUMBER: decimal digits, increasing with ingestion order.
    pub number: String,
    /// AWS_KINESISVIDEO_SERVER_TIMESTAMP: when KVS started receiving the fragment.
    pub server_ms: Millis,
    /// AWS_KINESISVIDEO_PRODUCER_TIMESTAMP: the producer's clock at the fragment start.
    pub producer_ms: Millis,
    /// AWS_KINESISVIDEO_MILLIS_BEHIND_NOW: how far this fragment is behind the stream's head
    /// (only at [`Event::FragmentEnd`]).
    pub millis_behind_now: Option<u64>,
    /// AWS_KINESISVIDEO_CONTINUATION_TOKEN: resume after this fragment with it
    /// (only at [`Event::FragmentEnd`]).
    pub continuation_token: Option<String>,
}

/// An error the service wrote into the body with HTTP 200.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceError {
    /// AWS_KINESISVIDEO_ERROR_ID, e.g. 4000 (fragment not found), 4500..=4506 (KMS), 5000.
    pub id: Option<u64>,
    /// AWS_KINESISVIDEO_ERROR_CODE, e.g. `FRAGMENT_NOT_FOUND`.
    pub code: Option<String>,
    /// The fragment the error is about, when given.
    pub fragment_number: Option<String>,
}

/// The two block elements Matroska has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Simple,
    Group,
}

/// The start of a block element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block<'a> {
    pub kind: BlockKind,
    /// The element's ID and size bytes, as received.
    pub header: &'a [u8],
    /// The payload size.
    pub size: u64,
    pub track: u64,
    /// Relative to the cluster timestamp, in Segment ticks.
    pub timecode: i16,
    /// SimpleBlock's keyframe flag. A BlockGroup says it with the absence of ReferenceBlock,
    /// which may come after its Block, so groups report `false`.
    pub keyframe: bool,
}

/// Why the body could not be read, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the body (since the last [`Parser::reset`]) of the offending element.
    pub offset: u64,
    /// The offending element's ID, when it was read.
    pub id: Option<u32>,
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)?;
        if let Some(id) = self.id {
            write!(f, " (element 0x{id:X})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseError {}

/// How the body ended, as decided by [`Parser::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// At a chunk boundary, or after the last fragment completed.
    Clean,
    /// In the middle of a fragment; its bytes after the last [`Event::FragmentEnd`] are not a
    /// whole fragment and must be dropped.
    Truncated {
        /// The cut-off fragment's number, when its tags had arrived.
        fragment: Option<String>,
    },
}

/// An open container element.
#[derive(Debug, Clone, Copy)]
struct Open {
    id: u32,
    /// Absolute end offset, `None` for unknown size.
    end: Option<u64>,
}

/// What the parser is in the middle of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// At an element boundary.
    Boundary,
    /// Skipping this many bytes of an element nobody needs.
    Skip(u64),
    /// Delivering this many more bytes of a block payload.
    Block(u64),
    /// After an error: looking for the next chunk's EBML header.
    Resync,
}

/// Per-chunk KVS state.
#[derive(Debug, Default)]
struct Chunk {
    fragment: Fragment,
    has_number: bool,
    has_server: bool,
    has_producer: bool,
    started: bool,
    done: bool,
    error: Option<ServiceError>,
    cluster_timecode_seen: bool,
}

impl Chunk {
    fn is_fragment(&self) -> bool {
        self.has_number && self.has_server
    }

    /// The fragment's tags; a producer timestamp that did not come is the server's.
    fn fragment(&self) -> Fragment {
        let mut f = self.fragment.clone();
        if !self.has_producer {
            f.producer_ms = f.server_ms;
        }
        f
    }
}

/// The incremental GetMedia body reader. See the module docs.
///
/// Feed it with [`push`](Parser::push), drain it with [`next_event`](Parser::next_event) until
/// that returns `Ok(None)`, repeat; at the end of the body call [`finish`](Parser::finish).
#[derive(Debug)]
pub struct Parser {
    buf: Vec<u8>,
    pos: usize,
    /// Absolute offset of `buf[0]`.
    base: u64,
    stack: Vec<Open>,
    pending: Pending,
    chunk: Chunk,
    /// Events produced together with the one just returned (or by `finish`).
    queued: std::collections::VecDeque<Event<'static>>,
    failed: Option<ParseError>,
    /// GetMediaForFragmentList: a clean end of the body completes the open fragment.
    archived: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    pub fn new() -> Self {
        Parser {
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
            base: 0,
            stack: Vec::new(),
            pending: Pending::Boundary,
            chunk: Chunk::default(),
            queued: std::collections::VecDeque::new(),
            failed: None,
            archived: false,
        }
    }

    /// A reader of GetMediaForFragmentList bodies, whose chunks carry no closing tags: a
    /// fragment ends where the next chunk's EBML header starts, or where the body ends cleanly.
    /// In the latter case [`finish`](Parser::finish) returns [`Finish::Clean`] and queues the
    /// fragment's [`Event::FragmentEnd`] (preceded by its `FragmentStart` when no cluster came)
    /// for [`next_event`](Parser::next_event): drain the parser once more after `finish`.
    pub fn archived() -> Self {
        Parser {
            archived: true,
            ..Parser::new()
        }
    }

    /// Whether this parser reads GetMediaForFragmentList bodies (see [`Parser::archived`]).
    pub fn is_archived(&self) -> bool {
        self.archived
    }

    /// Appends the next bytes of the body. Never fails; problems surface from `next_event`.
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.base += self.pos as u64;
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes of the body consumed so far (since the last reset). After an event is returned,
    /// this is the offset just past the bytes that event covers.
    pub fn position(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// The next event, or `Ok(None)` when more bytes are needed. After an error the parser stays
    /// failed until [`reset`](Parser::reset).
    pub fn next_event(&mut self) -> Result<Option<Event<'_>>, ParseError> {
        Ok(self.next_event_at()?.map(|(event, _)| event))
    }

    /// Like [`next_event`](Parser::next_event), with the body offset just past the event's
    /// bytes (what [`position`](Parser::position) says after it), for callers that route the
    /// raw bytes of each event.
    pub fn next_event_at(&mut self) -> Result<Option<(Event<'_>, u64)>, ParseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.step() {
            Ok(Step::Event(e)) => Ok(Some((self.event(e), self.position()))),
            Ok(Step::NeedMore) => Ok(None),
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Goes on after an error: the chunk that failed is dropped, and reading resumes at the next
    /// EBML header (the next chunk, in a GetMedia body). Bytes up to there produce no events.
    pub fn resync(&mut self) {
        self.failed = None;
        self.queued.clear();
        self.stack.clear();
        self.chunk = Chunk::default();
        self.pending = Pending::Resync;
    }

    /// The body ended. Says whether it ended cleanly or cut a fragment off.
    /// Call it once `next_event` has returned `Ok(None)`.
    pub fn finish(&mut self) -> Result<Finish, ParseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.pending == Pending::Resync {
            // Nothing after the unreadable chunk was a fragment.
            return Ok(Finish::Clean);
        }
        let mid_element = self.pending != Pending::Boundary || self.pos < self.buf.len();
        let open_known = self.stack.iter().any(|o| o.end.is_some());
        let open_fragment = self.chunk.is_fragment() && !self.chunk.done;
        if open_fragment && self.archived && !mid_element && !open_known {
            // No closing tags in a GetMediaForFragmentList body: a clean end of the body, at an
            // element boundary with no element of known size open, completes the fragment.
            let chunk = std::mem::take(&mut self.chunk);
            self.stack.clear();
            let fragment = chunk.fragment();
            if !chunk.started {
                self.queued
                    .push_back(Event::FragmentStart(fragment.clone()));
            }
            self.queued.push_back(Event::FragmentEnd(fragment));
            return Ok(Finish::Clean);
        }
        if open_fragment {
            return Ok(Finish::Truncated {
                fragment: Some(self.chunk.fragment.number.clone()),
            });
        }
        if (mid_element || open_known) && !self.chunk.done {
            return Ok(Finish::Truncated { fragment: None });
        }
        Ok(Finish::Clean)
    }

    fn error(&self, offset: u64, id: Option<u32>, reason: impl Into<String>) -> ParseError {
        ParseError {
            offset,
            id,
            reason: reason.into(),
        }
    }

    /// Turns a step result into a borrowed event.
    fn event(&self, e: Produced) -> Event<'_> {
        match e {
            Produced::Owned(e) => e,
            Produced::EbmlHeader(r) => Event::EbmlHeader(&self.buf[r]),
            Produced::Tracks(r) => Event::Tracks(&self.buf[r]),
            Produced::BlockData(r) => Event::BlockData(&self.buf[r]),
            Produced::BlockStart(b, r) => Event::BlockStart(Block {
                header: &self.buf[r],
                ..b
            }),
        }
    }

    fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn step(&mut self) -> Result<Step, ParseError> {
        if let Some(e) = self.queued.pop_front() {
            return Ok(Step::Event(Produced::Owned(e)));
        }
        loop {
            match self.pending {
                Pending::Skip(left) => {
                    let n = left.min(self.available() as u64);
                    self.pos += n as usize;
                    if n < left {
                        self.pending = Pending::Skip(left - n);
                        return Ok(Step::NeedMore);
                    }
                    self.pending = Pending::Boundary;
                }
                Pending::Block(left) => {
                    let n = left.min(self.available() as u64) as usize;
                    if n == 0 {
                        return Ok(Step::NeedMore);
                    }
                    let start = self.pos;
                    self.pos += n;
                    self.pending = match left - n as u64 {
                        0 => Pending::Boundary,
                        rest => Pending::Block(rest),
                    };
                    return Ok(Step::Event(Produced::BlockData(start..self.pos)));
                }
                Pending::Resync => {
                    // Past the byte that failed, so that a broken EBML header is not found again.
                    let from = (self.pos + 1).min(self.buf.len());
                    match find_magic(&self.buf[from..]) {
                        Some(i) => {
                            self.pos = from + i;
                            self.pending = Pending::Boundary;
                        }
                        None => {
                            // Keep what could be the start of a magic split across pushes.
                            self.pos = self.buf.len().saturating_sub(MAGIC.len() - 1).max(self.pos);
                            return Ok(Step::NeedMore);
                        }
                    }
                }
                Pending::Boundary => {}
            }

            let here = self.position();
            // Known-size containers that end here close now.
            if let Some(top) = self.stack.last()
                && top.end == Some(here)
            {
                if let Some(e) = self.close_top() {
                    return Ok(Step::Event(Produced::Owned(e)));
                }
                continue;
            }

            let Some(h) = ebml::read_header(&self.buf[self.pos..])
                .map_err(|reason| self.error(here, None, reason))?
            else {
                return Ok(Step::NeedMore);
            };

            // An unknown-size container ends at the first element that cannot be its child.
            if let Some(top) = self.stack.last()
                && top.end.is_none()
                && !may_contain(top.id, h.id)
            {
                if let Some(e) = self.close_top() {
                    return Ok(Step::Event(Produced::Owned(e)));
                }
                continue;
            }

            if let (Some(parent_end), Some(size)) = (self.stack.last().and_then(|o| o.end), h.size)
                && here + h.len as u64 + size > parent_end
            {
                return Err(self.error(here, Some(h.id), "element overruns its parent"));
            }

            if let Some(produced) = self.element(h, here)? {
                return Ok(Step::Event(produced));
            }
            if self.pending == Pending::Boundary && self.position() == here {
                // The element needs more bytes before it can be handled.
                return Ok(Step::NeedMore);
            }
        }
    }

    /// Handles the element whose header starts at the read position. Either consumes something
    /// (and may produce an event) or consumes nothing because more bytes are needed.
    fn element(&mut self, h: Header, here: u64) -> Result<Option<Produced>, ParseError> {
        let parent = self.stack.last().map(|o| o.id);
        match (parent, h.id) {
            (None, id::EBML) => {
                let r = self.take_whole(h, here, 4096)?;
                Ok(r.map(|r| {
                    self.chunk = Chunk::default();
                    Produced::EbmlHeader(r)
                }))
            }
            (None, id::SEGMENT) | (Some(id::SEGMENT), id::CLUSTER) => {
                self.open(h, here);
                if h.id == id::CLUSTER {
                    self.chunk.cluster_timecode_seen = false;
                    if self.chunk.is_fragment() && !self.chunk.started {
                        self.chunk.started = true;
                        return Ok(Some(Produced::Owned(Event::FragmentStart(
                            self.chunk.fragment(),
                        ))));
                    }
                }
                Ok(None)
            }
            (None, id::VOID | id::CRC32) => self.skip(h, here).map(|()| None),
            (None, other) => {
                Err(self.error(here, Some(other), "expected an EBML header or a Segment"))
            }
            (Some(id::SEGMENT), id::INFO) => {
                let Some(r) = self.take_whole(h, here, MAX_BUFFERED)? else {
                    return Ok(None);
                };
                let data = &self.buf[r.start + h.len..r.end];
                let mut timecode_scale = 1_000_000;
                for child in ebml::children(data) {
                    let (cid, value) = child.map_err(|e| self.error(here, Some(h.id), e))?;
                    if cid == id::TIMESTAMP_SCALE {
                        timecode_scale = ebml::read_uint(value)
                            .filter(|&s| s > 0)
                            .ok_or_else(|| self.error(here, Some(cid), "bad TimestampScale"))?;
                    }
                }
                Ok(Some(Produced::Owned(Event::Info { timecode_scale })))
            }
            (Some(id::SEGMENT), id::TRACKS) => Ok(self
                .take_whole(h, here, MAX_BUFFERED)?
                .map(Produced::Tracks)),
            (Some(id::SEGMENT), id::TAGS) => {
                let Some(r) = self.take_whole(h, here, MAX_BUFFERED)? else {
                    return Ok(None);
                };
                let r = r.start + h.len..r.end;
                self.tags(r, here)
            }
            (Some(id::CLUSTER), id::TIMESTAMP) => {
                let Some(r) = self.take_whole(h, here, 8)? else {
                    return Ok(None);
                };
                let timecode = ebml::read_uint(&self.buf[r.start + h.len..r.end])
                    .ok_or_else(|| self.error(here, Some(h.id), "bad cluster Timestamp"))?;
                self.chunk.cluster_timecode_seen = true;
                Ok(Some(Produced::Owned(Event::Cluster { timecode })))
            }
            (Some(id::CLUSTER), id::SIMPLE_BLOCK | id::BLOCK_GROUP) => self.block(h, here),
            _ => self.skip(h, here).map(|()| None),
        }
    }

    fn open(&mut self, h: Header, here: u64) {
        self.pos += h.len;
        self.stack.push(Open {
            id: h.id,
            end: h.size.map(|s| here + h.len as u64 + s),
        });
    }

    /// Closes the innermost container. Closing a Segment ends the chunk, which completes a
    /// fragment whose closing tags did not come.
    fn close_top(&mut self) -> Option<Event<'static>> {
        let closed = self.stack.pop()?;
        if closed.id != id::SEGMENT {
            return None;
        }
        let chunk = std::mem::take(&mut self.chunk);
        if chunk.is_fragment() && !chunk.done {
            let fragment = chunk.fragment();
            if chunk.started {
                return Some(Event::FragmentEnd(fragment));
            }
            self.queued.push_back(Event::FragmentEnd(fragment.clone()));
            return Some(Event::FragmentStart(fragment));
        }
        None
    }

    fn skip(&mut self, h: Header, here: u64) -> Result<(), ParseError> {
        let Some(size) = h.size else {
            return Err(self.error(here, Some(h.id), "cannot skip an element of unknown size"));
        };
        self.pos += h.len;
        self.pending = Pending::Skip(size);
        Ok(())
    }

    /// The byte range of a whole element (header included), once all of it has arrived.
    fn take_whole(
        &mut self,
        h: Header,
        here: u64,
        limit: u64,
    ) -> Result<Option<std::ops::Range<usize>>, ParseError> {
        let Some(size) = h.size else {
            return Err(self.error(here, Some(h.id), "unexpected unknown size"));
        };
        if size > limit {
            return Err(self.error(
                here,
                Some(h.id),
                format!("element of {size} bytes is larger than the {limit}-byte limit"),
            ));
        }
        let total = h.len + size as usize;
        if self.available() < total {
            return Ok(None);
        }
        let start = self.pos;
        self.pos += total;
        Ok(Some(start..self.pos))
    }

    fn block(&mut self, h: Header, here: u64) -> Result<Option<Produced>, ParseError> {
        let Some(size) = h.size else {
            return Err(self.error(here, Some(h.id), "block of unknown size"));
        };
        if !self.chunk.cluster_timecode_seen {
            return Err(self.error(here, Some(h.id), "block before the cluster Timestamp"));
        }
        let data = &self.buf[self.pos + h.len..];
        let data = &data[..data.len().min(size as usize)];
        let complete = data.len() as u64 == size;
        // A BlockGroup's Block may follow other children: look that far ahead, within limits.
        let data = &data[..data.len().min(MAX_BUFFERED as usize)];
        let complete = complete || data.len() as u64 == MAX_BUFFERED;
        let peeked = match h.id {
            id::SIMPLE_BLOCK => block_header(data),
            _ => group_block_header(data),
        };
        let (track, timecode, flags) = match peeked {
            Ok(Some(v)) => v,
            Ok(None) if !complete => return Ok(None),
            Ok(None) | Err(_) => {
                return Err(self.error(here, Some(h.id), "malformed block header"));
            }
        };
        let start = self.pos;
        self.pos += h.len;
        self.pending = if size == 0 {
            Pending::Boundary
        } else {
            Pending::Block(size)
        };
        let block = Block {
            kind: if h.id == id::SIMPLE_BLOCK {
                BlockKind::Simple
            } else {
                BlockKind::Group
            },
            header: &[],
            size,
            track,
            timecode,
            keyframe: h.id == id::SIMPLE_BLOCK && flags & 0x80 != 0,
        };
        Ok(Some(Produced::BlockStart(block, start..self.pos)))
    }

    /// Applies a Tags element's KVS SimpleTags to the chunk; may complete the fragment.
    fn tags(
        &mut self,
        data: std::ops::Range<usize>,
        here: u64,
    ) -> Result<Option<Produced>, ParseError> {
        // Most Tags elements of a producer carry none of the service's tags: skip those without
        // walking them (they can be many, one per frame or fragment).
        if !self.buf[data.clone()]
            .windows(KVS_TAG_PREFIX.len())
            .any(|w| w == KVS_TAG_PREFIX)
        {
            return Ok(None);
        }
        let mut found = Vec::new();
        collect_simple_tags(&self.buf[data], 0, &mut found)
            .map_err(|e| self.error(here, Some(id::TAGS), e))?;
        let mut post = false;
        let chunk = &mut self.chunk;
        for (name, value) in found {
            let Some(name) = name.strip_prefix("AWS_KINESISVIDEO_") else {
                continue;
            };
            let bad = |what: &str| ParseError {
                offset: here,
                id: Some(id::TAGS),
                reason: format!("bad AWS_KINESISVIDEO_{what} value {value:?}"),
            };
            match name {
                "FRAGMENT_NUMBER" => {
                    chunk.fragment.number = value.clone();
                    chunk.has_number = true;
                }
                "SERVER_TIMESTAMP" | "SERVER_SIDE_TIMESTAMP" => {
                    chunk.fragment.server_ms = parse_seconds(&value).ok_or_else(|| bad(name))?;
                    chunk.has_server = true;
                }
                "PRODUCER_TIMESTAMP" | "PRODUCER_SIDE_TIMESTAMP" => {
                    chunk.fragment.producer_ms = parse_seconds(&value).ok_or_else(|| bad(name))?;
                    chunk.has_producer = true;
                }
                "MILLIS_BEHIND_NOW" => {
                    chunk.fragment.millis_behind_now =
                        Some(value.trim().parse().map_err(|_| bad(name))?);
                    post = true;
                }
                "CONTINUATION_TOKEN" => {
                    chunk.fragment.continuation_token = Some(value);
                    post = true;
                }
                "ERROR_ID" => {
                    chunk.error.get_or_insert_default().id =
                        Some(value.trim().parse().map_err(|_| bad(name))?);
                }
                "ERROR_CODE" | "EXCEPTION_ERROR_CODE" => {
                    chunk.error.get_or_insert_default().code = Some(value);
                }
                _ => {}
            }
        }
        if chunk.done {
            return Ok(None);
        }
        if let Some(mut error) = chunk.error.clone() {
            chunk.done = true;
            error.fragment_number = chunk.has_number.then(|| chunk.fragment.number.clone());
            return Ok(Some(Produced::Owned(Event::ServiceError(error))));
        }
        if post && chunk.is_fragment() {
            chunk.done = true;
            let fragment = chunk.fragment();
            if chunk.started {
                return Ok(Some(Produced::Owned(Event::FragmentEnd(fragment))));
            }
            // A fragment without a cluster: announce it, then end it.
            chunk.started = true;
            self.queued.push_back(Event::FragmentEnd(fragment.clone()));
            return Ok(Some(Produced::Owned(Event::FragmentStart(fragment))));
        }
        Ok(None)
    }
}

enum Step {
    Event(Produced),
    NeedMore,
}

/// An event whose borrowed parts are still ranges into the buffer.
enum Produced {
    Owned(Event<'static>),
    EbmlHeader(std::ops::Range<usize>),
    Tracks(std::ops::Range<usize>),
    BlockStart(Block<'static>, std::ops::Range<usize>),
    BlockData(std::ops::Range<usize>),
}

/// Whether an unknown-size container with ID `parent` can hold an element with ID `child`.
fn may_contain(parent: u32, child: u32) -> bool {
    match parent {
        id::SEGMENT => child != id::EBML,
        id::CLUSTER => child != id::EBML && !ebml::is_segment_child(child),
        _ => false,
    }
}

/// Track number, relative timecode and flags at the start of a (Simple)Block payload.
fn block_header(data: &[u8]) -> Result<Option<(u64, i16, u8)>, &'static str> {
    let Some((track, len)) = ebml::read_size(data)? else {
        return Ok(None);
    };
    let track = track.ok_or("reserved track number")?;
    let Some(rest) = data.get(len..len + 3) else {
        return Ok(None);
    };
    Ok(Some((
        track,
        i16::from_be_bytes([rest[0], rest[1]]),
        rest[2],
    )))
}

/// The same for the Block inside a BlockGroup, skipping children that come before it.
fn group_block_header(mut data: &[u8]) -> Result<Option<(u64, i16, u8)>, &'static str> {
    loop {
        let Some(h) = ebml::read_header(data)? else {
            return Ok(None);
        };
        let size = h.size.ok_or("unknown size inside a BlockGroup")?;
        if h.id == id::BLOCK {
            return block_header(&data[h.len..]);
        }
        let next = h.len as u64 + size;
        if next > data.len() as u64 {
            return Ok(None);
        }
        data = &data[next as usize..];
    }
}

/// The prefix of the service's own tag names; other tags belong to the producer.
const KVS_TAG_PREFIX: &[u8] = b"AWS_KINESISVIDEO_";

/// Gathers the service's (TagName, TagString) pairs from a Tags element's data, SimpleTags
/// nested or not. Producer tags are skipped without allocating: some producers send many.
fn collect_simple_tags(
    data: &[u8],
    depth: usize,
    out: &mut Vec<(String, String)>,
) -> Result<(), &'static str> {
    if depth > 8 {
        return Err("Tags nested too deeply");
    }
    for child in ebml::children(data) {
        let (cid, value) = child?;
        match cid {
            id::TAG => collect_simple_tags(value, depth + 1, out)?,
            id::SIMPLE_TAG => {
                let mut name = None;
                let mut string = None;
                for field in ebml::children(value) {
                    let (fid, fvalue) = field?;
                    match fid {
                        id::TAG_NAME => name = Some(fvalue),
                        id::TAG_STRING => string = Some(fvalue),
                        id::SIMPLE_TAG => collect_simple_tags(fvalue, depth + 1, out)?,
                        _ => {}
                    }
                }
                if let (Some(name), Some(string)) = (name, string)
                    && name.starts_with(KVS_TAG_PREFIX)
                {
                    out.push((text(name), text(string)));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// An EBML string: UTF-8 (lossy), without trailing NULs.
fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .trim_end_matches('\0')
        .to_owned()
}

/// The ID of an EBML header, which every chunk starts with.
const MAGIC: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];

fn find_magic(data: &[u8]) -> Option<usize> {
    data.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// Orders fragment numbers (and continuation tokens, which are fragment numbers) as the decimal
/// integers of any length they are: by value, not as text, and without overflowing.
pub fn cmp_fragment_numbers(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Parses KVS's decimal epoch seconds (`1511852109.126`) into milliseconds, exactly, rounding
/// digits past the millisecond to the nearest.
pub fn parse_seconds(text: &str) -> Option<Millis> {
    let text = text.trim();
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: i64 = whole.parse().ok()?;
    let digits = frac.as_bytes();
    let digit = |i: usize| digits.get(i).map_or(0, |d| i64::from(d - b'0'));
    let mut millis = digit(0) * 100 + digit(1) * 10 + digit(2);
    if digit(3) >= 5 {
        millis += 1;
    }
    seconds.checked_mul(1000)?.checked_add(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_exactly() {
        assert_eq!(parse_seconds("1511852109.126"), Some(1_511_852_109_126));
        assert_eq!(parse_seconds("0.000"), Some(0));
        assert_eq!(parse_seconds("5"), Some(5000));
        assert_eq!(parse_seconds("1.2"), Some(1200));
        assert_eq!(parse_seconds("1.0005"), Some(1001));
        assert_eq!(parse_seconds("-1.0"), None);
        assert_eq!(parse_seconds("1e9"), None);
    }
}
