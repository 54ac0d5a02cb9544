//! CRD generation: the one source of the YAML under `crds/` and in the Helm chart.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{LogBackup, LogBackupPolicy, LogCollectionConfig, NodeLogConfig};

/// Every CRD of the API, in a fixed order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![LogCollectionConfig::crd(), LogBackupPolicy::crd(), LogBackup::crd(), NodeLogConfig::crd()]
}

/// All CRDs as one multi-document YAML stream (what `tailor-operator crds` prints).
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd).expect("a CRD always serialises"));
    }
    out
}

/// Path of the committed YAML, relative to the workspace root.
pub const COMMITTED_PATH: &str = "crds/tailor.crds.yaml";

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed YAML is generated; regenerate with `cargo run -p tailor-operator -- crds > crds/tailor.crds.yaml`.
    #[test]
    fn committed_crds_match_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tailor.crds.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == crds_yaml(),
            "{path} drifted from the types: run `cargo run -p tailor-operator -- crds > crds/tailor.crds.yaml`"
        );
    }

    #[test]
    fn every_crd_is_in_the_tailor_category_with_a_status_subresource() {
        for crd in all_crds() {
            assert_eq!(crd.spec.group, crate::GROUP);
            assert!(crd.spec.names.categories.as_ref().unwrap().contains(&"tailor".to_string()));
            let v = &crd.spec.versions[0];
            assert!(v.subresources.as_ref().unwrap().status.is_some(), "{}", crd.spec.names.kind);
        }
    }
}
