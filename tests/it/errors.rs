//! Failures: the documented exit code, one line naming what went wrong and what to do, and no
//! file left behind by a run that wrote nothing.

use crate::support::*;

/// Files in the test directory, other than the fake home.
fn files(w: &World) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "home")
        .collect();
    names.sort();
    names
}

#[test]
fn an_unknown_stream_exits_4_and_leaves_no_file() {
    let w = World::new(vec![archive("cam", 2)]);
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "nope",
        "--start",
        "earliest",
        "-o",
        "out.mkv",
    ]));
    assert_exit(&out, 4);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("kvs-dl: error: "), "{err}");
    assert!(
        err.contains("nope") && err.contains("us-east-1"),
        "names stream and region: {err}"
    );
    assert!(err.contains("--region"), "says what to check: {err}");
    assert!(files(&w).is_empty(), "{:?}", files(&w));
}

#[test]
fn a_wrong_secret_exits_3() {
    let w = World::new(vec![archive("cam", 2)]);
    let out = run(w
        .kvs_dl()
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .args([
            "--stream-name",
            "cam",
            "--start",
            "earliest",
            "-o",
            "out.mkv",
        ]));
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("InvalidSignatureException"), "{err}");
    assert!(
        err.contains("AWS_SECRET_ACCESS_KEY"),
        "says what to fix: {err}"
    );
    assert!(files(&w).is_empty());
    // Refused at the first call: nothing was retried.
    assert_eq!(w.emu.requests().len(), 1);
}

#[test]
fn no_credentials_at_all_exits_3_before_any_request() {
    let w = World::new(vec![archive("cam", 2)]);
    let out = run(w
        .kvs_dl()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["--stream-name", "cam", "-o", "out.mkv"]));
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("credentials"), "{}", stderr(&out));
    assert!(w.emu.requests().is_empty());
    assert!(files(&w).is_empty());
}

#[test]
fn bad_flags_exit_2_and_name_the_flag() {
    let w = World::new(vec![archive("cam", 2)]);
    for (args, flag) in [
        (
            vec![
                "--stream-name",
                "cam",
                "--start",
                "yesterday",
                "-o",
                "x.mkv",
            ],
            "--start",
        ),
        (
            vec!["--stream-name", "cam", "--end", "earliest", "-o", "x.mkv"],
            "--end",
        ),
        (
            vec!["--stream-name", "cam", "--duration", "ten", "-o", "x.mkv"],
            "--duration",
        ),
        (
            vec!["--stream-name", "cam", "--max-bytes", "lots", "-o", "x.mkv"],
            "--max-bytes",
        ),
        (
            vec![
                "--stream-name",
                "cam",
                "--max-fragments",
                "0",
                "-o",
                "x.mkv",
            ],
            "--max-fragments",
        ),
        (
            vec!["--stream-name", "cam", "--format", "mov", "-o", "x.mkv"],
            "--format",
        ),
        (
            vec!["--stream-name", "cam", "--faststart", "-o", "x.mkv"],
            "--faststart",
        ),
        (
            vec![
                "--stream-name",
                "cam",
                "--force",
                "--state-file",
                "s.json",
                "-o",
                "x.mkv",
            ],
            "--force",
        ),
        (
            vec![
                "--stream-name",
                "cam",
                "--stream-arn",
                "arn:aws:kinesisvideo:us-east-1:1:stream/a/1",
                "-o",
                "x.mkv",
            ],
            "--stream-arn",
        ),
        (
            vec!["--stream-arn", "arn:nope", "-o", "x.mkv"],
            "--stream-arn",
        ),
        (vec!["--stream-name", "cam"], "--output"),
    ] {
        let out = run(w.kvs_dl().args(&args));
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(flag), "{args:?}: {}", stderr(&out));
    }
    assert!(
        w.emu.requests().is_empty(),
        "usage errors never reach the service"
    );
    assert!(files(&w).is_empty());
}

#[test]
fn an_existing_output_is_refused_without_force() {
    let w = World::new(vec![archive("cam", 2)]);
    std::fs::write(w.path("out.mkv"), b"precious").unwrap();
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "now",
        "-o",
        "out.mkv",
    ]));
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read(w.path("out.mkv")).unwrap(), b"precious");
    assert!(w.emu.requests().is_empty());
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "now",
        "--force",
        "-o",
        "out.mkv",
    ]));
    assert_exit(&out, 0);
    assert_eq!(
        contents(&std::fs::read(w.path("out.mkv")).unwrap()).ebml_headers,
        1
    );
}

#[test]
fn a_run_that_writes_nothing_leaves_nothing() {
    // --end at the first fragment: nothing comes before it.
    let w = World::new(vec![archive("cam", 3)]);
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "fragment:1",
        "-o",
        "out.mkv",
    ]));
    assert_exit(&out, 0);
    assert!(files(&w).is_empty(), "{:?}", files(&w));
}

#[test]
fn json_events_end_with_done_and_the_exit_code_even_on_early_errors() {
    let w = World::new(vec![archive("cam", 2)]);
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "nope",
        "-o",
        "out.mkv",
        "--progress",
        "json",
    ]));
    assert_exit(&out, 4);
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let done = events.last().expect("a done event");
    assert_eq!(done["event"], "done");
    assert_eq!(done["exit_code"], 4);
    assert_eq!(done["fragments"], 0);
}

#[test]
fn an_invalid_argument_exits_1_with_the_service_message() {
    let w = World::new(vec![kvs_emu::Stream {
        faults: vec![kvs_emu::CallFault::InvalidArgument {
            message: "StartTimestamp must be before the stream's newest fragment".into(),
        }],
        ..archive("cam", 2)
    }]);
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "-o",
        "out.mkv",
    ]));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cam") && err.contains("StartTimestamp must be before"),
        "{err}"
    );
    assert!(files(&w).is_empty());
    assert_eq!(w.get_media().len(), 1, "not retried");
}
