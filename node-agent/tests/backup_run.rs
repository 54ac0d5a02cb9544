//! The async engine (`backup::run`): event-driven copying through inotify, status publishing,
//! shutdown; and a real process running the engine, killed with SIGKILL in the middle of
//! copies, then restarted: the backup is byte-identical to the source.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tailor_agent::backup::fixture::{FakePod, node_backup};
use tailor_agent::backup::{
    AgentResolver, BackupError, BackupSettings, Engine, EngineSettings, PassKind, StatusSink, run,
};
use tailor_crds::LogBackupStatus;
use tailor_crds::backup::BackupPhase;
use tailor_crds::node::NodeBackup;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(String, String, LogBackupStatus)>>>);

impl StatusSink for Recorder {
    fn publish<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        s: &'a LogBackupStatus,
    ) -> BoxFuture<'a, Result<(), BackupError>> {
        self.0.lock().unwrap().push((ns.to_string(), name.to_string(), s.clone()));
        Box::pin(async { Ok(()) })
    }
}

fn append(p: &Path, b: &[u8]) {
    OpenOptions::new().create(true).append(true).open(p).unwrap().write_all(b).unwrap();
}

/// Waits for a condition (the engine runs on its own; a deadline only bounds a failure).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_on_file_events_and_publishes_status() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    let backup = dir.path().join("backup");
    let pod = FakePod::new("shop", "web-1", "app");
    let log = pod.host_dir(&host).join("0.log");
    append(&log, b"first\n");
    let mut nb = node_backup("shop", "keep", std::slice::from_ref(&pod));
    // No sweep during the test: after the first one, only inotify drives copies.
    nb.interval = "3600s".into();
    let (tx, rx) = tokio::sync::watch::channel((Some(7i64), vec![nb.clone()]));
    let mut settings = BackupSettings::new(&backup, dir.path().join("state"), "node-1");
    settings.status_interval = Duration::ZERO;
    let rec = Recorder::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let engine = tokio::spawn(run(
        rx,
        settings,
        Arc::new(AgentResolver::new(host.clone())),
        Box::new(rec.clone()),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let copy = backup.join(pod.destination()).join("0.log");
    eventually("first copy", || fs::read(&copy).ok().as_deref() == Some(b"first\n".as_slice())).await;
    for i in 0..50 {
        append(&log, format!("line {i}\n").as_bytes());
    }
    eventually("event-driven copy", || fs::read(&copy).ok() == fs::read(&log).ok()).await;
    // A new file of a restarted container is picked up by its directory's events.
    append(&log.with_file_name("1.log"), b"restarted\n");
    let copy1 = copy.with_file_name("1.log");
    eventually("new file copied", || fs::read(&copy1).ok().as_deref() == Some(b"restarted\n".as_slice()))
        .await;
    eventually("Synced status with both files", || {
        rec.0.lock().unwrap().last().is_some_and(|(_, _, s)| s.phase == BackupPhase::Synced && s.files == 2)
    })
    .await;
    {
        let statuses = rec.0.lock().unwrap();
        let (ns, name, s) = statuses.last().unwrap();
        assert_eq!((ns.as_str(), name.as_str()), ("shop", "keep-node-1"));
        assert_eq!(s.observed_generation, Some(7));
        assert_eq!(s.pods, 1);
        assert_eq!(s.destination.as_deref(), Some(backup.join("shop/web/web-1/app").to_str().unwrap()));
        assert!(s.last_sync_time.is_some());
        // Only changes are written.
        for w in statuses.windows(2) {
            assert!(
                !tailor_agent::backup::status::same_but_time(&w[0].2, &w[1].2),
                "identical status written twice"
            );
        }
    }
    // Hot-applied configuration: the policy goes away; copying stops, nothing is deleted.
    tx.send((Some(8), Vec::<NodeBackup>::new())).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    append(&log, b"after the policy is gone\n");
    stop_tx.send(()).unwrap();
    engine.await.unwrap().unwrap();
    // The copies of a removed policy are closed (compressed) and stay; the late line is not there.
    let mut copied = Vec::new();
    let zst = fs::File::open(copy.with_file_name("0.log.zst")).unwrap();
    std::io::Read::read_to_end(&mut zstd::stream::read::Decoder::new(zst).unwrap(), &mut copied).unwrap();
    let source = fs::read(&log).unwrap();
    assert_eq!(copied, source[..source.len() - b"after the policy is gone\n".len()]);
    assert!(copy1.with_file_name("1.log.zst").exists());
}

const CHILD_ENV: &str = "TAILOR_BACKUP_TEST_CHILD_DIR";

fn child_engine(dir: &Path) -> Engine {
    let mut s = EngineSettings::new(dir.join("backup"), dir.join("state"), "node-1");
    s.close_after = Duration::from_secs(3600);
    s.checkpoint_interval = Duration::from_millis(50);
    Engine::new(s, Arc::new(AgentResolver::new(dir.join("host")))).unwrap()
}

fn child_config() -> (Vec<FakePod>, NodeBackup) {
    let pods: Vec<FakePod> = (1..=3).map(|i| FakePod::new("ns", &format!("web-{i}"), "app")).collect();
    let nb = node_backup("ns", "p", &pods);
    (pods, nb)
}

/// The engine as a separate process (run by `sigkill_during_copies_then_restart`).
#[test]
#[ignore = "started as a child process by sigkill_during_copies_then_restart"]
fn child_engine_process() {
    let dir = PathBuf::from(std::env::var(CHILD_ENV).expect("child only"));
    let (_, nb) = child_config();
    let mut e = child_engine(&dir);
    e.apply(Some(1), vec![nb]);
    loop {
        e.pass(PassKind::Event);
    }
}

#[test]
fn sigkill_during_copies_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (pods, nb) = child_config();
    let logs: Vec<PathBuf> =
        pods.iter().map(|p| p.host_dir(&dir.path().join("host")).join("0.log")).collect();
    let mut writers: Vec<fs::File> =
        logs.iter().map(|l| OpenOptions::new().create(true).append(true).open(l).unwrap()).collect();
    let chunk: Vec<u8> =
        (0..4 << 20).map(|i| if i % 100 == 99 { b'\n' } else { b'a' + (i % 26) as u8 }).collect();
    for round in 0..6 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "child_engine_process", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Keep writing while the child copies; rotate one file by rename mid-way.
        for (i, w) in writers.iter_mut().enumerate() {
            w.write_all(&chunk[..(1 << 20) * (1 + (round + i) % 4)]).unwrap();
        }
        if round == 3 {
            let rotated = logs[0].with_file_name("0.log.20260101-000000");
            fs::rename(&logs[0], &rotated).unwrap();
            writers[0] = OpenOptions::new().create(true).append(true).open(&logs[0]).unwrap();
        }
        std::thread::sleep(Duration::from_millis(30 + 40 * round as u64));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    // Restart in-process and finish.
    let mut e = child_engine(dir.path());
    e.apply(Some(1), vec![nb]);
    e.pass(PassKind::Final);
    let backup = dir.path().join("backup");
    for (p, l) in pods.iter().zip(&logs) {
        let d = backup.join(p.destination());
        assert_eq!(fs::read(d.join("0.log")).unwrap(), fs::read(l).unwrap(), "{}", p.name);
    }
    let rotated = logs[0].with_file_name("0.log.20260101-000000");
    assert_eq!(
        fs::read(backup.join(pods[0].destination()).join("0.log.20260101-000000")).unwrap(),
        fs::read(&rotated).unwrap()
    );
}
