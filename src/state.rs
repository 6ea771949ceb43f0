//! `--state-file`: where the last run stopped, so the next one continues right after it.
//!
//! One run holds a state at a time: it takes an exclusive lock on `STATE.lock` (a file that is
//! never replaced, unlike the state itself) before it touches any output. The state is replaced
//! atomically (a unique temporary name, fsync, rename, fsync of the folder) and only after the
//! fragment it names is durably in the output. It also records the file being written, so that
//! the next run can continue it or finish it from its `.part`, holding exactly the fragments
//! recorded here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mkv::Fragment;
use serde::{Deserialize, Serialize};

use crate::config::{Config, stream_name_of};
use crate::destination::{locked, sync_parent};
use crate::error::Error;
use crate::writer::{OpenFile, Saved};

pub mod s3;
mod saver;

pub use saver::{Barrier, Saver};

/// The state file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Bumped when the layout changes incompatibly.
    pub version: u32,
    /// The stream, as given (ARN or name).
    pub stream: String,
    /// The region the stream was read from (older state files leave it out).
    #[serde(default)]
    pub region: Option<String>,
    /// The last fragment written whole.
    pub last: Saved,
    /// The file being written when the state was saved, if it was not finished yet.
    pub file: Option<OpenFile>,
}

impl State {
    /// The state once `last` is durably written, with the file still being written, if any.
    pub fn after(cfg: &Config, region: &str, last: &Fragment, file: Option<OpenFile>) -> State {
        State {
            version: VERSION,
            stream: cfg.stream.display().to_owned(),
            region: Some(region.to_owned()),
            last: Saved::from_fragment(last),
            file,
        }
    }

    /// Why this state cannot be continued by a run of `cfg` in `region`, if it cannot: it was
    /// written for another stream, or the same name in another region or account.
    pub fn mismatch(&self, cfg: &Config, region: Option<&str>) -> Option<String> {
        let both_arns = self.stream.starts_with("arn:") && cfg.stream.display().starts_with("arn:");
        let stream_differs = stream_name_of(&self.stream) != cfg.stream.name()
            || (both_arns && self.stream != cfg.stream.display());
        if stream_differs {
            return Some(format!("stream {}", self.stream));
        }
        match (&self.region, region) {
            (Some(theirs), Some(ours)) if theirs != ours => {
                Some(format!("stream {} in {theirs}", self.stream))
            }
            _ => None,
        }
    }
}

pub const VERSION: u32 = 1;

/// A run's hold on its state: a local file under its lock, or an S3 object read and, once
/// claimed, advanced only over the version this run wrote.
pub enum Store {
    Local { path: PathBuf, _lock: Lock },
    S3(s3::Held),
}

impl Store {
    /// Takes the state at `path` for this run and reads it (`None`: no state yet). A local state
    /// is locked, waiting up to `wait` for another run to let go (exit 6 when it does not); an
    /// S3 state is read, and claimed by [`Store::claim`] once the run holds its output.
    pub async fn open(path: &Path, wait: Duration) -> Result<(Store, Option<State>), Error> {
        if let Some(url) = crate::s3::parse(path) {
            let (held, state) = s3::open(&url).await?;
            return Ok((Store::S3(held), state));
        }
        let lock = lock(path, wait).map_err(|e| match e.kind() {
            io::ErrorKind::ResourceBusy => Error::Locked {
                lock: lock_path(path),
            },
            _ => Error::io(format!("locking {}", lock_path(path).display()), e),
        })?;
        let state = load(path)
            .map_err(|e| Error::io(format!("reading the state file {}", path.display()), e))?;
        let store = Store::Local {
            path: path.to_owned(),
            _lock: lock,
        };
        Ok((store, state))
    }

    /// Makes this run the state's one writer: an S3 state is claimed (exit 6 when another run
    /// advanced it since it was read); a local one is held already.
    pub async fn claim(&mut self) -> Result<(), Error> {
        match self {
            Store::Local { .. } => Ok(()),
            Store::S3(held) => held.claim().await,
        }
    }

    /// Replaces the state, atomically and durably, once `durable` (the output file holding the
    /// fragments it names, see [`crate::writer::Writer::durable`]) is synced. Blocks: run it
    /// beside the download ([`Saver`]) or before it starts.
    pub fn save(&mut self, state: &State, durable: Option<File>) -> Result<(), Error> {
        durable
            .map_or(Ok(()), |f| f.sync_data())
            .map_err(|e| Error::io("syncing the output", e))?;
        match self {
            Store::Local { path, .. } => save(path, state),
            Store::S3(held) => held.save(state),
        }
        .map_err(|e| Error::io(format!("saving the state to {}", self.name()), e))
    }

    /// The state's name, for messages.
    pub fn name(&self) -> String {
        match self {
            Store::Local { path, .. } => path.display().to_string(),
            Store::S3(held) => held.url().to_string(),
        }
    }
}

/// Reads the state, `Ok(None)` when there is no file yet.
pub fn load(path: &Path) -> io::Result<Option<State>> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    parse(&text).map(Some)
}

/// A state file's bytes.
pub fn parse(text: &[u8]) -> io::Result<State> {
    let state: State = serde_json::from_slice(text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a kvs-dl state file: {e}"),
        )
    })?;
    if state.version != VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("state file version {} is not {VERSION}", state.version),
        ));
    }
    Ok(state)
}

/// Replaces the state atomically and durably, through a temporary file of its own, so that two
/// writers (which the lock should prevent) could never mix their bytes.
fn save(path: &Path, state: &State) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".kvs-dl-state")
        .tempfile_in(dir)?;
    tmp.write_all(&serde_json::to_vec_pretty(state).expect("state serializes"))?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_parent(path);
    Ok(())
}

/// The lock file of a state file: `STATE.lock`.
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Holds a state file for this run: no other run can take it until this is dropped (or the
/// process ends, however it ends).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Takes the lock of `state`, waiting up to `wait` for another run to release it.
/// `Err(ResourceBusy)` when it is still held then.
pub fn lock(state: &Path, wait: Duration) -> io::Result<Lock> {
    let path = lock_path(state);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let deadline = Instant::now() + wait;
    loop {
        match locked(&path, OpenOptions::new().write(true).create(true)) {
            Ok(file) => return Ok(Lock { _file: file }),
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy && Instant::now() < deadline => {
                // Locks are not waited on in the kernel, so that the wait stays bounded.
                std::thread::sleep(Duration::from_millis(100).min(wait));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        assert_eq!(load(&path).unwrap(), None);
        let saved = Saved {
            fragment_number: "91343852333181432392682062607743920146159169392".into(),
            server_timestamp_ms: 1_511_852_109_126,
            producer_timestamp_ms: 1_511_852_108_513,
            continuation_token: Some("91343852333181432392682062607743920146159169392".into()),
        };
        let state = State {
            version: VERSION,
            stream: "cam".into(),
            region: Some("us-west-2".into()),
            last: saved.clone(),
            file: Some(OpenFile {
                path: "out.mkv".into(),
                format: crate::config::Format::Mkv,
                bytes: 1234,
                first: saved.clone(),
                last: Some(saved),
                fragments: 3,
                duration_ms: 6000,
                segment_end_ms: None,
                upload: None,
            }),
        };
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), Some(state));
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        fs::write(&path, b"{").unwrap();
        assert_eq!(load(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn one_run_holds_a_state_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let held = lock(&path, Duration::ZERO).unwrap();
        let err = lock(&path, Duration::from_millis(250)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
        assert!(err.to_string().contains("s.json.lock"), "{err}");
        drop(held);
        lock(&path, Duration::ZERO).expect("free once the holder is gone");
    }
}
