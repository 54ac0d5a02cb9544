//! Shared by the docker tests: a tiny busybox image imported from local files, containers that
//! carry a per-run label, and cleanup of everything a test created. The tests drive the engine
//! with the docker CLI (the product never does: it speaks the Engine API itself).

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const SOCKET: &str = "/var/run/docker.sock";
pub const BUSYBOX: &str = "/bin/busybox";

/// A test run on the real engine: its label, image and volumes are removed on drop.
pub struct Engine {
    pub run: String,
    pub image: String,
}

impl Engine {
    /// Fails clearly when the engine or the tools are missing.
    pub fn new(test: &str) -> Self {
        assert!(
            Path::new(SOCKET).exists(),
            "the docker tests need a running Docker engine at {SOCKET} (and the docker CLI to drive it)"
        );
        let ok = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
        match ok {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!("the Docker engine is unreachable: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!("the docker CLI is needed to drive the docker tests: {e}"),
        }
        assert!(Path::new(BUSYBOX).exists(), "{BUSYBOX} missing: apt-get install busybox-static");
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let run = format!("{test}-{}-{nanos:x}", std::process::id());
        let image = format!("tailor-test-busybox:{run}");
        let engine = Engine { run, image };
        engine.import_busybox();
        engine
    }

    /// A rootfs with busybox and its applets, imported as an image.
    fn import_busybox(&self) {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
        for applet in
            ["sh", "echo", "seq", "sleep", "mkdir", "ln", "cat", "rm", "mv", "true", "yes", "head", "printf"]
        {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let script = format!(
            "tar -C {} -c . | docker import --change 'ENV PATH=/bin' - {}",
            dir.path().display(),
            self.image
        );
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "docker import failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The label every container of this run carries (`tailor.test=<run>`).
    pub fn label(&self) -> String {
        format!("tailor.test={}", self.run)
    }

    /// A name unique to this run.
    pub fn name(&self, short: &str) -> String {
        format!("tt-{}-{short}", self.run)
    }

    /// Starts a detached container running `script` with `sh -c`; returns its ID.
    pub fn start(&self, short: &str, extra: &[&str], script: &str) -> String {
        let name = self.name(short);
        let label = self.label();
        let mut args = vec!["run", "-d", "--name", &name, "--label", &label];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&self.image, "sh", "-c", script]);
        docker(&args)
    }

    pub fn volume(&self, short: &str) -> String {
        let name = self.name(short);
        docker(&["volume", "create", "--label", &self.label(), &name]);
        name
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let filter = format!("label={}", self.label());
        let ids = docker_quiet(&["ps", "-aq", "--filter", &filter]);
        for id in ids.split_whitespace() {
            docker_quiet(&["rm", "-f", "-v", id]);
        }
        let vols = docker_quiet(&["volume", "ls", "-q", "--filter", &filter]);
        for v in vols.split_whitespace() {
            docker_quiet(&["volume", "rm", "-f", v]);
        }
        docker_quiet(&["rmi", "-f", &self.image]);
    }
}

/// Runs the docker CLI; panics with its stderr on failure; returns trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn docker_quiet(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Polls `check` until it returns `Some`, failing with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, check: impl FnMut() -> Option<T>) -> T {
    wait_or_explain(what, limit, check, String::new)
}

/// `wait_for` that adds `explain()` (agent logs, what is on disk) to the failure: a timeout
/// alone says nothing about why.
pub fn wait_or_explain<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() >= limit {
            panic!("timed out waiting for {what}\n{}", explain());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
