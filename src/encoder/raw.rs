//! `--format raw`: the GetMedia bytes of each whole fragment, exactly as received.
//!
//! The bytes between two fragments are held until it is clear whether they are the next
//! fragment's chunk headers (kept) or something that is no fragment at all (dropped): a chunk
//! without KVS tags, an error chunk, a fragment already written before a reconnect.

use std::io;

use mkv::span::Span;
use mkv::{Chunk, Event};

use super::{Contents, Encoder, Out, Refusal};

/// Bytes held between fragments before a decision is made; a chunk's headers are far smaller.
const MAX_HOLD: usize = 16 << 20;

/// How much of a dropped stretch is kept, so that an EBML header that started in it is whole.
const DROP_TAIL: usize = 4096;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Raw {
    /// Bytes since the last fragment: the next chunk's headers, until its fragment starts.
    hold: Vec<u8>,
    state: State,
    /// Bytes for the writer.
    out: Vec<u8>,
    /// The chunk being read, for the fragment's media span.
    chunk: Chunk,
    span: Option<Span>,
    contents: Contents,
    /// Producer time of the first fragment, and the end of the media written.
    origin_ms: Option<i64>,
    end_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Between fragments: keep bytes, they may be the next chunk's headers.
    #[default]
    Holding,
    /// Inside a fragment that is written.
    Writing,
    /// Inside something that is not written.
    Dropping,
}

impl Raw {
    /// Goes on with a file a killed run left, which holds `contents`.
    pub fn resumed(contents: Contents) -> Raw {
        let origin_ms = contents.first.as_ref().map(|f| f.producer_ms);
        Raw {
            end_ms: origin_ms
                .unwrap_or(0)
                .saturating_add(contents.duration_ms as i64),
            origin_ms,
            contents,
            ..Raw::default()
        }
    }
}

impl Encoder for Raw {
    fn body(&mut self, data: &[u8]) -> io::Result<()> {
        match self.state {
            State::Writing => {
                self.out.extend_from_slice(data);
                return Ok(());
            }
            State::Holding => self.hold.extend_from_slice(data),
            State::Dropping => {
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
                self.state = State::Holding;
                self.chunk.event(event);
            }
            Event::Info { .. } | Event::Tracks(_) => self.chunk.event(event),
            Event::FragmentStart(_) => {
                self.out.append(&mut self.hold);
                self.state = State::Writing;
                self.span = Some(self.chunk.span());
            }
            Event::Cluster { timecode } if self.state == State::Writing => {
                if let Some(span) = self.span.as_mut() {
                    span.cluster(*timecode);
                }
            }
            Event::Cluster { .. } if self.state == State::Holding => {
                // A cluster without KVS tags is not a fragment.
                self.state = State::Dropping;
            }
            Event::BlockStart(b) if self.state == State::Writing => {
                if let Some(span) = self.span.as_mut() {
                    span.block(b.track, b.timecode);
                }
            }
            Event::FragmentEnd(f) => {
                if self.state == State::Writing {
                    let length = self.span.take().map_or(0, |s| s.length());
                    let origin = *self.origin_ms.get_or_insert(f.producer_ms);
                    let end = f.producer_ms.saturating_add(self.chunk.millis(length));
                    self.end_ms = self.end_ms.max(end.max(0));
                    let c = &mut self.contents;
                    c.duration_ms = self.end_ms.saturating_sub(origin).max(0) as u64;
                    c.fragments += 1;
                    c.first.get_or_insert_with(|| f.clone());
                    c.last = Some(f.clone());
                }
                self.hold.clear();
                self.state = State::Holding;
            }
            Event::ServiceError(_) => {
                self.hold.clear();
                self.state = State::Holding;
            }
            _ => {}
        }
        Ok(())
    }

    fn accepts(&self) -> Result<(), Refusal> {
        // Every chunk carries its own Tracks: any fragment fits.
        Ok(())
    }

    fn skip_fragment(&mut self) {
        self.hold.clear();
        self.state = State::Dropping;
    }

    fn discard(&mut self) {
        self.hold.clear();
        self.out.clear();
        self.span = None;
        self.state = State::Holding;
    }

    fn drain(&mut self, out: &mut Out<'_>) -> io::Result<()> {
        out(&self.out, &[])?;
        self.out.clear();
        Ok(())
    }

    fn finish(&mut self) -> bool {
        self.discard();
        self.contents.fragments > 0
    }

    fn next_file(&self) -> Box<dyn Encoder> {
        Box::new(Raw {
            hold: self.hold.clone(),
            state: self.state,
            chunk: self.chunk.clone(),
            ..Raw::default()
        })
    }

    fn contents(&self) -> Contents {
        self.contents.clone()
    }
}
