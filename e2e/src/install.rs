//! Installs what a user installs: the CRDs from `crds/` and the RBAC objects as the install's
//! kustomize base renders them, with `kubectl apply --server-side`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::kubectl::{self, Kubectl};
use crate::paths::repo_root;

/// Field manager of the install (as a person running `kubectl apply --server-side` would be).
pub const INSTALL_MANAGER: &str = "tailor-install";

/// The CRDs every suite needs.
pub const CRD_NAMES: [&str; 4] = [
    "logcollectionconfigs.logging.tailor.dev",
    "logbackuppolicies.logging.tailor.dev",
    "logbackups.logging.tailor.dev",
    "nodelogconfigs.logging.tailor.dev",
];

/// Kinds of the install that make sense without a kubelet: identities, permissions and admission
/// policies. The operator's Deployment and the agents' DaemonSet are left out because the
/// suites run them as processes.
const RBAC_KINDS: [&str; 8] = [
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// Applies `crds/tailor.crds.yaml` and waits until every CRD is established.
pub fn install_crds(kubectl: &Kubectl) -> Result<()> {
    let path = repo_root().join("crds/tailor.crds.yaml");
    let yaml = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    kubectl.apply_server_side(&yaml, INSTALL_MANAGER).context("applying the CRDs")?;
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    let names: Vec<String> = CRD_NAMES.iter().map(|n| format!("crd/{n}")).collect();
    args.extend(names.iter().map(String::as_str));
    kubectl.run(&args).context("waiting for the CRDs to be established")?;
    Ok(())
}

/// Where the install's kustomize bases may live (the whole install first) (`TAILOR_E2E_RBAC_DIR`
/// overrides).
fn rbac_candidates() -> Vec<PathBuf> {
    let root = repo_root();
    let overridden = std::env::var_os("TAILOR_E2E_RBAC_DIR").map(PathBuf::from);
    overridden
        .into_iter()
        .chain(["config/default", "config/rbac", "config/install"].iter().map(|p| root.join(p)))
        .filter(|p| p.join("kustomization.yaml").is_file() || p.join("kustomization.yml").is_file())
        .collect()
}

/// The install's RBAC objects as its kustomize base renders them (only the kinds in
/// `RBAC_KINDS`), and the folder they came from.
pub fn rbac_manifests() -> Result<(String, PathBuf)> {
    let Some(dir) = rbac_candidates().into_iter().next() else {
        bail!(
            "needs the install's RBAC: no kustomization under config/default, config/rbac or config/install"
        );
    };
    let rendered = kubectl::kustomize(&dir)?;
    let mut kept = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&rendered) {
        let value: serde_json::Value =
            serde::Deserialize::deserialize(doc).context("parsing kustomize output")?;
        if value.is_null() {
            continue;
        }
        if RBAC_KINDS.contains(&value["kind"].as_str().unwrap_or("")) {
            kept.push(value);
        }
    }
    if !kept.iter().any(|d| d["kind"] == "ClusterRole") {
        bail!("needs the install's RBAC: {} renders no ClusterRole", dir.display());
    }
    // As one JSON List: re-serialised YAML could turn strings such as `off` into booleans.
    Ok((serde_json::json!({"apiVersion": "v1", "kind": "List", "items": kept}).to_string(), dir))
}

/// Applies the install's RBAC objects.
pub fn install_rbac(kubectl: &Kubectl) -> Result<()> {
    let (yaml, dir) = rbac_manifests()?;
    kubectl
        .apply_server_side(&yaml, INSTALL_MANAGER)
        .with_context(|| format!("applying the RBAC of {}", dir.display()))?;
    Ok(())
}
