//! Real GetMedia captures through the parser and the MP4 muxer, read back.

mod common;

use common::*;

#[test]
fn captures_round_trip_sample_for_sample() {
    let Some(dir) = fixtures() else { return };
    for name in [
        "output_get_media.mkv",
        "kinesis_video_renderer_example_output.mkv",
    ] {
        let body = std::fs::read(dir.join(name)).unwrap();
        for (seekable, faststart) in [(true, true), (false, false)] {
            let (m, file, fed) = mux(&body, opts(seekable, faststart), None, true);
            assert!(m.fragments() > 0, "{name}");
            let samples = demux_fmp4(&file.bytes);
            assert_eq!(samples.len(), fed.len(), "{name}: samples = blocks fed");
            for (i, ((_, frame), s)) in fed.iter().zip(&samples).enumerate() {
                assert!(s.4 == *frame, "{name}: sample {i} differs");
            }
            if seekable {
                let progressive = rewrite(&file.bytes, &m.faststart().unwrap());
                let mut d = shiguredo_mp4::demux::Mp4FileDemuxer::new();
                d.handle_input(shiguredo_mp4::demux::Input {
                    position: 0,
                    data: &progressive,
                });
                let mut n = 0;
                while let Some(s) = d.next_sample().expect("progressive demux") {
                    let at = s.data_offset as usize;
                    assert!(
                        progressive[at..at + s.data_size] == fed[n].1[..],
                        "{name}: {n}"
                    );
                    n += 1;
                }
                assert_eq!(n, fed.len());
            }
        }
    }
}

#[test]
fn a_codec_mp4_cannot_carry_is_refused_by_name() {
    let Some(dir) = fixtures() else { return };
    let body = std::fs::read(dir.join("test_mixed_tags.mkv")).unwrap();
    let mut parser = mkv::Parser::new();
    parser.push(&body);
    let mut m = mp4::Muxer::new(opts(true, false));
    let mut refused = None;
    while let Some(event) = parser.next_event().unwrap() {
        if let Err(e) = m.event(&event) {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("refused");
    assert_eq!(refused, mp4::Refusal::Codec("V_MS/VFW/FOURCC".into()));
    assert_eq!(
        refused.to_string(),
        "MP4 cannot carry codec V_MS/VFW/FOURCC"
    );
    assert!(!m.finish());
}

#[test]
fn ffprobe_reads_captures_cleanly() {
    let Some(dir) = fixtures() else { return };
    if !have("ffprobe") || !have("ffmpeg") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "output_get_media.mkv",
        "kinesis_video_renderer_example_output.mkv",
        "output_get_media_sparse_fragments.mkv",
    ] {
        let body = std::fs::read(dir.join(name)).unwrap();
        let (m, file, _) = mux(&body, opts(true, true), None, true);
        let frag = tmp.path().join(format!("{name}.mp4"));
        std::fs::write(&frag, &file.bytes).unwrap();
        assert_clean(&frag);
        let fast = tmp.path().join(format!("{name}.fast.mp4"));
        std::fs::write(&fast, rewrite(&file.bytes, &m.faststart().unwrap())).unwrap();
        assert_clean(&fast);
        let reference = tmp.path().join(format!("{name}.ref.mkv"));
        std::fs::write(&reference, mkv_reference(&body)).unwrap();
        assert_eq!(hashes(&frag), hashes(&reference), "{name}");
        assert_eq!(hashes(&fast), hashes(&reference), "{name}");
        let t = tags(&frag);
        assert!(t.contains("KVS_FRAGMENTS="), "{name}: {t}");
        eprintln!(
            "{name}: {} fragments, {} ms, tags:\n{t}",
            m.fragments(),
            m.duration_ms()
        );
    }
}
