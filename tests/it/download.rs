//! Downloads: every start form, every stop condition, raw output byte for byte and every
//! fragment in it whole.

use kvs_emu::Stream;

use crate::support::*;

#[test]
fn raw_output_of_a_capture_is_the_capture_byte_for_byte() {
    let Some(body) = capture("output_get_media.mkv") else {
        return;
    };
    let fragments = kvs_emu::from_capture(&body).unwrap();
    assert_eq!(fragments.len(), 5);
    let all = numbers(&fragments);
    let w = World::new(vec![Stream {
        idle_close: IDLE,
        ..Stream::archive("cam", fragments)
    }]);
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "now",
        "--format",
        "raw",
        "-o",
        "out.raw",
    ]));
    assert_exit(&out, 0);
    let raw = std::fs::read(w.path("out.raw")).unwrap();
    assert_eq!(raw, body);
    assert_whole_raw(&raw, &all);
    assert!(!w.path("out.raw.part").exists());
}

#[test]
fn raw_output_holds_each_whole_fragment_once_in_order() {
    let stream = archive("cam", 6);
    let served = numbers(&stream.fragments);
    let w = World::new(vec![stream]);
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "now",
        "--format",
        "raw",
        "-o",
        "out.raw",
    ]));
    assert_exit(&out, 0);
    let raw = std::fs::read(w.path("out.raw")).unwrap();
    assert_whole_raw(&raw, &served);
    assert_eq!(contents(&raw).ebml_headers, 6);
    assert_eq!(w.selectors()[0]["StartSelectorType"], "EARLIEST");
}

/// RFC 3339 for a millisecond timestamp.
fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
}

/// Downloads `args` from `stream` as raw and returns the fragment numbers written, each whole.
fn fragments_written(w: &World, args: &[&str]) -> Vec<String> {
    let (out, got) = fetch_raw(w, args);
    assert_exit(&out, 0);
    assert_whole_raw(&std::fs::read(w.path("out.raw")).unwrap(), &got);
    got
}

#[test]
fn start_at_a_server_time_begins_with_the_fragment_containing_it() {
    let stream = archive("cam", 8);
    let all = numbers(&stream.fragments);
    let inside_3 = stream.fragments[3].server_ms() + 500;
    let w = World::new(vec![stream]);
    let got = fragments_written(&w, &["--start", &rfc3339(inside_3), "--end", "now"]);
    assert_eq!(got, all[3..]);
    let sel = &w.selectors()[0];
    assert_eq!(sel["StartSelectorType"], "SERVER_TIMESTAMP");
    assert_eq!(
        sel["StartTimestamp"].as_f64().unwrap(),
        inside_3 as f64 / 1000.0
    );
}

#[test]
fn start_at_a_producer_time_uses_the_producer_clock() {
    let stream = archive("cam", 8);
    let all = numbers(&stream.fragments);
    let at_5 = stream.fragments[5].producer_ms();
    let w = World::new(vec![stream]);
    let got = fragments_written(
        &w,
        &[
            "--timestamp-type",
            "producer",
            "--start",
            &rfc3339(at_5),
            "--end",
            "now",
        ],
    );
    assert_eq!(got, all[5..]);
    assert_eq!(w.selectors()[0]["StartSelectorType"], "PRODUCER_TIMESTAMP");
}

#[test]
fn start_relative_to_now() {
    // 60 fragments of 2 s; the first began 19 min 31 s ago, so "-19m" falls 1 s into the 16th.
    let now = jiff::Timestamp::now().as_millisecond();
    let ingest = kvs_emu::Ingest {
        producer_start_ms: now - (19 * 60 + 31) * 1000,
        ..kvs_emu::Ingest::default()
    };
    let fragments = synthetic(60, ingest);
    let all = numbers(&fragments);
    let w = World::new(vec![Stream {
        idle_close: IDLE,
        ..Stream::archive("cam", fragments)
    }]);
    let got = fragments_written(
        &w,
        &[
            "--timestamp-type",
            "producer",
            "--start",
            "-19m",
            "--max-fragments",
            "2",
        ],
    );
    assert_eq!(got, all[15..17]);
}

#[test]
fn start_at_a_fragment_number_includes_it() {
    let stream = archive("cam", 6);
    let all = numbers(&stream.fragments);
    let w = World::new(vec![stream]);
    let start = format!("fragment:{}", all[2]);
    let got = fragments_written(&w, &["--start", &start, "--max-fragments", "2"]);
    assert_eq!(got, all[2..4]);
    let sel = &w.selectors()[0];
    assert_eq!(sel["StartSelectorType"], "FRAGMENT_NUMBER");
    assert_eq!(sel["AfterFragmentNumber"], all[2].as_str());
}

#[test]
fn start_after_a_continuation_token() {
    let stream = archive("cam", 6);
    let all = numbers(&stream.fragments);
    let w = World::new(vec![stream]);
    let start = format!("token:{}", all[2]);
    let got = fragments_written(&w, &["--start", &start, "--end", "now"]);
    assert_eq!(got, all[3..]);
    assert_eq!(w.selectors()[0]["StartSelectorType"], "CONTINUATION_TOKEN");
}

#[test]
fn start_now_on_a_live_stream_takes_only_new_fragments() {
    let fragments = synthetic(40, kvs_emu::Ingest::default());
    let all = numbers(&fragments);
    let w = World::new(vec![Stream {
        idle_close: IDLE,
        live: Some(kvs_emu::Live {
            speed: 20.0,
            backlog: 10,
        }),
        ..Stream::archive("cam", fragments)
    }]);
    let got = fragments_written(&w, &["--start", "now", "--max-fragments", "3"]);
    assert_eq!(got.len(), 3);
    let first = all.iter().position(|n| *n == got[0]).unwrap();
    assert!(
        first >= 10,
        "fragment {first} was stored before the run started"
    );
    assert_eq!(got, all[first..first + 3], "consecutive, none skipped");
    assert_eq!(w.selectors()[0]["StartSelectorType"], "NOW");
}

#[test]
fn end_keeps_fragments_before_it_and_stops_at_the_first_after() {
    let stream = archive("cam", 8);
    let all = numbers(&stream.fragments);
    let at_4 = stream.fragments[4].server_ms();
    let w = World::new(vec![stream]);
    let got = fragments_written(&w, &["--start", "earliest", "--end", &rfc3339(at_4)]);
    assert_eq!(got, all[..4]);
    // A fragment that starts before --end is kept even when it runs past it.
    let got = fragments_written(&w, &["--start", "earliest", "--end", &rfc3339(at_4 + 1)]);
    assert_eq!(got, all[..5]);
}

#[test]
fn end_at_a_fragment_number_excludes_it() {
    let stream = archive("cam", 8);
    let all = numbers(&stream.fragments);
    let w = World::new(vec![stream]);
    let end = format!("fragment:{}", all[3]);
    let got = fragments_written(&w, &["--start", "earliest", "--end", &end]);
    assert_eq!(got, all[..3]);
}

#[test]
fn end_now_stops_once_caught_up_with_the_live_edge() {
    let stream = archive("cam", 5);
    let all = numbers(&stream.fragments);
    let w = World::new(vec![stream]);
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "now",
        "--format",
        "raw",
        "-o",
        "out.raw",
    ]));
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("caught up"), "{}", stderr(&out));
    assert_whole_raw(&std::fs::read(w.path("out.raw")).unwrap(), &all);
}

#[test]
fn duration_stops_once_the_media_spans_it() {
    let w = World::new(vec![archive("cam", 8)]);
    // 2 s fragments: 5 s of media needs three of them.
    let got = fragments_written(&w, &["--start", "earliest", "--duration", "5s"]);
    assert_eq!(got.len(), 3);
    let got = fragments_written(&w, &["--start", "earliest", "--duration", "4s"]);
    assert_eq!(got.len(), 2);
}

#[test]
fn max_fragments_and_max_bytes() {
    let w = World::new(vec![archive("cam", 8)]);
    let got = fragments_written(&w, &["--start", "earliest", "--max-fragments", "1"]);
    assert_eq!(got.len(), 1);
    let size = std::fs::metadata(w.path("out.raw")).unwrap().len();
    let got = fragments_written(&w, &["--start", "earliest", "--max-fragments", "4"]);
    assert_eq!(got.len(), 4);
    // The fragment that reaches the limit is kept whole; the run stops after it.
    let got = fragments_written(
        &w,
        &["--start", "earliest", "--max-bytes", &size.to_string()],
    );
    assert_eq!(got.len(), 1);
    let got = fragments_written(
        &w,
        &[
            "--start",
            "earliest",
            "--max-bytes",
            &(size + 1).to_string(),
        ],
    );
    assert_eq!(got.len(), 2);
}

#[test]
fn idle_timeout_ends_a_quiet_stream() {
    // The body stays open, silent, after the last fragment (as at a quiet live head).
    let stream = Stream {
        idle_close: std::time::Duration::from_secs(30),
        ..archive("cam", 3)
    };
    let all = numbers(&stream.fragments);
    let w = World::new(vec![stream]);
    let started = std::time::Instant::now();
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--idle-timeout",
        "1s",
        "--format",
        "raw",
        "-o",
        "out.raw",
    ]));
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("--idle-timeout"), "{}", stderr(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "ended by the timeout, not the server"
    );
    assert_whole_raw(&std::fs::read(w.path("out.raw")).unwrap(), &all);
}

#[test]
fn stdout_gets_the_same_bytes_as_a_file() {
    let Some(body) = capture("output_get_media_sparse_fragments.mkv") else {
        return;
    };
    let fragments = kvs_emu::from_capture(&body).unwrap();
    let all = numbers(&fragments);
    let w = World::new(vec![Stream {
        idle_close: IDLE,
        ..Stream::archive("cam", fragments)
    }]);
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "now",
        "--format",
        "raw",
        "-o",
        "-",
    ]));
    assert_exit(&out, 0);
    assert_eq!(out.stdout, body);
    assert_whole_raw(&out.stdout, &all);
}

#[test]
fn the_endpoint_can_come_from_aws_endpoint_url() {
    let w = World::new(vec![archive("cam", 2)]);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kvs-dl"));
    let reference = w.kvs_dl();
    cmd.env_clear()
        .envs(reference.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("AWS_ENDPOINT_URL", w.emu.endpoint())
        .current_dir(w.dir.path())
        .args([
            "--stream-name",
            "cam",
            "--start",
            "earliest",
            "--end",
            "now",
            "-o",
            "out.mkv",
        ]);
    let out = run(&mut cmd);
    assert_exit(&out, 0);
    assert!(w.path("out.mkv").exists());
}

#[test]
fn credentials_and_region_from_a_named_profile() {
    let w = World::new(vec![Stream {
        region: "eu-west-1".into(),
        ..archive("cam", 2)
    }]);
    let aws = w.path("home/.aws");
    std::fs::create_dir(&aws).unwrap();
    std::fs::write(aws.join("config"), "[profile cams]\nregion = eu-west-1\n").unwrap();
    std::fs::write(
        aws.join("credentials"),
        format!(
            "[cams]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            kvs_emu::ACCESS_KEY,
            kvs_emu::SECRET_KEY
        ),
    )
    .unwrap();
    let out = run(w
        .kvs_dl()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_REGION")
        .args([
            "--profile",
            "cams",
            "--stream-name",
            "cam",
            "--start",
            "earliest",
            "--end",
            "now",
            "-o",
            "out.mkv",
        ]));
    assert_exit(&out, 0);
    assert!(
        w.get_media()
            .iter()
            .all(|r| r.region.as_deref() == Some("eu-west-1"))
    );
}

#[test]
fn the_region_comes_from_the_arn() {
    let stream = Stream {
        region: "ap-southeast-2".into(),
        ..archive("cam", 2)
    };
    let arn = stream.arn();
    let w = World::new(vec![stream]);
    let out = run(w.kvs_dl().env_remove("AWS_REGION").args([
        "--stream-arn",
        &arn,
        "--start",
        "earliest",
        "--end",
        "now",
        "-o",
        "out.mkv",
    ]));
    assert_exit(&out, 0);
    let media = w.get_media();
    assert!(!media.is_empty());
    assert!(
        media
            .iter()
            .all(|r| r.region.as_deref() == Some("ap-southeast-2"))
    );
    assert_eq!(media[0].body["StreamARN"], arn.as_str());
}

#[test]
fn role_arn_assumes_the_role_for_every_call() {
    let w = World::new(vec![archive("cam", 2)]);
    let role = "arn:aws:iam::123456789012:role/camera-reader";
    let out = run(w.kvs_dl().args([
        "--role-arn",
        role,
        "--role-session-name",
        "nightly",
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "now",
        "-o",
        "out.mkv",
    ]));
    assert_exit(&out, 0);
    let requests = w.emu.requests();
    let assume: Vec<_> = requests
        .iter()
        .filter(|r| r.operation == "AssumeRole")
        .collect();
    assert_eq!(assume.len(), 1, "{requests:?}");
    assert_eq!(assume[0].body["RoleArn"], role);
    assert_eq!(assume[0].body["RoleSessionName"], "nightly");
    let kvs: Vec<_> = requests
        .iter()
        .filter(|r| r.operation != "AssumeRole")
        .collect();
    assert!(!kvs.is_empty());
    assert!(
        kvs.iter().all(|r| r.assumed_role.as_deref() == Some(role)),
        "{kvs:?}"
    );
}

#[test]
fn a_role_that_may_not_be_assumed_exits_3() {
    let w = World::with(kvs_emu::Config {
        streams: vec![archive("cam", 2)],
        roles: vec!["arn:aws:iam::123456789012:role/other".into()],
        ..kvs_emu::Config::default()
    });
    let out = run(w.kvs_dl().args([
        "--role-arn",
        "arn:aws:iam::123456789012:role/camera-reader",
        "--stream-name",
        "cam",
        "-o",
        "out.mkv",
    ]));
    assert_exit(&out, 3);
    let err = stderr(&out);
    assert!(
        err.contains("camera-reader") && err.contains("AccessDenied"),
        "{err}"
    );
    assert!(
        w.emu.requests().iter().all(|r| r.operation == "AssumeRole"),
        "nothing else was called"
    );
}
