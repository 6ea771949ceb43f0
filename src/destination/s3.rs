//! `-o s3://BUCKET/KEY`: an object written through a multipart upload, each part streamed to S3
//! while the download goes on.
//!
//! * Only committed bytes are handed to a part, so an uploaded part never holds a partial
//!   fragment; a rollback only ever drops bytes not handed over yet.
//! * Every part but the last has exactly [`PART_SIZE`] bytes (the S3 minimum). A part's
//!   UploadPart starts with its first committed bytes, announcing [`PART_SIZE`], and its body
//!   takes each commit's bytes as they come ([`Feed`]), so the upload overlaps the download and
//!   no part waits in memory to be full before anything is sent. The part that turns out to be
//!   the last, shorter one is sent again with its true length; so is a part whose download
//!   stalls for [`STALL`] (S3 drops a request body that idles for about 20 s), once it is full.
//! * A part's bytes are kept until its UploadPart succeeds: the SDK's retries send them again from
//!   the start. Integrity: each part carries a CRC32 (as an aws-chunked trailer) that S3 checks,
//!   and CompleteMultipartUpload lists them.
//! * The first part stays in memory until the file ends and is uploaded last, as part 1: the
//!   encoders patch values at fixed offsets (Matroska's Segment size, Duration and SeekHead,
//!   MP4's header), and every such offset lies in the first few kilobytes. A patch that would
//!   land in bytes already handed to another part is an error, never a silently wrong object.
//! * At most two parts are in flight; memory is the first part, the parts in flight and the
//!   bytes of the fragment being written: about three parts, whatever the length of the file.
//! * The object appears under its key only at CompleteMultipartUpload, sent with
//!   `If-None-Match: *` (unless `--force`), so a finished object is never replaced. A run that
//!   fails, or finishes with nothing committed, aborts its upload.
//! * A killed run's upload is found by the next run with the same state (recorded as
//!   [`Upload`]) and aborted; that run takes the killed file's fragments again from its first
//!   one. The parts of an unfinished upload cannot be read back, and the encoders need a file's
//!   bytes to continue it.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::Destination;
use crate::s3::{self, S3Url};

/// Every part but the last has exactly this size: the smallest S3 allows, to keep memory low.
/// With at most 10,000 parts an object holds up to about 48 GiB; use `--segment` beyond that.
pub const PART_SIZE: usize = 5 << 20;

/// Parts uploading at once.
const MAX_IN_FLIGHT: usize = 2;

/// S3 allows this many parts in one upload.
const MAX_PARTS: i32 = 10_000;

/// A part whose body waited this long for bytes is dropped and sent again once it is full.
const STALL: Duration = Duration::from_secs(10);

/// [`STALL`], or `KVS_DL_S3_STALL_MS` (a test knob: the tests cannot wait 10 s for a stall).
fn stall() -> Duration {
    std::env::var("KVS_DL_S3_STALL_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(STALL, Duration::from_millis)
}

/// Written bytes are copied once, into blocks of this size that start at its multiples (so a
/// part, a multiple of it, holds slices of its own blocks only). A block is reused once the
/// parts holding its bytes are done: the allocator sees no churn of large buffers.
const BLOCK: usize = 1 << 20;

/// Blocks kept for reuse at most.
const SPARE_BLOCKS: usize = 24;

/// Object metadata naming the upload that made the object, so that a later run can tell an
/// object its killed predecessor completed from one it never reached.
pub const TOKEN_META: &str = "kvs-dl-upload";

/// An upload in progress, as the state file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// The UploadId.
    pub id: String,
    /// The value of the object's `x-amz-meta-kvs-dl-upload`, once completed.
    pub token: String,
    /// Parts uploaded so far (part 1, the first bytes, is uploaded last).
    pub parts: u32,
    /// Bytes in those parts.
    pub bytes: u64,
}

type PartResult = io::Result<(CompletedPart, u64)>;

/// One part's bytes, shared by the writer, which appends committed bytes, and the part's request
/// bodies, each of which (one an attempt) reads them from the start.
struct Feed {
    state: Mutex<FeedState>,
    /// Wakes the part's task on every change, to tell a stall or a new length.
    changed: Notify,
}

struct FeedState {
    chunks: Vec<Bytes>,
    len: usize,
    /// No more bytes come: `len` is the part's length.
    ended: bool,
    /// The writer gave up (the upload is aborted): bodies fail.
    abandoned: bool,
    wakers: Vec<Waker>,
}

impl Feed {
    fn new() -> Arc<Feed> {
        Arc::new(Feed {
            state: Mutex::new(FeedState {
                chunks: Vec::new(),
                len: 0,
                ended: false,
                abandoned: false,
                wakers: Vec::new(),
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().expect("not poisoned")
    }

    fn update(&self, f: impl FnOnce(&mut FeedState)) {
        let wakers = {
            let mut state = self.lock();
            f(&mut state);
            std::mem::take(&mut state.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
        self.changed.notify_one();
    }

    fn push(&self, bytes: Bytes) {
        self.update(|s| {
            s.len += bytes.len();
            s.chunks.push(bytes);
        });
    }

    fn end(&self) {
        self.update(|s| s.ended = true);
    }

    fn abandon(&self) {
        self.update(|s| s.abandoned = true);
    }

    /// Room left before the part is full; 0 once ended.
    fn room(&self) -> usize {
        let s = self.lock();
        if s.ended { 0 } else { PART_SIZE - s.len }
    }

    /// The length to announce: the true one once known, else [`PART_SIZE`].
    fn size(&self) -> usize {
        let s = self.lock();
        if s.ended { s.len } else { PART_SIZE }
    }

    /// Whether every byte of the part is here.
    fn whole(&self) -> bool {
        let s = self.lock();
        s.ended || s.len == PART_SIZE
    }

    /// A request body reading the part from its start, announcing `size` bytes.
    fn body(self: &Arc<Self>, size: usize) -> ByteStream {
        let feed = self.clone();
        ByteStream::new(SdkBody::retryable(move || {
            SdkBody::from_body_1_x(PartBody {
                feed: feed.clone(),
                size,
                next: 0,
                sent: 0,
            })
        }))
    }
}

/// One attempt's body: the feed's chunks in order, waiting for the ones not committed yet.
struct PartBody {
    feed: Arc<Feed>,
    size: usize,
    next: usize,
    sent: usize,
}

impl http_body::Body for PartBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let mut state = this.feed.lock();
        if state.abandoned {
            return Poll::Ready(Some(Err(io::Error::other("the upload was abandoned"))));
        }
        if let Some(chunk) = state.chunks.get(this.next) {
            if this.sent + chunk.len() > this.size {
                return Poll::Ready(Some(Err(io::Error::other("the part outgrew its length"))));
            }
            this.next += 1;
            this.sent += chunk.len();
            return Poll::Ready(Some(Ok(http_body::Frame::data(chunk.clone()))));
        }
        if this.sent == this.size {
            return Poll::Ready(None);
        }
        if state.ended {
            // Shorter than announced: this attempt is being replaced by one with the true length.
            return Poll::Ready(Some(Err(io::Error::other("the part ended short"))));
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.size
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact((self.size - self.sent) as u64)
    }
}

/// A part being uploaded; the newest may still be fed.
struct InFlight {
    feed: Arc<Feed>,
    task: JoinHandle<PartResult>,
}

/// See the module docs.
pub struct S3Object {
    path: PathBuf,
    url: S3Url,
    client: Client,
    force: bool,
    token: String,
    upload_id: Option<String>,
    /// File bytes `0..first.len()`: part 1, kept until the end.
    first: Vec<u8>,
    /// File bytes from `pending_start` on, not handed to a part yet (committed ones first), in
    /// blocks (see [`BLOCK`]).
    pending: VecDeque<BytesMut>,
    pending_start: u64,
    pending_len: usize,
    /// Blocks whose bytes were all handed over, to be reused once their parts let go of them.
    spare: Vec<BytesMut>,
    committed: u64,
    next_part: i32,
    in_flight: VecDeque<InFlight>,
    parts: Vec<CompletedPart>,
    uploaded: u64,
    /// Completed or aborted: nothing is left to clean up.
    done: bool,
}

impl S3Object {
    /// Starts writing `path` (`s3://BUCKET/KEY`). Refuses an existing object unless `force`.
    /// Nothing is created in the bucket before the first part is sent.
    pub fn create(path: &Path, force: bool) -> io::Result<S3Object> {
        let url = s3::parse(path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not s3://", path.display()),
            )
        })?;
        let client = s3::client(&url.bucket)?;
        if !force && exists_with(&client, &url)? {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{url} already exists"),
            ));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(S3Object {
            path: path.to_owned(),
            url,
            client,
            force,
            token: format!("{}-{}", std::process::id(), now.as_nanos()),
            upload_id: None,
            first: Vec::new(),
            pending: VecDeque::new(),
            pending_start: 0,
            pending_len: 0,
            spare: Vec::new(),
            committed: 0,
            next_part: 2,
            in_flight: VecDeque::new(),
            parts: Vec::new(),
            uploaded: 0,
            done: false,
        })
    }

    fn total(&self) -> u64 {
        self.pending_start + self.pending_len as u64
    }

    /// An empty block with room for [`BLOCK`] bytes: a spare one whose parts are done, or a new one.
    fn block(&mut self) -> BytesMut {
        let reusable = self.spare.iter_mut().position(|b| {
            b.clear();
            b.try_reclaim(BLOCK)
        });
        match reusable {
            Some(i) => self.spare.swap_remove(i),
            None => BytesMut::with_capacity(BLOCK),
        }
    }

    /// Takes `n` bytes (at most the front block's) off the front of `pending`.
    fn take_front(&mut self, n: usize) -> BytesMut {
        let front = self.pending.front_mut().expect("pending bytes");
        let n = n.min(front.len());
        let taken = front.split_to(n);
        let emptied = front.is_empty();
        self.pending_start += n as u64;
        self.pending_len -= n;
        // Done with the front block once emptied, unless later bytes still go into it.
        if emptied && (self.pending.len() > 1 || self.total().is_multiple_of(BLOCK as u64)) {
            let block = self.pending.pop_front().expect("front");
            self.retire(block);
        }
        taken
    }

    fn retire(&mut self, block: BytesMut) {
        if self.spare.len() == SPARE_BLOCKS {
            self.spare.remove(0);
        }
        self.spare.push(block);
    }

    /// Starts the multipart upload, once.
    fn upload_id(&mut self) -> io::Result<String> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let request = self
            .client
            .create_multipart_upload()
            .bucket(&self.url.bucket)
            .key(&self.url.key)
            .content_type(content_type(&self.url.key))
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .metadata(TOKEN_META, &self.token);
        let out = s3::block(request.send())
            .map_err(|e| s3::io_error(&format!("starting the upload of {}", self.url), e))?;
        let id = out
            .upload_id()
            .ok_or_else(|| io::Error::other("CreateMultipartUpload returned no UploadId"))?
            .to_owned();
        tracing::debug!(object = %self.url, upload = %id, "multipart upload started");
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    /// Moves committed bytes into the first part until it is full, then hands them to the parts
    /// after it, opening one whenever the newest is full.
    fn hand_over(&mut self) -> io::Result<()> {
        let mut sendable = (self.committed - self.pending_start) as usize;
        while self.first.len() < PART_SIZE && sendable > 0 {
            if self.first.capacity() == 0 {
                self.first.reserve_exact(PART_SIZE);
            }
            let taken = self.take_front((PART_SIZE - self.first.len()).min(sendable));
            self.first.extend_from_slice(&taken);
            sendable -= taken.len();
        }
        while sendable > 0 {
            let room = match self.in_flight.back() {
                Some(part) if part.feed.room() > 0 => part.feed.room(),
                _ => {
                    self.open_part()?;
                    PART_SIZE
                }
            };
            let bytes = self.take_front(room.min(sendable)).freeze();
            sendable -= bytes.len();
            if !bytes.is_empty() {
                self.in_flight.back().expect("opened").feed.push(bytes);
            }
        }
        Ok(())
    }

    /// Starts the next part's upload, empty; waits while two are in flight.
    fn open_part(&mut self) -> io::Result<()> {
        if self.next_part > MAX_PARTS {
            return Err(io::Error::other(format!(
                "{} would need more than {MAX_PARTS} parts of {} MiB; split it with --segment",
                self.url,
                PART_SIZE >> 20
            )));
        }
        self.reap(false)?;
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.wait_oldest()?;
        }
        let number = self.next_part;
        self.next_part += 1;
        let feed = Feed::new();
        let task = self.spawn_part(number, feed.clone())?;
        self.in_flight.push_back(InFlight { feed, task });
        Ok(())
    }

    fn spawn_part(&mut self, number: i32, feed: Arc<Feed>) -> io::Result<JoinHandle<PartResult>> {
        let id = self.upload_id()?;
        let client = self.client.clone();
        let url = self.url.clone();
        Ok(tokio::spawn(async move {
            upload_part(client, url, id, number, feed).await
        }))
    }

    /// Collects parts that finished; with `all`, waits for every one.
    fn reap(&mut self, all: bool) -> io::Result<()> {
        while let Some(part) = self.in_flight.front() {
            if !all && !part.task.is_finished() {
                break;
            }
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> io::Result<()> {
        let Some(part) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (part, len) = s3::block(part.task).map_err(io::Error::other)??;
        self.parts.push(part);
        self.uploaded += len;
        Ok(())
    }

    /// Completes the object from the parts, with part 1 (patched) sent now and the part being
    /// fed ended where the file ends.
    fn complete(&mut self) -> io::Result<()> {
        self.hand_over()?;
        if let Some(last) = self.in_flight.back() {
            last.feed.end();
        }
        let first = Feed::new();
        first.push(Bytes::from(std::mem::take(&mut self.first)));
        first.end();
        let task = self.spawn_part(1, first.clone())?;
        self.in_flight.push_back(InFlight { feed: first, task });
        self.reap(true)?;
        self.parts.sort_by_key(|p| p.part_number());
        let id = self.upload_id()?;
        let mut request = self
            .client
            .complete_multipart_upload()
            .bucket(&self.url.bucket)
            .key(&self.url.key)
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(self.parts.clone()))
                    .build(),
            );
        if !self.force {
            request = request.if_none_match("*");
        }
        match s3::block(request.send()) {
            Ok(_) => {
                self.done = true;
                tracing::debug!(object = %self.url, parts = self.parts.len(), "object complete");
                Ok(())
            }
            Err(e) if s3::code(&e) == Some("NoSuchUpload") => {
                self.done = true;
                Err(taken_over(&self.url))
            }
            Err(e) if s3::status(&e) == Some(412) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} appeared while downloading; give --force to replace it (the upload was aborted)",
                    self.url
                ),
            )),
            Err(e) => Err(s3::io_error(&format!("completing {}", self.url), e)),
        }
    }

    /// Aborts the upload, if one was started and not completed.
    fn abort(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        for part in self.in_flight.drain(..) {
            part.feed.abandon();
            part.task.abort();
        }
        let Some(id) = self.upload_id.take() else {
            return;
        };
        let request = self
            .client
            .abort_multipart_upload()
            .bucket(&self.url.bucket)
            .key(&self.url.key)
            .upload_id(&id);
        match s3::try_block(request.send()) {
            None => tracing::warn!(
                "could not abort the upload {id} of {}: the run is ending",
                self.url
            ),
            Some(Ok(_)) => tracing::debug!(object = %self.url, upload = %id, "upload aborted"),
            Some(Err(e)) => tracing::warn!(
                "could not abort the upload {id} of {}: {}",
                self.url,
                s3::describe(&e)
            ),
        }
    }
}

/// Uploads part `number` from `feed`: streamed while it is fed, and sent again from its start
/// when its length turns out shorter or its body stalls (see the module docs).
async fn upload_part(
    client: Client,
    url: S3Url,
    id: String,
    number: i32,
    feed: Arc<Feed>,
) -> PartResult {
    loop {
        let size = feed.size();
        let send = client
            .upload_part()
            .bucket(&url.bucket)
            .key(&url.key)
            .upload_id(&id)
            .part_number(number)
            .content_length(size as i64)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(feed.body(size))
            .send();
        tokio::pin!(send);
        loop {
            tokio::select! {
                out = &mut send => {
                    if out.is_err() && feed.size() != size {
                        break;
                    }
                    let out = out.map_err(|e| part_error(&url, number, e))?;
                    let part = CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                        .build();
                    return Ok((part, size as u64));
                }
                woke = tokio::time::timeout(stall(), feed.changed.notified()) => {
                    if feed.size() != size {
                        tracing::debug!(object = %url, part = number, "part ended short; sent again");
                        break;
                    }
                    if woke.is_err() && !feed.whole() {
                        tracing::debug!(object = %url, part = number, "part stalled; sent again when full");
                        break;
                    }
                }
            }
        }
        // The attempt is dropped here; the next one starts once every byte is here.
        while !feed.whole() {
            feed.changed.notified().await;
        }
    }
}

impl Destination for S3Object {
    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = BLOCK - (self.total() % BLOCK as u64) as usize;
            if room == BLOCK || self.pending.is_empty() {
                let block = self.block();
                self.pending.push_back(block);
            }
            let n = room.min(data.len());
            let back = self.pending.back_mut().expect("a block");
            back.extend_from_slice(&data[..n]);
            self.pending_len += n;
            data = &data[n..];
        }
        Ok(())
    }

    fn commit(&mut self) -> io::Result<()> {
        self.committed = self.total();
        self.hand_over()
    }

    fn rollback(&mut self) -> io::Result<()> {
        let mut excess = self.pending_len - (self.committed - self.pending_start) as usize;
        while excess > 0 {
            let back = self.pending.back_mut().expect("uncommitted bytes");
            let n = back.len().min(excess);
            back.truncate(back.len() - n);
            let emptied = back.is_empty();
            self.pending_len -= n;
            excess -= n;
            if emptied {
                let block = self.pending.pop_back().expect("back");
                self.retire(block);
            }
        }
        Ok(())
    }

    fn committed(&self) -> u64 {
        self.committed
    }

    fn patch(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.total() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a patch of bytes {offset}..{end} lies past the end of the output"),
            ));
        }
        let first_end = self.first.len() as u64;
        if offset < self.pending_start && end > first_end && first_end < self.pending_start {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "a patch of bytes {offset}..{end} of {} lands in a part already uploaded; the object is not written",
                    self.url
                ),
            ));
        }
        if offset < first_end {
            let n = (end.min(first_end) - offset) as usize;
            let at = offset as usize;
            self.first[at..at + n].copy_from_slice(&data[..n]);
        }
        if end > self.pending_start {
            let from = offset.max(self.pending_start);
            let mut src = &data[(from - offset) as usize..];
            let mut at = (from - self.pending_start) as usize;
            for block in &mut self.pending {
                if src.is_empty() {
                    break;
                }
                if at >= block.len() {
                    at -= block.len();
                    continue;
                }
                let n = (block.len() - at).min(src.len());
                block[at..at + n].copy_from_slice(&src[..n]);
                src = &src[n..];
                at = 0;
            }
        }
        Ok(())
    }

    /// The upload exists once the state can name it, so that a killed run's is never lost.
    fn durable(&mut self) -> io::Result<Option<std::fs::File>> {
        if self.committed > 0 {
            self.upload_id()?;
            self.reap(false)?;
        }
        Ok(None)
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn upload(&self) -> Option<Upload> {
        Some(Upload {
            id: self.upload_id.clone()?,
            token: self.token.clone(),
            parts: self.parts.len() as u32,
            bytes: self.uploaded,
        })
    }

    fn finish(mut self: Box<Self>) -> io::Result<Option<PathBuf>> {
        self.rollback()?;
        if self.committed == 0 {
            self.abort();
            return Ok(None);
        }
        match self.complete() {
            Ok(()) => Ok(Some(self.path.clone())),
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }
}

/// A run that ends without completing its object aborts its upload: no orphaned parts.
impl Drop for S3Object {
    fn drop(&mut self) {
        if !self.done {
            self.abort();
        }
    }
}

fn part_error(
    url: &S3Url,
    number: i32,
    e: aws_sdk_s3::error::SdkError<
        aws_sdk_s3::operation::upload_part::UploadPartError,
        aws_sdk_s3::config::http::HttpResponse,
    >,
) -> io::Error {
    if s3::code(&e) == Some("NoSuchUpload") {
        return taken_over(url);
    }
    s3::io_error(&format!("uploading part {number} of {url}"), e)
}

fn taken_over(url: &S3Url) -> io::Error {
    s3::superseded(format!(
        "the upload of {url} was aborted by another kvs-dl run with the same state"
    ))
}

/// Whether the object exists (HeadObject).
pub fn exists(path: &Path) -> io::Result<bool> {
    let url =
        s3::parse(path).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not s3://"))?;
    exists_with(&s3::client(&url.bucket)?, &url)
}

fn exists_with(client: &Client, url: &S3Url) -> io::Result<bool> {
    let request = client.head_object().bucket(&url.bucket).key(&url.key);
    match s3::block(request.send()) {
        Ok(_) => Ok(true),
        Err(e) if s3::status(&e) == Some(404) => Ok(false),
        Err(e) => Err(s3::io_error(&format!("looking up {url}"), e)),
    }
}

/// Aborts every unfinished upload of `path`'s key, as a run holding the state does with what a
/// run killed before its state named the file left (see
/// [`crate::writer::Writer::reclaim_leftovers`]).
pub fn reclaim(path: &Path) -> io::Result<()> {
    let url =
        s3::parse(path).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not s3://"))?;
    abort_unfinished(&s3::client(&url.bucket)?, &url).map(drop)
}

/// Aborts the unfinished uploads of `url`'s key; their ids.
fn abort_unfinished(client: &Client, url: &S3Url) -> io::Result<Vec<String>> {
    let listed = s3::block(
        client
            .list_multipart_uploads()
            .bucket(&url.bucket)
            .prefix(&url.key)
            .send(),
    )
    .map_err(|e| s3::io_error(&format!("listing the uploads of {url}"), e))?;
    let mut aborted = Vec::new();
    for u in listed.uploads() {
        let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
            continue;
        };
        if key != url.key {
            continue;
        }
        let request = client
            .abort_multipart_upload()
            .bucket(&url.bucket)
            .key(key)
            .upload_id(id);
        match s3::block(request.send()) {
            Ok(_) => {}
            Err(e) if s3::code(&e) == Some("NoSuchUpload") => continue,
            Err(e) => return Err(s3::io_error(&format!("aborting the upload of {url}"), e)),
        }
        tracing::debug!(object = %url, upload = id, "aborted a killed run's upload");
        aborted.push(id.to_owned());
    }
    Ok(aborted)
}

/// What became of the upload a killed run recorded: aborted now (its fragments are to be written
/// again), or completed by that run before it was killed (the object is final).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    Aborted,
    Completed,
}

/// Aborts the upload `upload` of `path` that a killed run left, and any other unfinished upload
/// of the same key (one started just before a kill, before the state could name it): the run
/// calling this holds the state, so no other run is writing that key. `Completed` when the
/// object was completed with this upload.
pub fn take_over(path: &Path, upload: Option<&Upload>) -> io::Result<Leftover> {
    let url =
        s3::parse(path).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not s3://"))?;
    let client = s3::client(&url.bucket)?;
    let aborted = abort_unfinished(&client, &url)?;
    let aborted_recorded = upload.is_some_and(|r| aborted.contains(&r.id));
    let Some(upload) = upload else {
        return Ok(Leftover::Aborted);
    };
    if aborted_recorded {
        return Ok(Leftover::Aborted);
    }
    let head = client.head_object().bucket(&url.bucket).key(&url.key);
    match s3::block(head.send()) {
        Ok(out)
            if out
                .metadata()
                .and_then(|m| m.get(TOKEN_META))
                .is_some_and(|t| *t == upload.token) =>
        {
            Ok(Leftover::Completed)
        }
        Ok(_) => Ok(Leftover::Aborted),
        Err(e) if s3::status(&e) == Some(404) => Ok(Leftover::Aborted),
        Err(e) => Err(s3::io_error(&format!("looking up {url}"), e)),
    }
}

fn content_type(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("mkv") => "video/x-matroska",
        Some("mka") => "audio/x-matroska",
        Some("mp4" | "m4v") => "video/mp4",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body;

    fn poll(body: &mut PartBody) -> Poll<Option<io::Result<Bytes>>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(body)
            .poll_frame(&mut cx)
            .map(|f| f.map(|r| r.map(|frame| frame.into_data().expect("data"))))
    }

    fn body(feed: &Arc<Feed>) -> PartBody {
        PartBody {
            feed: feed.clone(),
            size: feed.size(),
            next: 0,
            sent: 0,
        }
    }

    #[test]
    fn a_part_body_streams_committed_bytes_and_every_attempt_starts_over() {
        let feed = Feed::new();
        let mut first = body(&feed);
        assert_eq!(first.size_hint().exact(), Some(PART_SIZE as u64));
        assert!(poll(&mut first).is_pending(), "nothing committed yet");
        feed.push(Bytes::from(vec![1; PART_SIZE - 10]));
        assert!(matches!(poll(&mut first), Poll::Ready(Some(Ok(b))) if b.len() == PART_SIZE - 10));
        assert!(poll(&mut first).is_pending(), "waits for the rest");
        assert_eq!(feed.room(), 10);
        feed.push(Bytes::from_static(&[2; 10]));
        assert!(feed.whole());
        // A retry reads the part again from its first byte.
        let mut retry = body(&feed);
        let mut got = Vec::new();
        while let Poll::Ready(Some(Ok(b))) = poll(&mut retry) {
            got.extend_from_slice(&b);
        }
        assert_eq!(got.len(), PART_SIZE);
        assert_eq!(&got[PART_SIZE - 11..], &[1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
        assert!(matches!(poll(&mut retry), Poll::Ready(None)));
        assert!(retry.is_end_stream());
    }

    #[test]
    fn a_part_that_ends_short_fails_its_attempt_and_announces_its_true_length() {
        let feed = Feed::new();
        let mut attempt = body(&feed);
        feed.push(Bytes::from_static(b"tail"));
        assert!(matches!(poll(&mut attempt), Poll::Ready(Some(Ok(_)))));
        feed.end();
        assert!(matches!(poll(&mut attempt), Poll::Ready(Some(Err(_)))));
        assert_eq!((feed.size(), feed.room()), (4, 0));
        let mut again = body(&feed);
        assert!(matches!(poll(&mut again), Poll::Ready(Some(Ok(b))) if &b[..] == b"tail"));
        assert!(matches!(poll(&mut again), Poll::Ready(None)));
    }

    #[test]
    fn an_abandoned_part_fails_its_body() {
        let feed = Feed::new();
        let mut attempt = body(&feed);
        feed.abandon();
        assert!(matches!(poll(&mut attempt), Poll::Ready(Some(Err(_)))));
    }
}
