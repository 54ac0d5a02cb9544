//! The backup engine against real files: replicas, restarts, rotations, deletions, crashes,
//! retention. Passes are driven by hand so that nothing depends on timing.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tailor_agent::backup::fixture::{FakePod, node_backup};
use tailor_agent::backup::{AgentResolver, Engine, EngineSettings, PassKind, PolicyReport};
use tailor_crds::backup::BackupCompression;
use tailor_crds::node::NodeBackup;

struct Node {
    _dir: tempfile::TempDir,
    host: PathBuf,
    backup: PathBuf,
    state: PathBuf,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        let backup = dir.path().join("backup");
        let state = dir.path().join("state");
        fs::create_dir_all(&host).unwrap();
        Node { host, backup, state, _dir: dir }
    }

    fn engine(&self) -> Engine {
        let mut s = EngineSettings::new(&self.backup, &self.state, "node-1");
        s.close_after = Duration::ZERO;
        s.checkpoint_interval = Duration::from_secs(3600);
        Engine::new(s, Arc::new(AgentResolver::new(self.host.clone()))).unwrap()
    }

    fn dest(&self, pod: &FakePod, name: &str) -> PathBuf {
        self.backup.join(pod.destination()).join(name)
    }

    /// Content of a backup file, decompressed.
    fn read(&self, pod: &FakePod, name: &str) -> Vec<u8> {
        read_any(&self.dest(pod, name))
    }

    fn names(&self, pod: &FakePod) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.backup.join(pod.destination()))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with(".tailor"))
            .collect();
        v.sort();
        v
    }
}

fn read_any(p: &Path) -> Vec<u8> {
    let f = File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut out = Vec::new();
    let name = p.to_string_lossy();
    if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(f).unwrap().read_to_end(&mut out).unwrap();
    } else if name.ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(f).read_to_end(&mut out).unwrap();
    } else {
        let mut f = f;
        f.read_to_end(&mut out).unwrap();
    }
    out
}

fn lines(tag: &str, from: usize, to: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in from..to {
        writeln!(v, "2026-01-01T00:00:00.000000000Z stdout F {tag} line {i:06} {}", "x".repeat(i % 97))
            .unwrap();
    }
    v
}

fn append(p: &Path, bytes: &[u8]) {
    OpenOptions::new().create(true).append(true).open(p).unwrap().write_all(bytes).unwrap();
}

fn pass(e: &mut Engine, kind: PassKind) -> Vec<PolicyReport> {
    let r = e.pass(kind);
    for rep in &r {
        assert!(rep.error.is_none(), "unexpected error: {:?}", rep.error);
    }
    r
}

fn apply(e: &mut Engine, nb: &NodeBackup) {
    e.apply(Some(1), vec![nb.clone()]);
}

#[test]
fn replicas_and_restarts_never_collide() {
    let node = Node::new();
    let pods: Vec<FakePod> = (1..=3).map(|i| FakePod::new("shop", &format!("web-{i}"), "app")).collect();
    let nb = node_backup("shop", "keep", &pods);
    let mut e = node.engine();
    apply(&mut e, &nb);
    for (i, p) in pods.iter().enumerate() {
        append(&p.host_dir(&node.host).join("0.log"), &lines(&format!("pod{i}"), 0, 500));
    }
    let r = pass(&mut e, PassKind::Event);
    assert_eq!(r[0].pods, 3);
    assert_eq!(r[0].lag_bytes, 0);
    // Container restarts: a new N.log per restart; the old one stays.
    for (i, p) in pods.iter().enumerate() {
        append(&p.host_dir(&node.host).join("0.log"), &lines(&format!("pod{i}"), 500, 600));
        append(&p.host_dir(&node.host).join("1.log"), &lines(&format!("pod{i}-restart"), 0, 100));
    }
    pass(&mut e, PassKind::Sweep);
    for (i, p) in pods.iter().enumerate() {
        assert_eq!(node.read(p, "0.log"), lines(&format!("pod{i}"), 0, 600));
        assert_eq!(node.read(p, "1.log"), lines(&format!("pod{i}-restart"), 0, 100));
        assert_eq!(node.names(p), vec!["0.log", "1.log"]);
    }
    let r = pass(&mut e, PassKind::Sweep);
    assert_eq!((r[0].files, r[0].sources), (6, 6));
}

#[test]
fn rename_rotation_keeps_the_rotated_name_and_loses_nothing() {
    let node = Node::new();
    let pod = FakePod::new("ns", "api-1", "app");
    let dir = pod.host_dir(&node.host);
    let nb = node_backup("ns", "p", std::slice::from_ref(&pod));
    let mut e = node.engine();
    apply(&mut e, &nb);
    let live = dir.join("0.log");
    let rotated = dir.join("0.log.20260101-000000");
    let mut writer = OpenOptions::new().create(true).append(true).open(&live).unwrap();
    writer.write_all(&lines("a", 0, 1000)).unwrap();
    pass(&mut e, PassKind::Event);
    // More bytes, then the runtime renames the file mid-copy; the writer still holds it and
    // writes a last few lines into the rotated file; a new 0.log starts.
    writer.write_all(&lines("a", 1000, 1500)).unwrap();
    fs::rename(&live, &rotated).unwrap();
    writer.write_all(&lines("a", 1500, 1600)).unwrap();
    drop(writer);
    append(&live, &lines("b", 0, 300));
    pass(&mut e, PassKind::Event);
    // Rotated and drained: closed and compressed at once (close_after is zero here).
    assert_eq!(node.names(&pod), vec!["0.log", "0.log.20260101-000000.zst"]);
    assert_eq!(node.read(&pod, "0.log.20260101-000000.zst"), lines("a", 0, 1600));
    assert_eq!(node.read(&pod, "0.log"), lines("b", 0, 300));
    // A late write into the rotated file after its copy was compressed: a new zstd frame.
    append(&rotated, &lines("a", 1600, 1650));
    pass(&mut e, PassKind::Event);
    assert_eq!(node.read(&pod, "0.log.20260101-000000.zst"), lines("a", 0, 1650));

    // The kubelet compresses the rotated file and removes it: its gzip is copied as is, our
    // copy of the rotated file is closed and compressed.
    let gz = dir.join("0.log.20260101-000000.gz");
    let mut enc = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::default());
    enc.write_all(&lines("a", 0, 1650)).unwrap();
    enc.finish().unwrap();
    fs::remove_file(&rotated).unwrap();
    pass(&mut e, PassKind::Sweep);
    pass(&mut e, PassKind::Sweep);
    assert_eq!(node.names(&pod), vec!["0.log", "0.log.20260101-000000.gz", "0.log.20260101-000000.zst"]);
    assert_eq!(fs::read(node.dest(&pod, "0.log.20260101-000000.gz")).unwrap(), fs::read(&gz).unwrap());
    assert_eq!(node.read(&pod, "0.log.20260101-000000.zst"), lines("a", 0, 1650));
    assert_eq!(node.read(&pod, "0.log"), lines("b", 0, 300));
}

#[test]
fn copy_truncate_starts_a_new_copy_and_keeps_the_old_one() {
    let node = Node::new();
    let pod = FakePod::new("ns", "legacy-1", "app");
    let dir = pod.host_dir(&node.host);
    let mut nb = node_backup("ns", "p", std::slice::from_ref(&pod));
    nb.targets[0].inputs[0].path = "app.log*".into();
    nb.compression = BackupCompression::Gzip;
    let mut e = node.engine();
    apply(&mut e, &nb);
    let log = dir.join("app.log");
    append(&log, &lines("one", 0, 800));
    pass(&mut e, PassKind::Event);
    // logrotate copytruncate: copy to app.log.1, truncate app.log, the app writes on.
    fs::copy(&log, dir.join("app.log.1")).unwrap();
    OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    append(&log, &lines("two", 0, 50));
    pass(&mut e, PassKind::Event);
    pass(&mut e, PassKind::Sweep);
    let names = node.names(&pod);
    // The copy of app.log before the truncation (closed and compressed), the copy of the
    // rotated app.log.1, and the tail after the truncation in a new file.
    assert_eq!(names, vec!["app.log.1", "app.log.2", "app.log.gz"], "{names:?}");
    assert_eq!(node.read(&pod, "app.log.gz"), lines("one", 0, 800));
    assert_eq!(node.read(&pod, "app.log.1"), lines("one", 0, 800));
    assert_eq!(node.read(&pod, "app.log.2"), lines("two", 0, 50));

    // Truncated again and grown past the copied offset before we looked: the fingerprint of
    // the file's head tells (at the sweep).
    OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    append(&log, &lines("three", 0, 400));
    pass(&mut e, PassKind::Sweep);
    assert_eq!(node.read(&pod, "app.log.2.gz"), lines("two", 0, 50));
    assert_eq!(node.read(&pod, "app.log.3"), lines("three", 0, 400));
}

#[test]
fn deleted_pod_is_drained_from_the_open_descriptor() {
    let node = Node::new();
    let pod = FakePod::new("ns", "job-1", "app");
    let dir = pod.host_dir(&node.host);
    let nb = node_backup("ns", "p", std::slice::from_ref(&pod));
    let mut e = node.engine();
    apply(&mut e, &nb);
    let mut w = OpenOptions::new().create(true).append(true).open(dir.join("0.log")).unwrap();
    w.write_all(&lines("j", 0, 2000)).unwrap();
    pass(&mut e, PassKind::Event);
    // The last lines, then the pod is deleted: its directory and its target are gone.
    w.write_all(&lines("j", 2000, 2600)).unwrap();
    drop(w);
    fs::remove_dir_all(node.host.join("var/log/pods")).unwrap();
    let mut gone = nb.clone();
    gone.targets.clear();
    apply(&mut e, &gone);
    pass(&mut e, PassKind::Event);
    assert_eq!(node.read(&pod, "0.log"), lines("j", 0, 2600));
    pass(&mut e, PassKind::Sweep);
    assert_eq!(e.tracked_files(), 0);
    assert_eq!(node.read(&pod, "0.log.zst"), lines("j", 0, 2600));
}

#[test]
fn terminated_container_is_drained_and_compressed() {
    let node = Node::new();
    let pod = FakePod::new("ns", "batch-1", "app");
    let dir = pod.host_dir(&node.host);
    let mut nb = node_backup("ns", "p", std::slice::from_ref(&pod));
    let mut e = node.engine();
    apply(&mut e, &nb);
    append(&dir.join("0.log"), &lines("t", 0, 300));
    pass(&mut e, PassKind::Event);
    append(&dir.join("0.log"), &lines("t", 300, 400));
    nb.targets[0].container.terminated = true;
    apply(&mut e, &nb);
    pass(&mut e, PassKind::Sweep);
    assert_eq!(node.names(&pod), vec!["0.log.zst"]);
    assert_eq!(node.read(&pod, "0.log.zst"), lines("t", 0, 400));
}

#[test]
fn crash_then_restart_is_byte_identical_without_gaps_or_repeats() {
    let node = Node::new();
    let pods: Vec<FakePod> = (1..=2).map(|i| FakePod::new("ns", &format!("web-{i}"), "app")).collect();
    let nb = node_backup("ns", "p", &pods);
    let logs: Vec<PathBuf> = pods.iter().map(|p| p.host_dir(&node.host).join("0.log")).collect();
    let mut written = 0;
    for round in 0..5 {
        let mut e = node.engine();
        apply(&mut e, &nb);
        for l in &logs {
            append(l, &lines("c", written, written + 700));
        }
        written += 700;
        pass(&mut e, PassKind::Event);
        for l in &logs {
            append(l, &lines("c", written, written + 300));
        }
        written += 300;
        // Copied and fsynced, but the offsets not persisted (the checkpoint interval is long):
        // the crash comes now.
        pass(&mut e, PassKind::Event);
        if round % 2 == 1 {
            // A write that died half-way also leaves junk past the committed length.
            append(&node.dest(&pods[0], "0.log"), b"partial junk");
        }
        drop(e);
    }
    let mut e = node.engine();
    apply(&mut e, &nb);
    pass(&mut e, PassKind::Event);
    for (p, l) in pods.iter().zip(&logs) {
        assert_eq!(node.read(p, "0.log"), fs::read(l).unwrap());
        assert_eq!(node.names(p), vec!["0.log"]);
    }
}

#[test]
fn restart_finds_files_that_rotated_while_down() {
    let node = Node::new();
    let pod = FakePod::new("ns", "web-1", "app");
    let dir = pod.host_dir(&node.host);
    let nb = node_backup("ns", "p", std::slice::from_ref(&pod));
    let mut e = node.engine();
    apply(&mut e, &nb);
    append(&dir.join("0.log"), &lines("r", 0, 500));
    e.pass(PassKind::Final);
    drop(e);
    append(&dir.join("0.log"), &lines("r", 500, 600));
    fs::rename(dir.join("0.log"), dir.join("0.log.20260102-000000")).unwrap();
    append(&dir.join("0.log"), &lines("s", 0, 10));
    let mut e = node.engine();
    apply(&mut e, &nb);
    pass(&mut e, PassKind::Event);
    // Rotated and drained: closed and compressed at once (close_after is zero here).
    assert_eq!(node.read(&pod, "0.log.20260102-000000.zst"), lines("r", 0, 600));
    assert_eq!(node.read(&pod, "0.log"), lines("s", 0, 10));
}

fn age(p: &Path, secs: u64) {
    File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn retention_by_age_and_bytes_oldest_first_even_after_the_policy_is_gone() {
    let node = Node::new();
    let pod = FakePod::new("ns", "web-1", "app");
    let dir = pod.host_dir(&node.host);
    let mut nb = node_backup("ns", "p", std::slice::from_ref(&pod));
    nb.compression = BackupCompression::None;
    nb.retention.max_age = "1h".into();
    let mut e = node.engine();
    apply(&mut e, &nb);
    for i in 1..=5 {
        append(&dir.join(format!("0.log.2026010{i}")), &vec![b'x'; 1000]);
    }
    append(&dir.join("0.log"), &vec![b'y'; 1000]);
    pass(&mut e, PassKind::Event);
    // The rotated sources go away; their copies are closed.
    for i in 1..=5 {
        fs::remove_file(dir.join(format!("0.log.2026010{i}"))).unwrap();
    }
    pass(&mut e, PassKind::Event);
    for i in 1..=5 {
        age(&node.dest(&pod, &format!("0.log.2026010{i}")), 600 * (6 - i as u64));
    }
    // Too old: the two files older than an hour.
    age(&node.dest(&pod, "0.log.20260101"), 7200);
    age(&node.dest(&pod, "0.log.20260102"), 3700);
    pass(&mut e, PassKind::Sweep);
    assert_eq!(node.names(&pod), vec!["0.log", "0.log.20260103", "0.log.20260104", "0.log.20260105"]);
    // Too big: keep 2500 bytes; the live copy is never deleted, the oldest closed ones go.
    nb.retention.max_bytes = "2500".into();
    apply(&mut e, &nb);
    pass(&mut e, PassKind::Sweep);
    assert_eq!(node.names(&pod), vec!["0.log", "0.log.20260105"]);
    // The policy is deleted: copying stops, the copy stays until its retention says so.
    e.apply(Some(2), vec![]);
    e.pass(PassKind::Sweep);
    e.pass(PassKind::Sweep);
    assert_eq!(node.names(&pod), vec!["0.log", "0.log.20260105"]);
    drop(e);
    // ...and retention still applies after a restart, from the state dir's record.
    age(&node.dest(&pod, "0.log"), 7200);
    age(&node.dest(&pod, "0.log.20260105"), 7200);
    let mut e = node.engine();
    e.pass(PassKind::Sweep);
    assert!(!node.backup.join(pod.destination()).exists(), "expired backup not removed");
}

#[test]
fn bad_destinations_fail_the_backup() {
    let node = Node::new();
    let pod = FakePod::new("ns", "web-1", "app");
    append(&pod.host_dir(&node.host).join("0.log"), b"x\n");
    let mut nb = node_backup("ns", "p", std::slice::from_ref(&pod));
    nb.targets[0].destination = "../../etc".into();
    let mut e = node.engine();
    apply(&mut e, &nb);
    let r = e.pass(PassKind::Sweep);
    let err = r[0].error.as_ref().unwrap();
    assert!(err.permanent, "{err:?}");
    assert!(!node.backup.parent().unwrap().join("etc").exists());
}

#[test]
fn restart_before_the_configuration_arrives_copies_nothing_twice() {
    let node = Node::new();
    let pod = FakePod::new("ns", "web-1", "app");
    let log = pod.host_dir(&node.host).join("0.log");
    let nb = node_backup("ns", "p", std::slice::from_ref(&pod));
    let mut e = node.engine();
    apply(&mut e, &nb);
    append(&log, &lines("q", 0, 100));
    e.pass(PassKind::Final);
    drop(e);
    append(&log, &lines("q", 100, 150));
    let mut e = node.engine();
    // The agent starts without a configuration for a moment, and sweeps meanwhile.
    e.pass(PassKind::Sweep);
    e.pass(PassKind::Event);
    apply(&mut e, &nb);
    pass(&mut e, PassKind::Event);
    assert_eq!(node.names(&pod), vec!["0.log"]);
    assert_eq!(node.read(&pod, "0.log"), lines("q", 0, 150));
}

#[test]
fn retention_never_makes_a_source_still_on_the_node_copied_again() {
    let node = Node::new();
    let pod = FakePod::new("ns", "web-1", "app");
    let dir = pod.host_dir(&node.host);
    let mut nb = node_backup("ns", "p", std::slice::from_ref(&pod));
    nb.retention.max_age = "1h".into();
    let mut e = node.engine();
    apply(&mut e, &nb);
    append(&dir.join("0.log"), &lines("old", 0, 100));
    pass(&mut e, PassKind::Event);
    fs::rename(dir.join("0.log"), dir.join("0.log.20260101-000000")).unwrap();
    append(&dir.join("0.log"), &lines("new", 0, 10));
    pass(&mut e, PassKind::Sweep);
    assert_eq!(node.names(&pod), vec!["0.log", "0.log.20260101-000000.zst"]);
    age(&node.dest(&pod, "0.log.20260101-000000.zst"), 7200);
    pass(&mut e, PassKind::Sweep);
    pass(&mut e, PassKind::Sweep);
    // The rotated source is still there, its copy expired: it stays deleted.
    assert_eq!(node.names(&pod), vec!["0.log"]);
    drop(e);
    let mut e = node.engine();
    apply(&mut e, &nb);
    pass(&mut e, PassKind::Sweep);
    assert_eq!(node.names(&pod), vec!["0.log"]);
}
