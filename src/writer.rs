//! The format-neutral writer: everything about output files that is the same for every format.
//! It names files (`-o`, `--segment` templates, suffixes), opens them at a [`Destination`],
//! moves an [`Encoder`]'s bytes and patches into them, commits whole fragments, starts a new
//! file at a segment boundary or a track change, finishes what a killed run left, and keeps
//! the record of the open file that the state file saves. It never looks at a format's bytes.

mod live;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mkv::{Event, Fragment};
use serde::{Deserialize, Serialize};

use crate::config::{Clock, Format};
use crate::destination::s3::Upload;
use crate::destination::{self, Destination, LocalFile, Stdout, part_path};
use crate::encoder::{Contents, Encoder, Options, Refusal};
use crate::progress::FileReport;
use live::{Live, Step};

/// Whether a fragment can be written where the output stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    Yes,
    /// Its tracks differ from the file's and no new file may be started.
    TrackChange,
}

/// Why writing failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The format cannot take this fragment at all (an unsupported codec, unreadable Tracks).
    #[error("fragment {fragment}: {reason}")]
    Unwritable { fragment: String, reason: String },
}

/// A fragment, as far as resuming needs it; saved in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub fragment_number: String,
    pub server_timestamp_ms: i64,
    pub producer_timestamp_ms: i64,
    pub continuation_token: Option<String>,
}

impl Saved {
    pub fn from_fragment(f: &Fragment) -> Saved {
        Saved {
            fragment_number: f.number.clone(),
            server_timestamp_ms: f.server_ms,
            producer_timestamp_ms: f.producer_ms,
            continuation_token: f.continuation_token.clone(),
        }
    }

    pub fn to_fragment(&self) -> Fragment {
        Fragment {
            number: self.fragment_number.clone(),
            server_ms: self.server_timestamp_ms,
            producer_ms: self.producer_timestamp_ms,
            millis_behind_now: None,
            continuation_token: self.continuation_token.clone(),
        }
    }
}

/// An output file not finished yet: its `.part` holds `bytes` bytes of whole fragments. The
/// state file keeps it, so that the next run can continue or finish the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFile {
    /// The final name; the bytes are in its `.part`.
    pub path: PathBuf,
    pub format: Format,
    pub bytes: u64,
    pub first: Saved,
    /// The last fragment in the file (older state files leave it out: it was the state's last).
    #[serde(default)]
    pub last: Option<Saved>,
    pub fragments: u64,
    #[serde(default)]
    pub duration_ms: u64,
    /// Where a `--segment` file ends, on the `--timestamp-type` clock (epoch milliseconds).
    #[serde(default)]
    pub segment_end_ms: Option<i64>,
    /// An S3 object's multipart upload in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<Upload>,
}

impl OpenFile {
    fn contents(&self, last: &Fragment) -> Contents {
        Contents {
            fragments: self.fragments,
            duration_ms: self.duration_ms,
            first: Some(self.first.to_fragment()),
            last: Some(
                self.last
                    .as_ref()
                    .map_or_else(|| last.clone(), Saved::to_fragment),
            ),
            non_monotonic: 0,
        }
    }
}

/// Where the files go.
pub enum Names {
    /// `-o -`.
    Stdout,
    /// `-o PATH`: one file.
    File(PathBuf),
    /// `--segment`: a file every `every` of media, named from a template.
    Segments(Segments),
}

/// `--segment DUR` with its template.
#[derive(Debug, Clone)]
pub struct Segments {
    pub template: String,
    pub every: Duration,
    pub stream: String,
    pub clock: Clock,
}

impl Segments {
    /// The file name for a segment starting with `fragment`.
    pub fn name(&self, fragment: &Fragment) -> io::Result<PathBuf> {
        segment_name(&self.template, &self.stream, self.clock, fragment)
    }

    /// Where the segment that starts with `fragment` ends: the next multiple of `every` on the
    /// clock, counted from the Unix epoch, so that `--segment 1h` files hold clock hours
    /// whenever the runs start.
    fn end_ms(&self, fragment: &Fragment) -> i64 {
        let every = (self.every.as_millis() as i64).max(1);
        let t = self.clock.of(fragment);
        t.div_euclid(every).saturating_add(1).saturating_mul(every)
    }
}

/// See the module docs.
pub struct Writer {
    format: Format,
    names: Names,
    force: bool,
    encoder: Box<dyn Encoder>,
    /// The open file; with segments, opened at each file's first fragment.
    dest: Option<Box<dyn Destination>>,
    /// Where the open segment ends.
    segment_end_ms: Option<i64>,
    closed: Vec<FileReport>,
    closed_bytes: u64,
    /// Every file this run has written, so that no name is used twice.
    produced: Vec<PathBuf>,
    /// Standard output in a remuxing format: frames go out as they arrive.
    live: Option<Live>,
    /// Waited on before a file takes its final name (see [`Writer::settle_with`]).
    settle: Option<Settle>,
    /// See [`Writer::reclaim_leftovers`].
    reclaim: bool,
}

/// See [`Writer::settle_with`].
pub type Settle = Box<dyn FnMut() -> io::Result<()>>;

impl Writer {
    /// A writer for a run's output. A single `-o PATH` is opened (and locked) at once, so that
    /// an existing file or another run writing it is found before anything is downloaded.
    pub fn new(format: Format, opts: Options, names: Names, force: bool) -> io::Result<Writer> {
        let dest: Option<Box<dyn Destination>> = match &names {
            Names::Stdout => Some(Box::new(Stdout::new(io::stdout()))),
            Names::File(path) => Some(destination::create(path, force)?),
            Names::Segments(_) => None,
        };
        let encoder = format.encoder(&opts);
        Ok(Writer::with(format, names, force, encoder, dest))
    }

    /// A writer that goes on with `file`, which an earlier run (killed, or stopped inside a
    /// segment) left as `.part`, after its last fragment. `Ok(None)` when there is no `.part`.
    pub fn continuing(
        opts: Options,
        names: Names,
        force: bool,
        file: &OpenFile,
        last: &Fragment,
    ) -> io::Result<Option<Writer>> {
        let Some((dest, encoder)) = reopen(&opts, file, last)? else {
            return Ok(None);
        };
        let mut writer = Writer::with(file.format, names, force, encoder, Some(dest));
        writer.segment_end_ms = file.segment_end_ms;
        writer.produced.push(file.path.clone());
        Ok(Some(writer))
    }

    fn with(
        format: Format,
        names: Names,
        force: bool,
        encoder: Box<dyn Encoder>,
        dest: Option<Box<dyn Destination>>,
    ) -> Writer {
        let live = (matches!(names, Names::Stdout) && format != Format::Raw).then(Live::default);
        Writer {
            live,
            format,
            names,
            force,
            encoder,
            dest,
            segment_end_ms: None,
            closed: Vec::new(),
            closed_bytes: 0,
            produced: Vec::new(),
            settle: None,
            reclaim: false,
        }
    }

    /// For a run that holds a state: a segment's `.part` that no live run holds is this
    /// state's own leftover, from a run killed before its state named the file. Its fragments
    /// come after the state's last one, so this run writes them again, and the file gets its
    /// own name back rather than a `.N` suffix beside a `.part` nobody would ever finish.
    /// An S3 object's unfinished uploads are such leftovers too, aborted before the object is
    /// written again.
    pub fn reclaim_leftovers(&mut self) -> io::Result<()> {
        self.reclaim = true;
        match &self.names {
            // Opened already, but its upload starts only with its first part.
            Names::File(path) => destination::reclaim(path),
            Names::Segments(_) | Names::Stdout => Ok(()),
        }
    }

    /// Makes every file wait for `settle` before it takes its final name: the state saved
    /// through the file's last fragment. A state that lagged behind a finished file would make
    /// the next run write that file's last fragments again.
    pub fn settle_with(&mut self, settle: Settle) {
        self.settle = Some(settle);
    }

    /// Whether `file`, left by an earlier run, is one that a run writing `names` in `format`
    /// goes on writing: the same `-o`, or a segment of the same template.
    pub fn writes(names: &Names, format: Format, file: &OpenFile) -> bool {
        file.format == format
            && match names {
                Names::File(path) => *path == file.path,
                Names::Segments(segments) => {
                    file.segment_end_ms.is_some()
                        && segments
                            .name(&file.first.to_fragment())
                            .is_ok_and(|name| unsuffixed(&file.path) == name)
                }
                Names::Stdout => false,
            }
    }

    /// Asked at each fragment's start, once its chunk's headers were read: may it be written?
    /// A segmenting writer starts its next file here.
    pub fn accept(&mut self, fragment: &Fragment) -> Result<Accept, WriteError> {
        let fits = match self.encoder.accepts() {
            Ok(()) => true,
            Err(Refusal::TracksChanged) => false,
            Err(Refusal::Unwritable(reason)) => {
                return Err(WriteError::Unwritable {
                    fragment: fragment.number.clone(),
                    reason,
                });
            }
        };
        let Names::Segments(segments) = &self.names else {
            return Ok(if fits {
                Accept::Yes
            } else {
                Accept::TrackChange
            });
        };
        let over = self
            .segment_end_ms
            .is_some_and(|end| segments.clock.of(fragment) >= end);
        if self.dest.is_none() || !fits || over {
            let name = segments.name(fragment)?;
            let end = segments.end_ms(fragment);
            // Taken before the close: finishing a file drops what its encoder holds, and this
            // fragment's chunk headers, already read, belong to the next file.
            let next = self.encoder.next_file();
            // The previous segment is renamed into place before the next one is named.
            self.close()?;
            let path = self.free_name(name);
            if self.reclaim {
                destination::reclaim(&path)?;
            }
            self.dest = Some(destination::create(&path, self.force)?);
            self.produced.push(path);
            self.segment_end_ms = Some(end);
            self.encoder = next;
        }
        Ok(Accept::Yes)
    }

    /// `name`, or when that is taken (an earlier run's file, this run's, or an abandoned
    /// `.part`), the first of `NAME.1.EXT`, `NAME.2.EXT`, ... that is free. Never a
    /// replacement: `--force` is the only way to write over a file.
    fn free_name(&self, name: PathBuf) -> PathBuf {
        let taken = |p: &Path| {
            self.produced.iter().any(|q| q == p)
                || (!self.force && destination::taken(p, self.reclaim))
        };
        if !taken(&name) {
            return name;
        }
        let stem = name.file_stem().unwrap_or_default().to_string_lossy();
        let ext = name.extension().map(|e| e.to_string_lossy());
        (1u64..)
            .map(|n| {
                name.with_file_name(match &ext {
                    Some(ext) => format!("{stem}.{n}.{ext}"),
                    None => format!("{stem}.{n}"),
                })
            })
            .find(|p| !taken(p))
            .expect("some suffix is free")
    }

    /// Body bytes up to the next event, exactly as received.
    pub fn body(&mut self, data: &[u8]) -> io::Result<()> {
        self.encoder.body(data)?;
        self.flush()
    }

    /// A parser event of a fragment being written, after the bytes that complete it.
    pub fn event(&mut self, event: &Event<'_>) -> io::Result<()> {
        let step = self.live.as_mut().map_or(Step::Pass, |l| l.event(event));
        if step == Step::Drop {
            return Ok(());
        }
        let held = self.encoder.held_frames();
        self.encoder.event(event)?;
        self.flush()?;
        let Some(dest) = self.dest.as_mut() else {
            return Ok(());
        };
        // A frame just became whole, or the encoder wrote out frames it held: send them now.
        let held_now = self.encoder.held_frames();
        if let Some(live) = self.live.as_mut()
            && (step == Step::Release || held_now < held)
        {
            dest.release()?;
            live.sent(held_now);
        }
        if let Event::FragmentEnd(_) = event {
            dest.commit()?;
        }
        Ok(())
    }

    /// The fragment that starts here is not written.
    pub fn skip_fragment(&mut self) {
        self.encoder.skip_fragment();
    }

    /// The connection dropped: forget the fragment in progress.
    pub fn discard(&mut self) -> io::Result<()> {
        if let Some(live) = self.live.as_mut() {
            live.discard();
        }
        self.encoder.discard();
        match self.dest.as_mut() {
            Some(dest) => dest.rollback(),
            None => Ok(()),
        }
    }

    /// Output bytes of whole fragments so far, over every file.
    pub fn committed(&self) -> u64 {
        self.closed_bytes + self.dest.as_ref().map_or(0, |d| d.committed())
    }

    /// Hands everything committed to the system; the file to fsync before a state file
    /// records it (see [`destination::Destination::durable`]).
    pub fn durable(&mut self) -> io::Result<Option<std::fs::File>> {
        match self.dest.as_mut() {
            Some(dest) => dest.durable(),
            None => Ok(None),
        }
    }

    /// The file being written, as the state file records it; `None` for stdout or before the
    /// first fragment.
    pub fn open_file(&self) -> Option<OpenFile> {
        let dest = self.dest.as_ref()?;
        let c = self.encoder.contents();
        Some(OpenFile {
            path: dest.path()?.to_owned(),
            format: self.format,
            bytes: dest.committed(),
            first: Saved::from_fragment(c.first.as_ref()?),
            last: c.last.as_ref().map(Saved::from_fragment),
            fragments: c.fragments,
            duration_ms: c.duration_ms,
            segment_end_ms: self.segment_end_ms,
            upload: dest.upload(),
        })
    }

    /// Where the open segment ends, if one is open.
    pub fn segment_end_ms(&self) -> Option<i64> {
        self.segment_end_ms.filter(|_| self.dest.is_some())
    }

    /// Files finished since the last call (segments closed during the run).
    pub fn take_closed(&mut self) -> Vec<FileReport> {
        std::mem::take(&mut self.closed)
    }

    /// Completes the output; returns the last file, when one was written.
    pub fn finish(mut self) -> io::Result<Option<FileReport>> {
        self.close()?;
        Ok(self.closed.pop())
    }

    /// Leaves the open segment as `.part` (its whole fragments durable), for the next run to
    /// continue; the state file records it. Files closed earlier are returned as by `finish`.
    pub fn leave_open(mut self) -> io::Result<Vec<FileReport>> {
        if let Some(mut dest) = self.dest.take() {
            self.encoder.discard();
            dest.rollback()?;
            dest.sync()?;
        }
        Ok(std::mem::take(&mut self.closed))
    }

    /// Stops without finishing anything: another run took over. The open file is dropped as a
    /// crash would leave it (an S3 upload is aborted); whatever was finished before stays.
    pub fn abandon(mut self) -> Vec<FileReport> {
        self.encoder.discard();
        drop(self.dest.take());
        std::mem::take(&mut self.closed)
    }

    /// Moves the encoder's output into the destination.
    fn flush(&mut self) -> io::Result<()> {
        let Some(dest) = self.dest.as_mut() else {
            // Segments: nothing is written before the first fragment opens a file.
            return self.encoder.drain(&mut |_, _| Ok(()));
        };
        self.encoder.drain(&mut |bytes, patches| {
            dest.write(bytes)?;
            patches
                .iter()
                .try_for_each(|p| dest.patch(p.offset, &p.bytes))
        })
    }

    /// Completes the open file, if any, into `closed`.
    fn close(&mut self) -> io::Result<()> {
        let Some(dest) = self.dest.as_mut() else {
            return Ok(());
        };
        dest.rollback()?;
        let wrote = self.encoder.finish();
        self.flush()?;
        let mut dest = self.dest.take().expect("checked");
        dest.commit()?;
        if let Some(settle) = self.settle.as_mut() {
            settle()?;
        }
        let rewrite = self.encoder.rewrite();
        let bytes = rewrite.as_ref().map_or(dest.committed(), |r| r.len());
        let path = match &rewrite {
            Some(rewrite) => dest.finish_rewritten(rewrite)?,
            None => dest.finish()?,
        };
        if wrote {
            let report = report(path, bytes, &self.encoder.contents());
            self.closed_bytes += report.bytes;
            self.closed.push(report);
        }
        Ok(())
    }
}

fn report(path: Option<PathBuf>, bytes: u64, c: &Contents) -> FileReport {
    FileReport {
        path,
        fragments: c.fragments,
        bytes,
        media_duration_ms: c.duration_ms,
        first_fragment: c.first.as_ref().map(|f| f.number.clone()),
        last_fragment: c.last.as_ref().map(|f| f.number.clone()),
        non_monotonic_timestamps: c.non_monotonic,
    }
}

type Reopened = (Box<dyn Destination>, Box<dyn Encoder>);

/// The `.part` of `file` cut back to its recorded bytes, and the encoder that wrote it, rebuilt
/// from those bytes. `Ok(None)` when there is no `.part` (the file was finished, or never begun).
fn reopen(opts: &Options, file: &OpenFile, last: &Fragment) -> io::Result<Option<Reopened>> {
    // An S3 object cannot be read back before it is complete: a killed run's is taken again
    // from its first fragment instead (see `destination::s3`).
    if crate::s3::is_s3(&file.path) || !part_path(&file.path).exists() {
        return Ok(None);
    }
    let dest = LocalFile::resume(&file.path, file.bytes)?;
    let mut part = io::Read::take(io::BufReader::new(dest.reader()?), file.bytes);
    let encoder = file
        .format
        .recover(opts, &mut part, file.bytes, file.contents(last))?;
    Ok(Some((Box::new(dest), encoder)))
}

/// Finishes the file a killed run left as `.part`, holding exactly the fragments the state file
/// recorded: the bytes after them are dropped, and the format's trailing parts are written as
/// an uninterrupted run would have. `Ok(None)` when there is no `.part`.
pub fn finish_leftover(
    opts: &Options,
    file: &OpenFile,
    last: &Fragment,
) -> io::Result<Option<FileReport>> {
    let names = Names::File(file.path.clone());
    match Writer::continuing(opts.clone(), names, false, file, last)? {
        Some(writer) => writer.finish(),
        None => Ok(None),
    }
}

/// `NAME` for `NAME.3.EXT`: the name a suffixed file was given for.
fn unsuffixed(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut parts: Vec<&str> = name.split('.').collect();
    let n = parts.len();
    let numbered = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if n >= 3 && numbered(parts[n - 2]) {
        parts.remove(n - 2);
    } else if n == 2 && numbered(parts[1]) {
        parts.pop();
    } else {
        return path.to_owned();
    }
    path.with_file_name(parts.join("."))
}

/// A `--segment` file name: `{stream}`, `{fragment}` and strftime fields of the first
/// fragment's time (on the `--timestamp-type` clock), in UTC.
pub fn segment_name(
    template: &str,
    stream: &str,
    clock: Clock,
    fragment: &Fragment,
) -> io::Result<PathBuf> {
    let time = jiff::Timestamp::from_millisecond(clock.of(fragment)).map_err(io::Error::other)?;
    let named = template
        .replace("{stream}", stream)
        .replace("{fragment}", &fragment.number);
    let expanded = jiff::fmt::strtime::format(&named, time).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot expand the file name template {template:?}: {e}"),
        )
    })?;
    Ok(PathBuf::from(expanded))
}
