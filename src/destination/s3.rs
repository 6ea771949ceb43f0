//! `-o s3://BUCKET/KEY`: an object written through a multipart upload of a bounded buffer.
//!
//! * Bytes are cut into parts of [`PART_SIZE`] (the S3 minimum) only from committed bytes, so an
//!   uploaded part never holds a partial fragment; a rollback only ever drops buffered bytes.
//! * The first part stays in memory until the file ends and is uploaded last, as part 1: the
//!   encoders patch values at fixed offsets (Matroska's Segment size, Duration and SeekHead,
//!   MP4's header), and every such offset lies in the first few kilobytes. A patch that would
//!   land in a part already sent is an error, never a silently wrong object.
//! * At most two parts are in flight; memory is the first part, the parts in flight and the
//!   buffer being filled: about three parts, whatever the length of the file.
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

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
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
    /// File bytes from `buf_start` on, not sent yet; committed ones first.
    buf: Vec<u8>,
    buf_start: u64,
    committed: u64,
    next_part: i32,
    in_flight: VecDeque<JoinHandle<PartResult>>,
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
            buf: Vec::new(),
            buf_start: 0,
            committed: 0,
            next_part: 2,
            in_flight: VecDeque::new(),
            parts: Vec::new(),
            uploaded: 0,
            done: false,
        })
    }

    fn total(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
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

    /// Moves committed bytes into the first part until it is full, then sends whole parts.
    fn cut(&mut self) -> io::Result<()> {
        let sendable = (self.committed - self.buf_start) as usize;
        let mut taken = 0;
        if self.first.len() < PART_SIZE {
            taken = (PART_SIZE - self.first.len()).min(sendable);
            if self.first.capacity() == 0 {
                self.first.reserve_exact(PART_SIZE);
            }
            self.first.extend_from_slice(&self.buf[..taken]);
        }
        while sendable - taken >= PART_SIZE {
            let part = self.buf[taken..taken + PART_SIZE].to_vec();
            taken += PART_SIZE;
            self.send(part)?;
        }
        if taken > 0 {
            self.buf.drain(..taken);
            self.buf_start += taken as u64;
        }
        Ok(())
    }

    /// Uploads `data` as the next part; waits while two are in flight.
    fn send(&mut self, data: Vec<u8>) -> io::Result<()> {
        if self.next_part > MAX_PARTS {
            return Err(io::Error::other(format!(
                "{} would need more than {MAX_PARTS} parts of {} MiB; split it with --segment",
                self.url,
                PART_SIZE >> 20
            )));
        }
        let number = self.next_part;
        self.next_part += 1;
        let task = self.spawn_part(number, data)?;
        self.in_flight.push_back(task);
        self.reap(false)?;
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn spawn_part(&mut self, number: i32, data: Vec<u8>) -> io::Result<JoinHandle<PartResult>> {
        let id = self.upload_id()?;
        let client = self.client.clone();
        let url = self.url.clone();
        let len = data.len() as u64;
        Ok(tokio::spawn(async move {
            let out = client
                .upload_part()
                .bucket(&url.bucket)
                .key(&url.key)
                .upload_id(&id)
                .part_number(number)
                .body(ByteStream::from(Bytes::from(data)))
                .send()
                .await
                .map_err(|e| part_error(&url, number, e))?;
            let part = CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                .build();
            Ok((part, len))
        }))
    }

    /// Collects parts that finished; with `all`, waits for every one.
    fn reap(&mut self, all: bool) -> io::Result<()> {
        while let Some(task) = self.in_flight.front() {
            if !all && !task.is_finished() {
                break;
            }
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> io::Result<()> {
        let Some(task) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (part, len) = s3::block(task).map_err(io::Error::other)??;
        self.parts.push(part);
        self.uploaded += len;
        Ok(())
    }

    /// Completes the object from the parts, with part 1 (patched) and the last part sent now.
    fn complete(&mut self) -> io::Result<()> {
        self.cut()?;
        let first = std::mem::take(&mut self.first);
        let rest = std::mem::take(&mut self.buf);
        let mut tasks = vec![self.spawn_part(1, first)?];
        if !rest.is_empty() {
            let number = self.next_part;
            tasks.push(self.spawn_part(number, rest)?);
        }
        self.in_flight.extend(tasks);
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
        for task in self.in_flight.drain(..) {
            task.abort();
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

impl Destination for S3Object {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(PART_SIZE + (1 << 20));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn commit(&mut self) -> io::Result<()> {
        self.committed = self.total();
        self.cut()
    }

    fn rollback(&mut self) -> io::Result<()> {
        self.buf
            .truncate((self.committed - self.buf_start) as usize);
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
        let (in_first, in_buf) = if end <= first_end {
            (data, &[][..])
        } else if offset >= self.buf_start {
            (&[][..], data)
        } else if offset < first_end && first_end == self.buf_start {
            data.split_at((first_end - offset) as usize)
        } else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "a patch of bytes {offset}..{end} of {} lands in a part already uploaded; the object is not written",
                    self.url
                ),
            ));
        };
        if !in_first.is_empty() {
            let at = offset as usize;
            self.first[at..at + in_first.len()].copy_from_slice(in_first);
        }
        if !in_buf.is_empty() {
            let at = (offset + in_first.len() as u64 - self.buf_start) as usize;
            self.buf[at..at + in_buf.len()].copy_from_slice(in_buf);
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
