//! Which pods and containers a user resource selects.
//!
//! A namespaced resource only ever selects pods of its own namespace; label semantics are the
//! shared ones of `tailor_crds::select` (exclude wins).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use tailor_crds::PodSelector;

/// Whether `selector`, declared in `namespace`, selects this pod (containers aside).
pub fn selects_pod(namespace: &str, selector: &PodSelector, pod: &Pod) -> bool {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    pod.metadata.namespace.as_deref() == Some(namespace)
        && selector.matches_labels(pod.metadata.labels.as_ref().unwrap_or(&EMPTY))
}

/// The pod's containers (init and sidecar containers included, ephemeral ones not) that the
/// selector's container filter allows, sorted by name.
pub fn selected_containers<'a>(selector: &PodSelector, pod: &'a Pod) -> Vec<&'a Container> {
    let Some(spec) = pod.spec.as_ref() else { return Vec::new() };
    let mut out: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|c| selector.containers.allows(&c.name))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use kube::api::ObjectMeta;
    use proptest::prelude::*;
    use tailor_crds::{ContainerFilter, LabelOperator, LabelRequirement};

    fn pod(ns: &str, labels: &[(&str, &str)], containers: &[&str], init: &[&str]) -> Pod {
        let c = |n: &&str| Container { name: n.to_string(), ..Default::default() };
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some(ns.into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: containers.iter().map(c).collect(),
                init_containers: Some(init.iter().map(c).collect()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn selector(include: &[(&str, &str)], exclude: &[(&str, &str)]) -> PodSelector {
        let m = |p: &[(&str, &str)]| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        PodSelector { include_labels: m(include), exclude_labels: m(exclude), ..Default::default() }
    }

    #[test]
    fn only_the_own_namespace_is_selected() {
        let s = selector(&[("app", "web")], &[]);
        assert!(selects_pod("team-a", &s, &pod("team-a", &[("app", "web")], &["c"], &[])));
        assert!(!selects_pod("team-b", &s, &pod("team-a", &[("app", "web")], &["c"], &[])));
        // An empty selector selects every pod, still only of its namespace.
        assert!(!selects_pod("team-b", &PodSelector::default(), &pod("team-a", &[], &["c"], &[])));
    }

    #[test]
    fn include_exclude_and_expressions() {
        let mut s = selector(&[("app", "web")], &[("logs", "off")]);
        s.match_expressions.push(LabelRequirement {
            key: "env".into(),
            operator: LabelOperator::In,
            values: vec!["prod".into(), "stg".into()],
        });
        assert!(selects_pod("n", &s, &pod("n", &[("app", "web"), ("env", "prod")], &["c"], &[])));
        assert!(!selects_pod("n", &s, &pod("n", &[("app", "web"), ("env", "dev")], &["c"], &[])));
        assert!(!selects_pod("n", &s, &pod("n", &[("app", "web")], &["c"], &[])));
        assert!(!selects_pod(
            "n",
            &s,
            &pod("n", &[("app", "web"), ("env", "prod"), ("logs", "off")], &["c"], &[])
        ));
        let no_labels = Pod {
            metadata: ObjectMeta { namespace: Some("n".into()), ..Default::default() },
            ..pod("n", &[], &[], &[])
        };
        assert!(selects_pod("n", &PodSelector::default(), &no_labels));
    }

    #[test]
    fn containers_are_filtered_and_sorted_with_init_containers() {
        let p = pod("n", &[], &["web", "istio-proxy", "app"], &["migrate"]);
        let mut s = PodSelector::default();
        let names =
            |s: &PodSelector| selected_containers(s, &p).iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&s), ["app", "istio-proxy", "migrate", "web"]);
        s.containers = ContainerFilter { include: vec![], exclude: vec!["istio-proxy".into()] };
        assert_eq!(names(&s), ["app", "migrate", "web"]);
        s.containers =
            ContainerFilter { include: vec!["web".into(), "app".into()], exclude: vec!["app".into()] };
        assert_eq!(names(&s), ["web"]);
    }

    fn labels_strategy() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map("[abc]", "[xy]", 0..4)
    }

    proptest! {
        /// Exclude wins over everything: a pod carrying an excluded label is never selected.
        #[test]
        fn exclude_always_wins(include in labels_strategy(), exclude in labels_strategy(), mut labels in labels_strategy()) {
            let s = PodSelector { include_labels: include.clone(), exclude_labels: exclude.clone(), ..Default::default() };
            let mut p = pod("n", &[], &["c"], &[]);
            p.metadata.labels = Some(labels.clone());
            let selected = selects_pod("n", &s, &p);
            let has_excluded = exclude.iter().any(|(k, v)| labels.get(k) == Some(v));
            let has_included = include.iter().all(|(k, v)| labels.get(k) == Some(v));
            prop_assert_eq!(selected, has_included && !has_excluded);
            // Adding an excluded pair always deselects.
            if let Some((k, v)) = exclude.iter().next() {
                labels.insert(k.clone(), v.clone());
                p.metadata.labels = Some(labels);
                prop_assert!(!selects_pod("n", &s, &p));
            }
        }

        /// Whatever the labels, another namespace is never selected.
        #[test]
        fn namespaces_are_isolated(labels in labels_strategy(), ns in "[ab]", pod_ns in "[ab]") {
            let mut p = pod(&pod_ns, &[], &["c"], &[]);
            p.metadata.labels = Some(labels);
            if ns != pod_ns {
                prop_assert!(!selects_pod(&ns, &PodSelector::default(), &p));
            } else {
                prop_assert!(selects_pod(&ns, &PodSelector::default(), &p));
            }
        }
    }
}
