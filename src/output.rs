//! Turning the parsed body into output: the [`Writer`] seam, the `--format raw` copier and the
//! `--format mkv` remuxer (with `--segment` files).
//!
//! The download loop hands a writer every body byte, in order and cut at event boundaries,
//! followed by the event those bytes complete. A fragment the loop does not want (one already
//! written before a reconnect) is announced with [`Writer::skip_fragment`] instead of its
//! `FragmentStart`, and only its bytes and its `FragmentEnd` follow.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use mkv::{Event, Fragment, Muxer, Refusal};

use std::io::Read;

use crate::progress::FileReport;
use crate::sink::{FileSink, Sink};
use crate::state::{InProgress, SavedFormat};

/// Whether a fragment can be written where the output stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    Yes,
    /// Its tracks differ from the file's and no new file may be started.
    TrackChange,
}

/// Writes fragments to a [`Sink`], committing each one when it is whole.
pub trait Writer {
    /// Asked at each fragment's start, after its chunk's headers were seen and before its
    /// `FragmentStart`: may the fragment be written? A segmenting writer starts its next file
    /// here.
    fn accept(&mut self, fragment: &Fragment) -> io::Result<Accept>;
    /// Body bytes up to the next event, exactly as received.
    fn body(&mut self, data: &[u8]) -> io::Result<()>;
    /// A parser event, after the bytes that complete it.
    fn event(&mut self, event: &Event<'_>) -> io::Result<()>;
    /// The fragment that starts here is not written.
    fn skip_fragment(&mut self);
    /// The connection dropped: forget the fragment in progress.
    fn discard(&mut self) -> io::Result<()>;
    /// Output bytes of whole fragments so far.
    fn committed(&self) -> u64;
    /// Makes everything committed durable, before a state file records it.
    fn sync(&mut self) -> io::Result<()>;
    /// The file being written and what it holds so far; `None` for stdout or before the first
    /// fragment.
    fn unfinished(&self) -> Option<Unfinished>;
    /// Files finished since the last call (segments closed during the run).
    fn take_closed(&mut self) -> Vec<FileReport>;
    /// Completes the output; returns the last file, when one was written.
    fn finish(self: Box<Self>) -> io::Result<Option<FileReport>>;
}

/// A file not finished yet, as a state file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub path: PathBuf,
    /// Whole-fragment bytes in its `.part`.
    pub bytes: u64,
    pub first: Fragment,
    pub fragments: u64,
}

/// Bytes held between fragments before a decision is made; a chunk's headers are far smaller.
const MAX_HOLD: usize = 16 << 20;

/// How much of a dropped stretch is kept, so that an EBML header that started in it is whole.
const DROP_TAIL: usize = 4096;

/// `--format raw`: the GetMedia bytes of each whole fragment, exactly as received.
pub struct RawWriter {
    sink: Box<dyn Sink>,
    /// Bytes since the last fragment: the next chunk's headers, until its fragment starts.
    hold: Vec<u8>,
    state: RawState,
    report: FileReport,
    first: Option<Fragment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawState {
    /// Between fragments: keep bytes, they may be the next chunk's headers.
    Holding,
    /// Inside a fragment that is written.
    Writing,
    /// Inside something that is not written (a skipped fragment, a chunk without KVS tags).
    Dropping,
}

impl RawWriter {
    pub fn new(sink: Box<dyn Sink>) -> Self {
        RawWriter {
            sink,
            hold: Vec::new(),
            state: RawState::Holding,
            report: FileReport::default(),
            first: None,
        }
    }

    /// Goes on writing the file a killed run left, which holds `fragments` from `first`.
    pub fn resumed(sink: Box<dyn Sink>, first: Fragment, fragments: u64) -> Self {
        RawWriter {
            report: FileReport {
                fragments,
                first_fragment: Some(first.number.clone()),
                ..FileReport::default()
            },
            first: Some(first),
            ..RawWriter::new(sink)
        }
    }
}

impl Writer for RawWriter {
    fn accept(&mut self, _: &Fragment) -> io::Result<Accept> {
        Ok(Accept::Yes)
    }

    fn body(&mut self, data: &[u8]) -> io::Result<()> {
        match self.state {
            RawState::Writing => return self.sink.write(data),
            RawState::Holding => self.hold.extend_from_slice(data),
            RawState::Dropping => {
                self.hold.extend_from_slice(data);
                if self.hold.len() > 2 * DROP_TAIL {
                    self.hold.drain(..self.hold.len() - DROP_TAIL);
                }
            }
        }
        if self.hold.len() > MAX_HOLD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more than 16 MiB of headers before a fragment",
            ));
        }
        Ok(())
    }

    fn event(&mut self, event: &Event<'_>) -> io::Result<()> {
        match event {
            Event::EbmlHeader(header) => {
                // A new chunk: whatever came before its header is not part of any fragment.
                let keep = header.len().min(self.hold.len());
                self.hold.drain(..self.hold.len() - keep);
                self.state = RawState::Holding;
            }
            Event::FragmentStart(_) => {
                self.sink.write(&self.hold)?;
                self.hold.clear();
                self.state = RawState::Writing;
            }
            Event::Cluster { .. } if self.state == RawState::Holding => {
                // A cluster without KVS tags is not a fragment.
                self.state = RawState::Dropping;
            }
            Event::FragmentEnd(f) => {
                if self.state == RawState::Writing {
                    self.sink.commit()?;
                    self.report.add(f);
                    self.first.get_or_insert_with(|| f.clone());
                }
                self.hold.clear();
                self.state = RawState::Holding;
            }
            Event::ServiceError(_) => {
                self.hold.clear();
                self.state = RawState::Holding;
            }
            _ => {}
        }
        Ok(())
    }

    fn skip_fragment(&mut self) {
        self.hold.clear();
        self.state = RawState::Dropping;
    }

    fn discard(&mut self) -> io::Result<()> {
        self.hold.clear();
        self.state = RawState::Holding;
        self.sink.rollback()
    }

    fn committed(&self) -> u64 {
        self.sink.committed()
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sink.sync()
    }

    fn unfinished(&self) -> Option<Unfinished> {
        Some(Unfinished {
            path: self.sink.path()?.to_owned(),
            bytes: self.sink.committed(),
            first: self.first.clone()?,
            fragments: self.report.fragments,
        })
    }

    fn take_closed(&mut self) -> Vec<FileReport> {
        Vec::new()
    }

    fn finish(self: Box<Self>) -> io::Result<Option<FileReport>> {
        let bytes = self.sink.committed();
        let path = self.sink.finish()?;
        Ok((bytes > 0).then_some(FileReport {
            path,
            bytes,
            ..self.report
        }))
    }
}

/// Expands a `--segment` template for a segment's first fragment.
pub type Namer = Box<dyn Fn(&str, &Fragment) -> io::Result<PathBuf>>;

/// `--segment`: a new file every `every` of media (and at track changes), named from a
/// template.
pub struct Segments {
    pub template: String,
    pub every: Duration,
    pub force: bool,
    pub name: Namer,
}

/// `--format mkv`: the fragments remuxed into clean Matroska files.
pub struct MkvWriter {
    muxer: Muxer,
    segments: Option<Segments>,
    /// The current file's sink; with segments, opened at each file's first fragment.
    sink: Option<Box<dyn Sink>>,
    closed: Vec<FileReport>,
    closed_bytes: u64,
    /// Every file this run has written, so that a template that repeats a name (too coarse a
    /// time field) fails rather than replace a segment written minutes ago.
    produced: Vec<PathBuf>,
}

impl MkvWriter {
    /// One file (or stdout) for the whole run.
    pub fn single(sink: Box<dyn Sink>, options: mkv::Options) -> Self {
        Self::resumed(sink, Muxer::new(options))
    }

    /// Goes on writing the file a killed run left: `muxer` was recovered from its `.part`.
    pub fn resumed(sink: Box<dyn Sink>, muxer: Muxer) -> Self {
        MkvWriter {
            muxer,
            segments: None,
            sink: Some(sink),
            closed: Vec::new(),
            closed_bytes: 0,
            produced: Vec::new(),
        }
    }

    /// A file per segment.
    pub fn segmented(segments: Segments, options: mkv::Options) -> Self {
        MkvWriter {
            muxer: Muxer::new(options),
            segments: Some(segments),
            sink: None,
            closed: Vec::new(),
            closed_bytes: 0,
            produced: Vec::new(),
        }
    }

    /// Moves the muxer's output into the sink.
    fn flush(&mut self) -> io::Result<()> {
        let Some(sink) = self.sink.as_mut() else {
            return Ok(());
        };
        self.muxer.drain(|bytes, patches| {
            sink.write(bytes)?;
            for p in patches {
                sink.patch(p.offset, &p.bytes)?;
            }
            Ok(())
        })
    }

    /// Completes the current file, if one is open.
    fn close(&mut self) -> io::Result<Option<FileReport>> {
        if self.sink.is_none() {
            return Ok(None);
        }
        self.sink.as_mut().expect("checked").rollback()?;
        let wrote = self.muxer.finish();
        self.flush()?;
        let mut sink = self.sink.take().expect("checked");
        sink.commit()?;
        let bytes = sink.committed();
        let path = sink.finish()?;
        if !wrote {
            return Ok(None);
        }
        let (first, last) = self.muxer.first_last();
        Ok(Some(FileReport {
            path,
            fragments: self.muxer.fragments(),
            bytes,
            media_duration_ms: self.muxer.duration_ms(),
            first_fragment: first.map(|f| f.number.clone()),
            last_fragment: last.map(|f| f.number.clone()),
            non_monotonic_timestamps: self.muxer.non_monotonic(),
        }))
    }
}

impl Writer for MkvWriter {
    fn accept(&mut self, fragment: &Fragment) -> io::Result<Accept> {
        let fits = match self.muxer.accepts(self.muxer.chunk_tracks()) {
            Ok(()) => true,
            Err(Refusal::TracksChanged) => false,
            Err(Refusal::BadTracks(why)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("fragment {} has unreadable Tracks: {why}", fragment.number),
                ));
            }
        };
        let Some(segments) = &self.segments else {
            return Ok(if fits {
                Accept::Yes
            } else {
                Accept::TrackChange
            });
        };
        let full = self.muxer.fragments() > 0
            && self.muxer.duration_ms() >= segments.every.as_millis() as u64;
        if self.sink.is_none() || !fits || full {
            let path = (segments.name)(&segments.template, fragment)?;
            let force = segments.force;
            if self.produced.contains(&path) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "the --segment template gives {} again; put {{fragment}} or a finer time field (%H%M%S) in it",
                        path.display()
                    ),
                ));
            }
            // The previous segment is renamed into place before the next one is checked.
            if let Some(report) = self.close()? {
                self.closed_bytes += report.bytes;
                self.closed.push(report);
            }
            self.sink = Some(Box::new(FileSink::new(&path, force)?));
            self.produced.push(path);
            self.muxer = self.muxer.next_file();
        }
        Ok(Accept::Yes)
    }

    fn body(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn event(&mut self, event: &Event<'_>) -> io::Result<()> {
        self.muxer.event(event).map_err(|r| {
            io::Error::new(io::ErrorKind::InvalidData, format!("cannot remux: {r:?}"))
        })?;
        self.flush()?;
        if let (Event::FragmentEnd(_), Some(sink)) = (event, self.sink.as_mut()) {
            sink.commit()?;
        }
        Ok(())
    }

    fn skip_fragment(&mut self) {}

    fn discard(&mut self) -> io::Result<()> {
        self.muxer.discard();
        match self.sink.as_mut() {
            Some(sink) => sink.rollback(),
            None => Ok(()),
        }
    }

    fn committed(&self) -> u64 {
        self.closed_bytes + self.sink.as_ref().map_or(0, |s| s.committed())
    }

    fn sync(&mut self) -> io::Result<()> {
        match self.sink.as_mut() {
            Some(sink) => sink.sync(),
            None => Ok(()),
        }
    }

    fn unfinished(&self) -> Option<Unfinished> {
        let sink = self.sink.as_ref()?;
        Some(Unfinished {
            path: sink.path()?.to_owned(),
            bytes: sink.committed(),
            first: self.muxer.first_last().0?.clone(),
            fragments: self.muxer.fragments(),
        })
    }

    fn take_closed(&mut self) -> Vec<FileReport> {
        std::mem::take(&mut self.closed)
    }

    fn finish(mut self: Box<Self>) -> io::Result<Option<FileReport>> {
        self.close()
    }
}

/// Finishes the file a killed run left as `.part`, holding exactly the fragments the state file
/// recorded: the bytes after them are dropped, and a Matroska file gets its Cues, Tags and
/// sizes. `Ok(None)` when there is no `.part` (the file was finished, or never begun).
pub fn finish_leftover(
    file: &InProgress,
    last: &Fragment,
    options: mkv::Options,
) -> io::Result<Option<FileReport>> {
    let Some(mut sink) = leftover(file)? else {
        return Ok(None);
    };
    let first = file.first.to_fragment();
    let mut report = FileReport {
        fragments: file.fragments,
        first_fragment: Some(first.number.clone()),
        last_fragment: Some(last.number.clone()),
        ..FileReport::default()
    };
    if file.format == SavedFormat::Mkv {
        let mut muxer = recover(file, last, options)?;
        muxer.finish();
        report.media_duration_ms = muxer.duration_ms();
        muxer.drain(|bytes, patches| {
            sink.write(bytes)?;
            patches
                .iter()
                .try_for_each(|p| sink.patch(p.offset, &p.bytes))
        })?;
    }
    sink.commit()?;
    sink.sync()?;
    report.bytes = sink.committed();
    report.path = sink.finish()?;
    Ok(Some(report))
}

/// Goes on with the file a killed run left as `.part`, after the fragments the state file
/// recorded, when this run writes the same file. `Ok(None)` when there is no `.part`.
pub fn continue_leftover(
    file: &InProgress,
    last: &Fragment,
    options: mkv::Options,
) -> io::Result<Option<Box<dyn Writer>>> {
    let Some(sink) = leftover(file)? else {
        return Ok(None);
    };
    Ok(Some(match file.format {
        SavedFormat::Raw => Box::new(RawWriter::resumed(
            sink,
            file.first.to_fragment(),
            file.fragments,
        )),
        SavedFormat::Mkv => Box::new(MkvWriter::resumed(sink, recover(file, last, options)?)),
    }))
}

/// The `.part` of an unfinished file, cut back to the bytes the state file recorded.
fn leftover(file: &InProgress) -> io::Result<Option<Box<dyn Sink>>> {
    if !crate::sink::part_path(&file.path).exists() {
        return Ok(None);
    }
    Ok(Some(Box::new(FileSink::resume(&file.path, file.bytes)?)))
}

/// The writer's state, rebuilt from the whole fragments of an unfinished Matroska file.
fn recover(file: &InProgress, last: &Fragment, options: mkv::Options) -> io::Result<Muxer> {
    let part = crate::sink::part_path(&file.path);
    let mut recovery = mkv::Recovery::new(options);
    let mut reader = io::BufReader::new(std::fs::File::open(&part)?).take(file.bytes);
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        recovery.push(&buf[..n]).map_err(invalid)?;
    }
    recovery
        .finish(
            file.bytes,
            file.first.to_fragment(),
            last.clone(),
            file.fragments,
        )
        .map_err(invalid)
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}
