//! The parser against the real GetMedia captures in `../shared/fixtures/kvs-getmedia`: every
//! capture gives the same events whole, byte by byte and split at random points.
//!
//! The captures are third-party files read in place. Without `../shared` these tests skip, unless
//! `CI` is set, where a missing capture fails.

use std::path::PathBuf;

use mkv::{BlockKind, Event, Finish, Fragment, ParseError, Parser, ServiceError};
use proptest::prelude::*;

fn fixture_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("KVS_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/kvs-getmedia")
        });
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "fixtures missing at {}",
        dir.display()
    );
    eprintln!("skipping: no fixtures at {}", dir.display());
    None
}

fn fixture(name: &str) -> Option<Vec<u8>> {
    fixture_dir().map(|d| std::fs::read(d.join(name)).expect(name))
}

const CAPTURES: [&str; 8] = [
    "output_get_media.mkv",
    "output_get_media_sparse_fragments.mkv",
    "output-get-media-equal-timecode.mkv",
    "output-get-media-non-increasing-timecode.mkv",
    "kinesis_video_renderer_example_output.mkv",
    "test_mixed_tags.mkv",
    "empty-mkv-with-tags.mkv",
    "test_tags_empty_cluster.mkv",
];

/// An owned event with block payloads joined, so runs with different splits compare equal.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Header(Vec<u8>),
    Info(u64),
    Tracks(Vec<u8>),
    Start(Fragment),
    Cluster(u64),
    Block {
        kind: BlockKind,
        header: Vec<u8>,
        track: u64,
        timecode: i16,
        keyframe: bool,
        data: Vec<u8>,
    },
    End(Fragment, u64),
    Error(ServiceError),
}

type Outcome = (Vec<Ev>, Result<Finish, ParseError>);

fn drain(p: &mut Parser, out: &mut Vec<Ev>) -> Result<(), ParseError> {
    while let Some(e) = p.next_event()? {
        let ev = match e {
            Event::EbmlHeader(b) => Ev::Header(b.to_vec()),
            Event::Info { timecode_scale } => Ev::Info(timecode_scale),
            Event::Tracks(b) => Ev::Tracks(b.to_vec()),
            Event::FragmentStart(f) => Ev::Start(f),
            Event::Cluster { timecode } => Ev::Cluster(timecode),
            Event::BlockStart(b) => Ev::Block {
                kind: b.kind,
                header: b.header.to_vec(),
                track: b.track,
                timecode: b.timecode,
                keyframe: b.keyframe,
                data: Vec::new(),
            },
            Event::BlockData(d) => {
                match out.last_mut() {
                    Some(Ev::Block { data, .. }) => data.extend_from_slice(d),
                    other => panic!("block data after {other:?}"),
                }
                continue;
            }
            Event::FragmentEnd(f) => {
                let end = p.position();
                Ev::End(f, end)
            }
            Event::ServiceError(e) => Ev::Error(e),
        };
        out.push(ev);
    }
    Ok(())
}

/// Feeds `data` cut at `cuts` (sorted offsets) and returns every event and the end verdict.
fn parse_split(data: &[u8], cuts: &[usize]) -> Outcome {
    let mut p = Parser::new();
    let mut out = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
        p.push(&data[from..cut]);
        from = cut;
        if let Err(e) = drain(&mut p, &mut out) {
            return (out, Err(e));
        }
    }
    let finish = p.finish();
    (out, finish)
}

fn whole(data: &[u8]) -> Outcome {
    parse_split(data, &[])
}

fn count<F: Fn(&Ev) -> bool>(evs: &[Ev], f: F) -> usize {
    evs.iter().filter(|e| f(e)).count()
}

#[test]
fn captures_give_the_documented_fragments_and_blocks() {
    // (file, complete fragments, blocks (0: not checked), ends cleanly). The equal-timecode and
    // non-increasing captures end inside a cluster.
    let expected: [(&str, usize, usize, bool); 8] = [
        ("output_get_media.mkv", 5, 300, true),
        ("output_get_media_sparse_fragments.mkv", 3, 180, true),
        ("output-get-media-equal-timecode.mkv", 1, 0, false),
        ("output-get-media-non-increasing-timecode.mkv", 11, 0, false),
        ("kinesis_video_renderer_example_output.mkv", 8, 0, true),
        ("test_mixed_tags.mkv", 10, 100, true),
        ("empty-mkv-with-tags.mkv", 0, 0, false),
        ("test_tags_empty_cluster.mkv", 0, 0, true),
    ];
    for (name, fragments, blocks, clean) in expected {
        let Some(data) = fixture(name) else { return };
        let (evs, finish) = whole(&data);
        let finish = finish.unwrap_or_else(|e| panic!("{name}: {e}"));
        let ends = count(&evs, |e| matches!(e, Ev::End(..)));
        let starts = count(&evs, |e| matches!(e, Ev::Start(..)));
        let nblocks = count(&evs, |e| matches!(e, Ev::Block { .. }));
        eprintln!("{name}: {ends} fragments, {nblocks} blocks, {finish:?}");
        if fragments > 0 {
            assert_eq!(ends, fragments, "{name} fragments");
        }
        if blocks > 0 {
            assert_eq!(nblocks, blocks, "{name} blocks");
        }
        assert!(
            starts >= ends && starts <= ends + 1,
            "{name}: {starts} starts, {ends} ends"
        );
        assert_eq!(finish == Finish::Clean, clean, "{name}: {finish:?}");
    }
}

#[test]
fn output_get_media_tags_are_read_exactly() {
    let Some(data) = fixture("output_get_media.mkv") else {
        return;
    };
    let (evs, _) = whole(&data);
    let Some(Ev::End(first, end)) = evs.iter().find(|e| matches!(e, Ev::End(..))) else {
        panic!("no fragment")
    };
    assert_eq!(
        first.number,
        "91343852333181432392682062607743920146159169392"
    );
    assert_eq!(first.server_ms, 1_511_852_109_126);
    assert_eq!(first.producer_ms, 1_511_852_108_513);
    assert_eq!(first.millis_behind_now, Some(15858));
    assert_eq!(
        first.continuation_token.as_deref(),
        Some(first.number.as_str())
    );
    // The first chunk ends where the second EBML header begins (kvs-protocol.md section 4.2).
    assert_eq!(*end, 547_925);
    // Each fragment's bytes end where the next chunk's EBML header starts, and the last at EOF.
    let ends: Vec<u64> = evs
        .iter()
        .filter_map(|e| {
            if let Ev::End(_, o) = e {
                Some(*o)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(*ends.last().unwrap(), data.len() as u64);
    for &o in &ends[..ends.len() - 1] {
        assert_eq!(&data[o as usize..o as usize + 4], [0x1A, 0x45, 0xDF, 0xA3]);
    }
}

#[test]
fn every_capture_reads_the_same_byte_by_byte() {
    for name in CAPTURES {
        let Some(data) = fixture(name) else { return };
        let expected = whole(&data);
        let cuts: Vec<usize> = (1..data.len()).collect();
        assert_eq!(parse_split(&data, &cuts), expected, "{name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_capture_reads_the_same_at_random_splits(
        which in 0..CAPTURES.len(),
        mut fractions in proptest::collection::vec(0.0f64..1.0, 0..40),
    ) {
        let Some(data) = fixture(CAPTURES[which]) else { return Ok(()) };
        fractions.sort_by(f64::total_cmp);
        let cuts: Vec<usize> = fractions.iter().map(|f| (f * data.len() as f64) as usize).collect();
        prop_assert_eq!(parse_split(&data, &cuts), whole(&data));
    }

    #[test]
    fn truncated_captures_never_panic_and_never_complete_a_cut_fragment(
        which in 0..CAPTURES.len(),
        fraction in 0.0f64..1.0,
    ) {
        let Some(data) = fixture(CAPTURES[which]) else { return Ok(()) };
        let cut = (fraction * data.len() as f64) as usize;
        let (evs, finish) = whole(&data[..cut]);
        // Every fragment reported complete ends within the bytes that arrived.
        for e in &evs {
            if let Ev::End(_, end) = e { prop_assert!(*end <= cut as u64) }
        }
        prop_assert!(finish.is_ok());
    }

    #[test]
    fn corrupted_bytes_give_errors_not_panics(
        which in 0..CAPTURES.len(),
        at in 0.0f64..1.0,
        byte in any::<u8>(),
    ) {
        let Some(mut data) = fixture(CAPTURES[which]) else { return Ok(()) };
        let i = (at * data.len() as f64) as usize;
        data[i] = byte;
        let _ = whole(&data);
    }
}

#[test]
fn garbage_is_an_error_with_an_offset() {
    let (_, r) = whole(b"\x1A\x45\xDF\xA3\x80\x00\x00\x00");
    let e = r.expect_err("zero byte is not a valid size");
    assert_eq!(e.offset, 5);
    assert!(e.to_string().contains("at byte 5"), "{e}");
    let (_, r) = whole(b"hello world");
    assert!(
        r.unwrap_err()
            .to_string()
            .contains("expected an EBML header")
    );
}

// ---------------------------------------------------------------------------------------------
// GetMediaForFragmentList bodies: the same chunks without the closing tags.

/// The capture with every Tags element that holds the closing tags (MILLIS_BEHIND_NOW,
/// CONTINUATION_TOKEN) removed, as GetMediaForFragmentList sends its chunks.
fn without_post_tags(data: &[u8]) -> Vec<u8> {
    let tags = [0x12, 0x54, 0xC3, 0x67];
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(&tags)
            && let Ok(Some((Some(size), len))) = mkv::ebml::read_size(&data[i + 4..])
        {
            let end = i + 4 + len + size as usize;
            if end <= data.len()
                && data[i..end]
                    .windows(b"MILLIS_BEHIND_NOW".len())
                    .any(|w| w == b"MILLIS_BEHIND_NOW")
            {
                i = end;
                continue;
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

fn parse_archived(data: &[u8], cuts: &[usize]) -> Outcome {
    let mut p = Parser::archived();
    let mut out = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
        p.push(&data[from..cut]);
        from = cut;
        if let Err(e) = drain(&mut p, &mut out) {
            return (out, Err(e));
        }
    }
    let finish = p.finish();
    if let Err(e) = drain(&mut p, &mut out) {
        return (out, Err(e));
    }
    (out, finish)
}

/// The fragments that ended, without the closing tags' values.
fn ended(evs: &[Ev]) -> Vec<Fragment> {
    evs.iter()
        .filter_map(|e| match e {
            Ev::End(f, _) => Some(Fragment {
                millis_behind_now: None,
                continuation_token: None,
                ..f.clone()
            }),
            _ => None,
        })
        .collect()
}

#[test]
fn archived_bodies_end_fragments_at_the_next_chunk_and_at_a_clean_end() {
    for name in [
        "output_get_media.mkv",
        "output_get_media_sparse_fragments.mkv",
        "kinesis_video_renderer_example_output.mkv",
        "test_mixed_tags.mkv",
    ] {
        let Some(data) = fixture(name) else { return };
        let (getmedia, finish) = whole(&data);
        assert_eq!(finish, Ok(Finish::Clean), "{name}");
        let stripped = without_post_tags(&data);
        assert!(stripped.len() < data.len(), "{name}: no closing tags found");
        let (archived, finish) = parse_archived(&stripped, &[]);
        assert_eq!(finish, Ok(Finish::Clean), "{name}");
        assert_eq!(ended(&archived), ended(&getmedia), "{name}");
        // The last fragment ends at the end of the body, the others where the next chunk starts.
        let ends: Vec<u64> = archived
            .iter()
            .filter_map(|e| match e {
                Ev::End(_, o) => Some(*o),
                _ => None,
            })
            .collect();
        assert_eq!(*ends.last().unwrap(), stripped.len() as u64, "{name}");
        for &o in &ends[..ends.len() - 1] {
            assert_eq!(
                &stripped[o as usize..o as usize + 4],
                [0x1A, 0x45, 0xDF, 0xA3]
            );
        }
        // The same blocks as GetMedia.
        let blocks = |evs: &[Ev]| count(evs, |e| matches!(e, Ev::Block { .. }));
        assert_eq!(blocks(&archived), blocks(&getmedia), "{name}");
        // A GetMedia parser still requires the closing tags: the last fragment is cut off.
        let (evs, finish) = whole(&stripped);
        assert_eq!(ended(&evs).len(), ended(&getmedia).len() - 1, "{name}");
        assert!(
            matches!(finish, Ok(Finish::Truncated { fragment: Some(_) })),
            "{name}: {finish:?}"
        );
    }
}

#[test]
fn archived_body_cut_inside_a_known_size_element_is_truncated() {
    let Some(data) = fixture("output_get_media.mkv") else {
        return;
    };
    let stripped = without_post_tags(&data);
    // Inside the first cluster (known size, starting at 1159).
    let (evs, finish) = parse_archived(&stripped[..2000], &[]);
    assert!(ended(&evs).is_empty());
    assert!(
        matches!(finish, Ok(Finish::Truncated { fragment: Some(_) })),
        "{finish:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn archived_bodies_read_the_same_at_random_splits(
        which in 0..CAPTURES.len(),
        mut fractions in proptest::collection::vec(0.0f64..1.0, 0..40),
    ) {
        let Some(data) = fixture(CAPTURES[which]) else { return Ok(()) };
        let data = without_post_tags(&data);
        fractions.sort_by(f64::total_cmp);
        let cuts: Vec<usize> = fractions.iter().map(|f| (f * data.len() as f64) as usize).collect();
        prop_assert_eq!(parse_archived(&data, &cuts), parse_archived(&data, &[]));
    }

    #[test]
    fn truncated_archived_bodies_never_complete_past_the_cut(
        which in 0..CAPTURES.len(),
        fraction in 0.0f64..1.0,
    ) {
        let Some(data) = fixture(CAPTURES[which]) else { return Ok(()) };
        let data = without_post_tags(&data);
        let cut = (fraction * data.len() as f64) as usize;
        let (evs, finish) = parse_archived(&data[..cut], &[]);
        for e in &evs {
            if let Ev::End(_, end) = e { prop_assert!(*end <= cut as u64) }
        }
        prop_assert!(finish.is_ok());
    }
}
