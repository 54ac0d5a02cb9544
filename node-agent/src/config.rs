//! Config providers: where the agent's `NodeLogConfigSpec` comes from. Each publishes the
//! current configuration on a `watch` channel; the engines subscribe and hot-apply it.
//!
//! - `--config FILE`: a YAML stream of NodeLogConfig objects (as `tailor-operator render` prints
//!   them); the one named after the node is applied (a bare spec is accepted too); the file is
//!   re-read when it changes.
//! - otherwise the node's own NodeLogConfig, watched through the API server with a field selector
//!   on its name, so that the agent never sees other nodes' objects.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, watcher::Event as WatchEvent};
use kube::{Api, Client};
use serde::Deserialize;
use tailor_crds::node::{NodeLogConfig, NodeLogConfigSpec};
use tokio::sync::watch;

use crate::engine::Applied;

/// Why a configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path} has no NodeLogConfig named {node}")]
    NotFound { path: PathBuf, node: String },
}

/// Picks the node's configuration out of a YAML stream: the NodeLogConfig named `node`, or a
/// bare spec. Returns the spec and the object's generation, if it has one.
pub fn parse_config(
    text: &str,
    node: &str,
    path: &Path,
) -> Result<(NodeLogConfigSpec, Option<i64>), ConfigError> {
    let parse_err = |message: String| ConfigError::Parse { path: path.to_path_buf(), message };
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = serde_yaml_ng::Value::deserialize(doc).map_err(|e| parse_err(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        if value.get("formatVersion").is_some() {
            let spec = serde_yaml_ng::from_value(value).map_err(|e| parse_err(e.to_string()))?;
            return Ok((spec, None));
        }
        if value.get("kind").and_then(|k| k.as_str()) != Some("NodeLogConfig") {
            continue;
        }
        let name = value.get("metadata").and_then(|m| m.get("name")).and_then(|n| n.as_str());
        if name != Some(node) {
            continue;
        }
        let obj: NodeLogConfig = serde_yaml_ng::from_value(value).map_err(|e| parse_err(e.to_string()))?;
        return Ok((obj.spec, obj.metadata.generation));
    }
    Err(ConfigError::NotFound { path: path.to_path_buf(), node: node.to_string() })
}

/// Publishes the file's configuration now and whenever its content changes (checked every
/// `poll`). Without a generation in the file, each change counts one up.
pub async fn watch_file(path: PathBuf, node: String, tx: watch::Sender<Option<Applied>>, poll: Duration) {
    let mut last_text: Option<String> = None;
    let mut generation = 0i64;
    loop {
        match tokio::fs::read_to_string(&path).await {
            Ok(text) if last_text.as_deref() != Some(&text) => {
                match parse_config(&text, &node, &path) {
                    Ok((spec, gen_in_file)) => {
                        generation = gen_in_file.unwrap_or(generation + 1);
                        tracing::info!(path = %path.display(), generation, "configuration file loaded");
                        tx.send_replace(Some(Applied { generation, spec }));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "configuration file not applied; keeping the last one")
                    }
                }
                last_text = Some(text);
            }
            Ok(_) => {}
            Err(source) => {
                let e = ConfigError::Read { path: path.clone(), source };
                tracing::warn!(error = %e, "configuration file unreadable; keeping the last one");
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// Watches the node's own NodeLogConfig; a deleted object applies an empty configuration.
pub async fn watch_kube(client: Client, node: String, tx: watch::Sender<Option<Applied>>) {
    let api: Api<NodeLogConfig> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut events = watcher(api, cfg).default_backoff().boxed();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(WatchEvent::Apply(obj) | WatchEvent::InitApply(obj)) => {
                if obj.metadata.name.as_deref() != Some(node.as_str()) {
                    continue;
                }
                let generation = obj.metadata.generation.unwrap_or(0);
                let next = Some(Applied { generation, spec: obj.spec });
                tx.send_if_modified(|cur| {
                    let changed = *cur != next;
                    if changed {
                        *cur = next.clone();
                    }
                    changed
                });
            }
            Ok(WatchEvent::Delete(obj)) => {
                let generation = obj.metadata.generation.unwrap_or(0);
                let empty = NodeLogConfigSpec {
                    format_version: tailor_crds::node::FORMAT_VERSION,
                    target_count: 0,
                    collections: Vec::new(),
                    backups: Vec::new(),
                };
                tx.send_replace(Some(Applied { generation, spec: empty }));
            }
            Ok(WatchEvent::Init | WatchEvent::InitDone) => {}
            Err(e) => tracing::warn!(error = %e, "NodeLogConfig watch error; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = r#"
apiVersion: logging.tailor.dev/v1alpha1
kind: NodeLogConfig
metadata: {name: other, generation: 9}
spec: {formatVersion: 1}
---
apiVersion: logging.tailor.dev/v1alpha1
kind: LogBackup
metadata: {name: x, namespace: y}
spec: {}
---
apiVersion: logging.tailor.dev/v1alpha1
kind: NodeLogConfig
metadata: {name: node-a, generation: 3}
spec:
  formatVersion: 1
  targetCount: 1
"#;

    #[test]
    fn picks_the_nodes_object_from_a_stream() {
        let (spec, generation) = parse_config(STREAM, "node-a", Path::new("f")).unwrap();
        assert_eq!(generation, Some(3));
        assert_eq!(spec.target_count, 1);
        assert!(matches!(parse_config(STREAM, "nope", Path::new("f")), Err(ConfigError::NotFound { .. })));
        let (spec, generation) =
            parse_config("formatVersion: 1\ntargetCount: 2\n", "x", Path::new("f")).unwrap();
        assert_eq!((spec.target_count, generation), (2, None));
        assert!(matches!(parse_config("kind: [", "x", Path::new("f")), Err(ConfigError::Parse { .. })));
    }
}
