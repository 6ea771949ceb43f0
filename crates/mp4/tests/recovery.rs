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
    let mut r = Recovery::new(opts(true, true));
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
