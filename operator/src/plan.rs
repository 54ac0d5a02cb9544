//! The writes that bring the cluster to a rendering: a pure diff of what should exist against
//! what the watch caches hold. Only objects whose content changed are written.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::ObjectMeta;
use tailor_crds::node::NodeLogConfig;
use tailor_crds::{LogBackup, LogBackupSpec, SelectionStatus, condition};

use crate::render::{
    ClusterInput, DesiredLogBackup, RenderedCluster, ResourceKey, ResourceKind, resource_key,
};
use crate::status::{acknowledged_nodes, selection_status};
use crate::{MANAGED_BY, MANAGED_BY_LABEL, POLICY_LABEL};

/// What the cluster holds of the operator's own objects (from the watch caches).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// NodeLogConfigs labelled as managed by the operator.
    pub node_configs: Vec<Arc<NodeLogConfig>>,
    /// LogBackups labelled as managed by the operator.
    pub log_backups: Vec<Arc<LogBackup>>,
    /// Mirror Secrets in the operator's namespace.
    pub mirrors: Vec<Arc<Secret>>,
}

/// A status to write.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    pub key: ResourceKey,
    pub status: SelectionStatus,
}

/// A Kubernetes Event about a user resource: published when a problem appears, not on every
/// pass, so that the events of a resource tell its story.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub key: ResourceKey,
    pub uid: Option<String>,
    pub reason: String,
    pub note: String,
}

/// The writes, in the order they are made.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Mirror Secrets to create or change (server-side apply), before the NodeLogConfigs that
    /// name them.
    pub apply_mirrors: Vec<crate::secrets::Mirror>,
    /// Mirror Secrets no longer named (by name, in the operator's namespace), deleted last.
    pub delete_mirrors: Vec<String>,
    /// Created or changed NodeLogConfigs (server-side apply), by name.
    pub apply_node_configs: Vec<NodeLogConfig>,
    /// Created or changed LogBackups (server-side apply), by namespace and name.
    pub apply_log_backups: Vec<LogBackup>,
    /// LogBackups with no targets left: (namespace, name).
    pub delete_log_backups: Vec<(String, String)>,
    /// NodeLogConfigs with no targets left or whose Node is gone.
    pub delete_node_configs: Vec<String>,
    /// User resources whose status changed, by kind, namespace, name.
    pub statuses: Vec<StatusUpdate>,
    /// Warning events for problems that just appeared (an invalid spec, unmapped sources).
    pub events: Vec<EventNote>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.apply_mirrors.is_empty()
            && self.delete_mirrors.is_empty()
            && self.apply_node_configs.is_empty()
            && self.apply_log_backups.is_empty()
            && self.delete_log_backups.is_empty()
            && self.delete_node_configs.is_empty()
            && self.statuses.is_empty()
            && self.events.is_empty()
    }
}

/// The NodeLogConfig object the operator applies for a node.
pub fn desired_node_config(rendered: &RenderedCluster, node: &str) -> Option<NodeLogConfig> {
    let spec = rendered.nodes.get(node)?;
    let mut nlc = NodeLogConfig::new(node, spec.clone());
    nlc.metadata.labels = Some([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())].into());
    nlc.metadata.owner_references = node_owner(rendered, node);
    Some(nlc)
}

/// A NodeLogConfig is owned by its Node, so the garbage collector removes it with the Node
/// even while the operator is down.
fn node_owner(rendered: &RenderedCluster, node: &str) -> Option<Vec<OwnerReference>> {
    rendered.node_uids.get(node).map(|uid| {
        vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node.into(),
            uid: uid.clone(),
            ..Default::default()
        }]
    })
}

/// The LogBackup object the operator applies for a (policy, node), owned by the policy.
pub fn desired_log_backup(d: &DesiredLogBackup) -> LogBackup {
    let mut labels = BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())]);
    if d.policy.len() <= 63 {
        labels.insert(POLICY_LABEL.to_string(), d.policy.clone());
    }
    LogBackup {
        metadata: ObjectMeta {
            name: Some(d.name.clone()),
            namespace: Some(d.namespace.clone()),
            labels: Some(labels),
            owner_references: d.policy_uid.as_ref().map(|uid| {
                vec![OwnerReference {
                    api_version: format!("{}/{}", tailor_crds::GROUP, tailor_crds::VERSION),
                    kind: "LogBackupPolicy".into(),
                    name: d.policy.clone(),
                    uid: uid.clone(),
                    controller: Some(true),
                    // Not blocking: that would need update rights on the policy's finalizers.
                    block_owner_deletion: None,
                }]
            }),
            ..Default::default()
        },
        spec: LogBackupSpec { policy: d.policy.clone(), node_name: d.node.clone() },
        status: None,
    }
}

/// Every object the rendering asks for, as `render -f` prints them.
pub fn desired_objects(rendered: &RenderedCluster) -> (Vec<NodeLogConfig>, Vec<LogBackup>) {
    let nlcs = rendered.nodes.keys().filter_map(|n| desired_node_config(rendered, n)).collect();
    let lbs = rendered.log_backups.iter().map(desired_log_backup).collect();
    (nlcs, lbs)
}

/// The diff. `remembered` holds statuses the operator computed earlier for resources whose
/// current status cannot be read (malformed objects), so that they are not rewritten each time.
pub fn plan(
    input: &ClusterInput,
    rendered: &RenderedCluster,
    observed: &Observed,
    remembered: &BTreeMap<ResourceKey, SelectionStatus>,
    now: &Time,
) -> Plan {
    let mut plan = Plan::default();
    let in_cluster: BTreeMap<&str, &NodeLogConfig> = observed
        .node_configs
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n.as_ref())))
        .collect();

    for (node, spec) in &rendered.nodes {
        // Compared in place: a large cluster's specs are only cloned when they changed.
        let same = in_cluster.get(node.as_str()).is_some_and(|have| {
            have.spec == *spec && have.metadata.owner_references == node_owner(rendered, node)
        });
        if !same {
            plan.apply_node_configs.extend(desired_node_config(rendered, node));
        }
    }
    plan.delete_node_configs =
        in_cluster.keys().filter(|n| !rendered.nodes.contains_key(**n)).map(|n| n.to_string()).collect();

    let existing: BTreeMap<(&str, &str), &LogBackup> = observed
        .log_backups
        .iter()
        .filter_map(|b| Some(((b.metadata.namespace.as_deref()?, b.metadata.name.as_deref()?), b.as_ref())))
        .collect();
    let mut wanted: BTreeSet<(&str, &str)> = BTreeSet::new();
    for d in &rendered.log_backups {
        wanted.insert((&d.namespace, &d.name));
        let want = desired_log_backup(d);
        let same = existing.get(&(d.namespace.as_str(), d.name.as_str())).is_some_and(|have| {
            have.spec == want.spec
                && have.metadata.owner_references == want.metadata.owner_references
                && have.metadata.labels == want.metadata.labels
        });
        if !same {
            plan.apply_log_backups.push(want);
        }
    }
    plan.delete_log_backups = existing
        .keys()
        .filter(|k| !wanted.contains(*k))
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
        .collect();

    let current = current_statuses(input);
    for (key, summary) in &rendered.resources {
        let previous = current.get(key).copied().flatten().or_else(|| remembered.get(key));
        let acked = acknowledged_nodes(key, summary, &in_cluster);
        let status = selection_status(summary, &acked, previous, now);
        if previous != Some(&status) {
            for c in &status.conditions {
                if let Some(note) = new_problem(previous, c) {
                    plan.events.push(EventNote {
                        key: key.clone(),
                        uid: summary.uid.clone(),
                        reason: c.reason.clone(),
                        note,
                    });
                }
            }
            plan.statuses.push(StatusUpdate { key: key.clone(), status });
        }
    }
    plan
}

/// The message of a problem condition (`Invalid`, `Degraded`) that turned true or changed
/// reason since `previous`.
fn new_problem(previous: Option<&SelectionStatus>, c: &Condition) -> Option<String> {
    if !matches!(c.type_.as_str(), condition::INVALID | condition::DEGRADED) || c.status != "True" {
        return None;
    }
    let before = previous.and_then(|p| p.conditions.iter().find(|p| p.type_ == c.type_));
    let known = before.is_some_and(|b| b.status == "True" && b.reason == c.reason);
    (!known).then(|| c.message.clone())
}

/// The status each well-formed user resource has now.
fn current_statuses(input: &ClusterInput) -> BTreeMap<ResourceKey, Option<&SelectionStatus>> {
    let key = resource_key;
    let mut out = BTreeMap::new();
    for c in &input.collections {
        out.insert(key(ResourceKind::Collection, &c.metadata), c.status.as_ref());
    }
    for b in &input.backups {
        out.insert(key(ResourceKind::Backup, &b.metadata), b.status.as_ref());
    }
    out
}
