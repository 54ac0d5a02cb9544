//! Objects the suites create: Nodes, Pods with the status a kubelet would report, and the
//! user resources as manifests (what an app team commits to Git).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

/// A Node object with a Ready condition (no kubelet will ever set one).
pub fn node(name: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "tailor.dev/e2e": "true"}},
    }))
    .expect("node fixture")
}

/// The status patch that marks a Node Ready.
pub fn node_ready_status() -> Value {
    json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "e2e",
        "lastHeartbeatTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }]}})
}

/// A pod to create: bound to a node, with containers and emptyDir volumes.
#[derive(Clone, Debug)]
pub struct PodFixture {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub containers: Vec<ContainerFixture>,
    /// emptyDir volume names.
    pub empty_dirs: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ContainerFixture {
    pub name: String,
    pub image: String,
    /// (volume, mountPath)
    pub mounts: Vec<(String, String)>,
    pub restart_count: i32,
}

impl PodFixture {
    pub fn new(namespace: &str, name: &str, node: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            node: node.into(),
            labels: BTreeMap::new(),
            containers: Vec::new(),
            empty_dirs: Vec::new(),
        }
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    pub fn container(mut self, name: &str) -> Self {
        self.containers.push(ContainerFixture {
            name: name.into(),
            image: format!("registry.example/{name}:1.0"),
            mounts: Vec::new(),
            restart_count: 0,
        });
        self
    }

    /// Adds an emptyDir volume mounted at `mount_path` in the last container added.
    pub fn empty_dir(mut self, volume: &str, mount_path: &str) -> Self {
        self.empty_dirs.push(volume.into());
        if let Some(c) = self.containers.last_mut() {
            c.mounts.push((volume.into(), mount_path.into()));
        }
        self
    }

    /// The Pod object (spec only).
    pub fn pod(&self) -> Pod {
        let containers: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "image": c.image,
                    "volumeMounts": c.mounts.iter().map(|(v, p)| json!({"name": v, "mountPath": p})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let volumes: Vec<Value> =
            self.empty_dirs.iter().map(|v| json!({"name": v, "emptyDir": {}})).collect();
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels},
            "spec": {
                "nodeName": self.node,
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 0,
                "containers": containers,
                "volumes": volumes,
            },
        }))
        .expect("pod fixture")
    }

    /// The status a kubelet with containerd would report for the running pod.
    pub fn running_status(&self, uid: &str) -> Value {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "image": c.image,
                    "imageID": format!("{}@sha256:{}", c.image, "0".repeat(64)),
                    "containerID": format!("containerd://{}", container_id(uid, &c.name)),
                    "ready": true,
                    "started": true,
                    "restartCount": c.restart_count,
                    "state": {"running": {"startedAt": now}},
                })
            })
            .collect();
        json!({"status": {
            "phase": "Running",
            "hostIP": "10.0.0.10",
            "podIP": "10.1.0.10",
            "startTime": now,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": statuses,
        }})
    }

    /// The status after every container exited with code 0.
    pub fn terminated_status(&self, uid: &str) -> Value {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                let id = format!("containerd://{}", container_id(uid, &c.name));
                json!({
                    "name": c.name,
                    "image": c.image,
                    "imageID": format!("{}@sha256:{}", c.image, "0".repeat(64)),
                    "containerID": id,
                    "ready": false,
                    "started": false,
                    "restartCount": c.restart_count,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now, "containerID": id}},
                })
            })
            .collect();
        json!({"status": {
            "phase": "Succeeded",
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
            "containerStatuses": statuses,
        }})
    }
}

/// A stable, runtime-looking container ID (64 hex digits) for a pod's container.
pub fn container_id(uid: &str, container: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::with_capacity(64);
    for round in 0u8..4 {
        for b in uid.bytes().chain([b'/']).chain(container.bytes()).chain([round]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// A LogCollectionConfig manifest with a `file` output.
pub fn collection_config(namespace: &str, name: &str, selector: Value, files: &[&str]) -> Value {
    json!({
        "apiVersion": "logging.tailor.dev/v1alpha1",
        "kind": "LogCollectionConfig",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": selector,
            "sources": {"stdout": true, "stderr": true, "files": files.iter().map(|p| json!({"path": p})).collect::<Vec<_>>()},
            "metadata": {"labels": ["app"], "fields": {"cluster": "e2e"}},
            "outputs": [{"name": "local", "type": "file"}],
        },
    })
}

/// A LogBackupPolicy manifest.
pub fn backup_policy(namespace: &str, name: &str, selector: Value, files: &[&str]) -> Value {
    json!({
        "apiVersion": "logging.tailor.dev/v1alpha1",
        "kind": "LogBackupPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": selector,
            "sources": {"stdout": true, "stderr": true, "files": files.iter().map(|p| json!({"path": p})).collect::<Vec<_>>()},
            "interval": "2s",
            "compression": "none",
        },
    })
}

/// Manifests as one `List` in JSON, which kubectl applies item by item. JSON rather than YAML:
/// kubectl reads YAML 1.1, where an unquoted `off` or `yes` is a boolean.
pub fn manifest_list(docs: &[&Value]) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string()
}
