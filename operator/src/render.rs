//! Rendering: the whole cluster's selections → one `NodeLogConfigSpec` per node.
//!
//! `render` is pure and deterministic: inputs may come in any order (watch caches, files) and
//! the output is identical, down to the byte once serialised, for the same set of objects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use kube::api::ObjectMeta;
use tailor_crds::node::{
    BackupTarget, CollectionTarget, ContainerInfo, FORMAT_VERSION, Input, NodeBackup, NodeCollection,
    NodeLogConfigSpec, PodInfo, SourceRef,
};
use tailor_crds::{LogBackupPolicy, LogCollectionConfig, LogSources, PodSelector};

use crate::layout::{LayoutValues, render_layout};
use crate::mapping::{self, PodIds};
use crate::selection::{selected_containers, selects_pod};
use crate::validate::{self, ValidationError};
use crate::workload::owner_workload;

/// At most this many mapping problems are kept per resource (their count is not bounded).
const MAX_PROBLEMS: usize = 10;

/// The two kinds of user resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    Collection,
    Backup,
}

impl ResourceKind {
    pub fn kind(self) -> &'static str {
        match self {
            Self::Collection => "LogCollectionConfig",
            Self::Backup => "LogBackupPolicy",
        }
    }
}

/// A user resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub kind: ResourceKind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind.kind(), self.namespace, self.name)
    }
}

/// A user resource that exists but does not deserialise into its type.
#[derive(Clone, Debug)]
pub struct MalformedResource {
    pub kind: ResourceKind,
    pub metadata: ObjectMeta,
    pub error: String,
}

/// A Node, as far as rendering cares.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeInfo {
    pub name: String,
    pub uid: Option<String>,
}

/// Everything rendering reads. Order does not matter.
#[derive(Clone, Debug, Default)]
pub struct ClusterInput {
    pub collections: Vec<Arc<LogCollectionConfig>>,
    pub backups: Vec<Arc<LogBackupPolicy>>,
    pub malformed: Vec<MalformedResource>,
    pub pods: Vec<Arc<Pod>>,
    pub nodes: Vec<NodeInfo>,
}

/// Why a resource renders nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub reason: String,
    pub message: String,
}

impl From<&ValidationError> for Invalid {
    fn from(e: &ValidationError) -> Self {
        Self { reason: e.reason().to_string(), message: e.to_string() }
    }
}

/// What rendering found for one user resource (input of its status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceSummary {
    pub generation: i64,
    /// For Events about the resource.
    pub uid: Option<String>,
    /// Selected pods that have at least one rendered target.
    pub pods: u32,
    pub nodes: BTreeSet<String>,
    pub invalid: Option<Invalid>,
    /// Sources that could not be mapped (first few), e.g. a file on a PVC.
    pub problems: BTreeSet<String>,
    pub problem_count: u32,
    /// Secrets its outputs name that cannot be used (not found, not opted in, unreadable).
    pub secret_problems: BTreeSet<String>,
}

/// A `LogBackup` that must exist: one per (policy, node) with targets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DesiredLogBackup {
    pub namespace: String,
    pub name: String,
    pub policy: String,
    pub policy_uid: Option<String>,
    pub node: String,
}

/// The rendering of a whole cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RenderedCluster {
    /// Node name → its configuration; only nodes with targets.
    pub nodes: BTreeMap<String, NodeLogConfigSpec>,
    /// Node name → UID, for owner references (nodes with targets only).
    pub node_uids: BTreeMap<String, String>,
    /// Sorted by namespace and name.
    pub log_backups: Vec<DesiredLogBackup>,
    pub resources: BTreeMap<ResourceKey, ResourceSummary>,
}

impl RenderedCluster {
    /// Collection and backup targets over all nodes.
    pub fn target_counts(&self) -> (u64, u64) {
        self.nodes.values().fold((0, 0), |(c, b), spec| {
            (
                c + spec.collections.iter().map(|x| x.targets.len() as u64).sum::<u64>(),
                b + spec.backups.iter().map(|x| x.targets.len() as u64).sum::<u64>(),
            )
        })
    }
}

/// The generation recorded for a resource (objects read from files have none: 1, as on create).
pub fn generation(meta: &ObjectMeta) -> i64 {
    meta.generation.unwrap_or(1)
}

/// Renders every node's configuration.
pub fn render(input: &ClusterInput) -> RenderedCluster {
    let nodes: BTreeMap<&str, Option<&str>> =
        input.nodes.iter().map(|n| (n.name.as_str(), n.uid.as_deref())).collect();
    let pods = index_pods(&input.pods, &nodes);
    let mut out = RenderedCluster::default();

    for m in &input.malformed {
        let summary = ResourceSummary {
            generation: generation(&m.metadata),
            uid: m.metadata.uid.clone(),
            invalid: Some(Invalid::from(&ValidationError::Malformed(m.error.clone()))),
            ..Default::default()
        };
        out.resources.insert(resource_key(m.kind, &m.metadata), summary);
    }

    for lcc in sorted_unique(&input.collections) {
        let k = resource_key(ResourceKind::Collection, &lcc.metadata);
        let mut summary = ResourceSummary {
            generation: generation(&lcc.metadata),
            uid: lcc.metadata.uid.clone(),
            ..Default::default()
        };
        if let Err(e) = validate::validate_collection(&lcc.spec) {
            summary.invalid = Some(Invalid::from(&e));
            out.resources.insert(k, summary);
            continue;
        }
        let source = SourceRef {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            generation: summary.generation,
        };
        let per_node = select(&pods, &k.namespace, &lcc.spec.selector, &mut summary, |ctx| {
            let inputs = inputs(ctx, &lcc.spec.sources)?;
            Some(CollectionTarget {
                pod: ctx.pod_info.clone(),
                container: ctx.container_info.clone(),
                inputs,
                fields: fields(ctx, &lcc.spec.metadata),
            })
        });
        for (node, targets) in per_node {
            let spec = out.nodes.entry(node).or_insert_with(empty_spec);
            spec.collections.push(NodeCollection {
                source: source.clone(),
                start: lcc.spec.start,
                multiline: lcc.spec.multiline.clone(),
                parse: lcc.spec.parse.clone(),
                filters: lcc.spec.filters.clone(),
                outputs: lcc.spec.outputs.clone(),
                targets,
            });
        }
        out.resources.insert(k, summary);
    }

    for lbp in sorted_unique(&input.backups) {
        let k = resource_key(ResourceKind::Backup, &lbp.metadata);
        let mut summary = ResourceSummary {
            generation: generation(&lbp.metadata),
            uid: lbp.metadata.uid.clone(),
            ..Default::default()
        };
        if let Err(e) = validate::validate_backup(&lbp.spec) {
            summary.invalid = Some(Invalid::from(&e));
            out.resources.insert(k, summary);
            continue;
        }
        let source = SourceRef {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            generation: summary.generation,
        };
        let per_node = select(&pods, &k.namespace, &lbp.spec.selector, &mut summary, |ctx| {
            let inputs = inputs(ctx, &lbp.spec.sources)?;
            let values = LayoutValues {
                namespace: &ctx.pod_info.namespace,
                workload: ctx
                    .pod_info
                    .workload
                    .as_ref()
                    .map_or(ctx.container.name.as_str(), |w| w.name.as_str()),
                pod: &ctx.pod_info.name,
                container: &ctx.container.name,
                node: ctx.node,
            };
            // The layout was validated and values are sanitised, so this cannot fail; if it
            // did, the target is left out rather than written somewhere unexpected.
            let destination = render_layout(&lbp.spec.layout, &values).ok()?;
            Some(BackupTarget {
                pod: ctx.pod_info.clone(),
                container: ctx.container_info.clone(),
                inputs,
                destination,
            })
        });
        for (node, targets) in per_node {
            out.log_backups.push(DesiredLogBackup {
                namespace: k.namespace.clone(),
                name: log_backup_name(&k.name, &node),
                policy: k.name.clone(),
                policy_uid: lbp.metadata.uid.clone(),
                node: node.clone(),
            });
            let spec = out.nodes.entry(node.clone()).or_insert_with(empty_spec);
            spec.backups.push(NodeBackup {
                source: source.clone(),
                log_backup: log_backup_name(&k.name, &node),
                interval: lbp.spec.interval.clone(),
                retention: lbp.spec.retention.clone(),
                keep_terminated: lbp.spec.keep_terminated,
                compression: lbp.spec.compression,
                targets,
            });
        }
        out.resources.insert(k, summary);
    }

    for (name, spec) in out.nodes.iter_mut() {
        spec.collections.sort_by(|a, b| a.source.cmp(&b.source));
        spec.backups.sort_by(|a, b| a.source.cmp(&b.source));
        let count: usize = spec.collections.iter().map(|c| c.targets.len()).sum::<usize>()
            + spec.backups.iter().map(|b| b.targets.len()).sum::<usize>();
        spec.target_count = u32::try_from(count).unwrap_or(u32::MAX);
        if let Some(Some(uid)) = nodes.get(name.as_str()) {
            out.node_uids.insert(name.clone(), uid.to_string());
        }
    }
    out.log_backups.sort();
    out
}

fn empty_spec() -> NodeLogConfigSpec {
    NodeLogConfigSpec {
        format_version: FORMAT_VERSION,
        target_count: 0,
        collections: Vec::new(),
        backups: Vec::new(),
    }
}

/// The key of a user resource (objects from files without a namespace are in `default`).
pub fn resource_key(kind: ResourceKind, meta: &ObjectMeta) -> ResourceKey {
    ResourceKey {
        kind,
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// Resources sorted by namespace and name; of duplicates (only possible from files) the
/// first by UID wins.
fn sorted_unique<K: kube::Resource>(items: &[Arc<K>]) -> Vec<&K> {
    let mut v: Vec<&K> = items.iter().map(|a| a.as_ref()).collect();
    let sort_key = |k: &&K| {
        let m = k.meta();
        (m.namespace.clone(), m.name.clone(), m.uid.clone())
    };
    v.sort_by_key(sort_key);
    v.dedup_by(|a, b| a.meta().namespace == b.meta().namespace && a.meta().name == b.meta().name);
    v
}

/// A pod that can be rendered: scheduled onto an existing node, with a UID.
struct PodEntry<'a> {
    pod: &'a Pod,
    name: &'a str,
    uid: &'a str,
    node: &'a str,
    info: PodInfo,
}

/// Pods by namespace, each list sorted by name.
fn index_pods<'a>(
    pods: &'a [Arc<Pod>],
    nodes: &BTreeMap<&str, Option<&str>>,
) -> BTreeMap<&'a str, Vec<PodEntry<'a>>> {
    let mut out: BTreeMap<&str, Vec<PodEntry<'a>>> = BTreeMap::new();
    for pod in pods {
        let m = &pod.metadata;
        let (Some(ns), Some(name), Some(uid)) = (m.namespace.as_deref(), m.name.as_deref(), m.uid.as_deref())
        else {
            continue;
        };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else { continue };
        if !nodes.contains_key(node) {
            continue;
        }
        let info = PodInfo {
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
            workload: owner_workload(pod),
        };
        out.entry(ns).or_default().push(PodEntry { pod, name, uid, node, info });
    }
    for list in out.values_mut() {
        list.sort_by(|a, b| (a.name, a.uid).cmp(&(b.name, b.uid)));
        list.dedup_by(|a, b| a.name == b.name);
    }
    out
}

/// One selected container, with what every target of it needs.
struct TargetCtx<'a> {
    pod: &'a Pod,
    uid: &'a str,
    node: &'a str,
    pod_info: &'a PodInfo,
    container: &'a Container,
    status: Option<&'a ContainerStatus>,
    container_info: ContainerInfo,
    /// Sources that could not be mapped (first few) and their count.
    problems: std::cell::RefCell<(BTreeSet<String>, u32)>,
}

/// Runs `build` for every selected container of the namespace, grouping targets by node.
fn select<T>(
    pods: &BTreeMap<&str, Vec<PodEntry<'_>>>,
    namespace: &str,
    selector: &PodSelector,
    summary: &mut ResourceSummary,
    mut build: impl FnMut(&TargetCtx<'_>) -> Option<T>,
) -> BTreeMap<String, Vec<T>> {
    let mut per_node: BTreeMap<String, Vec<T>> = BTreeMap::new();
    for entry in pods.get(namespace).into_iter().flatten() {
        if !selects_pod(namespace, selector, entry.pod) {
            continue;
        }
        let mut any = false;
        for container in selected_containers(selector, entry.pod) {
            let status = container_status(entry.pod, &container.name);
            let ctx = TargetCtx {
                pod: entry.pod,
                uid: entry.uid,
                node: entry.node,
                pod_info: &entry.info,
                container,
                status,
                container_info: container_info(entry.pod, container, status),
                problems: Default::default(),
            };
            let target = build(&ctx);
            let (problems, count) = ctx.problems.into_inner();
            summary.problem_count += count;
            for p in problems {
                if summary.problems.len() < MAX_PROBLEMS {
                    summary.problems.insert(p);
                }
            }
            if let Some(t) = target {
                per_node.entry(entry.node.to_string()).or_default().push(t);
                any = true;
            }
        }
        if any {
            summary.pods += 1;
            summary.nodes.insert(entry.node.to_string());
        }
    }
    per_node
}

/// The inputs of a container for these sources; sources that cannot be mapped are recorded as
/// problems and left out. `None` when nothing is left.
fn inputs(ctx: &TargetCtx<'_>, sources: &LogSources) -> Option<Vec<Input>> {
    let info = ctx.pod_info;
    let mut problems = ctx.problems.borrow_mut();
    let mut report = |e: mapping::MappingError| {
        problems.1 += 1;
        if problems.0.len() < MAX_PROBLEMS {
            problems.0.insert(format!("{}/{}/{}: {e}", info.namespace, info.name, ctx.container.name));
        }
    };
    let mut out = Vec::with_capacity(1 + sources.files.len());
    let ids = PodIds { namespace: &info.namespace, name: &info.name, uid: ctx.uid };
    match mapping::stdio_input(ids, &ctx.container.name, sources) {
        Ok(Some(i)) => out.push(i),
        Ok(None) => {}
        Err(e) => report(e),
    }
    for f in &sources.files {
        match mapping::file_input(ctx.pod, ctx.uid, ctx.container, ctx.status, &f.path) {
            Ok(i) => out.push(i),
            Err(e) => report(e),
        }
    }
    (!out.is_empty()).then_some(out)
}

fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|s| s.name == name)
}

fn container_info(pod: &Pod, c: &Container, status: Option<&ContainerStatus>) -> ContainerInfo {
    let (runtime, container_id) =
        status.and_then(|s| s.container_id.as_deref()).map(mapping::parse_container_id).unwrap_or_default();
    let pod_done =
        matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    let container_done = status.and_then(|s| s.state.as_ref()).is_some_and(|s| s.terminated.is_some());
    ContainerInfo {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        container_id,
        runtime,
        restart_count: status.map_or(0, |s| s.restart_count),
        terminated: pod_done || container_done,
    }
}

/// Resolved metadata fields: `labels.<key>`, `annotations.<key>`, `env.<NAME>` (literal values
/// only; a value from a Secret or ConfigMap is never copied), then the static fields.
fn fields(ctx: &TargetCtx<'_>, spec: &tailor_crds::collection::MetadataSpec) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let meta = &ctx.pod.metadata;
    for l in &spec.labels {
        if let Some(v) = meta.labels.as_ref().and_then(|m| m.get(l)) {
            out.insert(format!("labels.{l}"), v.clone());
        }
    }
    for a in &spec.annotations {
        if let Some(v) = meta.annotations.as_ref().and_then(|m| m.get(a)) {
            out.insert(format!("annotations.{a}"), v.clone());
        }
    }
    for name in &spec.env {
        let literal = ctx.container.env.iter().flatten().find(|e| &e.name == name && e.value_from.is_none());
        if let Some(v) = literal.and_then(|e| e.value.as_ref()) {
            out.insert(format!("env.{name}"), v.clone());
        }
    }
    out.extend(spec.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// `<policy>-<node>`, shortened with a stable hash when it exceeds the 253 characters of a
/// Kubernetes name.
pub fn log_backup_name(policy: &str, node: &str) -> String {
    const MAX: usize = 253;
    let full = format!("{policy}-{node}");
    if full.len() <= MAX {
        return full;
    }
    let hash =
        full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let head: String = full.chars().take(MAX - 17).collect();
    let mut cut = head.trim_end_matches(['-', '.']).to_string();
    cut.push_str(&format!("-{hash:016x}"));
    cut
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
