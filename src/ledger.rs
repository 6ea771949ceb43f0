//! The fragment ledger (`--manifest PATH`): JSON Lines appended by every run, one record per
//! fragment written and per gap in the stream, so that `kvs-dl verify` can later hold the files
//! against the stream's own fragment list.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A run began: which stream, on which clock.
    Run {
        stream: String,
        region: String,
        clock: String,
    },
    /// A fragment written whole.
    Fragment {
        /// The file it went to (`-` for standard output).
        file: PathBuf,
        number: String,
        server_timestamp_ms: i64,
        producer_timestamp_ms: i64,
        duration_ms: u64,
        /// Output bytes it took.
        bytes: u64,
        /// SHA-256 (hex) of its frames' payloads, whatever the format.
        sha256: String,
    },
    /// A stretch without fragments (the producer was off); not a loss.
    Gap {
        clock: String,
        from_ms: i64,
        to_ms: i64,
        after_fragment: Option<String>,
        before_fragment: Option<String>,
    },
}

/// Appends records to a manifest.
pub struct Ledger {
    path: PathBuf,
    file: std::fs::File,
}

impl Ledger {
    pub fn open(path: &Path) -> std::io::Result<Ledger> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Ledger {
            path: path.to_owned(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (one `write` of a whole line, so a kill never leaves half a line
    /// followed by another record).
    pub fn append(&mut self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

/// Reads a manifest; lines that are not records (a torn last line) are skipped.
pub fn read(path: &Path) -> std::io::Result<Vec<Record>> {
    let file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        if let Ok(record) = serde_json::from_str(&line?) {
            out.push(record);
        }
    }
    Ok(out)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
