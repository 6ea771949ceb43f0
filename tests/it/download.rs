//! Downloads: every start form, every stop condition, raw output byte for byte.

use kvs_emu::Stream;

use crate::support::*;

#[test]
fn raw_output_of_a_capture_is_the_capture_byte_for_byte() {
    let Some(body) = capture("output_get_media.mkv") else { return };
    let fragments = kvs_emu::from_capture(&body).unwrap();
    assert_eq!(fragments.len(), 5);
    let w = World::new(vec![Stream {
        idle_close: IDLE,
        ..Stream::archive("cam", fragments)
    }]);
    let out = run(w.kvs_dl().args([
        "--stream-name", "cam", "--start", "earliest", "--end", "now", "--format", "raw", "-o", "out.raw",
    ]));
    assert_exit(&out, 0);
    assert_eq!(std::fs::read(w.path("out.raw")).unwrap(), body);
    assert!(!w.path("out.raw.part").exists());
}

#[test]
fn raw_output_holds_each_whole_fragment_once_in_order() {
    let stream = archive("cam", 6);
    let served = numbers(&stream.fragments);
    let w = World::new(vec![stream]);
    let out = run(w.kvs_dl().args([
        "--stream-name", "cam", "--start", "earliest", "--end", "now", "--format", "raw", "-o", "out.raw",
    ]));
    assert_exit(&out, 0);
    let got = contents(&std::fs::read(w.path("out.raw")).unwrap());
    assert_eq!(got.fragments, served);
    assert_eq!(got.ebml_headers, 6);
    assert_eq!(w.selectors()[0]["StartSelectorType"], "EARLIEST");
}
