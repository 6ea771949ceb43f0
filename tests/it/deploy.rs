//! The deployment examples in deploy/, checked offline: every flag they use is one kvs-dl has
//! (from `kvs-dl --help`), the Kubernetes manifests pass `kubernetes-validate --strict` for the
//! versions in support, the systemd units pass `systemd-analyze verify`, the JSON parses.
//! Under CI a missing validator fails the test; elsewhere it is skipped with a note.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![deploy()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A validator, or `None` (skip) outside CI.
fn tool(name: &str) -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".ci/venv/bin")
        .join(name);
    if venv.is_file() {
        return Some(venv);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing (scripts/test installs it)"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}

#[test]
fn every_flag_in_deploy_is_a_flag_of_kvs_dl() {
    let help = Command::new(env!("CARGO_BIN_EXE_kvs-dl"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let mut checked = 0;
    for file in files() {
        let text = std::fs::read_to_string(&file).unwrap();
        if !text.contains("kvs-dl") {
            continue;
        }
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            let Some(flag) = word.strip_prefix("--") else {
                continue;
            };
            if flag.is_empty() || !flag.chars().next().unwrap().is_ascii_lowercase() {
                continue;
            }
            // Not kvs-dl's: the Dockerfile's cargo and apk flags.
            if file.ends_with("Dockerfile") {
                continue;
            }
            assert!(
                help.contains(&format!("--{flag} ")) || help.contains(&format!("--{flag}\n")),
                "{}: --{flag} is not a flag of kvs-dl",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "the examples use flags: {checked}");
    for json in files()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let _: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", json.display()));
    }
}

#[test]
fn the_kubernetes_manifests_validate_strictly() {
    let Some(validate) = tool("kubernetes-validate") else {
        return;
    };
    // backoffLimitPerIndex and podFailurePolicy FailIndex are GA from 1.33.
    for version in ["1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"] {
        let out = Command::new(&validate)
            .args(["--strict", "-k", version])
            .arg(deploy().join("k8s/cronjob.yaml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{version}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_systemd_units_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Instance 0, with ExecStart pointing at the binary under test (verify checks it exists).
    let service = std::fs::read_to_string(deploy().join("systemd/kvs-archive@.service"))
        .unwrap()
        .replace("/usr/local/bin/kvs-dl", env!("CARGO_BIN_EXE_kvs-dl"));
    std::fs::write(dir.path().join("kvs-archive@0.service"), service).unwrap();
    std::fs::copy(
        deploy().join("systemd/kvs-archive@.timer"),
        dir.path().join("kvs-archive@0.timer"),
    )
    .unwrap();
    let out = Command::new(analyze)
        .current_dir(dir.path())
        .args(["verify", "./kvs-archive@0.timer", "./kvs-archive@0.service"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("Unknown key"), "{text}");
}
