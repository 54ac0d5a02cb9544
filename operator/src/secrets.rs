//! Mirrors of the Secrets that outputs name (pure part; see `tailor_crds::secrets` for the
//! contract with the agent).
//!
//! Agents may not read Secrets in users' namespaces, so for every Secret a valid
//! LogCollectionConfig names, the operator copies the keys outputs use into a mirror in its own
//! namespace, named after a hash of `namespace/name`, and renders the mirror's name into the
//! NodeLogConfigs. Mirrors no longer named are deleted. A Secret is mirrored only when it carries
//! the opt-in label `tailor_crds::secrets::ALLOW_LABEL`: without it, anyone allowed to write a
//! LogCollectionConfig could send any `username`/`password` Secret of the namespace to an
//! endpoint of their choice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};
use tailor_crds::LogCollectionConfig;
use tailor_crds::collection::OutputSpec;
use tailor_crds::node::NodeLogConfigSpec;
use tailor_crds::secrets::{
    ALLOW_LABEL, MIRROR_LABEL, SECRET_KEYS, SOURCE_NAME_ANNOTATION, SOURCE_NAMESPACE_ANNOTATION,
};

use crate::render::{RenderedCluster, ResourceKey, ResourceKind, resource_key};
use crate::{MANAGED_BY, MANAGED_BY_LABEL};

/// A Secret named by an output: the resource's namespace and the Secret's name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The name of the mirror of `namespace/name`: deterministic (re-rendering gives the same
/// NodeLogConfig), one per source, and not choosable by a tenant to land on another namespace's
/// mirror (a cryptographic hash of both parts; 80 bits).
pub fn mirror_name(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("tailor-{hex}")
}

/// The Secret names of an output: its credentials and its TLS material.
fn output_refs(o: &OutputSpec) -> impl Iterator<Item = &str> {
    let creds = o.credentials_secret_ref.as_ref().map(|r| r.name.as_str());
    let tls = o.tls.as_ref().and_then(|t| t.secret_ref.as_ref()).map(|r| r.name.as_str());
    creds.into_iter().chain(tls)
}

/// Every Secret named by a LogCollectionConfig that rendered as valid, and who names it.
pub fn referenced_secrets(
    collections: &[Arc<LogCollectionConfig>],
    rendered: &RenderedCluster,
) -> BTreeMap<SecretKey, BTreeSet<ResourceKey>> {
    let mut out: BTreeMap<SecretKey, BTreeSet<ResourceKey>> = BTreeMap::new();
    for lcc in collections {
        let key = resource_key(ResourceKind::Collection, &lcc.metadata);
        if rendered.resources.get(&key).is_none_or(|s| s.invalid.is_some()) {
            continue;
        }
        for name in lcc.spec.outputs.iter().flat_map(output_refs) {
            let secret = SecretKey { namespace: key.namespace.clone(), name: name.to_string() };
            out.entry(secret).or_default().insert(key.clone());
        }
    }
    out
}

/// Points every Secret reference of a node's configuration at its mirror.
pub fn rewrite_refs(spec: &mut NodeLogConfigSpec) {
    for c in &mut spec.collections {
        for o in &mut c.outputs {
            if let Some(r) = o.credentials_secret_ref.as_mut() {
                r.name = mirror_name(&c.source.namespace, &r.name);
            }
            if let Some(r) = o.tls.as_mut().and_then(|t| t.secret_ref.as_mut()) {
                r.name = mirror_name(&c.source.namespace, &r.name);
            }
        }
    }
}

/// What reading a source Secret gave.
#[derive(Clone)]
pub enum Fetched {
    Found(Arc<Secret>),
    Missing,
    /// Could not be read (forbidden, transport): the existing mirror, if any, is left alone.
    Failed(String),
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values.
        match self {
            Fetched::Found(s) => write!(f, "Found({:?})", s.metadata.name),
            Fetched::Missing => f.write_str("Missing"),
            Fetched::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

/// A mirror Secret to apply. Its `Debug` never shows the values.
#[derive(Clone, PartialEq)]
pub struct Mirror(pub Secret);

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&String> = self.0.data.iter().flat_map(|d| d.keys()).collect();
        write!(f, "Mirror({:?}, keys {keys:?})", self.0.metadata.name)
    }
}

/// The mirrors that must exist, the mirrors to leave as they are (their source could not be
/// read), and the problems to report on each resource.
#[derive(Debug, Default)]
pub struct Mirrors {
    pub desired: BTreeMap<String, Mirror>,
    pub keep: BTreeSet<String>,
    pub problems: BTreeMap<ResourceKey, BTreeSet<String>>,
}

/// Why a named Secret is not mirrored (a message for the resource's status; never a value).
pub fn mirror_of(key: &SecretKey, fetched: &Fetched, namespace: &str) -> Result<Mirror, String> {
    let secret = match fetched {
        Fetched::Found(s) => s,
        Fetched::Missing => return Err(format!("Secret {} not found", key.name)),
        Fetched::Failed(e) => return Err(format!("Secret {} could not be read: {e}", key.name)),
    };
    let allowed = secret.metadata.labels.as_ref().and_then(|l| l.get(ALLOW_LABEL)).map(String::as_str);
    if allowed != Some("true") {
        return Err(format!("Secret {} is not labelled {ALLOW_LABEL}=true", key.name));
    }
    let data: BTreeMap<String, ByteString> = secret
        .data
        .iter()
        .flatten()
        .filter(|(k, _)| SECRET_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if data.is_empty() {
        return Err(format!("Secret {} has none of the keys {}", key.name, SECRET_KEYS.join(", ")));
    }
    Ok(Mirror(Secret {
        metadata: ObjectMeta {
            name: Some(mirror_name(&key.namespace, &key.name)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (MIRROR_LABEL.to_string(), "true".to_string()),
            ])),
            annotations: Some(BTreeMap::from([
                (SOURCE_NAMESPACE_ANNOTATION.to_string(), key.namespace.clone()),
                (SOURCE_NAME_ANNOTATION.to_string(), key.name.clone()),
            ])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }))
}

/// The mirrors of every referenced Secret (in `namespace`), from what reading them gave.
pub fn mirrors(
    refs: &BTreeMap<SecretKey, BTreeSet<ResourceKey>>,
    fetched: &BTreeMap<SecretKey, Fetched>,
    namespace: &str,
) -> Mirrors {
    let mut out = Mirrors::default();
    for (key, users) in refs {
        let got = fetched.get(key).cloned().unwrap_or(Fetched::Failed("not read yet".into()));
        if matches!(got, Fetched::Failed(_)) {
            out.keep.insert(mirror_name(&key.namespace, &key.name));
        }
        match mirror_of(key, &got, namespace) {
            Ok(m) => {
                out.desired.insert(mirror_name(&key.namespace, &key.name), m);
            }
            Err(problem) => {
                for u in users {
                    out.problems.entry(u.clone()).or_default().insert(problem.clone());
                }
            }
        }
    }
    out
}

/// Mirror writes: changed or new mirrors to apply, and mirrors (by name) to delete.
pub fn plan_mirrors(m: &Mirrors, observed: &[Arc<Secret>]) -> (Vec<Mirror>, Vec<String>) {
    let by_name: BTreeMap<&str, &Secret> =
        observed.iter().filter_map(|s| Some((s.metadata.name.as_deref()?, s.as_ref()))).collect();
    let apply = m
        .desired
        .iter()
        .filter(|(name, want)| by_name.get(name.as_str()).is_none_or(|have| !same_mirror(have, &want.0)))
        .map(|(_, want)| want.clone())
        .collect();
    let delete = by_name
        .keys()
        .filter(|n| !m.desired.contains_key(**n) && !m.keep.contains(**n))
        .map(|n| n.to_string())
        .collect();
    (apply, delete)
}

fn same_mirror(have: &Secret, want: &Secret) -> bool {
    let has_all = |have: &Option<BTreeMap<String, String>>, want: &Option<BTreeMap<String, String>>| {
        want.iter().flatten().all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    have.data == want.data
        && has_all(&have.metadata.labels, &want.metadata.labels)
        && has_all(&have.metadata.annotations, &want.metadata.annotations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{ClusterInput, render};
    use serde_json::json;

    fn lcc(ns: &str, name: &str, outputs: serde_json::Value) -> Arc<LogCollectionConfig> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "logging.tailor.dev/v1alpha1", "kind": "LogCollectionConfig",
                "metadata": {"namespace": ns, "name": name, "generation": 1},
                "spec": {"outputs": outputs}
            }))
            .unwrap(),
        )
    }

    fn secret(labels: serde_json::Value, data: serde_json::Value) -> Fetched {
        Fetched::Found(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "s", "labels": labels}, "data": data}))
                .unwrap(),
        ))
    }

    fn key(ns: &str, name: &str) -> SecretKey {
        SecretKey { namespace: ns.into(), name: name.into() }
    }

    #[test]
    fn mirror_names_are_deterministic_per_namespace_and_valid() {
        let a = mirror_name("team-a", "es-creds");
        assert_eq!(a, mirror_name("team-a", "es-creds"));
        assert_ne!(a, mirror_name("team-b", "es-creds"));
        // `/` separates the parts, so shifting it does not give the same name.
        assert_ne!(mirror_name("a", "b-c"), mirror_name("a-b", "c"));
        assert!(tailor_crds::secrets::is_object_name(&a) && a.len() == "tailor-".len() + 20, "{a}");
    }

    #[test]
    fn references_of_valid_collections_only_and_refs_rewritten() {
        let out = |creds: &str, tls: &str| {
            json!([{"name": "o", "type": "http", "http": {"uri": "https://x"},
                    "credentialsSecretRef": {"name": creds}, "tls": {"secretRef": {"name": tls}}}])
        };
        let good = lcc("team", "web", out("creds", "ca"));
        let other = lcc("team", "api", out("creds", "creds"));
        let invalid = lcc(
            "team",
            "bad",
            json!([{"name": "o", "type": "file"}, {"name": "o", "type": "file", "credentialsSecretRef": {"name": "x"}}]),
        );
        let input = ClusterInput { collections: vec![good.clone(), other, invalid], ..Default::default() };
        let rendered = render(&input);
        let refs = referenced_secrets(&input.collections, &rendered);
        let names: Vec<String> = refs.keys().map(|k| k.to_string()).collect();
        assert_eq!(names, ["team/ca", "team/creds"]);
        assert_eq!(refs[&key("team", "creds")].len(), 2);

        let mut spec: NodeLogConfigSpec = serde_json::from_value(json!({
            "formatVersion": 1,
            "collections": [{"source": {"namespace": "team", "name": "web"}, "outputs": good.spec.outputs, "targets": []}]
        }))
        .unwrap();
        rewrite_refs(&mut spec);
        let o = &spec.collections[0].outputs[0];
        assert_eq!(o.credentials_secret_ref.as_ref().unwrap().name, mirror_name("team", "creds"));
        assert_eq!(o.tls.as_ref().unwrap().secret_ref.as_ref().unwrap().name, mirror_name("team", "ca"));
    }

    #[test]
    fn a_mirror_copies_only_the_output_keys_of_an_opted_in_secret() {
        let allowed = json!({ALLOW_LABEL: "true"});
        let data = json!({"username": "dQ==", "password": "cA==", "db-url": "eA=="});
        let m = mirror_of(&key("team", "creds"), &secret(allowed.clone(), data.clone()), "tailor-system")
            .unwrap();
        let s = &m.0;
        assert_eq!(s.metadata.name.as_deref(), Some(mirror_name("team", "creds").as_str()));
        assert_eq!(s.metadata.namespace.as_deref(), Some("tailor-system"));
        assert_eq!(s.data.as_ref().unwrap().keys().collect::<Vec<_>>(), ["password", "username"]);
        let ann = s.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[SOURCE_NAMESPACE_ANNOTATION], "team");
        assert_eq!(ann[SOURCE_NAME_ANNOTATION], "creds");
        assert_eq!(s.metadata.labels.as_ref().unwrap()[MIRROR_LABEL], "true");
        assert!(!format!("{m:?}").contains("dQ"), "{m:?}");

        let e = mirror_of(&key("team", "creds"), &secret(json!({}), data), "ns").unwrap_err();
        assert!(e.contains("not labelled logging.tailor.dev/output-secret=true"), "{e}");
        let e =
            mirror_of(&key("team", "creds"), &secret(allowed, json!({"db-url": "eA=="})), "ns").unwrap_err();
        assert!(e.contains("has none of the keys"), "{e}");
        let e = mirror_of(&key("team", "gone"), &Fetched::Missing, "ns").unwrap_err();
        assert_eq!(e, "Secret gone not found");
    }

    #[test]
    fn mirrors_are_applied_when_changed_deleted_when_unreferenced_kept_when_unreadable() {
        let allowed = json!({ALLOW_LABEL: "true"});
        let users = |n: &str| {
            BTreeSet::from([ResourceKey {
                kind: ResourceKind::Collection,
                namespace: "team".into(),
                name: n.into(),
            }])
        };
        let refs = BTreeMap::from([
            (key("team", "a"), users("web")),
            (key("team", "b"), users("web")),
            (key("team", "c"), users("api")),
            (key("team", "d"), users("api")),
        ]);
        let fetched = BTreeMap::from([
            (key("team", "a"), secret(allowed.clone(), json!({"token": "dA=="}))),
            (key("team", "b"), secret(allowed.clone(), json!({"token": "dA=="}))),
            (key("team", "c"), Fetched::Missing),
            (key("team", "d"), Fetched::Failed("forbidden".into())),
        ]);
        let m = mirrors(&refs, &fetched, "sys");
        assert_eq!(m.desired.len(), 2);
        let api = &m.problems[&users("api").into_iter().next().unwrap()];
        assert_eq!(api.len(), 2, "{api:?}");
        assert!(!m.problems.contains_key(&users("web").into_iter().next().unwrap()));

        let mut same_a = m.desired[&mirror_name("team", "a")].0.clone();
        same_a.metadata.labels.as_mut().unwrap().insert("extra".into(), "x".into());
        let mut stale_b = m.desired[&mirror_name("team", "b")].0.clone();
        stale_b.data = Some(BTreeMap::from([("token".into(), ByteString(b"old".to_vec()))]));
        let named = |n: String| {
            Arc::new(Secret {
                metadata: ObjectMeta { name: Some(n), ..Default::default() },
                ..Default::default()
            })
        };
        let observed = vec![
            Arc::new(same_a),
            Arc::new(stale_b),
            named(mirror_name("team", "c")),
            named(mirror_name("team", "d")),
            named(mirror_name("gone", "x")),
        ];
        let (apply, delete) = plan_mirrors(&m, &observed);
        let applied: Vec<_> = apply.iter().map(|m| m.0.metadata.name.clone().unwrap()).collect();
        assert_eq!(applied, [mirror_name("team", "b")]);
        let mut want_deleted = vec![mirror_name("team", "c"), mirror_name("gone", "x")];
        want_deleted.sort();
        assert_eq!(delete, want_deleted);
    }
}
