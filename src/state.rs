//! `--state-file`: where the last run stopped, so the next one continues right after it.
//!
//! The state is replaced atomically (temporary file, fsync, rename, fsync of the folder) and only
//! after the fragment it names is durably in the output. It also names the file being written,
//! so that after a crash the next run can finish that file from its `.part`, holding exactly the
//! fragments recorded here.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use mkv::Fragment;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Format};
use crate::output::Unfinished;
use crate::sink::sync_parent;

/// The state file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Bumped when the layout changes incompatibly.
    pub version: u32,
    /// The stream, as given (ARN or name).
    pub stream: String,
    /// The last fragment written whole.
    pub last: Saved,
    /// The file being written when the state was saved, if it was not finished yet.
    pub file: Option<InProgress>,
}

impl State {
    /// The state once `last` is durably written, with the file still being written, if any.
    pub fn after(cfg: &Config, last: &Fragment, file: Option<Unfinished>) -> State {
        State {
            version: VERSION,
            stream: cfg.stream.display().to_owned(),
            last: Saved::from_fragment(last),
            file: file.map(|u| InProgress {
                path: u.path,
                format: cfg.output.format.into(),
                bytes: u.bytes,
                first: Saved::from_fragment(&u.first),
                fragments: u.fragments,
            }),
        }
    }
}

/// A fragment, as far as resuming needs it.
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

/// An output file that was not finished: its `.part` holds `bytes` whole bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InProgress {
    /// The final name; the bytes are in its `.part`.
    pub path: PathBuf,
    pub format: SavedFormat,
    /// Length of the `.part` up to the end of the last fragment recorded.
    pub bytes: u64,
    /// First fragment in this file.
    pub first: Saved,
    /// Fragments in this file.
    pub fragments: u64,
}

/// `--format`, as saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SavedFormat {
    Mkv,
    Raw,
}

impl From<Format> for SavedFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Mkv => SavedFormat::Mkv,
            Format::Raw => SavedFormat::Raw,
        }
    }
}

pub const VERSION: u32 = 1;

/// Reads the state, `Ok(None)` when there is no file yet.
pub fn load(path: &Path) -> io::Result<Option<State>> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let state: State = serde_json::from_slice(&text).map_err(|e| {
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
    Ok(Some(state))
}

/// Replaces the state atomically and durably.
pub fn save(path: &Path, state: &State) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(state).expect("state serializes"))?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    sync_parent(path);
    Ok(())
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
            last: saved.clone(),
            file: Some(InProgress {
                path: "out.mkv".into(),
                format: SavedFormat::Mkv,
                bytes: 1234,
                first: saved,
                fragments: 3,
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
}
