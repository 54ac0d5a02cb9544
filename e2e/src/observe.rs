//! Reading what the system did: rendered NodeLogConfigs, statuses, resourceVersions, and the
//! files the agents wrote (sink output, backups).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kube::api::{Api, ListParams};
use serde_json::Value;
use tailor_crds::{LogBackup, LogBackupPolicy, LogCollectionConfig, NodeLogConfig};

/// The NodeLogConfig of `node`, if any.
pub async fn node_config(client: &kube::Client, node: &str) -> Result<Option<NodeLogConfig>> {
    Ok(Api::<NodeLogConfig>::all(client.clone()).get_opt(node).await?)
}

/// `namespace/pod/container` of every collection target of a NodeLogConfig.
pub fn collection_keys(nlc: &NodeLogConfig) -> Vec<String> {
    let mut keys: Vec<String> =
        nlc.spec.collections.iter().flat_map(|c| c.targets.iter().map(|t| t.key())).collect();
    keys.sort();
    keys
}

/// `namespace/pod/container` of every backup target of a NodeLogConfig.
pub fn backup_keys(nlc: &NodeLogConfig) -> Vec<String> {
    let mut keys: Vec<String> =
        nlc.spec.backups.iter().flat_map(|b| b.targets.iter().map(|t| t.key())).collect();
    keys.sort();
    keys
}

/// `true` once the node's agent acknowledged the NodeLogConfig's current generation.
pub fn acknowledged(nlc: &NodeLogConfig) -> bool {
    let generation = nlc.metadata.generation;
    generation.is_some() && nlc.status.as_ref().and_then(|s| s.observed_generation) == generation
}

/// resourceVersions of every object of the project that a scene can see: the user resources and
/// LogBackups of `namespaces`, and the NodeLogConfigs of `nodes`. Keys are `kind/ns/name`.
pub async fn resource_versions(
    client: &kube::Client,
    namespaces: &[String],
    nodes: &[String],
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let lp = ListParams::default();
    for ns in namespaces {
        for o in Api::<LogCollectionConfig>::namespaced(client.clone(), ns).list(&lp).await? {
            out.insert(format!("LogCollectionConfig/{ns}/{}", name(&o.metadata)), rv(&o.metadata));
        }
        for o in Api::<LogBackupPolicy>::namespaced(client.clone(), ns).list(&lp).await? {
            out.insert(format!("LogBackupPolicy/{ns}/{}", name(&o.metadata)), rv(&o.metadata));
        }
        for o in Api::<LogBackup>::namespaced(client.clone(), ns).list(&lp).await? {
            out.insert(format!("LogBackup/{ns}/{}", name(&o.metadata)), rv(&o.metadata));
        }
    }
    let nlcs: Api<NodeLogConfig> = Api::all(client.clone());
    for node in nodes {
        if let Some(o) = nlcs.get_opt(node).await? {
            out.insert(format!("NodeLogConfig/{node}"), rv(&o.metadata));
        }
    }
    Ok(out)
}

fn name(m: &kube::api::ObjectMeta) -> String {
    m.name.clone().unwrap_or_default()
}

fn rv(m: &kube::api::ObjectMeta) -> String {
    m.resource_version.clone().unwrap_or_default()
}

/// Keys whose resourceVersion differs between two snapshots (including appeared and vanished).
pub fn changed(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<String> =
        before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// The JSON events (NDJSON lines) under `dir` whose text contains `needle`.
pub fn events_containing(dir: &Path, needle: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for f in files_under(dir) {
        let Ok(bytes) = std::fs::read(&f) else { continue };
        for line in String::from_utf8_lossy(&bytes).lines().filter(|l| l.contains(needle)) {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                out.push(v);
            }
        }
    }
    out
}

/// Files under `dir` whose content contains `needle` (plain text; backups of uncompressed files).
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|f| std::fs::read(f).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)))
        .collect()
}

/// `true` when some string value anywhere in `v` equals `want`.
pub fn has_string_value(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Array(a) => a.iter().any(|x| has_string_value(x, want)),
        Value::Object(o) => o.values().any(|x| has_string_value(x, want)),
        _ => false,
    }
}

/// The columns of `kubectl get` output, by header, for each row.
pub fn table(output: &str) -> Result<Vec<BTreeMap<String, String>>> {
    let mut lines = output.lines();
    let header = lines.next().context("empty kubectl output")?;
    // Column starts are where a header word begins after two or more spaces (headers such as
    // "LAST SYNC" contain single spaces).
    let mut starts = vec![0usize];
    let bytes = header.as_bytes();
    for i in 2..bytes.len() {
        if bytes[i] != b' ' && bytes[i - 1] == b' ' && bytes[i - 2] == b' ' {
            starts.push(i);
        }
    }
    let names: Vec<String> = starts
        .iter()
        .enumerate()
        .map(|(i, &s)| header[s..starts.get(i + 1).copied().unwrap_or(header.len())].trim().to_string())
        .collect();
    Ok(lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let from = starts[i].min(l.len());
                    let to = starts.get(i + 1).copied().unwrap_or(l.len()).min(l.len());
                    (n.clone(), l[from..to].trim().to_string())
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubectl_tables_with_spaced_headers() {
        let out = "NAME    POLICY   NODE   PHASE    LAST SYNC   AGE\nb-n1    b        n1     Synced   5s          10s\n";
        let rows = table(out).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["PHASE"], "Synced");
        assert_eq!(rows[0]["LAST SYNC"], "5s");
        assert_eq!(rows[0]["AGE"], "10s");
    }
}
