//! The real agent binary (`tailor-agent run --config ... --backup-root ...`) killed with SIGKILL
//! while it copies, restarted, and finally stopped with SIGTERM: the backup is byte-identical
//! to the sources (no gaps, no repeats), rotated files keep their names, and
//! `tailor-agent backups cat` prints the originals.

mod agent_support;

use agent_support::agent_command;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tailor_agent::backup::fixture::{FakePod, node_backup};
use tailor_crds::backup::BackupCompression;
use tailor_crds::node::{FORMAT_VERSION, NodeLogConfig, NodeLogConfigSpec};

fn agent(dir: &Path) -> Child {
    let log = OpenOptions::new().create(true).append(true).open(dir.join("agent.log")).unwrap();
    agent_command(dir, "node-1", &["--checkpoint-interval", "1s", "--backup-root"])
        .arg(dir.join("backup"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(log)
        .spawn()
        .expect("tailor-agent binary")
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigkill_loop_then_sigterm_leaves_an_identical_backup() {
    let dir = tempfile::tempdir().unwrap();
    let pods: Vec<FakePod> = (1..=2).map(|i| FakePod::new("shop", &format!("web-{i}"), "app")).collect();
    let mut nb = node_backup("shop", "keep", &pods);
    nb.compression = BackupCompression::None;
    nb.interval = "1s".into();
    let mut obj = NodeLogConfig::new(
        "node-1",
        NodeLogConfigSpec {
            format_version: FORMAT_VERSION,
            target_count: 2,
            collections: vec![],
            backups: vec![nb],
        },
    );
    obj.metadata.generation = Some(1);
    fs::write(dir.path().join("config.yaml"), serde_yaml_ng::to_string(&obj).unwrap()).unwrap();
    let logs: Vec<PathBuf> =
        pods.iter().map(|p| p.host_dir(&dir.path().join("host")).join("0.log")).collect();
    let mut writers: Vec<fs::File> =
        logs.iter().map(|l| OpenOptions::new().create(true).append(true).open(l).unwrap()).collect();
    let block: Vec<u8> =
        (0..1 << 20).map(|i| if i % 120 == 119 { b'\n' } else { b'0' + (i % 10) as u8 }).collect();
    let backup = dir.path().join("backup");
    for round in 0..5 {
        let mut child = agent(dir.path());
        // Wait until this incarnation copies something, then write more and kill it mid-way.
        let before =
            fs::metadata(backup.join(pods[0].destination()).join("0.log")).map(|m| m.len()).unwrap_or(0);
        for w in &mut writers {
            for _ in 0..(2 + round) {
                w.write_all(&block).unwrap();
            }
        }
        wait_until("the agent to copy", || {
            fs::metadata(backup.join(pods[0].destination()).join("0.log")).is_ok_and(|m| m.len() > before)
        });
        if round == 2 {
            fs::rename(&logs[1], logs[1].with_file_name("0.log.20260101-000000")).unwrap();
            writers[1] = OpenOptions::new().create(true).append(true).open(&logs[1]).unwrap();
            writers[1].write_all(&block).unwrap();
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    // A last run, stopped gracefully once it caught up.
    let applied = |d: &Path| {
        fs::read_to_string(d.join("agent.log")).unwrap_or_default().matches("configuration applied").count()
    };
    let applied_before = applied(dir.path());
    let mut child = agent(dir.path());
    // SIGTERM only once this incarnation runs (before that the default action would kill it).
    wait_until("the agent to apply its configuration", || applied(dir.path()) > applied_before);
    wait_until("the backup to catch up", || {
        logs.iter().zip(&pods).all(|(l, p)| {
            fs::metadata(backup.join(p.destination()).join("0.log")).map(|m| m.len()).ok()
                == fs::metadata(l).map(|m| m.len()).ok()
        })
    });
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM)
        .unwrap();
    assert!(child.wait().unwrap().success());
    for (p, l) in pods.iter().zip(&logs) {
        assert_eq!(
            fs::read(backup.join(p.destination()).join("0.log")).unwrap(),
            fs::read(l).unwrap(),
            "{}",
            p.name
        );
    }
    let rotated = logs[1].with_file_name("0.log.20260101-000000");
    assert_eq!(
        fs::read(backup.join(pods[1].destination()).join("0.log.20260101-000000")).unwrap(),
        fs::read(&rotated).unwrap()
    );
    // And the CLI finds the originals.
    let out = Command::new(env!("CARGO_BIN_EXE_tailor-agent"))
        .args(["backups", "cat", "-n", "shop", "--pod", "web-1", "--backup-root"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, fs::read(&logs[0]).unwrap());
}
