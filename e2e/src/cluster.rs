//! The cluster a test binary shares: one control plane with the CRDs (and the RBAC once the
//! install provides it), a work folder, and optionally one pair of operator replicas.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, anyhow};

use crate::control_plane::ControlPlane;
use crate::kubectl::Kubectl;
use crate::operator::Operators;
use crate::{install, teardown};

/// Shared per test binary; see [`cluster`].
pub struct Cluster {
    kubeconfig: PathBuf,
    work: PathBuf,
    control_plane_logs: Option<PathBuf>,
    owned: bool,
    rbac: Result<(), String>,
    operator_logs: Mutex<Vec<(String, PathBuf)>>,
}

/// The shared cluster, started and installed on first use.
pub fn cluster() -> Result<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| Cluster::start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

impl Cluster {
    fn start() -> Result<Self> {
        let control_plane = ControlPlane::from_env_or_start()?;
        let kubeconfig = control_plane.kubeconfig().to_path_buf();
        let control_plane_logs = control_plane.log_dir().map(Path::to_path_buf);
        let owned = control_plane.is_owned();
        teardown::at_exit(control_plane);
        let work = tempfile::Builder::new().prefix("tailor-e2e.").tempdir().context("work folder")?;
        let work_path = work.path().to_path_buf();
        teardown::at_exit(work);
        let kubectl = Kubectl::new(&kubeconfig);
        install::install_crds(&kubectl)?;
        let rbac = install::install_rbac(&kubectl).map_err(|e| format!("{e:#}"));
        if let Err(e) = &rbac {
            eprintln!("e2e: RBAC not installed: {e}");
        }
        Ok(Self {
            kubeconfig,
            work: work_path,
            control_plane_logs,
            owned,
            rbac,
            operator_logs: Mutex::new(Vec::new()),
        })
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig)
    }

    /// A folder for this process's files (removed at exit).
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// `true` when this process started the control plane (a throw-away cluster).
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    pub fn control_plane_logs(&self) -> Option<&Path> {
        self.control_plane_logs.as_deref()
    }

    /// Fails (with what is missing) when the install's RBAC is not there.
    pub fn require_rbac(&self) -> Result<()> {
        self.rbac.clone().map_err(|e| anyhow!("{e}"))
    }

    /// An admin client for the calling test's runtime (clients are bound to the runtime that
    /// made them, and every `#[tokio::test]` has its own).
    pub async fn client(&self) -> Result<kube::Client> {
        crate::kubeconfig::client(&self.kubeconfig).await
    }

    /// Starts the binary's shared pair of operator replicas on first use (stopped at exit).
    pub fn shared_operators(&self) -> Result<()> {
        static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
        STARTED
            .get_or_init(|| {
                let ops = Operators::start(self, "shared", 2).map_err(|e| format!("{e:#}"))?;
                self.register_operator_logs(ops.logs());
                teardown::at_exit(ops);
                Ok(())
            })
            .clone()
            .map_err(|e| anyhow!("{e}"))
    }

    /// Remembers operator logs so that failing tests print their tails.
    pub fn register_operator_logs(&self, logs: Vec<(String, PathBuf)>) {
        if let Ok(mut l) = self.operator_logs.lock() {
            l.extend(logs);
        }
    }

    pub fn operator_logs(&self) -> Vec<(String, PathBuf)> {
        self.operator_logs.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
