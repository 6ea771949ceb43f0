//! What a run tells people and scripts: JSON events held to the schema README.md documents, the
//! live line on a terminal, plain lines elsewhere, nothing but errors with -q, no secrets with
//! -v and -vv, and the subcommands that print completions and the manual page.

use std::collections::BTreeMap;
use std::process::Command;

use kvs_emu::{CallFault, Live, Stream};
use serde_json::Value;

use crate::support::*;

/// Event kind → field → documented type (`string`, `integer`, `string or null`, `integer or null`).
type Schema = BTreeMap<String, BTreeMap<String, String>>;

/// README.md's "Progress and JSON events" section: its field table and its example lines. The
/// documentation is the schema, so the two cannot drift apart.
fn documented() -> (Schema, Vec<String>) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Progress and JSON events\n")
        .nth(1)
        .expect("README.md has a section \"Progress and JSON events\"");
    let section = section.split("\n## ").next().unwrap();
    let mut schema = Schema::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let [_, event, field, kind, ..] = cells[..] else {
            panic!("a table row of event, field, type and meaning: {row}");
        };
        schema
            .entry(event.trim_matches('`').to_owned())
            .or_default()
            .insert(field.trim_matches('`').to_owned(), kind.to_owned());
    }
    let examples = section
        .split("```json\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("README.md has a json block of example events")
        .lines()
        .map(str::to_owned)
        .collect();
    (schema, examples)
}

/// Checks one event against the schema: a known kind, exactly the documented fields, each of
/// its documented type.
fn check(schema: &Schema, event: &Value) -> Result<(), String> {
    let object = event.as_object().ok_or("not an object")?;
    let kind = object
        .get("event")
        .and_then(Value::as_str)
        .ok_or("no \"event\"")?;
    let fields = schema
        .get(kind)
        .ok_or_else(|| format!("undocumented event {kind:?}"))?;
    for (name, value) in object.iter().filter(|(name, _)| *name != "event") {
        let documented = fields
            .get(name)
            .ok_or_else(|| format!("{kind}: undocumented field {name:?}"))?;
        let fits = match documented.as_str() {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "string or null" => value.is_string() || value.is_null(),
            "integer or null" => value.is_i64() || value.is_u64() || value.is_null(),
            other => return Err(format!("{kind}.{name}: unknown documented type {other:?}")),
        };
        if !fits {
            return Err(format!("{kind}.{name} should be {documented}: {value}"));
        }
    }
    match fields.keys().find(|f| !object.contains_key(*f)) {
        Some(missing) => Err(format!("{kind}: no {missing:?}")),
        None => Ok(()),
    }
}

const KINDS: [&str; 6] = ["start", "fragment", "reconnect", "gap", "file", "done"];

#[test]
fn readme_examples_follow_the_documented_schema() {
    let (schema, examples) = documented();
    let mut kinds = KINDS.to_vec();
    kinds.sort();
    assert_eq!(
        schema.keys().map(String::as_str).collect::<Vec<_>>(),
        kinds,
        "every kind documented"
    );
    let mut shown: Vec<String> = examples
        .iter()
        .map(|line| {
            let event: Value = serde_json::from_str(line).expect("an example is JSON");
            check(&schema, &event).unwrap_or_else(|e| panic!("README example {line}: {e}"));
            event["event"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(shown.first().map(String::as_str), Some("start"));
    assert_eq!(shown.last().map(String::as_str), Some("done"));
    shown.sort();
    assert_eq!(shown, kinds, "one example of each kind");
}

#[test]
fn the_checker_refuses_what_the_table_does_not_say() {
    let (schema, _) = documented();
    let good =
        serde_json::json!({"event": "reconnect", "reason": "x", "attempt": 1, "delay_ms": 5});
    assert_eq!(check(&schema, &good), Ok(()));
    for bad in [
        serde_json::json!({"event": "reconnect", "reason": "x", "attempt": 1}),
        serde_json::json!({"event": "reconnect", "reason": "x", "attempt": 1, "delay_ms": 5, "extra": 0}),
        serde_json::json!({"event": "reconnect", "reason": "x", "attempt": "1", "delay_ms": 5}),
        serde_json::json!({"event": "reconnect", "reason": null, "attempt": 1, "delay_ms": 5}),
        serde_json::json!({"event": "progress"}),
    ] {
        assert!(check(&schema, &bad).is_err(), "{bad}");
    }
}

#[test]
fn every_event_of_a_run_follows_the_documented_schema_in_a_sensible_order() {
    // Ten 2 s fragments, the first five expired (a gap), and the first call cut inside its
    // second fragment (a reconnect).
    let stream = Stream {
        retention_ms: Some(11_000),
        faults: vec![CallFault::CutInFragment {
            index: 1,
            at_fraction: 0.5,
        }],
        ..archive("cam", 10)
    };
    let all = numbers(&stream.fragments);
    let w = World::new(vec![stream]);
    let start = format!("fragment:{}", all[0]);
    let out = run(w.kvs_dl().args([
        "--stream-name",
        "cam",
        "--start",
        &start,
        "--end",
        "now",
        "-o",
        "out.mkv",
        "--progress",
        "json",
    ]));
    assert_exit(&out, 0);
    let text = stderr(&out);
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let (schema, _) = documented();
    for event in &events {
        check(&schema, event).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }
    let kind = |e: &Value| e["event"].as_str().unwrap().to_owned();
    let of = |k: &str| -> Vec<&Value> { events.iter().filter(|e| e["event"] == k).collect() };
    for k in KINDS {
        assert!(!of(k).is_empty(), "no {k} event:\n{text}");
    }
    assert_eq!(kind(&events[0]), "start", "{text}");
    assert_eq!(kind(events.last().unwrap()), "done", "{text}");
    assert_eq!(of("start").len(), 1);
    assert_eq!(of("done").len(), 1);

    let written: Vec<&str> = of("fragment")
        .iter()
        .map(|e| e["number"].as_str().unwrap())
        .collect();
    assert_eq!(written, all[5..], "each kept fragment once, in order");
    assert!(
        written
            .windows(2)
            .all(|w| kvs_emu::cmp_fragment_numbers(w[0], w[1]).is_lt()),
        "fragment numbers increase"
    );
    let done = of("done")[0];
    let files = of("file");
    assert_eq!(done["exit_code"], 0);
    assert_eq!(done["fragments"], written.len());
    assert_eq!(done["reconnects"], of("reconnect").len());
    assert_eq!(done["gaps"], of("gap").len());
    assert_eq!(done["files"], files.len());
    assert_eq!(files[0]["path"], "out.mkv");
    assert_eq!(files[0]["fragments"], written.len());
    assert_eq!(files[0]["first_fragment"], written[0]);
    assert_eq!(files[0]["last_fragment"], *written.last().unwrap());
    assert_eq!(done["media_duration_ms"], files[0]["media_duration_ms"]);
    let first_fragment = events
        .iter()
        .position(|e| e["event"] == "fragment")
        .unwrap();
    let gap = events.iter().position(|e| e["event"] == "gap").unwrap();
    assert!(gap < first_fragment, "the gap comes before what follows it");
    assert_eq!(of("gap")[0]["after_fragment"], Value::Null);
    let reconnect = &of("reconnect")[0];
    assert_eq!(reconnect["attempt"], 1);
    assert!(reconnect["reason"].as_str().unwrap().contains("connection"));
}

/// What a terminal shows, without its control sequences (CSI: ESC [ parameters, a letter).
fn without_escapes(transcript: &str) -> String {
    let mut plain = String::new();
    let mut chars = transcript.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The live line's figures, one per redraw: `…, N fragments, …, R reconnects, G gaps → FILE`.
fn drawn_lines(transcript: &str) -> Vec<String> {
    // A notice is padded to the terminal's width rather than ended with a newline.
    without_escapes(transcript)
        .split(['\r', '\n'])
        .flat_map(|l| l.split("  "))
        .map(str::trim)
        .filter(|l| l.contains(" behind live, "))
        .map(str::to_owned)
        .collect()
}

/// A live stream that brings a fragment every half second, its first call cut in its second.
fn live_with_a_cut() -> Stream {
    Stream {
        live: Some(Live {
            speed: 4.0,
            backlog: 2,
        }),
        faults: vec![CallFault::CutInFragment {
            index: 1,
            at_fraction: 0.5,
        }],
        ..archive("cam", 40)
    }
}

#[test]
fn on_a_terminal_a_live_line_shows_the_figures() {
    if !have("script") {
        return;
    }
    let w = World::new(vec![live_with_a_cut()]);
    let mut cmd = w.kvs_dl();
    cmd.args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--max-fragments",
        "12",
        "-o",
        "out.mkv",
    ]);
    let out = run(&mut in_terminal(&cmd));
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{transcript:?}");
    let lines = drawn_lines(&transcript);
    assert!(lines.len() >= 4, "redrawn as it goes: {transcript:?}");
    for line in &lines {
        // `1.23 MiB at 456.7 KiB/s, 7 fragments, 14.0 s of media, 0.5 s behind live, …`
        let (bytes, rest) = line.split_once(" at ").expect(line);
        assert!(bytes.ends_with('B'), "bytes: {line}");
        let (rate, figures) = rest.split_once("/s, ").expect(line);
        assert!(rate.ends_with('B'), "rate: {line}");
        for figure in [
            " fragment",
            " of media, ",
            " behind live, ",
            " reconnect",
            " gap",
        ] {
            assert!(figures.contains(figure), "{figure:?} in {line}");
        }
        assert!(line.ends_with(" → out.mkv"), "the file: {line}");
    }
    let counts: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.split(", ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(
        counts.windows(2).all(|c| c[0] <= c[1]) && counts.last() > counts.first(),
        "the fragment count goes up: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains(", 1 reconnect, ")),
        "{lines:#?}"
    );
    assert!(
        transcript.contains("kvs-dl: reconnecting in "),
        "a notice above the line"
    );
    let plain = without_escapes(&transcript);
    let summary = plain
        .rsplit(['\r', '\n'])
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap();
    assert!(
        summary.starts_with("kvs-dl: done in ")
            && summary.contains("12 fragments")
            && summary.ends_with("reached --max-fragments"),
        "the line is cleared for the summary: {summary:?}"
    );
}

#[test]
fn on_a_terminal_a_fleet_shows_a_line_per_stream_and_totals() {
    if !have("script") {
        return;
    }
    let names = ["cam-a", "cam-b", "cam-c"];
    let streams = names
        .iter()
        .map(|n| Stream {
            name: (*n).into(),
            ..live_with_a_cut()
        })
        .collect();
    let w = World::new(streams);
    let mut cmd = w.kvs_dl();
    cmd.args([
        "--stream-name",
        "cam-a",
        "--stream-name",
        "cam-b",
        "--stream-name",
        "nosuch",
        "--stream-name",
        "cam-c",
        "--start",
        "earliest",
        "--max-fragments",
        "10",
        "-o",
        "{stream}.mkv",
    ]);
    let out = run(&mut in_terminal(&cmd));
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(8), "{transcript:?}");
    let plain = without_escapes(&transcript);
    let lines: Vec<&str> = plain.split(['\r', '\n']).map(str::trim).collect();
    // indicatif pads the lines it draws (and the notices above them) to the terminal's width.
    let drawn: Vec<&str> = lines
        .iter()
        .flat_map(|l| l.split("  "))
        .map(str::trim)
        .collect();
    // The totals: `1.2 MiB at 456 KiB/s, 2 of 4 streams active, 1 done, 1 failed, 9 fragments`.
    let totals: Vec<&&str> = drawn
        .iter()
        .filter(|l| l.contains(" of 4 streams active, "))
        .collect();
    assert!(totals.len() >= 3, "redrawn as it goes: {transcript:?}");
    assert!(
        totals.iter().any(|l| l.contains(" 1 failed, ")),
        "{totals:#?}"
    );
    // A stream's line: `cam-b: 1.2 MiB at 456 KiB/s, 4 fragments, 8.0 s of media, …`.
    for name in names {
        let of_stream: Vec<&&str> = drawn
            .iter()
            .filter(|l| l.starts_with(&format!("{name}: ")) && l.contains(" behind live, "))
            .collect();
        assert!(!of_stream.is_empty(), "a line for {name}: {transcript:?}");
        for line in of_stream {
            let (_, rest) = line.split_once(" at ").expect(line);
            assert!(
                rest.contains("/s, ") && rest.contains(" fragment"),
                "{line}"
            );
        }
        assert!(
            drawn.iter().any(
                |l| l.starts_with(&format!("kvs-dl: {name}: wrote {name}.mkv (10 fragments, "))
            ),
            "the stream's notices above the lines, named: {transcript:?}"
        );
    }
    assert!(
        drawn
            .iter()
            .any(|l| l.contains("kvs-dl: cam-a: reconnecting in ")),
        "{transcript:?}"
    );
    assert!(
        drawn
            .iter()
            .any(|l| l.starts_with("kvs-dl: nosuch: error: stream nosuch not found")),
        "the failed stream's error: {transcript:?}"
    );
    // The lines are cleared for the table.
    let header = lines
        .iter()
        .rposition(|l| l.starts_with("STREAM "))
        .expect("a table");
    let rest: Vec<&&str> = lines[header..].iter().filter(|l| !l.is_empty()).collect();
    assert_eq!(rest.len(), 6, "the table, then nothing: {rest:#?}");
    assert!(
        rest[5].starts_with("kvs-dl: done in ") && rest[5].contains("4 streams, 1 failed"),
        "{rest:#?}"
    );
}

#[test]
fn with_verbose_a_terminal_gets_log_lines_not_a_live_line() {
    if !have("script") {
        return;
    }
    let w = World::new(vec![live_with_a_cut()]);
    let mut cmd = w.kvs_dl();
    cmd.args([
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--max-fragments",
        "6",
        "-o",
        "out.mkv",
        "-v",
    ]);
    let out = run(&mut in_terminal(&cmd));
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{transcript:?}");
    assert!(drawn_lines(&transcript).is_empty(), "{transcript:?}");
    assert!(transcript.contains("DEBUG"), "{transcript:?}");
    assert!(
        transcript.contains("reconnecting after a backoff"),
        "{transcript:?}"
    );
    assert!(transcript.contains("kvs-dl: done in "), "{transcript:?}");
}

#[test]
fn off_a_terminal_lines_are_plain() {
    for mode in [&[][..], &["--progress", "bar"], &["--progress", "log"]] {
        let w = World::new(vec![live_with_a_cut()]);
        let out = run(w
            .kvs_dl()
            .args([
                "--stream-name",
                "cam",
                "--start",
                "earliest",
                "--max-fragments",
                "6",
                "-o",
                "out.mkv",
            ])
            .args(mode));
        assert_exit(&out, 0);
        let err = stderr(&out);
        assert!(!err.contains(['\x1b', '\r']), "{mode:?}: {err:?}");
        let lines: Vec<&str> = err.lines().collect();
        assert!(lines.iter().all(|l| l.starts_with("kvs-dl: ")), "{err}");
        assert!(lines[0].starts_with("kvs-dl: reading cam in us-east-1"));
        assert!(err.contains("kvs-dl: reconnecting in "), "{err}");
        assert!(
            err.contains("kvs-dl: wrote out.mkv (6 fragments, "),
            "{err}"
        );
        let summary = lines.last().unwrap();
        assert!(
            summary.starts_with("kvs-dl: done in ") && summary.contains(": 1 file, 6 fragments, "),
            "{summary}"
        );
        for figure in [
            " of media, ",
            "/s; ",
            "1 reconnect, ",
            "0 gaps, ",
            "0 fragment timestamps that did not move forward; ",
        ] {
            assert!(summary.contains(figure), "{figure:?} in {summary}");
        }
    }
}

#[test]
fn quiet_prints_only_errors() {
    let w = World::new(vec![archive("cam", 3)]);
    let args = [
        "--start", "earliest", "--end", "now", "-o", "out.mkv", "--force", "-q",
    ];
    let out = run(w.kvs_dl().args(["--stream-name", "cam"]).args(args));
    assert_exit(&out, 0);
    assert_eq!(stderr(&out), "");
    let out = run(w.kvs_dl().args(["--stream-name", "nope"]).args(args));
    assert_exit(&out, 4);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("kvs-dl: error: "), "{err}");
}

#[test]
fn verbose_output_never_shows_secrets() {
    const ENV_SECRET: &str = "env-secret-3b1f9c";
    const ENV_TOKEN: &str = "env-session-token-77d2";
    const PROFILE_SECRET: &str = "profile-secret-a41e0d";
    let secrets = [
        ENV_SECRET,
        ENV_TOKEN,
        PROFILE_SECRET,
        kvs_emu::SECRET_KEY,
        // What the emulator's STS hands out for --role-arn.
        "kvs-emu-temporary-secret",
        "kvs-emu-session-token",
        "Signature=",
    ];
    let w = World::with(kvs_emu::Config {
        streams: vec![archive("cam", 3)],
        secret_key: PROFILE_SECRET.into(),
        ..kvs_emu::Config::default()
    });
    let aws = w.dir.path().join("home/.aws");
    std::fs::create_dir(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        format!(
            "[dl]\naws_access_key_id = {}\naws_secret_access_key = {PROFILE_SECRET}\n",
            kvs_emu::ACCESS_KEY
        ),
    )
    .unwrap();
    let download = [
        "--stream-name",
        "cam",
        "--start",
        "earliest",
        "--end",
        "now",
        "-o",
        "out.mkv",
        "--force",
    ];
    for verbose in ["-v", "-vv"] {
        // The environment's key with a session token the emulator does not know: refused.
        let out = run(w
            .kvs_dl()
            .env("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
            .env("AWS_SESSION_TOKEN", ENV_TOKEN)
            .args(download)
            .arg(verbose));
        assert_exit(&out, 3);
        // The profile's key (the environment has no key id, so its secret and token are not
        // used), then a role assumed on top of it: a whole download with temporary credentials.
        let out = run(w
            .kvs_dl()
            .env_remove("AWS_ACCESS_KEY_ID")
            .env("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
            .env("AWS_SESSION_TOKEN", ENV_TOKEN)
            .args(["--profile", "dl"])
            .args(["--role-arn", "arn:aws:iam::123456789012:role/reader"])
            .args(download)
            .arg(verbose));
        assert_exit(&out, 0);
        let err = stderr(&out);
        assert!(err.contains("DEBUG"), "{verbose} adds debug lines: {err}");
        assert!(err.contains("GetMedia"), "{err}");
        for secret in secrets {
            assert!(
                !err.contains(secret),
                "{verbose} printed {secret:?}:\n{err}"
            );
        }
    }
}

#[test]
fn completions_and_the_manual_page_come_from_the_flags() {
    let kvs_dl = || Command::new(env!("CARGO_BIN_EXE_kvs-dl"));
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(kvs_dl().args(["completions", shell]));
        assert_exit(&out, 0);
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("stream-name"), "{shell}: {script}");
        assert!(script.contains("max-fragments"), "{shell}: {script}");
    }
    let bash = run(kvs_dl().args(["completions", "bash"]));
    assert!(String::from_utf8_lossy(&bash.stdout).contains("--stream-name"));

    let out = run(kvs_dl().arg("man"));
    assert_exit(&out, 0);
    let man = String::from_utf8(out.stdout).unwrap();
    assert!(man.contains(".TH kvs-dl 1"), "{man}");
    assert!(
        man.contains(".SH SYNOPSIS") && man.contains(".SH OPTIONS"),
        "{man}"
    );
    for flag in [
        r"\-\-stream\-name",
        r"\-\-state\-file",
        r"\-\-progress",
        r"\-\-segment",
    ] {
        assert!(man.contains(flag), "{flag} in {man}");
    }
    assert!(man.contains("ffplay"), "the examples: {man}");

    // Subcommands and download flags do not mix.
    assert_exit(&run(kvs_dl().args(["man", "--stream-name", "cam"])), 2);
    assert_exit(
        &run(kvs_dl().args(["--stream-name", "cam", "-o", "x.mkv", "man"])),
        2,
    );
}
