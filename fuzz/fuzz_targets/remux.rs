//! Any bytes through the parser and the Matroska writer: no panic, and no patch outside what
//! was written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mkv::{Muxer, Options, Parser};

fuzz_target!(|data: &[u8]| {
    let mut p = Parser::new();
    p.push(data);
    let mut m = Muxer::new(Options {
        seekable: true,
        app: "fuzz".into(),
        stream_tag: ("KVS_STREAM_NAME".into(), "fuzz".into()),
    });
    let mut written = 0u64;
    let mut check = |m: &mut Muxer| {
        m.drain(|bytes, patches| {
            written += bytes.len() as u64;
            for patch in patches {
                assert!(patch.offset + patch.bytes.len() as u64 <= written);
            }
        })
    };
    while let Ok(Some(e)) = p.next_event() {
        if m.event(&e).is_err() {
            break;
        }
        check(&mut m);
    }
    m.finish();
    check(&mut m);
});
