//! `LogBackupPolicy` (what to back up) and `LogBackup` (one per policy and node: how it went).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{LogSources, PodSelector, SelectionStatus};

/// Default destination layout under the platform's backup root.
pub const DEFAULT_LAYOUT: &str = "{namespace}/{workload}/{pod}/{container}";

/// Copy selected pods' log files, incrementally, into the node's backup root.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "logging.tailor.dev",
    version = "v1alpha1",
    kind = "LogBackupPolicy",
    namespaced,
    shortname = "lbp",
    category = "tailor",
    status = "SelectionStatus",
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.pods"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LogBackupPolicySpec {
    /// Which pods of this namespace, and which of their containers.
    #[serde(default)]
    pub selector: PodSelector,
    /// What to copy. Defaults to stdout and stderr only.
    #[serde(default)]
    pub sources: LogSources,
    /// Destination under the backup root. Placeholders: `{namespace}`, `{workload}` (owning
    /// Deployment/StatefulSet/DaemonSet/Job, else the container name), `{pod}`, `{container}`,
    /// `{node}`. Relative; `..` and absolute paths are rejected.
    #[serde(default = "default_layout")]
    #[schemars(length(min = 1, max = 512))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "!self.startsWith('/')", "message": "layout must be relative to the backup root"},
        {"rule": "!self.split('/').exists(p, p == '..')", "message": "layout must not contain '..'"}
    ]))]
    pub layout: String,
    /// How often the periodic sweep runs (copying is event-driven in between), e.g. `30s`, `5m`.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h)$"))]
    pub interval: String,
    /// How long and how much to keep.
    #[serde(default)]
    pub retention: RetentionSpec,
    /// Keep copying and keep the copy of containers that terminated (until their pod is deleted).
    #[serde(default = "default_keep_terminated")]
    pub keep_terminated: bool,
    /// Compression of closed (rotated or terminated) files in the backup.
    #[serde(default)]
    pub compression: BackupCompression,
}

fn default_layout() -> String {
    DEFAULT_LAYOUT.into()
}
/// The sweep interval of a policy that sets none (also the Docker host config's default).
pub fn default_interval() -> String {
    "60s".into()
}
/// Stopped containers are kept copying by default (also in the Docker host config).
pub fn default_keep_terminated() -> bool {
    true
}

/// Retention per policy and node, oldest files removed first.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Remove files older than this, e.g. `7d`, `36h`.
    #[serde(default = "default_max_age")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h|d)$"))]
    pub max_age: String,
    /// Keep at most this many bytes, e.g. `10Gi`.
    #[serde(default = "default_max_bytes")]
    #[schemars(regex(pattern = r"^[0-9]+(Ki|Mi|Gi|Ti|K|M|G|T)?$"))]
    pub max_bytes: String,
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self { max_age: default_max_age(), max_bytes: default_max_bytes() }
    }
}

fn default_max_age() -> String {
    "7d".into()
}
fn default_max_bytes() -> String {
    "10Gi".into()
}

/// Compression of closed files in a backup.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum BackupCompression {
    #[default]
    Zstd,
    Gzip,
    None,
}

/// The backup of one policy on one node. Created by the operator (owned by the policy);
/// its status is written by that node's agent.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "logging.tailor.dev",
    version = "v1alpha1",
    kind = "LogBackup",
    plural = "logbackups",
    namespaced,
    category = "tailor",
    status = "LogBackupStatus",
    printcolumn = r#"{"name":"Policy","type":"string","jsonPath":".spec.policy"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.pods"}"#,
    printcolumn = r#"{"name":"Files","type":"integer","jsonPath":".status.files"}"#,
    printcolumn = r#"{"name":"Size","type":"string","jsonPath":".status.size"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Lag","type":"integer","priority":1,"jsonPath":".status.lagBytes"}"#,
    printcolumn = r#"{"name":"Destination","type":"string","priority":1,"jsonPath":".status.destination"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LogBackupSpec {
    /// The LogBackupPolicy (same namespace).
    pub policy: String,
    /// The node whose agent copies.
    pub node_name: String,
}

/// Phases of a backup.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum BackupPhase {
    #[default]
    Pending,
    Syncing,
    Synced,
    Degraded,
    Failed,
}

/// Written by the node agent.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogBackupStatus {
    /// The generation of the NodeLogConfig the agent applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: BackupPhase,
    /// Pods whose files are backed up.
    #[serde(default)]
    pub pods: u32,
    /// Files in the backup.
    #[serde(default)]
    pub files: u32,
    /// Bytes in the backup.
    #[serde(default)]
    pub bytes: u64,
    /// `bytes`, human-readable (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Bytes written to the sources but not yet copied.
    #[serde(default)]
    pub lag_bytes: u64,
    /// When the copy last caught up with its sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Where the copy lives on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The last error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
