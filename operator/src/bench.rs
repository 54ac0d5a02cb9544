//! `tailor-operator bench`: renders a large synthetic cluster and reports time and peak memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, EmptyDirVolumeSource, Pod, PodSpec, PodStatus, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::ObjectMeta;
use tailor_crds::collection::LogCollectionConfigSpec;
use tailor_crds::{LogBackupPolicy, LogCollectionConfig};

use crate::plan::{Observed, desired_objects, plan};
use crate::render::{ClusterInput, NodeInfo, render};

/// Size of the synthetic cluster.
#[derive(Clone, Copy, Debug)]
pub struct BenchSize {
    pub nodes: usize,
    pub pods: usize,
    pub collections: usize,
    pub policies: usize,
    pub namespaces: usize,
}

/// A cluster shaped like a real one: Deployment pods spread over nodes, an app sidecar on every
/// third pod, an emptyDir log volume, each collection selecting one app of its namespace and
/// each policy backing up a whole namespace.
pub fn synthetic_cluster(size: BenchSize) -> ClusterInput {
    let namespaces = size.namespaces.max(1);
    let nodes = size.nodes.max(1);
    let mut input = ClusterInput {
        nodes: (0..nodes)
            .map(|i| NodeInfo { name: node_name(i), uid: Some(format!("node-uid-{i}")) })
            .collect(),
        ..Default::default()
    };
    for j in 0..size.pods {
        let ns = format!("team-{:03}", j % namespaces);
        let app = format!("app-{}", (j / namespaces) % 10);
        input.pods.push(Arc::new(pod(&ns, &app, j, &node_name(spread(j) % nodes))));
    }
    for k in 0..size.collections {
        let ns = format!("team-{:03}", k % namespaces);
        let spec: LogCollectionConfigSpec = serde_json::from_value(serde_json::json!({
            "selector": {"includeLabels": {"app": format!("app-{}", (k / namespaces) % 10)}},
            "sources": {"files": [{"path": "/var/log/app/*.log"}]},
            "metadata": {"labels": ["app"]},
            "outputs": [{"name": "out", "type": "file"}],
        }))
        .expect("a literal collection spec");
        let mut lcc = LogCollectionConfig::new(&format!("collect-{k}"), spec);
        lcc.metadata.namespace = Some(ns);
        lcc.metadata.uid = Some(format!("lcc-uid-{k}"));
        lcc.metadata.generation = Some(1);
        input.collections.push(Arc::new(lcc));
    }
    for k in 0..size.policies {
        let ns = format!("team-{:03}", k % namespaces);
        let spec =
            serde_json::from_value(serde_json::json!({"selector": {"excludeLabels": {"backup": "off"}}}))
                .expect("a literal policy spec");
        let mut lbp = LogBackupPolicy::new(&format!("backup-{k}"), spec);
        lbp.metadata.namespace = Some(ns);
        lbp.metadata.uid = Some(format!("lbp-uid-{k}"));
        lbp.metadata.generation = Some(1);
        input.backups.push(Arc::new(lbp));
    }
    input
}

/// A stable pseudo-random spread of pods over nodes (the scheduler's job).
fn spread(j: usize) -> usize {
    let mut x = (j as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) as usize
}

fn node_name(i: usize) -> String {
    format!("node-{i:04}")
}

fn pod(ns: &str, app: &str, j: usize, node: &str) -> Pod {
    let hash = format!("{:x}", 0x5f00_0000_u64 + (j as u64 % 97));
    let name = format!("{app}-{hash}-{j:06x}");
    let mut containers = vec![container("app")];
    if j.is_multiple_of(3) {
        containers.push(container("sidecar"));
    }
    let statuses = containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            container_id: Some(format!("containerd://{j:012x}{}", c.name.len())),
            restart_count: (j % 4) as i32,
            ..Default::default()
        })
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns.into()),
            uid: Some(format!("pod-uid-{j}")),
            labels: Some(BTreeMap::from([
                ("app".to_string(), app.to_string()),
                ("pod-template-hash".to_string(), hash.clone()),
            ])),
            owner_references: Some(vec![OwnerReference {
                kind: "ReplicaSet".into(),
                name: format!("{app}-{hash}"),
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers,
            volumes: Some(vec![Volume {
                name: "logs".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(statuses),
            ..Default::default()
        }),
    }
}

fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(format!("registry.example.com/{name}:1.0")),
        volume_mounts: Some(vec![VolumeMount {
            name: "logs".into(),
            mount_path: "/var/log/app".into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// Figures of one benchmark run.
#[derive(Debug)]
pub struct BenchReport {
    pub build: Duration,
    pub renders: Vec<Duration>,
    pub diff_unchanged: Duration,
    pub collection_targets: u64,
    pub backup_targets: u64,
    pub node_configs: usize,
    pub log_backups: usize,
    pub yaml_bytes: usize,
    pub peak_rss_kib: Option<u64>,
}

/// Builds the cluster, renders it `iterations` times, diffs it against itself.
pub fn run(size: BenchSize, iterations: usize) -> BenchReport {
    let started = Instant::now();
    let input = synthetic_cluster(size);
    let build = started.elapsed();
    let mut renders = Vec::new();
    let mut rendered = render(&input);
    for _ in 0..iterations.max(1) {
        let t = Instant::now();
        rendered = render(&input);
        renders.push(t.elapsed());
    }
    renders.sort();
    let (nlcs, lbs) = desired_objects(&rendered);
    let yaml_bytes = nlcs.iter().map(|n| serde_yaml_ng::to_string(n).map_or(0, |s| s.len())).sum();
    let observed = Observed {
        node_configs: nlcs.into_iter().map(Arc::new).collect(),
        log_backups: lbs.iter().cloned().map(Arc::new).collect(),
        mirrors: Vec::new(),
    };
    let t = Instant::now();
    let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let diff = plan(&input, &rendered, &observed, &BTreeMap::new(), &now);
    let diff_unchanged = t.elapsed();
    debug_assert!(diff.apply_node_configs.is_empty());
    let (collection_targets, backup_targets) = rendered.target_counts();
    BenchReport {
        build,
        renders,
        diff_unchanged,
        collection_targets,
        backup_targets,
        node_configs: rendered.nodes.len(),
        log_backups: lbs.len(),
        yaml_bytes,
        peak_rss_kib: peak_rss_kib(),
    }
}

/// `VmHWM` of this process, in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_synthetic_cluster_renders_everything() {
        let size = BenchSize { nodes: 10, pods: 300, collections: 30, policies: 10, namespaces: 10 };
        let r = run(size, 1);
        // Every pod is backed up (one policy per namespace), each with its containers.
        assert_eq!(r.backup_targets, 300 + 100);
        // Each collection selects one of ten apps of its namespace, without the sidecar filter.
        assert!(r.collection_targets > 0);
        assert_eq!(r.node_configs, 10);
        // One LogBackup per (policy, node) with pods of the policy's namespace.
        let pairs: std::collections::BTreeSet<(usize, usize)> =
            (0..300).map(|j| (j % 10, spread(j) % 10)).collect();
        assert_eq!(r.log_backups, pairs.len());
    }
}
