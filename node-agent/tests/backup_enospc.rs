//! A full and a read-only backup root (a real, small tmpfs): the backup turns Degraded with the
//! reason, nothing is lost, and copying resumes by itself once space returns.
//!
//! Needs root and mount(8) (tmpfs); fails with a clear message otherwise.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tailor_agent::backup::fixture::{FakePod, node_backup};
use tailor_agent::backup::status::compute_status;
use tailor_agent::backup::{AgentResolver, Engine, EngineSettings, PassKind};
use tailor_crds::backup::BackupPhase;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tailor-test", dir.to_str().unwrap()])
            .output()
            .expect("this test needs mount(8)");
        assert!(
            out.status.success(),
            "this test needs root to mount a tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }

    fn remount(&self, opts: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{opts}"), self.0.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(ok.success(), "remount {opts} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn data(from: usize, to: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in from..to {
        writeln!(v, "2026-01-01T00:00:00Z stdout F line {i:08} {}", "z".repeat(64)).unwrap();
    }
    v
}

fn append(p: &Path, b: &[u8]) {
    OpenOptions::new().create(true).append(true).open(p).unwrap().write_all(b).unwrap();
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[test]
fn full_then_read_only_backup_root_degrades_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    let backup = dir.path().join("backup");
    let fs_guard = Tmpfs::mount(&backup, "256k");
    let pod = FakePod::new("ns", "web-1", "app");
    let log = pod.host_dir(&host).join("0.log");
    let nb = node_backup("ns", "p", std::slice::from_ref(&pod));
    let mut settings = EngineSettings::new(&backup, dir.path().join("state"), "node-1");
    settings.close_after = Duration::from_secs(3600);
    let mut e = Engine::new(settings, Arc::new(AgentResolver::new(host.clone()))).unwrap();
    e.apply(Some(1), vec![nb]);

    // 1 MiB of logs into a 256 KiB backup root.
    append(&log, &data(0, 11_000));
    let r = e.pass(PassKind::Event);
    let err = r[0].error.as_ref().expect("a full disk must be reported");
    assert_eq!(err.category, "NoSpace", "{err:?}");
    let s = compute_status(&r[0], None, Some(1), now());
    assert_eq!(s.phase, BackupPhase::Degraded);
    assert!(s.last_error.as_deref().unwrap().contains("No space left"), "{:?}", s.last_error);
    assert!(s.lag_bytes > 0);

    // The writer goes on meanwhile; then space returns.
    append(&log, &data(11_000, 12_000));
    fs_guard.remount("size=8m");
    let r = e.pass(PassKind::Event);
    assert!(r[0].error.is_none(), "{:?}", r[0].error);
    assert_eq!(compute_status(&r[0], Some(&s), Some(1), now()).phase, BackupPhase::Synced);
    let copy = backup.join(pod.destination()).join("0.log");
    assert_eq!(fs::read(&copy).unwrap(), fs::read(&log).unwrap());

    // Read-only root.
    fs_guard.remount("ro");
    append(&log, &data(12_000, 13_000));
    let r = e.pass(PassKind::Event);
    let err = r[0].error.as_ref().expect("a read-only root must be reported");
    assert_eq!(err.category, "ReadOnly", "{err:?}");
    assert_eq!(compute_status(&r[0], None, Some(1), now()).phase, BackupPhase::Degraded);
    fs_guard.remount("rw");
    let r = e.pass(PassKind::Event);
    assert!(r[0].error.is_none(), "{:?}", r[0].error);
    assert_eq!(fs::read(&copy).unwrap(), fs::read(&log).unwrap());
}
