//! How soon a client passes each frame on: reads the Matroska a client writes to standard
//! output (e.g. `kvs-dl -o - | frame_latency FRAME_LOG`), notes the time each frame is whole
//! on its input, and compares it with the time kvs-emu sent that frame's last byte
//! (`kvs-emu --frame-paced --frame-log FRAME_LOG`). Frames are matched in order; the client
//! must start with the first frame the emulator sent in its body (`--start now`, one session).
//! Prints the count and the 50th, 99th percentile and largest delay in milliseconds.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn main() {
    let log = std::env::args()
        .nth(1)
        .expect("usage: frame_latency FRAME_LOG < client-output.mkv");
    let mut parser = mkv::Parser::new();
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    let mut whole = Vec::new();
    let mut left: Option<u64> = None;
    loop {
        let n = stdin.read(&mut buf).expect("reading standard input");
        if n == 0 {
            break;
        }
        let at = now_micros();
        parser.push(&buf[..n]);
        while let Ok(Some(event)) = parser.next_event() {
            match event {
                mkv::Event::BlockStart(b) if b.size == 0 => whole.push(at),
                mkv::Event::BlockStart(b) => left = Some(b.size),
                mkv::Event::BlockData(d) => {
                    if let Some(l) = left.as_mut() {
                        *l = l.saturating_sub(d.len() as u64);
                        if *l == 0 {
                            left = None;
                            whole.push(at);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let sent: Vec<i64> = std::fs::read_to_string(&log)
        .expect("reading the frame log")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let mut delays: Vec<f64> = whole
        .iter()
        .zip(&sent)
        .map(|(out, sent)| (out - sent) as f64 / 1000.0)
        .collect();
    assert!(!delays.is_empty(), "no frame matched");
    delays.sort_by(f64::total_cmp);
    let pct = |p: f64| delays[((delays.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "frames {} p50_ms {:.1} p99_ms {:.1} max_ms {:.1}",
        delays.len(),
        pct(0.5),
        pct(0.99),
        delays[delays.len() - 1]
    );
}
