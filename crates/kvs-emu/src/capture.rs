//! Streams replayed from real GetMedia captures: the body is cut back into its chunks, which are
//! then served byte for byte, closing tags and all.

use bytes::Bytes;
use mkv::{Event, Parser};

use crate::fragment::{Meta, SourceError, Span, StoredFragment, fragment_duration};

/// Cuts a captured GetMedia body into its fragments. A chunk runs from its EBML header to the end
/// of its closing KVS tags; a trailing chunk cut off by the end of the capture is dropped, and so
/// are error chunks.
pub fn from_capture(bytes: &[u8]) -> Result<Vec<StoredFragment>, SourceError> {
    let all = Bytes::copy_from_slice(bytes);
    let mut parser = Parser::new();
    parser.push(bytes);

    let mut found = Vec::new();
    let mut chunk = ChunkScan::default();
    loop {
        let seen = match parser.next_event()? {
            None => break,
            Some(Event::EbmlHeader(header)) => Seen::Header(header.len() as u64),
            Some(Event::Info { timecode_scale }) => Seen::Scale(timecode_scale),
            Some(Event::Cluster { timecode }) => Seen::Cluster(timecode),
            Some(Event::BlockStart(block)) => Seen::Block(block.track, block.timecode),
            Some(Event::FragmentEnd(fragment)) => Seen::End(fragment),
            Some(_) => continue,
        };
        let position = parser.position();
        match seen {
            Seen::Header(len) => {
                chunk = ChunkScan {
                    start: position - len,
                    ..ChunkScan::default()
                }
            }
            Seen::Scale(scale) => chunk.timecode_scale = scale,
            Seen::Cluster(timecode) => {
                chunk.cluster = i64::try_from(timecode).ok();
                chunk.first_cluster = chunk.first_cluster.or(chunk.cluster);
            }
            Seen::Block(track, timecode) => {
                if let Some(cluster) = chunk.cluster {
                    chunk
                        .span
                        .add(track, cluster.saturating_add(i64::from(timecode)));
                }
                chunk.blocks += 1;
            }
            Seen::End(fragment) => {
                let frames_ms = chunk.first_cluster.and_then(|start| {
                    let ticks = chunk.span.ticks_from(start)?;
                    Some(ticks_to_ms(ticks, chunk.timecode_scale))
                });
                found.push((fragment, chunk.start..position, frames_ms, chunk.blocks));
            }
        }
    }

    let producer_starts: Vec<i64> = found.iter().map(|(f, ..)| f.producer_ms).collect();
    Ok(found
        .into_iter()
        .enumerate()
        .map(|(i, (fragment, range, frames_ms, blocks))| {
            let gap = producer_starts
                .get(i + 1)
                .map(|next| next - fragment.producer_ms);
            let meta = Meta {
                number: fragment.number,
                server_ms: fragment.server_ms,
                producer_ms: fragment.producer_ms,
                duration_ms: fragment_duration(frames_ms, gap),
                blocks,
            };
            StoredFragment::verbatim(meta, all.slice(range.start as usize..range.end as usize))
        })
        .collect())
}

/// Whether `bytes` look like a GetMedia capture (KVS tags before the first cluster) rather than
/// a plain Matroska file.
pub fn is_capture(bytes: &[u8]) -> bool {
    let mut parser = Parser::new();
    parser.push(bytes);
    while let Ok(Some(event)) = parser.next_event() {
        match event {
            Event::FragmentStart(_) | Event::ServiceError(_) => return true,
            Event::Cluster { .. } => return false,
            _ => {}
        }
    }
    false
}

/// What one parser event told us, copied out so the parser can be asked for its position.
enum Seen {
    Header(u64),
    Scale(u64),
    Cluster(u64),
    Block(u64, i16),
    End(mkv::Fragment),
}

/// The chunk being read.
#[derive(Debug)]
struct ChunkScan {
    start: u64,
    timecode_scale: u64,
    first_cluster: Option<i64>,
    cluster: Option<i64>,
    span: Span,
    blocks: usize,
}

impl Default for ChunkScan {
    fn default() -> Self {
        ChunkScan {
            start: 0,
            timecode_scale: 1_000_000,
            first_cluster: None,
            cluster: None,
            span: Span::default(),
            blocks: 0,
        }
    }
}

fn ticks_to_ms(ticks: u64, timecode_scale: u64) -> u64 {
    u64::try_from(u128::from(ticks) * u128::from(timecode_scale) / 1_000_000).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fixture's bytes; `None` (skip) when the shared fixtures are absent, unless CI is set.
    fn fixture(name: &str) -> Option<Vec<u8>> {
        let path = PathBuf::from("/work/shared/fixtures/kvs-getmedia").join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if std::env::var_os("CI").is_some() => panic!("{}: {e}", path.display()),
            Err(_) => None,
        }
    }

    /// Every event of a body, parsed back, as (fragment numbers, blocks).
    fn reparse(body: &[u8]) -> (Vec<String>, usize) {
        let mut parser = Parser::new();
        parser.push(body);
        let (mut numbers, mut blocks) = (Vec::new(), 0);
        while let Some(event) = parser.next_event().unwrap() {
            match event {
                Event::FragmentEnd(f) => numbers.push(f.number),
                Event::BlockStart(_) => blocks += 1,
                _ => {}
            }
        }
        (numbers, blocks)
    }

    #[test]
    fn captures_split_into_their_chunks_verbatim() {
        let cases = [
            ("output_get_media.mkv", 5, 300),
            ("output_get_media_sparse_fragments.mkv", 3, 180),
            ("kinesis_video_renderer_example_output.mkv", 8, 0),
            ("test_mixed_tags.mkv", 10, 100),
            // Its second chunk is cut off in the middle of the cluster.
            ("output-get-media-equal-timecode.mkv", 1, 0),
        ];
        for (name, fragments, blocks) in cases {
            let Some(bytes) = fixture(name) else { return };
            let stored = from_capture(&bytes).unwrap();
            assert_eq!(stored.len(), fragments, "{name}");
            let joined: Vec<u8> = stored.iter().flat_map(|f| f.chunk(0)).collect();
            assert_eq!(joined, bytes[..joined.len()], "{name}: chunks are verbatim");
            let (numbers, parsed_blocks) = reparse(&joined);
            let ours: Vec<&str> = stored.iter().map(StoredFragment::number).collect();
            assert_eq!(numbers, ours, "{name}");
            let counted: usize = stored.iter().map(StoredFragment::blocks).sum();
            assert_eq!(counted, parsed_blocks, "{name}");
            if blocks > 0 {
                assert_eq!(counted, blocks, "{name}");
            }
        }
    }

    #[test]
    fn capture_metadata_comes_from_the_tags() {
        let Some(bytes) = fixture("output_get_media.mkv") else {
            return;
        };
        let stored = from_capture(&bytes).unwrap();
        let first = &stored[0];
        assert_eq!(
            first.number(),
            "91343852333181432392682062607743920146159169392"
        );
        assert_eq!(first.server_ms(), 1_511_852_109_126);
        assert_eq!(first.producer_ms(), 1_511_852_108_513);
        assert_eq!(first.size(), 547_925);
        // 60 frames at 30 fps.
        assert!((1990..=2010).contains(&first.duration_ms()), "{first:?}");
        assert!(stored.iter().all(|f| f.duration_ms() > 0));
    }

    #[test]
    fn captures_are_told_from_plain_files() {
        if let Some(bytes) = fixture("test_mixed_tags.mkv") {
            assert!(is_capture(&bytes));
        }
        let chunk = crate::synthetic(&crate::SyntheticSpec::default())[0].chunk(0);
        assert!(is_capture(&chunk));
        assert!(!is_capture(b"plain text"));
    }

    #[test]
    fn a_truncated_last_chunk_is_dropped() {
        let Some(bytes) = fixture("output-get-media-non-increasing-timecode.mkv") else {
            return;
        };
        let stored = from_capture(&bytes).unwrap();
        let (numbers, _) = reparse(&bytes);
        assert_eq!(stored.len(), numbers.len());
        let total: u64 = stored.iter().map(StoredFragment::size).sum();
        assert!(total < bytes.len() as u64);

        let Some(whole) = fixture("output_get_media.mkv") else {
            return;
        };
        let cut = from_capture(&whole[..whole.len() - 100]).unwrap();
        assert_eq!(cut.len(), 4);
    }
}
