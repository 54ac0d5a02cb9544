//! Status of the user resources, computed purely from the rendering and the NodeLogConfigs in
//! the cluster. Recomputing an unchanged situation gives an equal status (conditions keep their
//! transition time), so nothing is written and Argo CD sees no drift.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tailor_crds::node::NodeLogConfig;
use tailor_crds::{SelectionStatus, condition, make_condition};

use crate::render::{ResourceKey, ResourceKind, ResourceSummary};

/// Node names listed in a status at most.
pub const MAX_LISTED_NODES: usize = 100;

/// The nodes of `summary` whose agent acknowledged the configuration rendered from the
/// resource's current generation: the NodeLogConfig's status observed its current
/// metadata generation, and its spec holds the resource at that generation.
pub fn acknowledged_nodes(
    key: &ResourceKey,
    summary: &ResourceSummary,
    cluster: &BTreeMap<&str, &NodeLogConfig>,
) -> Vec<String> {
    summary
        .nodes
        .iter()
        .filter(|node| {
            cluster.get(node.as_str()).is_some_and(|nlc| node_acknowledges(nlc, key, summary.generation))
        })
        .cloned()
        .collect()
}

fn node_acknowledges(nlc: &NodeLogConfig, key: &ResourceKey, generation: i64) -> bool {
    let applied = matches!(
        (nlc.status.as_ref().and_then(|s| s.observed_generation), nlc.metadata.generation),
        (Some(seen), Some(current)) if seen == current
    );
    let holds = |s: &tailor_crds::node::SourceRef| {
        s.namespace == key.namespace && s.name == key.name && s.generation == generation
    };
    applied
        && match key.kind {
            ResourceKind::Collection => nlc.spec.collections.iter().any(|c| holds(&c.source)),
            ResourceKind::Backup => nlc.spec.backups.iter().any(|b| holds(&b.source)),
        }
}

/// The status a resource should have. `previous` is its current status (for transition times).
pub fn selection_status(
    summary: &ResourceSummary,
    acknowledged: &[String],
    previous: Option<&SelectionStatus>,
    now: &Time,
) -> SelectionStatus {
    let prev = previous.map(|p| p.conditions.as_slice()).unwrap_or_default();
    let generation = Some(summary.generation);
    let cond = |type_: &str, status: bool, reason: &str, message: String| {
        make_condition(prev, type_, status, reason, message, generation, now.clone())
    };
    let nodes = summary.nodes.len();
    let acked = acknowledged.len();
    let mut conditions = Vec::with_capacity(3);
    match &summary.invalid {
        Some(invalid) => {
            conditions.push(cond(condition::INVALID, true, &invalid.reason, invalid.message.clone()));
            conditions.push(cond(
                condition::READY,
                false,
                "Invalid",
                "the spec is invalid; nothing is rendered".into(),
            ));
        }
        None => {
            conditions.push(cond(condition::INVALID, false, "Valid", String::new()));
            let ready = if !summary.secret_problems.is_empty() {
                let msg = "outputs cannot be built until their Secrets are usable".to_string();
                cond(condition::READY, false, "SecretUnavailable", msg)
            } else if nodes == 0 {
                cond(condition::READY, true, "NoMatchingPods", "no scheduled pod matches the selector".into())
            } else if acked == nodes {
                cond(condition::READY, true, "Applied", format!("applied on {acked} of {nodes} nodes"))
            } else {
                cond(condition::READY, false, "Pending", format!("applied on {acked} of {nodes} nodes"))
            };
            conditions.push(ready);
            if !summary.secret_problems.is_empty() {
                let list: Vec<&str> = summary.secret_problems.iter().map(String::as_str).collect();
                let msg = format!("output Secret(s) unavailable: {}", list.join("; "));
                conditions.push(cond(condition::DEGRADED, true, "SecretUnavailable", msg));
            } else if summary.problem_count > 0 {
                let first: Vec<&str> = summary.problems.iter().map(String::as_str).collect();
                let msg =
                    format!("{} source(s) could not be mapped: {}", summary.problem_count, first.join("; "));
                conditions.push(cond(condition::DEGRADED, true, "UnmappedSources", msg));
            } else {
                conditions.push(cond(condition::DEGRADED, false, "AllSourcesMapped", String::new()));
            }
        }
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    SelectionStatus {
        observed_generation: generation,
        pods: summary.pods,
        nodes: u32::try_from(nodes).unwrap_or(u32::MAX),
        ready: Some(format!("{acked}/{nodes}")),
        node_names: summary.nodes.iter().take(MAX_LISTED_NODES).cloned().collect(),
        applied_nodes: acknowledged.iter().take(MAX_LISTED_NODES).cloned().collect(),
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use kube::api::ObjectMeta;
    use tailor_crds::node::{NodeCollection, NodeLogConfigSpec, NodeLogConfigStatus};

    use crate::render::Invalid;

    fn key() -> ResourceKey {
        ResourceKey { kind: ResourceKind::Collection, namespace: "shop".into(), name: "web".into() }
    }

    fn summary(nodes: &[&str]) -> ResourceSummary {
        ResourceSummary {
            generation: 3,
            pods: nodes.len() as u32,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    fn nlc(name: &str, source_gen: i64, meta_gen: i64, observed: Option<i64>) -> NodeLogConfig {
        let collection: NodeCollection = serde_json::from_value(serde_json::json!({
            "source": {"namespace": "shop", "name": "web", "generation": source_gen},
            "outputs": [], "targets": []
        }))
        .unwrap();
        let mut n = NodeLogConfig::new(
            name,
            NodeLogConfigSpec {
                format_version: 1,
                target_count: 0,
                collections: vec![collection],
                backups: vec![],
            },
        );
        n.metadata = ObjectMeta { name: Some(name.into()), generation: Some(meta_gen), ..Default::default() };
        n.status = Some(NodeLogConfigStatus { observed_generation: observed, ..Default::default() });
        n
    }

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn acknowledgement_needs_the_current_generation_everywhere() {
        let nodes = [nlc("a", 3, 7, Some(7)), nlc("b", 3, 7, Some(6)), nlc("c", 2, 7, Some(7))];
        let cluster: BTreeMap<&str, &NodeLogConfig> =
            nodes.iter().map(|n| (n.metadata.name.as_deref().unwrap(), n)).collect();
        let acked = acknowledged_nodes(&key(), &summary(&["a", "b", "c", "d"]), &cluster);
        assert_eq!(acked, ["a"]);
    }

    #[test]
    fn ready_pending_and_stable_transition_times() {
        let s = summary(&["a", "b"]);
        let first = selection_status(&s, &["a".into()], None, &at(100));
        assert_eq!(first.ready.as_deref(), Some("1/2"));
        let ready = first.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Pending"));
        // Recomputing later without a change gives an identical status: nothing to write.
        let again = selection_status(&s, &["a".into()], Some(&first), &at(200));
        assert_eq!(again, first);
        // All acknowledged: Ready flips, its transition time moves, Invalid's does not.
        let done = selection_status(&s, &["a".into(), "b".into()], Some(&first), &at(300));
        let ready = done.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.last_transition_time.clone()), ("True", at(300)));
        let invalid = done.conditions.iter().find(|c| c.type_ == "Invalid").unwrap();
        assert_eq!(invalid.last_transition_time, at(100));
        assert_eq!(done.observed_generation, Some(3));
        assert_eq!(done.node_names, ["a", "b"]);
        assert_eq!(done.applied_nodes, ["a", "b"]);
    }

    #[test]
    fn invalid_resources_say_why() {
        let s = ResourceSummary {
            generation: 2,
            invalid: Some(Invalid { reason: "InvalidRegex".into(), message: "bad regex".into() }),
            ..Default::default()
        };
        let st = selection_status(&s, &[], None, &at(1));
        let types: Vec<(&str, &str, &str)> =
            st.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str())).collect();
        assert_eq!(types, [("Invalid", "True", "InvalidRegex"), ("Ready", "False", "Invalid")]);
        assert_eq!((st.pods, st.nodes, st.ready.as_deref()), (0, 0, Some("0/0")));
    }

    #[test]
    fn an_unusable_secret_degrades_and_is_not_ready() {
        let mut s = summary(&["a"]);
        s.problem_count = 1;
        s.secret_problems.insert("Secret es-creds not found".into());
        let st = selection_status(&s, &["a".into()], None, &at(1));
        let get = |t: &str| st.conditions.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(
            (get("Ready").status.as_str(), get("Ready").reason.as_str()),
            ("False", "SecretUnavailable")
        );
        let d = get("Degraded");
        assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", "SecretUnavailable"));
        assert!(d.message.contains("Secret es-creds not found"), "{}", d.message);
    }

    #[test]
    fn unmapped_sources_degrade() {
        let mut s = summary(&["a"]);
        s.problem_count = 3;
        s.problems.insert("shop/web-1/app: on a PVC".into());
        let st = selection_status(&s, &["a".into()], None, &at(1));
        let d = st.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!(d.status, "True");
        assert!(d.message.starts_with("3 source(s)"), "{}", d.message);
    }
}
