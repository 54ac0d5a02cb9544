//! Reading resources from YAML files and folders, for the offline `render -f`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::core::DeserializeGuard;
use serde::Deserialize;
use tailor_crds::{LogBackupPolicy, LogCollectionConfig};

use crate::render::{ClusterInput, MalformedResource, NodeInfo, ResourceKind};

/// A file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: document {index}: {source}")]
    Yaml {
        origin: String,
        index: usize,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{origin}: document {index} ({kind}): {source}")]
    Object {
        origin: String,
        index: usize,
        kind: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads every `.yaml`, `.yml` and `.json` file under the given files and folders (sorted, so
/// the result does not depend on directory order).
pub fn load_paths(paths: &[PathBuf]) -> Result<ClusterInput, FilesError> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    files.sort();
    let mut input = ClusterInput::default();
    for f in files {
        let text =
            std::fs::read_to_string(&f).map_err(|source| FilesError::Read { path: f.clone(), source })?;
        let more = parse_objects(&text, &f.display().to_string())?;
        input.collections.extend(more.collections);
        input.backups.extend(more.backups);
        input.malformed.extend(more.malformed);
        input.pods.extend(more.pods);
        input.nodes.extend(more.nodes);
    }
    Ok(input)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), FilesError> {
    let read_err = |source| FilesError::Read { path: path.to_path_buf(), source };
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(read_err)? {
            collect(&entry.map_err(read_err)?.path(), out)?;
        }
    } else if path.is_file() {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if matches!(ext, "yaml" | "yml" | "json") {
            out.push(path.to_path_buf());
        }
    } else {
        std::fs::metadata(path).map_err(read_err)?;
    }
    Ok(())
}

/// Parses a multi-document YAML stream (and `kind: List` documents). Kinds other than
/// LogCollectionConfig, LogBackupPolicy, Pod and Node are ignored; a user resource that does
/// not match its type is kept as malformed, exactly as the controller sees it.
pub fn parse_objects(text: &str, origin: &str) -> Result<ClusterInput, FilesError> {
    let mut input = ClusterInput::default();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(doc).map_err(|source| FilesError::Yaml {
            origin: origin.into(),
            index,
            source,
        })?;
        add(&mut input, value, origin, index)?;
    }
    Ok(input)
}

fn add(
    input: &mut ClusterInput,
    value: serde_json::Value,
    origin: &str,
    index: usize,
) -> Result<(), FilesError> {
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
    let err = |source| FilesError::Object { origin: origin.into(), index, kind: kind.clone(), source };
    match kind.as_str() {
        "List" => {
            if let Some(items) = value.get("items").and_then(|i| i.as_array()) {
                for item in items {
                    add(input, item.clone(), origin, index)?;
                }
            }
        }
        "LogCollectionConfig" => match serde_json::from_value::<DeserializeGuard<LogCollectionConfig>>(value)
        {
            Ok(DeserializeGuard(Ok(o))) => input.collections.push(Arc::new(o)),
            Ok(DeserializeGuard(Err(e))) => input.malformed.push(MalformedResource {
                kind: ResourceKind::Collection,
                metadata: e.metadata,
                error: e.error,
            }),
            Err(e) => return Err(err(e)),
        },
        "LogBackupPolicy" => match serde_json::from_value::<DeserializeGuard<LogBackupPolicy>>(value) {
            Ok(DeserializeGuard(Ok(o))) => input.backups.push(Arc::new(o)),
            Ok(DeserializeGuard(Err(e))) => input.malformed.push(MalformedResource {
                kind: ResourceKind::Backup,
                metadata: e.metadata,
                error: e.error,
            }),
            Err(e) => return Err(err(e)),
        },
        "Pod" => {
            let mut pod: Pod = serde_json::from_value(value).map_err(err)?;
            if pod.metadata.namespace.is_none() {
                pod.metadata.namespace = Some("default".into());
            }
            input.pods.push(Arc::new(pod));
        }
        "Node" => {
            let node: Node = serde_json::from_value(value).map_err(err)?;
            input
                .nodes
                .push(NodeInfo { name: node.metadata.name.unwrap_or_default(), uid: node.metadata.uid });
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small cluster: two nodes, pods of two namespaces, one config and one policy.
    pub(crate) const FIXTURE: &str = concat!(
        include_str!("../tests/fixtures/cluster/nodes-and-pods.yaml"),
        "\n---\n",
        include_str!("../tests/fixtures/resources.yaml")
    );

    #[test]
    fn the_fixture_parses() {
        let input = parse_objects(FIXTURE, "fixture").unwrap();
        assert!(input.pods.len() >= 4);
        assert_eq!(input.nodes.len(), 2);
        assert!(!input.collections.is_empty());
        assert!(!input.backups.is_empty());
    }

    #[test]
    fn malformed_user_resources_are_kept_as_such() {
        let text = "apiVersion: logging.tailor.dev/v1alpha1\nkind: LogCollectionConfig\n\
                    metadata: {name: bad, namespace: shop, generation: 4}\n\
                    spec: {parse: {format: xml}, outputs: [{name: o, type: stdout}]}\n\
                    ---\nkind: ConfigMap\nmetadata: {name: ignored}\n";
        let input = parse_objects(text, "t").unwrap();
        assert_eq!(input.malformed.len(), 1);
        assert!(input.malformed[0].error.contains("xml"), "{}", input.malformed[0].error);
        assert!(input.collections.is_empty());
        assert!(parse_objects("kind: Pod\nspec: 3\n", "t").is_err());
    }
}
