//! The headers of the chunk being read. Every GetMedia chunk carries its own TimestampScale
//! and Tracks, and a fragment is read with the ones of its chunk, so every reader of fragments
//! (the loop, each format's writer) keeps them the same way: with this.

use crate::parser::Event;
use crate::span::Span;
use crate::tracks;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Nanoseconds per tick.
    pub timecode_scale: u64,
    /// The whole Tracks element, as received.
    pub tracks: Vec<u8>,
}

impl Default for Chunk {
    fn default() -> Self {
        Chunk {
            timecode_scale: 1_000_000,
            tracks: Vec::new(),
        }
    }
}

impl Chunk {
    /// Takes in a chunk header (EBML header, Info, Tracks); other events change nothing.
    pub fn event(&mut self, event: &Event<'_>) {
        match event {
            Event::EbmlHeader(_) => *self = Chunk::default(),
            Event::Info { timecode_scale } => self.timecode_scale = *timecode_scale,
            Event::Tracks(tracks) => {
                self.tracks.clear();
                self.tracks.extend_from_slice(tracks);
            }
            _ => {}
        }
    }

    /// A span for the fragment that starts in this chunk (no tracks when its Tracks cannot be
    /// read: then no block counts).
    pub fn span(&self) -> Span {
        Span::new(
            &tracks::parse(&self.tracks).unwrap_or_default(),
            self.timecode_scale,
        )
    }

    /// `ticks` of this chunk in milliseconds, never negative and never overflowing.
    pub fn millis(&self, ticks: i64) -> i64 {
        (i128::from(ticks) * i128::from(self.timecode_scale) / 1_000_000)
            .clamp(0, i128::from(i64::MAX)) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_chunk_forgets_the_last_ones_headers() {
        let mut chunk = Chunk::default();
        chunk.event(&Event::Info {
            timecode_scale: 1000,
        });
        chunk.event(&Event::Tracks(b"tracks"));
        assert_eq!(chunk.millis(5000), 5);
        assert_eq!(chunk.tracks, b"tracks");
        chunk.event(&Event::EbmlHeader(b""));
        assert_eq!(chunk, Chunk::default());
        assert_eq!(chunk.millis(-5), 0);
        chunk.event(&Event::Info {
            timecode_scale: 1_000_000_000,
        });
        assert_eq!(chunk.millis(i64::MAX), i64::MAX, "saturates");
    }
}
