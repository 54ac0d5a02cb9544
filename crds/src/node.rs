//! `NodeLogConfig`: the rendered configuration of one node, the contract between operator and
//! agent. The operator writes `spec`; the node's agent writes `status`.
//!
//! The format is versioned by `spec.formatVersion`; an agent refuses a version it does not know
//! (and says so in its status) instead of guessing.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backup::{BackupCompression, RetentionSpec};
use crate::collection::{FilterSpec, MultilineSpec, OutputSpec, ParseSpec};
use crate::common::StartPosition;

/// The per-node format version this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Everything the agent of one node must apply: name = node name.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "logging.tailor.dev",
    version = "v1alpha1",
    kind = "NodeLogConfig",
    category = "tailor",
    status = "NodeLogConfigStatus",
    printcolumn = r#"{"name":"Targets","type":"integer","jsonPath":".spec.targetCount"}"#,
    printcolumn = r#"{"name":"Applied","type":"integer","jsonPath":".status.observedGeneration"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NodeLogConfigSpec {
    /// Version of this format; see `FORMAT_VERSION`.
    pub format_version: u32,
    /// Number of collection and backup targets (for `kubectl get`).
    #[serde(default)]
    pub target_count: u32,
    /// Collection configurations that select pods on this node, sorted by namespace and name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<NodeCollection>,
    /// Backup policies that select pods on this node, sorted by namespace and name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<NodeBackup>,
}

/// The user resource a rendered entry comes from.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    pub namespace: String,
    pub name: String,
    /// `metadata.generation` of the resource this was rendered from.
    #[serde(default)]
    pub generation: i64,
}

/// One LogCollectionConfig as it applies to this node.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeCollection {
    pub source: SourceRef,
    #[serde(default)]
    pub start: StartPosition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<MultilineSpec>,
    #[serde(default)]
    pub parse: ParseSpec,
    #[serde(default, skip_serializing_if = "FilterSpec::is_empty")]
    pub filters: FilterSpec,
    pub outputs: Vec<OutputSpec>,
    /// Selected containers on this node, sorted by pod namespace, pod name, container name.
    pub targets: Vec<CollectionTarget>,
}

/// One LogBackupPolicy as it applies to this node.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeBackup {
    pub source: SourceRef,
    /// Name of the LogBackup object whose status the agent keeps current.
    pub log_backup: String,
    /// Sweep interval, as in the policy (`60s`).
    pub interval: String,
    pub retention: RetentionSpec,
    pub keep_terminated: bool,
    pub compression: BackupCompression,
    /// Selected containers on this node, sorted like collection targets.
    pub targets: Vec<BackupTarget>,
}

/// A selected container, for collection.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CollectionTarget {
    pub pod: PodInfo,
    pub container: ContainerInfo,
    /// Where its logs are on the host.
    pub inputs: Vec<Input>,
    /// Fields attached to every event, already resolved: the labels, annotations and
    /// environment variables the resource asked for, and its static fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

/// A selected container, for backup.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupTarget {
    pub pod: PodInfo,
    pub container: ContainerInfo,
    pub inputs: Vec<Input>,
    /// The policy's layout rendered for this container: relative, sanitised, under the backup root.
    pub destination: String,
}

/// The pod of a target.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The owning workload (Deployment, StatefulSet, DaemonSet, Job), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
}

/// A workload that owns a pod (a ReplicaSet is followed to its Deployment by name).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub kind: String,
    pub name: String,
}

/// The container of a target.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInfo {
    pub name: String,
    #[serde(default)]
    pub image: String,
    /// Runtime container ID without the `runtime://` prefix, once the runtime reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// `containerd`, `docker`, `cri-o`, from the container ID's prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default)]
    pub restart_count: i32,
    /// `true` once the container (or its pod) terminated: the agent drains its files and keeps
    /// them until the target disappears.
    #[serde(default)]
    pub terminated: bool,
}

/// One place where a container's logs live on the host.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    /// `stdio` (the runtime's capture of stdout/stderr) or `file` (a file inside the container).
    pub kind: InputKind,
    /// For `stdio`: which streams to keep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StdStream>,
    /// For `file`: the path as the user wrote it, inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    /// The directory that confines resolution: nothing outside it is ever read.
    pub root: HostRoot,
    /// Path relative to `root`, globs allowed. Symlinks resolve inside `root`.
    pub path: String,
}

/// Kinds of inputs.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum InputKind {
    Stdio,
    File,
}

/// A standard stream.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum StdStream {
    Stdout,
    Stderr,
}

/// The confining root of an input, relative to the agent's host root.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HostRoot {
    pub kind: HostRootKind,
    /// For every kind but `containerRootfs`: an absolute host directory (the agent prefixes its
    /// `--host-root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_dir: Option<String>,
    /// For `containerRootfs`: the container whose writable layer is the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// For `containerRootfs`: `containerd` or `docker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

/// Kinds of confining roots (rows of the mapping table in DESIGN.md).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum HostRootKind {
    /// `/var/log/pods/<ns>_<pod>_<uid>/<container>`: CRI stdout/stderr files.
    PodLogs,
    /// `/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>`.
    EmptyDir,
    /// A `hostPath` volume's directory.
    HostPath,
    /// The container's writable layer, resolved by the agent from the runtime.
    ContainerRootfs,
    /// `/var/lib/docker/containers/<id>`: Docker json-file stdout/stderr.
    DockerJson,
}

/// Written by the node's agent.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeLogConfigStatus {
    /// The spec generation the agent applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Targets the agent runs.
    #[serde(default)]
    pub active_targets: u32,
    /// Files the agent has open or tracks.
    #[serde(default)]
    pub active_files: u32,
    /// Seconds since the last checkpoint write, at the time of this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_age_seconds: Option<u64>,
    /// Per-target problems, sorted by target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<TargetError>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A problem with one target.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct TargetError {
    /// `namespace/pod/container` and the source resource.
    pub target: String,
    pub message: String,
}

impl CollectionTarget {
    /// Stable key of a target within its collection: `namespace/pod/container`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.pod.namespace, self.pod.name, self.container.name)
    }
}

impl BackupTarget {
    /// Stable key of a target within its backup: `namespace/pod/container`.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.pod.namespace, self.pod.name, self.container.name)
    }
}
