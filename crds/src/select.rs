//! Label and container selection semantics, shared by the operator (pods) and the agent's
//! Docker mode (containers), so that both select exactly alike.

use std::collections::BTreeMap;

use crate::common::{ContainerFilter, LabelOperator, LabelRequirement, PodSelector};

impl PodSelector {
    /// Whether an object with these labels is selected: every include label matches, every
    /// expression holds, and no exclude label matches (exclude wins).
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        let included = self.include_labels.iter().all(|(k, v)| labels.get(k) == Some(v));
        let excluded =
            self.exclude_labels.iter().any(|(k, v)| labels.get(k).is_some_and(|have| v == "*" || have == v));
        included && !excluded && self.match_expressions.iter().all(|r| r.holds(labels))
    }
}

impl LabelRequirement {
    /// Whether the requirement holds for these labels (Kubernetes semantics: `NotIn` holds when
    /// the label is absent).
    pub fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            LabelOperator::In => value.is_some_and(|v| self.values.contains(v)),
            LabelOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl ContainerFilter {
    /// Whether a container of this name is selected (exclude wins; empty include allows all).
    pub fn allows(&self, name: &str) -> bool {
        let included = self.include.is_empty() || self.include.iter().any(|c| c == name);
        included && !self.exclude.iter().any(|c| c == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn selector(include: &[(&str, &str)], exclude: &[(&str, &str)]) -> PodSelector {
        PodSelector { include_labels: labels(include), exclude_labels: labels(exclude), ..Default::default() }
    }

    #[test]
    fn include_needs_every_label_and_exclude_wins() {
        let s = selector(&[("app", "web"), ("tier", "fe")], &[("logs", "off")]);
        assert!(s.matches_labels(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!s.matches_labels(&labels(&[("app", "web")])));
        assert!(!s.matches_labels(&labels(&[("app", "web"), ("tier", "fe"), ("logs", "off")])));
        assert!(s.matches_labels(&labels(&[("app", "web"), ("tier", "fe"), ("logs", "on")])));
    }

    #[test]
    fn wildcard_exclude_matches_any_value() {
        let s = selector(&[], &[("canary", "*")]);
        assert!(!s.matches_labels(&labels(&[("canary", "")])));
        assert!(s.matches_labels(&labels(&[])));
    }

    #[test]
    fn set_based_expressions() {
        let req = |op, vals: &[&str]| LabelRequirement {
            key: "env".into(),
            operator: op,
            values: vals.iter().map(|v| v.to_string()).collect(),
        };
        let prod = labels(&[("env", "prod")]);
        let none = labels(&[]);
        assert!(req(LabelOperator::In, &["prod", "stg"]).holds(&prod));
        assert!(!req(LabelOperator::In, &["prod"]).holds(&none));
        assert!(!req(LabelOperator::NotIn, &["prod"]).holds(&prod));
        assert!(req(LabelOperator::NotIn, &["prod"]).holds(&none));
        assert!(req(LabelOperator::Exists, &[]).holds(&prod));
        assert!(req(LabelOperator::DoesNotExist, &[]).holds(&none));
    }

    #[test]
    fn containers() {
        let f = ContainerFilter { include: vec![], exclude: vec!["istio-proxy".into()] };
        assert!(f.allows("app"));
        assert!(!f.allows("istio-proxy"));
        let f = ContainerFilter { include: vec!["app".into()], exclude: vec!["app".into()] };
        assert!(!f.allows("app"));
    }
}
