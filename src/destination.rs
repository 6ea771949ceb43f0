//! Where output bytes land, with the guarantee the contract makes: only whole fragments ever
//! reach a final name. The writer appends a fragment's bytes, then `commit`s once it is whole or
//! `rollback`s when it was cut off. A destination knows bytes and names, never a format.
//!
//! [`LocalFile`] writes `PATH.part` (created at the first byte, so a run that writes nothing
//! leaves nothing), fsyncs it and renames it to `PATH` when finished. [`Stdout`] holds the
//! uncommitted fragment (in memory up to [`SPOOL_IN_MEMORY`], then in an anonymous temporary
//! file) and releases it to stdout only when it is whole, because a pipe cannot be taken back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::encoder::Rewrite;

pub mod s3;

/// A new file at `path`: an S3 object for `s3://BUCKET/KEY`, else a [`LocalFile`].
pub fn create(path: &Path, force: bool) -> io::Result<Box<dyn Destination>> {
    if crate::s3::is_s3(path) {
        return Ok(Box::new(s3::S3Object::create(path, force)?));
    }
    Ok(Box::new(LocalFile::create(path, force)?))
}

/// Clears what a killed run of the same state left under `path` before a new file is written
/// there: an S3 object's unfinished uploads. (A local `.part` is truncated by
/// [`LocalFile::create`] once its lock is free.)
pub fn reclaim(path: &Path) -> io::Result<()> {
    match crate::s3::is_s3(path) {
        true => s3::reclaim(path),
        false => Ok(()),
    }
}

/// Whether a file (or object) is there, or a local file's `.part`: a name a new file must not
/// take. With `reclaim`, a `.part` that no live run holds is free (see
/// [`crate::writer::Writer::reclaim_leftovers`]).
pub fn taken(path: &Path, reclaim: bool) -> bool {
    if crate::s3::is_s3(path) {
        // A failed lookup counts as free: completing the object refuses to replace one anyway.
        return s3::exists(path).unwrap_or(false);
    }
    let part = part_path(path);
    path.exists() || (part.exists() && (!reclaim || held(&part)))
}

/// Whether a live run holds the lock of `part`.
fn held(part: &Path) -> bool {
    match locked(part, OpenOptions::new().read(true)) {
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

/// Writes are gathered into buffers of this size before they reach the file.
const WRITE_BUFFER: usize = 1 << 20;

/// How much of an uncommitted fragment stdout keeps in memory before spilling to disk.
pub const SPOOL_IN_MEMORY: usize = 8 << 20;

/// An output that only ever keeps whole fragments: a local file, standard output, an S3 object.
pub trait Destination {
    /// Appends bytes of the fragment being written.
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
    /// Everything written so far is whole and stays.
    fn commit(&mut self) -> io::Result<()>;
    /// Drops what was written since the last commit (and not released).
    fn rollback(&mut self) -> io::Result<()>;
    /// Sends what was written so far on at once, before its fragment is whole: a frame of a
    /// live view. Only standard output does anything here; what is released cannot be rolled
    /// back.
    fn release(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Bytes committed so far.
    fn committed(&self) -> u64;
    /// Overwrites bytes already written at `offset` (the remuxer patches sizes and the
    /// duration in place). Outputs that cannot seek return `Unsupported`.
    fn patch(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Hands the committed bytes to the system and returns the file whose `sync_data` makes
    /// them durable, so that the fsync a state file waits for can run off the download's
    /// thread; `None` when there is nothing to sync.
    fn durable(&mut self) -> io::Result<Option<File>>;
    /// Makes the committed bytes durable (fsync) now.
    fn sync(&mut self) -> io::Result<()> {
        match self.durable()? {
            Some(file) => file.sync_data(),
            None => Ok(()),
        }
    }
    /// The final path, for outputs that are files.
    fn path(&self) -> Option<&Path>;
    /// The S3 multipart upload in progress, for the state file.
    fn upload(&self) -> Option<s3::Upload> {
        None
    }
    /// Drops the uncommitted rest and makes the committed bytes final. Returns the final path
    /// when a file was written.
    fn finish(self: Box<Self>) -> io::Result<Option<PathBuf>>;
    /// Like `finish`, but the final file is `rewrite.head` followed by the listed ranges of the
    /// committed bytes. Outputs that cannot read back return `Unsupported`.
    fn finish_rewritten(self: Box<Self>, _rewrite: &Rewrite) -> io::Result<Option<PathBuf>> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// `PATH.part`, renamed to `PATH` when finished.
pub struct LocalFile {
    path: PathBuf,
    part: PathBuf,
    force: bool,
    file: Option<File>,
    /// Bytes not yet written to the file.
    buf: Vec<u8>,
    /// Bytes written to the file (before `buf`).
    file_len: u64,
    committed: u64,
    /// Background writeback of what is written, and the file length when it was last asked.
    writeback: Option<Writeback>,
    kicked_at: u64,
}

/// Written bytes are flushed to disk by a thread of their own while the download goes on, so
/// that the fsync before the rename finds little left to do. On a VM disk the final fsync of a
/// 1 GB file took 0.57 s, the whole gap between kvs-dl and curl writing the same body.
#[derive(Debug)]
struct Writeback {
    kick: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Writeback is asked for after this many new bytes.
const WRITEBACK_EVERY: u64 = 32 << 20;

impl Writeback {
    fn new(file: &File) -> io::Result<Writeback> {
        let file = file.try_clone()?;
        let (kick, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("writeback".into())
            .spawn(move || {
                while asked.recv().is_ok() {
                    // Best effort: the fsync before the rename is the one that counts.
                    let _ = file.sync_data();
                }
            })?;
        Ok(Writeback {
            kick: Some(kick),
            thread: Some(thread),
        })
    }

    /// Starts a writeback unless one is already under way (the writer never waits for it).
    fn kick(&self) {
        if let Some(kick) = &self.kick {
            let _ = kick.try_send(());
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.kick.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl LocalFile {
    /// Starts writing `path`: creates and locks its `.part`. Refuses an existing `path` unless
    /// `force`, and a `.part` that another run holds (it is writing that file right now).
    pub fn create(path: &Path, force: bool) -> io::Result<LocalFile> {
        if !force && path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", path.display()),
            ));
        }
        let part = part_path(path);
        if let Some(dir) = part.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = locked(
            &part,
            OpenOptions::new().read(true).write(true).create(true),
        )?;
        // Only now that no other run holds it: what an abandoned run left is dropped.
        file.set_len(0)?;
        let writeback = Some(Writeback::new(&file)?);
        Ok(LocalFile {
            path: path.to_owned(),
            part,
            force,
            file: Some(file),
            buf: Vec::new(),
            file_len: 0,
            committed: 0,
            writeback,
            kicked_at: 0,
        })
    }

    /// Continues the `.part` an earlier run left, keeping its first `committed` bytes (the
    /// whole fragments a state file recorded) and dropping anything after them.
    pub fn resume(path: &Path, committed: u64) -> io::Result<LocalFile> {
        let part = part_path(path);
        let mut file = locked(&part, OpenOptions::new().read(true).write(true))?;
        let len = file.metadata()?.len();
        if len < committed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {len} bytes, fewer than the {committed} the state file recorded",
                    part.display()
                ),
            ));
        }
        file.set_len(committed)?;
        file.seek(SeekFrom::Start(committed))?;
        let writeback = Some(Writeback::new(&file)?);
        Ok(LocalFile {
            path: path.to_owned(),
            part,
            force: false,
            file: Some(file),
            buf: Vec::new(),
            file_len: committed,
            committed,
            writeback,
            kicked_at: committed,
        })
    }

    /// Reads the `.part` from its start, without moving the writing position.
    pub fn reader(&self) -> io::Result<File> {
        File::open(&self.part)
    }

    fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the output file was already finished"))
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        self.file()?.write_all(&buf)?;
        self.file_len += buf.len() as u64;
        self.buf = buf;
        self.buf.clear();
        Ok(())
    }
}

impl Destination for LocalFile {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.buf.len() + data.len() > WRITE_BUFFER {
            self.flush_buf()?;
        }
        if data.len() >= WRITE_BUFFER {
            self.file()?.write_all(data)?;
            self.file_len += data.len() as u64;
        } else {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(WRITE_BUFFER);
            }
            self.buf.extend_from_slice(data);
        }
        Ok(())
    }

    fn commit(&mut self) -> io::Result<()> {
        self.committed = self.file_len + self.buf.len() as u64;
        if self.file_len >= self.kicked_at + WRITEBACK_EVERY
            && let Some(writeback) = &self.writeback
        {
            writeback.kick();
            self.kicked_at = self.file_len;
        }
        Ok(())
    }

    fn rollback(&mut self) -> io::Result<()> {
        if self.committed >= self.file_len {
            self.buf.truncate((self.committed - self.file_len) as usize);
            return Ok(());
        }
        self.buf.clear();
        let committed = self.committed;
        let file = self.file()?;
        file.set_len(committed)?;
        file.seek(SeekFrom::Start(committed))?;
        self.file_len = committed;
        Ok(())
    }

    fn committed(&self) -> u64 {
        self.committed
    }

    fn patch(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.file_len + self.buf.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a patch of bytes {offset}..{end} lies past the end of the output"),
            ));
        }
        if offset >= self.file_len {
            let at = (offset - self.file_len) as usize;
            self.buf[at..at + data.len()].copy_from_slice(data);
            return Ok(());
        }
        self.flush_buf()?;
        let file_len = self.file_len;
        let file = self.file()?;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(data)?;
        file.seek(SeekFrom::Start(file_len))?;
        Ok(())
    }

    fn durable(&mut self) -> io::Result<Option<File>> {
        // Only committed bytes need to be durable; the buffer may hold a partial fragment.
        let keep = self.committed;
        if keep > self.file_len {
            // Straight from the buffer: a copy of the head would cost an allocation and a pass
            // over every fragment's bytes (a sync follows every fragment when a state is kept).
            let n = (keep - self.file_len) as usize;
            let mut file = self
                .file
                .as_ref()
                .ok_or_else(|| io::Error::other("the output file was already finished"))?;
            file.write_all(&self.buf[..n])?;
            self.buf.drain(..n);
            self.file_len += n as u64;
        }
        self.file.as_ref().map(File::try_clone).transpose()
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn finish(mut self: Box<Self>) -> io::Result<Option<PathBuf>> {
        if self.committed == 0 {
            if self.file.take().is_some() {
                fs::remove_file(&self.part)?;
            }
            return Ok(None);
        }
        // Renamed while still locked, so that no other run ever takes the `.part` of a
        // finished file for an abandoned one.
        let file = self.seal()?;
        let path = self.publish(&self.part.clone())?;
        drop(file);
        Ok(Some(path))
    }

    fn finish_rewritten(mut self: Box<Self>, rewrite: &Rewrite) -> io::Result<Option<PathBuf>> {
        if self.committed == 0 {
            return self.finish();
        }
        let mut part = self.seal()?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let mut out = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".rewrite")
            .tempfile_in(dir)?;
        out.write_all(&rewrite.head)?;
        for range in &rewrite.ranges {
            part.seek(SeekFrom::Start(range.start))?;
            // File to file: the kernel copies (copy_file_range), nothing passes through memory.
            let n = io::copy(
                &mut (&part).take(range.end - range.start),
                out.as_file_mut(),
            )?;
            if n != range.end - range.start {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} ends before byte {}", self.part.display(), range.end),
                ));
            }
        }
        out.as_file().sync_all()?;
        let (_, tmp) = out.keep().map_err(|e| e.error)?;
        let published = self.publish(&tmp);
        if published.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        let path = published?;
        fs::remove_file(&self.part)?;
        drop(part);
        sync_parent(&self.path);
        Ok(Some(path))
    }
}

impl LocalFile {
    /// The committed bytes, flushed and durable, with the uncommitted rest dropped.
    fn seal(&mut self) -> io::Result<File> {
        self.rollback()?;
        self.flush_buf()?;
        let file = self.file.take().expect("bytes were committed");
        file.sync_all()?;
        Ok(file)
    }

    /// Puts `from` (the `.part`, or a rewrite of it) under the final name, unless a file
    /// appeared there meanwhile and `--force` was not given.
    fn publish(&self, from: &Path) -> io::Result<PathBuf> {
        if !self.force && self.path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} appeared while downloading; the download is kept in {}",
                    self.path.display(),
                    self.part.display()
                ),
            ));
        }
        fs::rename(from, &self.path)?;
        sync_parent(&self.path);
        Ok(self.path.clone())
    }
}

/// A run that committed nothing leaves no file, however it ends short of a crash. (A file it
/// leaves open for the next run has whole fragments in it.)
impl Drop for LocalFile {
    fn drop(&mut self) {
        if self.file.take().is_some() && self.committed == 0 {
            let _ = fs::remove_file(&self.part);
        }
    }
}

/// Opens `path` and takes its exclusive lock, or says that another process holds it.
pub fn locked(path: &Path, options: &OpenOptions) -> io::Result<File> {
    let file = options.open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!("{} is locked by another kvs-dl run", path.display()),
        )),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// `PATH.part`: the name a file has while it is written.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// Makes a rename durable. Best effort: some filesystems cannot fsync a directory.
pub fn sync_parent(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Standard output, released one whole fragment at a time.
pub struct Stdout<W: Write> {
    out: W,
    spool: Vec<u8>,
    spill: Option<File>,
    spilled: u64,
    committed: u64,
    /// Bytes of the fragment in progress already sent on (live view), not yet committed.
    released: u64,
}

impl<W: Write> Stdout<W> {
    pub fn new(out: W) -> Self {
        Stdout {
            out,
            spool: Vec::new(),
            spill: None,
            spilled: 0,
            committed: 0,
            released: 0,
        }
    }

    /// Writes what is held to the output; returns how many bytes that was.
    fn send(&mut self) -> io::Result<u64> {
        let sent = if let (Some(spill), true) = (&mut self.spill, self.spilled > 0) {
            spill.seek(SeekFrom::Start(0))?;
            io::copy(&mut spill.take(self.spilled), &mut self.out)?;
            spill.set_len(0)?;
            spill.seek(SeekFrom::Start(0))?;
            std::mem::take(&mut self.spilled)
        } else {
            self.out.write_all(&self.spool)?;
            let n = self.spool.len() as u64;
            self.spool.clear();
            n
        };
        self.out.flush()?;
        Ok(sent)
    }
}

impl<W: Write> Destination for Stdout<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.spool.len() + data.len() <= SPOOL_IN_MEMORY && self.spilled == 0 {
            self.spool.extend_from_slice(data);
            return Ok(());
        }
        let spill = match &mut self.spill {
            Some(f) => f,
            None => self.spill.insert(tempfile::tempfile()?),
        };
        if self.spilled == 0 {
            spill.set_len(0)?;
            spill.seek(SeekFrom::Start(0))?;
            spill.write_all(&self.spool)?;
            self.spilled = self.spool.len() as u64;
            self.spool.clear();
        }
        spill.write_all(data)?;
        self.spilled += data.len() as u64;
        Ok(())
    }

    fn commit(&mut self) -> io::Result<()> {
        let sent = self.send()?;
        self.committed += std::mem::take(&mut self.released) + sent;
        Ok(())
    }

    fn rollback(&mut self) -> io::Result<()> {
        self.spool.clear();
        self.spilled = 0;
        // What was released is in the pipe for good; it just is not a whole fragment.
        self.released = 0;
        Ok(())
    }

    fn release(&mut self) -> io::Result<()> {
        self.released += self.send()?;
        Ok(())
    }

    fn committed(&self) -> u64 {
        self.committed
    }

    fn patch(&mut self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn durable(&mut self) -> io::Result<Option<File>> {
        // Committed bytes were flushed to the pipe; there is nothing more durable to make them.
        Ok(None)
    }

    fn path(&self) -> Option<&Path> {
        None
    }

    fn finish(mut self: Box<Self>) -> io::Result<Option<PathBuf>> {
        self.out.flush()?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap()
    }

    #[test]
    fn local_file_keeps_only_committed_bytes_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.mkv");
        let mut dest = Box::new(LocalFile::create(&path, false).unwrap());
        dest.write(b"one").unwrap();
        dest.commit().unwrap();
        dest.write(b"two-cut").unwrap();
        dest.rollback().unwrap();
        dest.write(b"three").unwrap();
        dest.commit().unwrap();
        dest.write(b"partial").unwrap();
        assert!(part_path(&path).exists());
        assert!(!path.exists(), "nothing under the final name before finish");
        assert_eq!(dest.finish().unwrap(), Some(path.clone()));
        assert_eq!(read(&path), b"onethree");
        assert!(!part_path(&path).exists());
    }

    #[test]
    fn local_file_rolls_back_bytes_already_flushed_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.raw");
        let mut dest = Box::new(LocalFile::create(&path, false).unwrap());
        let a = vec![1u8; WRITE_BUFFER / 2];
        let b = vec![2u8; WRITE_BUFFER * 2];
        dest.write(&a).unwrap();
        dest.commit().unwrap();
        dest.write(&b).unwrap();
        dest.rollback().unwrap();
        dest.write(b"end").unwrap();
        dest.commit().unwrap();
        dest.patch(0, b"\x09").unwrap();
        dest.finish().unwrap();
        let got = read(&path);
        assert_eq!(got.len(), a.len() + 3);
        assert_eq!(got[0], 9);
        assert!(got[1..a.len()].iter().all(|&x| x == 1));
        assert_eq!(&got[a.len()..], b"end");
    }

    #[test]
    fn local_file_resumes_a_part_after_its_recorded_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.raw");
        let mut dest = Box::new(LocalFile::create(&path, false).unwrap());
        dest.write(b"kept").unwrap();
        dest.commit().unwrap();
        dest.write(b"partial").unwrap();
        dest.sync().unwrap();
        assert_eq!(
            read(&part_path(&path)),
            b"kept",
            "sync writes committed bytes only"
        );
        drop(dest); // a crash: the .part stays
        let mut resumed = Box::new(LocalFile::resume(&path, 4).unwrap());
        resumed.write(b"+more").unwrap();
        resumed.commit().unwrap();
        resumed.finish().unwrap();
        assert_eq!(read(&path), b"kept+more");
        assert!(LocalFile::resume(&dir.path().join("none"), 0).is_err());
    }

    #[test]
    fn a_patch_may_straddle_bytes_written_and_bytes_still_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.mkv");
        let mut dest = Box::new(LocalFile::create(&path, false).unwrap());
        dest.write(&vec![0u8; WRITE_BUFFER]).unwrap();
        dest.write(&[0u8; 10]).unwrap();
        dest.patch(WRITE_BUFFER as u64 - 2, b"ABCD").unwrap();
        dest.commit().unwrap();
        dest.finish().unwrap();
        let got = read(&path);
        assert_eq!(got.len(), WRITE_BUFFER + 10);
        assert_eq!(&got[WRITE_BUFFER - 3..WRITE_BUFFER + 3], b"\0ABCD\0");
    }

    #[test]
    fn local_file_that_committed_nothing_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.mkv");
        let mut dest = Box::new(LocalFile::create(&path, false).unwrap());
        dest.write(b"cut off").unwrap();
        dest.write(&vec![0; WRITE_BUFFER]).unwrap();
        assert_eq!(dest.finish().unwrap(), None);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_leftover_part_is_free_to_reclaim_only_when_no_run_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.mkv");
        assert!(!taken(&path, false) && !taken(&path, true));
        fs::write(part_path(&path), b"left").unwrap();
        assert!(taken(&path, false), "without a state a .part is kept");
        assert!(!taken(&path, true), "no run holds it");
        let holder = locked(&part_path(&path), OpenOptions::new().read(true)).unwrap();
        assert!(taken(&path, true), "a live run holds it");
        drop(holder);
        fs::write(&path, b"done").unwrap();
        assert!(taken(&path, true), "a finished file is never taken back");
    }

    #[test]
    fn a_part_another_run_holds_is_never_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held.mkv");
        let mut first = Box::new(LocalFile::create(&path, false).unwrap());
        first.write(b"mine").unwrap();
        first.commit().unwrap();
        first.sync().unwrap();
        for second in [LocalFile::create(&path, true), LocalFile::resume(&path, 0)] {
            let err = second.err().expect("the .part is held");
            assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
            assert!(err.to_string().contains("held.mkv.part"), "{err}");
        }
        assert_eq!(read(&part_path(&path)), b"mine", "not truncated");
        first.finish().unwrap();
        assert_eq!(read(&path), b"mine");
    }

    #[test]
    fn local_file_refuses_an_existing_file_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("there.mkv");
        fs::write(&path, b"old").unwrap();
        let err = LocalFile::create(&path, false).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let mut dest = Box::new(LocalFile::create(&path, true).unwrap());
        dest.write(b"new").unwrap();
        dest.commit().unwrap();
        dest.finish().unwrap();
        assert_eq!(read(&path), b"new");
    }

    #[test]
    fn stdout_releases_only_whole_fragments_even_when_spilled() {
        let mut out = Vec::new();
        {
            let mut dest = Stdout::new(&mut out);
            dest.write(b"whole").unwrap();
            dest.commit().unwrap();
            dest.write(&vec![7u8; SPOOL_IN_MEMORY + 10]).unwrap();
            dest.rollback().unwrap();
            let big = vec![8u8; SPOOL_IN_MEMORY + 10];
            dest.write(&big[..10]).unwrap();
            dest.write(&big[10..]).unwrap();
            dest.commit().unwrap();
            dest.write(b"cut").unwrap();
            assert_eq!(dest.committed(), 5 + SPOOL_IN_MEMORY as u64 + 10);
            Box::new(dest).finish().unwrap();
        }
        assert_eq!(&out[..5], b"whole");
        assert_eq!(out.len(), 5 + SPOOL_IN_MEMORY + 10);
        assert!(out[5..].iter().all(|&b| b == 8));
    }
}
