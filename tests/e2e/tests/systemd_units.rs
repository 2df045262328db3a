//! deploy/systemd/ is valid for systemd: `systemd-analyze verify` accepts every unit
//! without a single complaint about ours.
//!
//! verify checks that each ExecStart binary exists, and the units point at
//! /usr/local/bin (where an install puts them), so the test verifies copies whose
//! ExecStart points at the freshly built target/debug binaries instead. Everything else
//! is verified exactly as shipped.

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 7] = [
    "berth.target",
    "berth-imaged.service",
    "berth-containerd.service",
    "berth-netd.service",
    "berth-volumed.service",
    "berth-logd.service",
    "berth-gateway.service",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let src = repo_root().join("deploy/systemd");
    let bin_dir = berth_e2e::berth::target_dir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for unit in UNITS {
        let text = std::fs::read_to_string(src.join(unit))
            .unwrap_or_else(|e| panic!("reading deploy/systemd/{unit}: {e}"));
        for line in text.lines().filter(|l| l.starts_with("ExecStart=")) {
            let bin = line["ExecStart=".len()..]
                .split_whitespace()
                .next()
                .unwrap();
            assert!(
                bin.starts_with("/usr/local/bin/berth-"),
                "{unit}: ExecStart should run /usr/local/bin/berth-*: {line}"
            );
            let built = bin_dir.join(Path::new(bin).file_name().unwrap());
            assert!(
                built.is_file(),
                "{} is missing: cargo build --workspace --bins first",
                built.display()
            );
        }
        let rewritten = text.replace("/usr/local/bin/", &format!("{}/", bin_dir.display()));
        std::fs::write(dir.path().join(unit), rewritten).unwrap();
    }

    let mut c = Command::new("systemd-analyze");
    c.arg("verify").current_dir(dir.path());
    for unit in UNITS {
        c.arg(dir.path().join(unit));
    }
    let out = c
        .output()
        .expect("systemd-analyze (package systemd) is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify also reports problems of unrelated host units it loads as dependencies
    // (e.g. network.target's neighbours): only lines naming our units count.
    let ours: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.contains("berth"))
        .collect();
    assert!(
        ours.is_empty() && out.status.success(),
        "systemd-analyze verify complained (exit {:?}):\n{}\n--- full output ---\n{stdout}{stderr}",
        out.status.code(),
        ours.join("\n")
    );
}

#[test]
fn containerd_unit_leaves_shims_alone_and_all_restart() {
    let src = repo_root().join("deploy/systemd");
    for unit in UNITS.iter().filter(|u| u.ends_with(".service")) {
        let text = std::fs::read_to_string(src.join(unit)).unwrap();
        assert!(
            text.contains("\nRestart=always\n"),
            "{unit}: Restart=always"
        );
        assert!(
            text.contains("\nRestartSec=100ms\n"),
            "{unit}: RestartSec=100ms"
        );
        assert!(
            text.contains("\nPartOf=berth.target\n"),
            "{unit}: PartOf=berth.target"
        );
    }
    let containerd = std::fs::read_to_string(src.join("berth-containerd.service")).unwrap();
    assert!(containerd.contains("\nKillMode=process\n"));
    let gateway = std::fs::read_to_string(src.join("berth-gateway.service")).unwrap();
    for svc in ["imaged", "containerd", "netd", "volumed", "logd"] {
        let name = format!("berth-{svc}.service");
        let after = gateway.lines().find(|l| l.starts_with("After=")).unwrap();
        let wants = gateway.lines().find(|l| l.starts_with("Wants=")).unwrap();
        assert!(
            after.contains(&name) && wants.contains(&name),
            "gateway needs {name}"
        );
    }
}
