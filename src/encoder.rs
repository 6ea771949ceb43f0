//! The per-format seam: an [`Encoder`] turns the parser's events of the fragments to be written
//! into the bytes of one output file, with no I/O. Bytes come out through [`Encoder::drain`]:
//! new bytes to append, and patches of earlier bytes for values known only later (sizes, the
//! duration). A fragment cut off by a dropped connection is forgotten with
//! [`Encoder::discard`]; the writer rolls back the bytes it took since the last whole one.
//!
//! Everything else (names, `.part` files, segments, track-change splits, recovery of a file a
//! killed run left, reports) is the writer's, and is the same for every format. A new format is
//! one new file here implementing [`Encoder`], plus its line in [`Format`]'s two functions.

mod mkv;
mod mp4;
mod raw;

use std::io;

use ::mkv::{Event, Fragment, Patch};

use crate::config::Format;
pub use ::mp4::Rewrite;
pub use raw::Raw;

/// How every file of a run is labelled and laid out.
#[derive(Debug, Clone)]
pub struct Options {
    /// Values are patched in place at the end, and the file gets an index. Off for pipes.
    pub seekable: bool,
    /// `--faststart`: a finished MP4 file is rewritten with its index before the media.
    pub faststart: bool,
    /// The application that wrote the file, e.g. `kvs-dl 0.1.0`.
    pub app: String,
    /// The tag naming the stream, e.g. (`KVS_STREAM_ARN`, `arn:aws:...`).
    pub stream_tag: (String, String),
}

/// Why a fragment cannot go into the current file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Its Tracks differ from the file's: a new file can take it.
    #[error("the track configuration changed")]
    TracksChanged,
    /// No file of this format can take it: its Tracks are unreadable, or name a codec the
    /// format cannot carry.
    #[error("{0}")]
    Unwritable(String),
}

/// What a file holds so far, counted over whole fragments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    pub fragments: u64,
    pub duration_ms: u64,
    pub first: Option<Fragment>,
    pub last: Option<Fragment>,
    /// Fragments whose producer timestamp did not move forward, placed right after the last.
    pub non_monotonic: u64,
}

/// Where [`Encoder::drain`] hands its output: bytes to append, then patches of earlier bytes.
pub type Out<'a> = dyn FnMut(&[u8], &[Patch]) -> io::Result<()> + 'a;

/// See the module docs. One encoder writes one file; [`Encoder::next_file`] starts the next.
pub trait Encoder {
    /// Body bytes up to the next event, exactly as received. Only a copying format uses them.
    fn body(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// A parser event, after the body bytes that complete it. A `FragmentStart` is only given
    /// once [`Encoder::accepts`] said yes.
    fn event(&mut self, event: &Event<'_>) -> io::Result<()>;
    /// Whether the fragment whose chunk headers were just read can go into this file.
    fn accepts(&self) -> Result<(), Refusal>;
    /// The fragment that starts here is not written (it was before a reconnect).
    fn skip_fragment(&mut self);
    /// Forgets the fragment in progress.
    fn discard(&mut self);
    /// Hands over the output produced since the last call: bytes to append, then patches.
    fn drain(&mut self, out: &mut Out<'_>) -> io::Result<()>;
    /// Ends the file (indexes, trailing metadata, patched sizes); `false` when it holds no
    /// fragment and nothing at all should be written.
    fn finish(&mut self) -> bool;
    /// An encoder for the next file, which goes on reading the chunk this one is in.
    fn next_file(&self) -> Box<dyn Encoder>;
    fn contents(&self) -> Contents;
    /// After [`Encoder::finish`]: the file to make from the one written, when the format wants
    /// it rewritten (MP4 with `--faststart`).
    fn rewrite(&self) -> Option<Rewrite> {
        None
    }
    /// Whole frames taken in and not yet turned into bytes.
    fn held_frames(&self) -> usize {
        0
    }
}

impl Format {
    /// A fresh encoder for the first file of a run.
    pub fn encoder(self, opts: &Options) -> Box<dyn Encoder> {
        match self {
            Format::Raw => Box::new(Raw::default()),
            Format::Mkv => Box::new(::mkv::Muxer::new(mkv::options(opts))),
            Format::Mp4 => Box::new(mp4::new(opts)),
        }
    }

    /// The encoder of a file a killed run left: `part` is its bytes up to the end of the last
    /// whole fragment, which held `contents`. The encoder goes on (or finishes) exactly where an
    /// uninterrupted run would have.
    pub fn recover(
        self,
        opts: &Options,
        part: &mut dyn io::Read,
        bytes: u64,
        contents: Contents,
    ) -> io::Result<Box<dyn Encoder>> {
        Ok(match self {
            Format::Raw => Box::new(Raw::resumed(contents)),
            Format::Mkv => Box::new(mkv::recover(opts, part, bytes, contents)?),
            Format::Mp4 => Box::new(mp4::recover(opts, part, bytes, contents)?),
        })
    }
}

/// Feeds `part` to a recovering parser in pieces, so memory stays bounded for any length.
fn replay<E: std::fmt::Display>(
    part: &mut dyn io::Read,
    mut push: impl FnMut(&[u8]) -> Result<(), E>,
) -> io::Result<()> {
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = part.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        push(&buf[..n]).map_err(invalid)?;
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}
