//! Shared by the tests that run the real `tailor-agent` binary: its command line on a work
//! directory laid out the tests' way (`host/` as the host root, `state/`, `config.yaml`).

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// `tailor-agent run --node-name <node>` on `dir`, plus `extra` arguments; stdout discarded,
/// `RUST_LOG=warn` unless the caller sets it.
pub fn agent_command(dir: &Path, node: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tailor-agent"));
    c.args(["run", "--node-name", node])
        .arg("--host-root")
        .arg(dir.join("host"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    c
}
