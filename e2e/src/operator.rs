//! Operator replicas and node agents as processes, each acting as its own ServiceAccount.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cluster::Cluster;
use crate::kubeconfig::{Identity, SYSTEM_NAMESPACE, write_impersonating};
use crate::node_fs::NodeFs;
use crate::paths;
use crate::process::Process;

/// A free TCP port on loopback (for metrics endpoints).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One operator replica.
pub struct Replica {
    /// Its leader-election identity (passed as `POD_NAME` and `HOSTNAME`, as in a Pod).
    pub identity: String,
    pub metrics_addr: String,
    pub process: Process,
}

/// Operator replicas (`tailor-operator run`), stopped when dropped.
pub struct Operators {
    pub replicas: Vec<Replica>,
}

impl Operators {
    /// Starts `replicas` operator processes named `tailor-operator-<tag>-<i>`.
    pub fn start(cluster: &Cluster, tag: &str, replicas: usize) -> Result<Self> {
        cluster.require_rbac()?;
        let bins = paths::binaries()?;
        if !paths::has_subcommand(&bins.operator, "run") {
            bail!("needs `tailor-operator run` ({} has no run command yet)", bins.operator.display());
        }
        let dir = cluster.work_dir().join(format!("operator-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = dir.join("kubeconfig");
        write_impersonating(cluster.kubeconfig(), &Identity::Operator, &kubeconfig)?;
        let mut started = Vec::new();
        for i in 0..replicas {
            let identity = format!("tailor-operator-{tag}-{i}");
            let metrics_addr = format!("127.0.0.1:{}", free_port()?);
            let mut cmd = Command::new(&bins.operator);
            cmd.args(["run", "--metrics-addr", &metrics_addr, "--lease-namespace", SYSTEM_NAMESPACE])
                // Rotation of output Secrets reaches their mirrors within seconds.
                .args(["--secret-refresh-secs", "2"])
                .env("KUBECONFIG", &kubeconfig)
                .env("POD_NAME", &identity)
                .env("HOSTNAME", &identity)
                .env("POD_NAMESPACE", SYSTEM_NAMESPACE)
                .env("RUST_LOG", std::env::var("TAILOR_E2E_LOG").unwrap_or_else(|_| "info".into()));
            let process = Process::spawn(&identity, cmd, &dir.join(format!("{identity}.log")))?;
            started.push(Replica { identity, metrics_addr, process });
        }
        Ok(Self { replicas: started })
    }

    pub fn logs(&self) -> Vec<(String, PathBuf)> {
        self.replicas.iter().map(|r| (r.identity.clone(), r.process.log_path().to_path_buf())).collect()
    }
}

/// The folders of one node's agent.
#[derive(Clone, Debug)]
pub struct AgentDirs {
    pub fs: NodeFs,
    pub state: PathBuf,
    pub output: PathBuf,
    pub backup: PathBuf,
}

impl AgentDirs {
    pub fn create(base: &Path) -> Result<Self> {
        let fs = NodeFs::create(&base.join("host"))?;
        let dirs =
            Self { fs, state: base.join("state"), output: base.join("output"), backup: base.join("backup") };
        for d in [&dirs.state, &dirs.output, &dirs.backup] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(dirs)
    }
}

/// Starts `tailor-agent run` for `node`, acting as the agents' ServiceAccount bound to `node`.
pub fn start_agent(cluster: &Cluster, node: &str, dirs: &AgentDirs, base: &Path) -> Result<Process> {
    cluster.require_rbac()?;
    let bins = paths::binaries()?;
    if !paths::has_subcommand(&bins.agent, "run") {
        bail!("needs `tailor-agent run` ({} has no run command yet)", bins.agent.display());
    }
    let kubeconfig = base.join("kubeconfig");
    write_impersonating(cluster.kubeconfig(), &Identity::Agent { node: node.to_string() }, &kubeconfig)?;
    let metrics_addr = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(&bins.agent);
    cmd.arg("run")
        .args(["--node-name", node])
        .arg("--host-root")
        .arg(dirs.fs.root())
        .arg("--state-dir")
        .arg(&dirs.state)
        .arg("--output-dir")
        .arg(&dirs.output)
        .arg("--backup-root")
        .arg(&dirs.backup)
        .args(["--metrics-addr", &metrics_addr, "--checkpoint-interval", "1s"])
        .env("KUBECONFIG", &kubeconfig)
        .env("NODE_NAME", node)
        // As the DaemonSet sets it: where the operator mirrors the Secrets outputs name.
        .env("POD_NAMESPACE", SYSTEM_NAMESPACE)
        .env("RUST_LOG", std::env::var("TAILOR_E2E_LOG").unwrap_or_else(|_| "info".into()));
    Process::spawn(&format!("agent-{node}"), cmd, &base.join("agent.log"))
}
