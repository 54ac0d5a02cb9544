//! CRD generation: the one source of the YAML under `crds/` and in the Helm chart.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{LogBackup, LogBackupPolicy, LogCollectionConfig, NodeLogConfig};

/// Every CRD of the API, in a fixed order, as the API server should receive it.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    [LogCollectionConfig::crd(), LogBackupPolicy::crd(), LogBackup::crd(), NodeLogConfig::crd()]
        .into_iter()
        .map(kubernetes_formats)
        .collect()
}

/// schemars describes Rust's unsigned integers with `format: uint32`/`uint64`, which the API
/// server does not know (it warns on every apply). They become `int64` with `minimum: 0`.
fn kubernetes_formats(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                let unsigned =
                    map.get("format").and_then(|f| f.as_str()).is_some_and(|f| f.starts_with("uint"));
                if unsigned {
                    map.insert("format".into(), "int64".into());
                    map.entry("minimum").or_insert(0.into());
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD always serialises");
    walk(&mut value);
    serde_json::from_value(value).expect("only formats changed")
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
    fn no_format_unknown_to_the_api_server() {
        assert!(!crds_yaml().contains("format: uint"));
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
