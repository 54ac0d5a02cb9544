//! The control plane the tests talk to: the cluster in `KUBECONFIG` when one is given, otherwise a
//! fresh one from `shared/k8s/up`, stopped with `down` when its guard is dropped.
//!
//! A test binary shares one control plane between its tests (start-up costs seconds). Statics are
//! never dropped, so the shared guard is handed to [`crate::teardown`], which drops it when the
//! process exits (normally or after failed tests). A watchdog process runs `down` if the test
//! process dies without exiting (SIGKILL, abort), so no control plane outlives its tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::paths;

/// A running control plane. When this process started it, dropping the guard stops it.
pub struct ControlPlane {
    kubeconfig: PathBuf,
    started: Option<Started>,
}

struct Started {
    scripts: PathBuf,
    /// Holds the state folder (kubeconfig, pids, logs); removed after `down`.
    dir: tempfile::TempDir,
    watchdog: Option<Child>,
}

impl ControlPlane {
    /// The cluster in `KUBECONFIG` if set, else a fresh one.
    pub fn from_env_or_start() -> Result<Self> {
        match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(path) => {
                let first = std::env::split_paths(&path).next().context("empty KUBECONFIG")?;
                eprintln!("e2e: using the cluster in KUBECONFIG={}", first.display());
                Ok(Self { kubeconfig: first, started: None })
            }
            None => Self::start(),
        }
    }

    /// Starts a fresh control plane with `up DIR`.
    pub fn start() -> Result<Self> {
        let scripts = paths::k8s_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("tailor-e2e-k8s.")
            .tempdir()
            .context("temp dir for the cluster")?;
        let up = Command::new(scripts.join("up"))
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}/up", scripts.display()))?;
        // Watch before waiting: if this process dies while `up` runs, the watchdog lets `up`
        // finish and then stops what it started.
        let watchdog = spawn_watchdog(&scripts, dir.path(), up.id());
        let out = up.wait_with_output().context("waiting for up")?;
        if !out.status.success() {
            bail!(
                "{}/up {} failed ({}):\n{}",
                scripts.display(),
                dir.path().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let kubeconfig = dir.path().join("kubeconfig");
        if !kubeconfig.is_file() {
            bail!("up did not write {}", kubeconfig.display());
        }
        eprintln!("e2e: started a control plane in {}", dir.path().display());
        Ok(Self { kubeconfig, started: Some(Started { scripts, dir, watchdog }) })
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `true` when this process started the control plane (and may do anything to it).
    pub fn is_owned(&self) -> bool {
        self.started.is_some()
    }

    /// The folder with the control plane's logs, when this process started it.
    pub fn log_dir(&self) -> Option<&Path> {
        self.started.as_ref().map(|s| s.dir.path())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let Some(started) = self.started.as_mut() else { return };
        match Command::new(started.scripts.join("down")).arg(started.dir.path()).stdin(Stdio::null()).output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!("e2e: down failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr))
            }
            Err(e) => eprintln!("e2e: cannot run down: {e}"),
        }
        if let Some(mut w) = started.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// A shell that waits for this process (and then for `up`, pid `up_pid`) to go away and then runs
/// `down` if the control plane is still up (its `pids` file is still there). In its own process
/// group so that a Ctrl-C aimed at the test run does not take it down before it did its job.
fn spawn_watchdog(scripts: &Path, dir: &Path, up_pid: u32) -> Option<Child> {
    use std::os::unix::process::CommandExt;
    let script = r#"while kill -0 "$0" 2>/dev/null; do sleep 1; done
while kill -0 "$3" 2>/dev/null; do sleep 1; done
if [ -f "$1/pids" ]; then "$2" "$1"; rm -rf "$1"; fi"#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(scripts.join("down"))
        .arg(up_pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| eprintln!("e2e: no watchdog for the control plane: {e}"))
        .ok()
}
