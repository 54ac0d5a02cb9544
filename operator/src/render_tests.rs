//! Rendering: the fixture cluster end to end, isolation of invalid resources, node removal,
//! and determinism over random pod sets in random order.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec, PodStatus};
use kube::api::ObjectMeta;
use proptest::prelude::*;
use tailor_crds::node::{HostRootKind, InputKind, NodeLogConfigSpec};
use tailor_crds::{LogBackupPolicy, LogCollectionConfig};

use super::*;
use crate::files::parse_objects;
use crate::files::tests::FIXTURE;
use crate::plan::desired_objects;

fn fixture() -> ClusterInput {
    parse_objects(FIXTURE, "fixture").unwrap()
}

fn key(kind: ResourceKind, name: &str) -> ResourceKey {
    ResourceKey { kind, namespace: "shop".into(), name: name.into() }
}

fn yaml(r: &RenderedCluster) -> String {
    let (nlcs, lbs) = desired_objects(r);
    let mut out = serde_yaml_ng::to_string(&nlcs).unwrap();
    out.push_str(&serde_yaml_ng::to_string(&lbs).unwrap());
    out
}

#[test]
fn the_fixture_renders_as_designed() {
    let r = render(&fixture());
    assert_eq!(r.nodes.keys().collect::<Vec<_>>(), ["node-a", "node-b"]);
    let a = &r.nodes["node-a"];
    assert_eq!(a.format_version, tailor_crds::node::FORMAT_VERSION);
    // The pod of another namespace with the same labels is not selected; istio-proxy is excluded.
    let web = &a.collections[0];
    assert_eq!((web.source.name.as_str(), web.source.generation), ("web", 2));
    assert_eq!(web.targets.len(), 1);
    let t = &web.targets[0];
    assert_eq!(t.key(), "shop/web-7d4b9c8f6-x2x4p/app");
    assert_eq!(
        t.pod.workload.as_ref().map(|w| (w.kind.as_str(), w.name.as_str())),
        Some(("Deployment", "web"))
    );
    assert_eq!(t.container.container_id.as_deref(), Some("4f1c9a0d2b7e"));
    assert_eq!((t.container.restart_count, t.container.terminated), (1, false));
    let kinds: Vec<(InputKind, HostRootKind)> = t.inputs.iter().map(|i| (i.kind, i.root.kind)).collect();
    assert_eq!(
        kinds,
        [
            (InputKind::Stdio, HostRootKind::PodLogs),
            (InputKind::File, HostRootKind::EmptyDir),
            (InputKind::File, HostRootKind::ContainerRootfs),
        ],
        "the file on a PVC is left out"
    );
    // Literal env only: the Secret-backed DB_PASSWORD is never copied.
    let fields: Vec<(&str, &str)> = t.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        fields,
        [
            ("annotations.team.example.com/owner", "checkout"),
            ("cluster", "test"),
            ("env.APP_ENV", "production"),
            ("labels.app", "web"),
            ("labels.version", "1.4.2"),
        ]
    );
    // The pod that succeeded stays rendered, marked terminated, until its object is deleted.
    let b = &r.nodes["node-b"];
    let done = &b.collections[0].targets[0];
    assert!(done.container.terminated);
    assert_eq!(done.inputs[1].root.host_dir.as_deref(), Some("/srv/logs"));
    assert_eq!(done.inputs[1].path, "web/*.log");
    assert_eq!(b.backups[0].targets[0].destination, "shop/web/web-7d4b9c8f6-q8k2m/app");
    assert_eq!(b.backups[0].log_backup, "web-backup-node-b");
    assert_eq!(b.target_count, 2);

    let names: Vec<&str> = r.log_backups.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["web-backup-node-a", "web-backup-node-b"]);
    assert_eq!(r.node_uids["node-a"], "0b0b0b0b-0000-4000-8000-00000000000a");

    let web = &r.resources[&key(ResourceKind::Collection, "web")];
    assert_eq!((web.pods, web.nodes.len()), (2, 2));
    assert_eq!(web.problem_count, 1, "{:?}", web.problems);
    assert!(
        web.problems.iter().next().unwrap().contains("web-data")
            || web.problems.iter().next().unwrap().contains("data")
    );
    let broken = &r.resources[&key(ResourceKind::Collection, "broken")];
    assert_eq!(broken.invalid.as_ref().unwrap().reason, "InvalidRegex");
    assert_eq!(broken.generation, 5);
}

#[test]
fn an_invalid_resource_hurts_nothing_else() {
    let with = fixture();
    let mut without = with.clone();
    without.collections.retain(|c| c.metadata.name.as_deref() != Some("broken"));
    let (a, b) = (render(&with), render(&without));
    assert_eq!(a.nodes, b.nodes);
    assert_eq!(a.log_backups, b.log_backups);
    assert!(a.nodes.values().all(|n| n.collections.iter().all(|c| c.source.name != "broken")));
}

#[test]
fn a_gone_node_renders_nothing() {
    let mut input = fixture();
    input.nodes.retain(|n| n.name != "node-b");
    let r = render(&input);
    assert_eq!(r.nodes.keys().collect::<Vec<_>>(), ["node-a"]);
    assert_eq!(r.log_backups.len(), 1);
    assert_eq!(r.resources[&key(ResourceKind::Collection, "web")].pods, 1);
}

#[test]
fn malformed_resources_are_invalid() {
    let text = "apiVersion: logging.tailor.dev/v1alpha1\nkind: LogBackupPolicy\n\
                metadata: {name: odd, namespace: shop, generation: 3}\nspec: {keepTerminated: maybe}\n";
    let mut input = fixture();
    input.malformed.extend(parse_objects(text, "t").unwrap().malformed);
    let r = render(&input);
    let odd = &r.resources[&key(ResourceKind::Backup, "odd")];
    assert_eq!(odd.invalid.as_ref().unwrap().reason, "Malformed");
    assert_eq!(odd.generation, 3);
    assert_eq!(r.nodes, render(&fixture()).nodes);
}

#[test]
fn long_log_backup_names_are_shortened_stably() {
    let policy = "p".repeat(200);
    let node = "n".repeat(200);
    let a = log_backup_name(&policy, &node);
    assert!(a.len() <= 253);
    assert_eq!(a, log_backup_name(&policy, &node));
    assert_ne!(a, log_backup_name(&policy, &"m".repeat(200)));
    assert_eq!(log_backup_name("web", "node-a"), "web-node-a");
}

// ---- determinism over random clusters ----

#[derive(Clone, Debug)]
struct PodGen {
    ns: usize,
    app: usize,
    node: usize,
    containers: usize,
    terminated: bool,
}

fn pod_gen() -> impl Strategy<Value = PodGen> {
    (0..2usize, 0..3usize, 0..4usize, 1..4usize, any::<bool>())
        .prop_map(|(ns, app, node, containers, terminated)| PodGen { ns, app, node, containers, terminated })
}

fn build(pods: &[PodGen]) -> ClusterInput {
    let mut input = ClusterInput {
        nodes: (0..3).map(|i| NodeInfo { name: format!("node-{i}"), uid: Some(format!("u{i}")) }).collect(),
        ..Default::default()
    };
    for (i, g) in pods.iter().enumerate() {
        let containers: Vec<Container> =
            (0..g.containers).map(|c| Container { name: format!("c{c}"), ..Default::default() }).collect();
        let statuses = containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                container_id: Some(format!("containerd://{i}{}", c.name)),
                ..Default::default()
            })
            .collect();
        input.pods.push(Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(format!("pod-{i}")),
                namespace: Some(format!("ns-{}", g.ns)),
                uid: Some(format!("uid-{i}")),
                labels: Some([("app".to_string(), format!("a{}", g.app))].into()),
                ..Default::default()
            },
            // node-3 does not exist: such pods are never rendered.
            spec: Some(PodSpec {
                node_name: Some(format!("node-{}", g.node)),
                containers,
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(if g.terminated { "Succeeded" } else { "Running" }.into()),
                container_statuses: Some(statuses),
                ..Default::default()
            }),
        }));
    }
    for ns in 0..2 {
        for app in 0..2 {
            let spec = serde_json::from_value(serde_json::json!({
                "selector": {"includeLabels": {"app": format!("a{app}")}, "containers": {"exclude": ["c2"]}},
                "sources": {"files": [{"path": "/var/log/*.log"}]},
                "outputs": [{"name": "o", "type": "stdout"}]
            }))
            .unwrap();
            let mut lcc = LogCollectionConfig::new(&format!("lcc-{app}"), spec);
            lcc.metadata.namespace = Some(format!("ns-{ns}"));
            input.collections.push(Arc::new(lcc));
        }
        let spec = serde_json::from_value(serde_json::json!({"selector": {"excludeLabels": {"app": "a2"}}}))
            .unwrap();
        let mut lbp = LogBackupPolicy::new("backup", spec);
        lbp.metadata.namespace = Some(format!("ns-{ns}"));
        lbp.metadata.uid = Some(format!("lbp-{ns}"));
        input.backups.push(Arc::new(lbp));
    }
    input
}

fn check_sorted(spec: &NodeLogConfigSpec) -> Result<(), TestCaseError> {
    for c in &spec.collections {
        let keys: Vec<String> = c.targets.iter().map(|t| t.key()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        prop_assert_eq!(keys, sorted);
    }
    let sources: Vec<_> = spec.collections.iter().map(|c| c.source.clone()).collect();
    let mut sorted = sources.clone();
    sorted.sort();
    prop_assert_eq!(sources, sorted);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Same objects, any order: byte-identical output.
    #[test]
    fn rendering_is_deterministic(pods in prop::collection::vec(pod_gen(), 0..25), seed in any::<u64>()) {
        let input = build(&pods);
        let first = render(&input);
        let mut shuffled = input.clone();
        shuffle(&mut shuffled.pods, seed);
        shuffle(&mut shuffled.collections, seed.rotate_left(7));
        shuffle(&mut shuffled.backups, seed.rotate_left(13));
        shuffle(&mut shuffled.nodes, seed.rotate_left(21));
        let second = render(&shuffled);
        prop_assert_eq!(yaml(&first), yaml(&second));
        prop_assert_eq!(&first, &second);
        for spec in first.nodes.values() {
            check_sorted(spec)?;
            prop_assert!(spec.target_count > 0);
        }
    }

    /// Every selected container of a pod on an existing node is rendered exactly once per
    /// resource, on the pod's node; nothing else is.
    #[test]
    fn targets_match_the_selection(pods in prop::collection::vec(pod_gen(), 0..25)) {
        let r = render(&build(&pods));
        let expected_backup: usize = pods.iter().filter(|g| g.node < 3 && g.app != 2).map(|g| g.containers).sum();
        let expected_collect: usize =
            pods.iter().filter(|g| g.node < 3 && g.app < 2).map(|g| g.containers.min(2)).sum();
        let (c, b) = r.target_counts();
        prop_assert_eq!(b as usize, expected_backup);
        prop_assert_eq!(c as usize, expected_collect);
        for (node, spec) in &r.nodes {
            for t in spec.collections.iter().flat_map(|c| &c.targets) {
                let i: usize = t.pod.name.trim_start_matches("pod-").parse().unwrap();
                prop_assert_eq!(format!("node-{}", pods[i].node), node.clone());
                prop_assert_eq!(t.container.terminated, pods[i].terminated);
            }
        }
    }
}

/// A seeded Fisher-Yates shuffle (no extra dependency).
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let j = (seed >> 33) as usize % (i + 1);
        v.swap(i, j);
    }
}
