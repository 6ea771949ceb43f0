//! Turning the parsed body into output: the [`Writer`] seam and the `--format raw` writer.
//!
//! The download loop hands a writer every body byte, in order and cut at event boundaries,
//! followed by the event those bytes complete. A fragment the loop does not want (one already
//! written before a reconnect) is announced with [`Writer::skip_fragment`] instead of its
//! `FragmentStart`, and only its bytes and its `FragmentEnd` follow.

use std::io;
use std::path::PathBuf;

use mkv::Event;

use crate::sink::Sink;

/// Writes fragments to a [`Sink`], committing each one when it is whole.
pub trait Writer {
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
    /// Completes the output; returns the final path when a file was written.
    fn finish(self: Box<Self>) -> io::Result<Option<PathBuf>>;
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
        }
    }
}

impl Writer for RawWriter {
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
            Event::FragmentEnd(_) => {
                if self.state == RawState::Writing {
                    self.sink.commit()?;
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

    fn finish(self: Box<Self>) -> io::Result<Option<PathBuf>> {
        self.sink.finish()
    }
}
