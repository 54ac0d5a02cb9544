//! Kubeconfigs that impersonate a ServiceAccount (and, for agents, the node its token would be
//! bound to), so that the processes under test go through the real RBAC and admission policies
//! exactly as they would in the cluster.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// Namespace of the install.
pub const SYSTEM_NAMESPACE: &str = "tailor-system";
/// The operator's ServiceAccount user.
pub const OPERATOR_USER: &str = "system:serviceaccount:tailor-system:tailor-operator";
/// The agents' ServiceAccount user.
pub const AGENT_USER: &str = "system:serviceaccount:tailor-system:tailor-agent";
/// The user extra a node-bound ServiceAccount token carries.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// Who a process acts as.
#[derive(Clone, Debug)]
pub enum Identity {
    Operator,
    Agent { node: String },
}

impl Identity {
    pub fn user(&self) -> &'static str {
        match self {
            Identity::Operator => OPERATOR_USER,
            Identity::Agent { .. } => AGENT_USER,
        }
    }
}

/// Writes to `dest` a copy of the admin kubeconfig `admin` (its current context only) whose user
/// impersonates `identity`.
/// A client from a kubeconfig file. It pins rustls to ring first: in a workspace test build a
/// test-only dependency also enables aws-lc-rs, and rustls then cannot pick a provider by itself.
pub async fn client(path: &Path) -> Result<kube::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(path)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

pub fn write_impersonating(admin: &Path, identity: &Identity, dest: &Path) -> Result<()> {
    let text = std::fs::read_to_string(admin).with_context(|| format!("reading {}", admin.display()))?;
    let config: Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", admin.display()))?;
    let derived = impersonating(&config, identity)?;
    std::fs::write(dest, serde_json::to_vec_pretty(&derived)?)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

/// The pure part of [`write_impersonating`].
pub fn impersonating(config: &Value, identity: &Identity) -> Result<Value> {
    let current = config["current-context"].as_str().context("kubeconfig without current-context")?;
    let context = named(config, "contexts", current).context("current context not found")?;
    let cluster_name = context["context"]["cluster"].as_str().context("context without cluster")?;
    let user_name = context["context"]["user"].as_str().context("context without user")?;
    let cluster =
        named(config, "clusters", cluster_name).context("cluster of the current context not found")?;
    let mut user =
        named(config, "users", user_name).context("user of the current context not found")?["user"].clone();
    user["as"] = json!(identity.user());
    if let Identity::Agent { node } = identity {
        user["as-user-extra"] = json!({ NODE_NAME_EXTRA: [node] });
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "impersonated", "user": user}],
        "contexts": [{"name": "impersonated", "context": {"cluster": cluster_name, "user": "impersonated"}}],
        "current-context": "impersonated",
    }))
}

fn named<'a>(config: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    config[list].as_array()?.iter().find(|e| e["name"].as_str() == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_kubeconfig_impersonates_its_node() {
        let admin = json!({
            "current-context": "c",
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "admin"}}],
            "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": "admin", "user": {"token": "t"}}],
        });
        let derived = impersonating(&admin, &Identity::Agent { node: "n1".into() }).unwrap();
        let user = &derived["users"][0]["user"];
        assert_eq!(user["token"], "t");
        assert_eq!(user["as"], AGENT_USER);
        assert_eq!(user["as-user-extra"][NODE_NAME_EXTRA], json!(["n1"]));
        assert_eq!(derived["clusters"][0]["cluster"]["server"], "https://127.0.0.1:1");
    }
}
