//! Builders of backup configurations and host layouts, for tests, benchmarks and demos.

use std::path::{Path, PathBuf};

use tailor_crds::backup::{BackupCompression, RetentionSpec};
use tailor_crds::node::{
    BackupTarget, ContainerInfo, HostRoot, HostRootKind, Input, InputKind, NodeBackup, PodInfo, SourceRef,
    WorkloadRef,
};

/// A pod's container on a fake host: its CRI log directory under `host_root`.
#[derive(Clone, Debug)]
pub struct FakePod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container: String,
    pub workload: String,
}

impl FakePod {
    pub fn new(namespace: &str, name: &str, container: &str) -> FakePod {
        FakePod {
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            container: container.into(),
            workload: name.rsplit_once('-').map_or(name, |(w, _)| w).to_string(),
        }
    }

    /// `/var/log/pods/<ns>_<pod>_<uid>/<container>` (absolute, as the operator renders it).
    pub fn log_dir(&self) -> String {
        format!("/var/log/pods/{}_{}_{}/{}", self.namespace, self.name, self.uid, self.container)
    }

    /// The log directory on the fake host, created.
    pub fn host_dir(&self, host_root: &Path) -> PathBuf {
        let d = host_root.join(self.log_dir().trim_start_matches('/'));
        let _ = std::fs::create_dir_all(&d);
        d
    }

    /// `{namespace}/{workload}/{pod}/{container}`.
    pub fn destination(&self) -> String {
        format!("{}/{}/{}/{}", self.namespace, self.workload, self.name, self.container)
    }

    /// The backup target of this container: its CRI logs, rotated ones included.
    pub fn target(&self) -> BackupTarget {
        BackupTarget {
            pod: PodInfo {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                uid: self.uid.clone(),
                workload: Some(WorkloadRef { kind: "Deployment".into(), name: self.workload.clone() }),
            },
            container: ContainerInfo { name: self.container.clone(), ..Default::default() },
            inputs: vec![Input {
                kind: InputKind::Stdio,
                streams: vec![],
                container_path: None,
                root: HostRoot {
                    kind: HostRootKind::PodLogs,
                    host_dir: Some(self.log_dir()),
                    container_id: None,
                    runtime: None,
                },
                path: "*.log*".into(),
            }],
            destination: self.destination(),
        }
    }
}

/// A backup policy on a node, for the given pods.
pub fn node_backup(namespace: &str, policy: &str, pods: &[FakePod]) -> NodeBackup {
    NodeBackup {
        source: SourceRef { namespace: namespace.into(), name: policy.into(), generation: 1 },
        log_backup: format!("{policy}-node-1"),
        interval: "60s".into(),
        retention: RetentionSpec { max_age: "7d".into(), max_bytes: "10Gi".into() },
        keep_terminated: true,
        compression: BackupCompression::Zstd,
        targets: pods.iter().map(FakePod::target).collect(),
    }
}
