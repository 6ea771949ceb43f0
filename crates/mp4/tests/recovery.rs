//! A seekable file cut after its k-th whole fragment, recovered and finished, is byte for byte
//! the file an uninterrupted run over k fragments gives; cuts elsewhere and garbage give an
//! error, never a panic.

mod common;

use common::*;
use mp4::Recovery;
use proptest::prelude::*;

fn body() -> Option<Vec<u8>> {
    let dir = fixtures()?;
    Some(std::fs::read(dir.join("output_get_media.mkv")).unwrap())
}

fn recover(bytes: &[u8], piece: usize, m: &mp4::Muxer) -> Result<mp4::Muxer, mp4::RecoveryError> {
    recover_with(bytes, true, piece, m)
}

/// Recovers `bytes`, which hold the fragments `m` wrote (as the state file records them).
fn recover_with(
    bytes: &[u8],
    faststart: bool,
    piece: usize,
    m: &mp4::Muxer,
) -> Result<mp4::Muxer, mp4::RecoveryError> {
    let mut r = Recovery::new(opts(true, faststart));
    for p in bytes.chunks(piece.max(1)) {
        r.push(p)?;
    }
    let (first, last) = m.first_last();
    r.finish(
        bytes.len() as u64,
        first.cloned().unwrap_or_default(),
        last.cloned().unwrap_or_default(),
        m.fragments(),
    )
}

#[test]
fn recovered_files_equal_uninterrupted_ones() {
    let Some(body) = body() else { return };
    for k in 1..=5 {
        let (mut whole, mut want, _) = mux(&body, opts(true, true), Some(k), false);
        assert!(whole.finish());
        want.take(&mut whole);
        let fast_want = rewrite(&want.bytes, &whole.faststart().unwrap());

        let (cut, part, _) = mux(&body, opts(true, true), Some(k), false);
        for piece in [1000, 7, usize::MAX] {
            let mut m = recover(&part.bytes, piece, &cut).expect("recovers");
            let mut file = File {
                bytes: part.bytes.clone(),
            };
            assert!(m.finish());
            file.take(&mut m);
            assert!(file.bytes == want.bytes, "k={k}: finished file differs");
            assert_eq!(m.duration_ms(), whole.duration_ms());
            let fast = rewrite(&file.bytes, &m.faststart().unwrap());
            assert!(fast == fast_want, "k={k}: faststart differs");
        }
    }
}

#[test]
fn cuts_and_garbage_give_errors() {
    let Some(body) = body() else { return };
    let (cut, part, _) = mux(&body, opts(true, true), Some(3), false);
    let n = part.bytes.len();
    for at in [0, 10, 100, n / 2, n - 1] {
        assert!(
            recover(&part.bytes[..at], 1000, &cut).is_err(),
            "cut at {at}"
        );
    }
    let mut garbage = part.bytes.clone();
    garbage.extend_from_slice(b"\0\0\0\x10junkjunkjunk");
    assert!(recover(&garbage, 1000, &cut).is_err());
    assert!(recover(b"not an mp4 file at all", 3, &cut).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_cuts_and_bytes_never_panic(at in 0usize..200_000, flips in proptest::collection::vec((0usize..200_000, any::<u8>()), 0..8), piece in 1usize..5000) {
        if let Some(body) = body() {
            let (cut, part, _) = mux(&body, opts(true, true), Some(2), false);
            let mut bytes = part.bytes[..at.min(part.bytes.len())].to_vec();
            for (i, b) in flips {
                if !bytes.is_empty() {
                    let i = i % bytes.len();
                    bytes[i] = b;
                }
            }
            if let Ok(mut m) = recover(&bytes, piece, &cut) {
                m.finish();
                let _ = m.faststart();
            }
        }
    }

    #[test]
    fn random_bodies_never_panic_the_muxer(cut in 0usize..3_000_000, flips in proptest::collection::vec((0usize..3_000_000, any::<u8>()), 0..16)) {
        if let Some(body) = body() {
            let mut bytes = body[..cut.min(body.len())].to_vec();
            for (i, b) in flips {
                if !bytes.is_empty() {
                    let i = i % bytes.len();
                    bytes[i] = b;
                }
            }
            let mut parser = mkv::Parser::new();
            parser.push(&bytes);
            let mut m = mp4::Muxer::new(opts(true, true));
            while let Ok(Some(event)) = parser.next_event() {
                let _ = m.event(&event);
                m.drain(|_, _| ());
            }
            m.discard();
            m.finish();
            let _ = m.faststart();
        }
    }
}

/// A run over `body` finished after its first `k` fragments (all when `None`): the file, its
/// faststart rewrite and its duration.
struct Finished {
    file: Vec<u8>,
    fast: Option<Vec<u8>>,
    duration_ms: u64,
}

fn finish(mut m: mp4::Muxer, mut file: File) -> Finished {
    assert!(m.finish());
    file.take(&mut m);
    let fast = m.faststart().map(|r| rewrite(&file.bytes, &r));
    Finished {
        file: file.bytes,
        fast,
        duration_ms: m.duration_ms(),
    }
}

fn uninterrupted(body: &[u8], faststart: bool, k: Option<u64>) -> Finished {
    let (m, file, _) = mux(body, opts(true, faststart), k, false);
    finish(m, file)
}

/// Feeds `m` the events of `body` after its first `k` fragments, as a rerun that continues the
/// file gets them.
fn continue_after(m: &mut mp4::Muxer, file: &mut File, body: &[u8], k: u64) {
    let mut parser = mkv::Parser::new();
    parser.push(body);
    let mut ended = 0;
    while let Some(event) = parser.next_event().expect("parses") {
        if ended >= k {
            m.event(&event).expect("accepted");
            file.take(m);
        }
        if let mkv::Event::FragmentEnd(_) = event {
            ended += 1;
        }
    }
}

fn assert_same(got: &Finished, want: &Finished, what: &str) {
    assert_eq!(got.duration_ms, want.duration_ms, "{what}: duration");
    assert!(
        got.file == want.file,
        "{what}: the files differ ({} and {} bytes, first at byte {})",
        got.file.len(),
        want.file.len(),
        got.file
            .iter()
            .zip(&want.file)
            .position(|(a, b)| a != b)
            .unwrap_or(got.file.len().min(want.file.len()))
    );
    assert!(got.fast == want.fast, "{what}: the faststart files differ");
}

/// Every cut after a whole fragment of `body`, with and without faststart: recovered and
/// finished, the file is the one an uninterrupted run over those fragments gives; recovered and
/// continued to the end, the one an uninterrupted run over all of them gives. Also when the
/// file went on past what the state file records (a kill between writing a fragment and saving
/// the state): by one fragment, continuing is still exact; by more, finishing still is.
fn check_recovery(body: &[u8]) {
    for faststart in [false, true] {
        let all = uninterrupted(body, faststart, None);
        let (whole, longest, _) = mux(body, opts(true, faststart), None, false);
        let n = whole.fragments();
        assert!(n > 0);
        for k in 1..=n {
            let what = format!("faststart {faststart}, after {k} of {n} fragments");
            let want = uninterrupted(body, faststart, Some(k));
            let (cut, part, _) = mux(body, opts(true, faststart), Some(k), false);
            let len = part.bytes.len();
            let mut parts = vec![("", part.bytes.clone())];
            if k < n {
                let (_, next, _) = mux(body, opts(true, faststart), Some(k + 1), false);
                parts.push((" (one more fragment written)", next.bytes[..len].to_vec()));
            }
            for (lag, bytes) in parts {
                for piece in [usize::MAX, 1000, 7] {
                    let m = recover_with(&bytes, faststart, piece, &cut).expect("recovers");
                    let got = finish(
                        m,
                        File {
                            bytes: bytes.clone(),
                        },
                    );
                    assert_same(&got, &want, &format!("{what}{lag}: finished"));
                }
                let mut m = recover_with(&bytes, faststart, usize::MAX, &cut).expect("recovers");
                let mut file = File { bytes };
                continue_after(&mut m, &mut file, body, k);
                assert_same(&finish(m, file), &all, &format!("{what}{lag}: continued"));
            }
            // The longest file, cut: later fragments overwrote this one's resume record.
            let bytes = longest.bytes[..len].to_vec();
            let m = recover_with(&bytes, faststart, 4096, &cut).expect("recovers");
            let got = finish(m, File { bytes });
            assert_same(
                &got,
                &want,
                &format!("{what}, the longest file cut: finished"),
            );
        }
    }
}

/// Where `kind` first is in `bytes`: the offset of its payload.
fn find(bytes: &[u8], kind: &[u8; 4]) -> Option<usize> {
    bytes.windows(4).position(|w| w == kind).map(|p| p + 4)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// `mehd`'s fragment_duration.
fn mehd(file: &[u8]) -> u64 {
    u64_at(file, find(file, b"mehd").unwrap() + 4)
}

/// Per `tfra` entry of the first `tfra`: (time, moof offset).
fn tfra(file: &[u8]) -> Vec<(u64, u64)> {
    let at = find(file, b"tfra").unwrap();
    let count = u32::from_be_bytes(file[at + 12..at + 16].try_into().unwrap()) as usize;
    (0..count)
        .map(|i| {
            let e = at + 16 + i * 19;
            (u64_at(file, e), u64_at(file, e + 8))
        })
        .collect()
}

use common::body::{Codec, Frag, block, build};

const PRODUCER_MS: i64 = 1_700_000_123_456;

/// AAC frames whose block times are `spacing_ms` apart, `counts[f]` in fragment f, fragments
/// placed by their producer timestamps one after another.
fn aac(spacing_ms: i16, counts: &[usize]) -> Vec<u8> {
    let mut at = PRODUCER_MS;
    let frags: Vec<Frag> = counts
        .iter()
        .enumerate()
        .map(|(f, &n)| {
            let frag = Frag {
                producer_ms: at,
                cluster: (at - PRODUCER_MS) as u64,
                blocks: (0..n)
                    .map(|i| block(0, i as i16 * spacing_ms, 5 + (i * 7 + f) % 40))
                    .collect(),
            };
            at += i64::from(spacing_ms) * n as i64;
            frag
        })
        .collect();
    build(1_000_000, &[Codec::Aac], &frags)
}

/// The fuzzer's `00 02 00 01`: one fragment of AAC blocks 42 ms apart at 44.1 kHz. The file
/// plays its 7 frames of 1024 samples back to back (no composition offsets for audio), so the
/// duration is theirs, 163 ms, in `mehd` as in `duration_ms`, recovered or not (the writer
/// once took it from the block times: 275 ms, and recovery 163).
#[test]
fn aac_duration_is_the_frames_and_survives_recovery() {
    let body = aac(42, &[7]);
    let want = uninterrupted(&body, false, None);
    assert_eq!(want.duration_ms, 163);
    assert_eq!(mehd(&want.file), 163);
    check_recovery(&body);
}

/// The fuzzer's `00 03 00 05`: five fragments of AAC with faststart. The progressive file has
/// no `ctts` for audio (the writer once kept the block times' offsets from the decode times
/// for it, which the fragmented file does not carry and recovery could not rebuild).
#[test]
fn aac_faststart_has_no_composition_offsets_and_survives_recovery() {
    let body = aac(42, &[3, 8, 1, 5, 4]);
    let want = uninterrupted(&body, true, None);
    let fast = want.fast.as_ref().unwrap();
    assert!(find(fast, b"ctts").is_none(), "a ctts for audio");
    check_recovery(&body);
    // Realistic timestamps, whole milliseconds of 23.2 ms frames.
    check_recovery(&aac(23, &[44, 43, 1, 2, 43]));
}

/// The fuzzer's `00 03 00 03 00 03 25 01 02 10 03 00 04`: G.711 with 1 µs ticks, the second
/// fragment's producer time standing still. Each `tfra` time is its moof's decode time (audio
/// is presented at its decode times), in the uninterrupted file as in the recovered one.
#[test]
fn g711_with_a_clock_standing_still_survives_recovery() {
    let us = |ms: i64| (ms * 1000) as u64;
    let frags = vec![
        Frag {
            producer_ms: PRODUCER_MS,
            cluster: us(0),
            blocks: vec![block(0, 0, 0)],
        },
        Frag {
            producer_ms: PRODUCER_MS,
            cluster: us(0),
            blocks: vec![block(0, 0, 120), block(0, 15_000, 7), block(0, 30_000, 0)],
        },
        Frag {
            producer_ms: PRODUCER_MS + 45,
            cluster: us(45),
            blocks: vec![block(0, 0, 199), block(0, 24_875, 160), block(0, 32_767, 3)],
        },
    ];
    let body = build(1000, &[Codec::Alaw], &frags);
    let want = uninterrupted(&body, true, None);
    let index = tfra(&want.file);
    assert_eq!(index.len(), 3);
    for (time, moof) in index {
        let tfdt = find(&want.file[moof as usize..], b"tfdt").unwrap() + moof as usize;
        assert_eq!(time, u64_at(&want.file, tfdt + 4), "moof at {moof}");
    }
    check_recovery(&body);
}

/// H.264 with reordered frames and no DefaultDuration beside AAC, producer clocks that stand
/// still, jump back and leave a gap, in 1 ms and 100 µs ticks: a continued file places every
/// fragment as an uninterrupted run does (the block times, reorder delay and spacing it needs
/// come from the private box, not from the samples).
#[test]
fn continued_files_keep_the_uninterrupted_timeline() {
    for (scale, tick_ms) in [(1_000_000u64, 1i64), (100_000, 10)] {
        let producer = [0, 1000, 1000, 400, 9000, 9990];
        let lengths = [1000, 990, 600, 500, 990, 2000];
        let frags: Vec<Frag> = producer
            .iter()
            .zip(lengths)
            .enumerate()
            .map(|(f, (&p, len))| {
                let frames = 3 + (f * 5) % 9;
                let mut blocks = Vec::new();
                for i in 0..frames {
                    // B-frames: 1 and 2 swapped.
                    let shown = match i {
                        1 if frames > 3 => 2,
                        2 if frames > 3 => 1,
                        i => i,
                    };
                    let t = (shown as i64 * len / frames as i64 * tick_ms) as i16;
                    let mut v = block(0, t, 30 + i * 3 + f);
                    v.key = i == 0;
                    blocks.push(v);
                    let a = (i as i64 * len / frames as i64 * tick_ms) as i16;
                    blocks.push(block(1, a, 4 + (i * 11 + f) % 30));
                }
                Frag {
                    producer_ms: PRODUCER_MS + p,
                    cluster: (p * tick_ms) as u64,
                    blocks,
                }
            })
            .collect();
        check_recovery(&build(scale, &[Codec::Avc, Codec::Aac], &frags));
    }
}

/// A fragment without blocks adds no bytes but moves the end of the media (a gap): its record
/// and the one before it are told apart by their fragment counts.
#[test]
fn an_empty_fragment_is_resumed_from_its_own_record() {
    for empty in [1, 2] {
        let mut frags: Vec<Frag> = (0..5)
            .map(|f| Frag {
                producer_ms: PRODUCER_MS + 1000 * f,
                cluster: 1000 * f as u64,
                blocks: (0..4).map(|i| block(0, i * 40, 10 + i as usize)).collect(),
            })
            .collect();
        frags[empty].blocks.clear();
        frags[empty].producer_ms += 5000;
        // The next one's clock stands still: it follows the end, which the empty one moved.
        frags[empty + 1].producer_ms = frags[empty - 1].producer_ms;
        check_recovery(&build(1_000_000, &[Codec::Aac], &frags));
    }
}
