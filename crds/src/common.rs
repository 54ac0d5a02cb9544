//! Types shared by the user-facing resources: pod selection, log sources, status.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which pods (of the resource's own namespace) and which of their containers a resource selects.
///
/// A pod is selected when every `includeLabels` pair matches, every `matchExpressions`
/// requirement holds, and no `excludeLabels` pair matches (exclude wins).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSelector {
    /// Labels that must all be present with exactly these values. Empty selects every pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub include_labels: BTreeMap<String, String>,
    /// A pod that has any of these labels with this value is excluded. The value `*` excludes
    /// a pod that has the label with any value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exclude_labels: BTreeMap<String, String>,
    /// Kubernetes set-based requirements; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelRequirement>,
    /// Container names to include (empty: all) and to exclude (exclude wins).
    #[serde(default, skip_serializing_if = "ContainerFilter::is_empty")]
    pub containers: ContainerFilter,
}

/// A set-based label requirement, as in `metav1.LabelSelectorRequirement`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.operator in ['In', 'NotIn'] ? size(self.values) > 0 : size(self.values) == 0",
     "message": "In and NotIn need values; Exists and DoesNotExist take none"}
]))]
pub struct LabelRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// How the label's value is compared with `values`.
    pub operator: LabelOperator,
    /// Values for `In` and `NotIn`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// Operators of a set-based label requirement.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Container names to include and exclude.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerFilter {
    /// Only these containers (empty: every container of the pod).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Never these containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

impl ContainerFilter {
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

/// What to read from each selected container.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LogSources {
    /// The container's stdout, as captured by the runtime.
    #[serde(default = "yes")]
    pub stdout: bool,
    /// The container's stderr, as captured by the runtime.
    #[serde(default = "yes")]
    pub stderr: bool,
    /// Files inside the container: absolute paths, globs allowed (`*`, `?`, `[..]`, `**`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub files: Vec<FileSource>,
}

impl Default for LogSources {
    fn default() -> Self {
        Self { stdout: true, stderr: true, files: Vec::new() }
    }
}

fn yes() -> bool {
    true
}

/// A file source inside the container.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.path.startsWith('/')", "message": "path must be an absolute container path"},
    {"rule": "!self.path.split('/').exists(p, p == '..')", "message": "path must not contain '..'"}
]))]
pub struct FileSource {
    /// Absolute path in the container, e.g. `/opt/logs/*.log` or `/var/log/app/**/*.log`.
    #[schemars(length(min = 2, max = 1024))]
    pub path: String,
}

/// Where to start reading files that already exist when a target is first applied.
/// Files created afterwards are always read from their beginning.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum StartPosition {
    #[default]
    Beginning,
    End,
}

/// Status of a user resource (`LogCollectionConfig`, `LogBackupPolicy`), written by the operator.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SelectionStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of selected pods.
    #[serde(default)]
    pub pods: u32,
    /// Number of nodes that run selected pods.
    #[serde(default)]
    pub nodes: u32,
    /// Nodes whose agent acknowledged the configuration rendered from this generation,
    /// as `acknowledged/nodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Names of the nodes that run selected pods (sorted; at most 100 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_names: Vec<String>,
    /// Nodes whose agent acknowledged this generation (sorted; at most 100 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_nodes: Vec<String>,
    /// `Ready`, `Invalid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Condition types used across the API.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const INVALID: &str = "Invalid";
    pub const DEGRADED: &str = "Degraded";
}

/// Builds a condition; `last_transition_time` is kept from `previous` when the status did not
/// change, so that re-computing a status never flaps.
pub fn make_condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    observed_generation: Option<i64>,
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(now);
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation,
        last_transition_time,
    }
}
