//! The fault matrix: connections cut at seeded random points, over captures, generated and
//! synthetic streams, in both formats. Every fragment must be written exactly once.

use kvs_emu::{CallFault, StoredFragment, Stream};

use crate::support::*;

/// A small, seeded generator: the same cut points on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fraction(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 1_000_000.0
    }
}

const RUNS: u64 = 3;
const CUTS_PER_RUN: usize = 12;

/// Runs the matrix over one stream; returns (cut points, fragments checked).
fn matrix(
    name: &str,
    fragments: Vec<StoredFragment>,
    seed: u64,
    formats: &[&str],
) -> (usize, usize) {
    let served: Vec<Vec<u8>> = fragments
        .iter()
        .flat_map(|f| contents(&f.chunk(0)).blocks)
        .collect();
    let all = numbers(&fragments);
    let mut rng = Rng(seed);
    let (mut cuts, mut checked) = (0, 0);
    for run_no in 0..RUNS {
        let faults: Vec<CallFault> = (0..CUTS_PER_RUN)
            .map(|_| CallFault::CutInFragment {
                index: (rng.next() % 2) as usize,
                at_fraction: rng.fraction(),
            })
            .collect();
        let format = formats[run_no as usize % formats.len()];
        let w = World::new(vec![Stream {
            idle_close: IDLE,
            faults: faults.clone(),
            ..Stream::archive("cam", fragments.clone())
        }]);
        let out = run(w.kvs_dl().args([
            "--stream-name",
            "cam",
            "--start",
            "earliest",
            "--end",
            "now",
            "--max-retries",
            "20",
            "--format",
            format,
            "-o",
            "out",
        ]));
        assert_exit(&out, 0);
        let data = std::fs::read(w.path("out")).unwrap();
        let got = contents(&data);
        let context = format!("{name} run {run_no} ({format}, seed {seed}): {faults:?}");
        match format {
            "raw" => assert_eq!(got.fragments, all, "{context}"),
            _ => {
                assert_eq!(got.ebml_headers, 1, "{context}");
                assert_eq!(
                    got.blocks.len(),
                    served.len(),
                    "{context}: blocks lost or doubled"
                );
                assert!(got.blocks == served, "{context}: blocks differ");
            }
        }
        let cut = w
            .get_media()
            .iter()
            .filter(|r| r.body_end == Some(kvs_emu::BodyEnd::Cut))
            .count();
        cuts += cut;
        checked += all.len();
    }
    eprintln!(
        "fault matrix {name}: {cuts} cut points, {checked} fragments checked, 0 lost, 0 doubled"
    );
    (cuts, checked)
}

#[test]
fn cut_connections_over_captures() {
    let mut total = 0;
    for (seed, name) in [
        (11, "output_get_media.mkv"),
        (12, "kinesis_video_renderer_example_output.mkv"),
    ] {
        let Some(body) = capture(name) else { return };
        total += matrix(
            name,
            kvs_emu::from_capture(&body).unwrap(),
            seed,
            &["mkv", "raw"],
        )
        .0;
    }
    assert!(total >= 50, "{total} cut points");
}

#[test]
fn cut_connections_over_generated_and_synthetic_streams() {
    let mut total = matrix(
        "synthetic",
        synthetic(20, kvs_emu::Ingest::default()),
        21,
        &["raw"],
    )
    .0;
    if let Some(media) = generated("h264-aac.mkv") {
        let fragments = kvs_emu::from_mkv(&media, &kvs_emu::MkvOptions::default()).unwrap();
        total += matrix("h264-aac", fragments, 22, &["mkv", "raw"]).0;
        assert!(total >= 50, "{total} cut points");
    }
}
