//! Any bytes, split anywhere: the parser returns events or an error with an offset, never
//! panics, and gives the same answer however the input is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mkv::{Event, Parser};

/// A comparable summary of everything the parser said.
fn run(data: &[u8], cut: usize) -> (Vec<String>, String) {
    let mut p = Parser::new();
    let mut seen = Vec::new();
    let (a, b) = data.split_at(cut.min(data.len()));
    for piece in [a, b] {
        p.push(piece);
        loop {
            match p.next_event() {
                Ok(Some(Event::BlockData(d))) => seen.push(format!("data {}", d.len())),
                Ok(Some(e)) => seen.push(format!("{e:?}")),
                Ok(None) => break,
                Err(e) => return (seen, format!("error {e}")),
            }
        }
    }
    let end = format!("{:?}", p.finish());
    (seen, end)
}

fuzz_target!(|input: (u16, &[u8])| {
    let (cut, data) = input;
    let whole = run(data, data.len());
    let split = run(data, cut as usize);
    // Block payloads may arrive in more pieces when split; everything else must agree.
    let merge = |(events, end): (Vec<String>, String)| {
        let mut out: Vec<String> = Vec::new();
        for e in events {
            if let (Some(last), Some(n)) = (out.last_mut(), e.strip_prefix("data "))
                && let Some(m) = last.strip_prefix("data ")
            {
                *last = format!(
                    "data {}",
                    m.parse::<usize>().unwrap() + n.parse::<usize>().unwrap()
                );
                continue;
            }
            out.push(e);
        }
        (out, end)
    };
    assert_eq!(merge(whole), merge(split));
});
