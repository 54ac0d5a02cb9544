//! The docker-mode configuration file: collections and backups in the shape of
//! `LogCollectionConfig` and `LogBackupPolicy`, selecting containers of the local engine instead
//! of pods.
//!
//! ```yaml
//! collections:
//!   - name: web
//!     selector:
//!       includeLabels: {io.kubernetes.pod.namespace: shop}   # PodSelector semantics on labels
//!       containers: {exclude: [tailor-agent]}                # container names
//!       images: ["registry.local/web:*"]                      # `*` and `?` wildcards
//!       includeEnv: {TENANT: acme}                            # every pair must match
//!       excludeEnv: {LOGS: "off"}                             # `*`: any value
//!     sources: {stdout: true, stderr: true, files: [{path: /opt/logs/*.log}]}
//!     outputs: [{name: local, type: file}]
//! backups:
//!   - name: opt-logs
//!     selector: {}
//!     sources: {stdout: false, stderr: false, files: [{path: /opt/logs/**/*.log}]}
//!     service: {label: com.example.service, env: SERVICE}
//!     layout: "{service}/{pod-or-container-name}"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tailor_crds::backup::{BackupCompression, RetentionSpec};
use tailor_crds::collection::{FilterSpec, MetadataSpec, MultilineSpec, OutputSpec, ParseSpec};
use tailor_crds::common::{ContainerFilter, LabelRequirement, LogSources, PodSelector, StartPosition};
use tailor_crds::units::parse_duration;

/// Default backup layout in docker mode.
pub const DEFAULT_LAYOUT: &str = "{service}/{pod-or-container-name}";

/// Labels that name a container's service when the backup says nothing: Compose's, then the
/// Kubernetes container name on cri-dockerd nodes.
pub const DEFAULT_SERVICE_LABELS: [&str; 2] = ["com.docker.compose.service", "io.kubernetes.container.name"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read docker config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid docker config: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("invalid docker config: {what} {name:?}: {message}")]
    Invalid { what: &'static str, name: String, message: String },
}

impl ConfigError {
    pub fn category(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "read",
            ConfigError::Yaml(_) | ConfigError::Invalid { .. } => "invalid",
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerConfig {
    /// Full re-list of the engine's containers, repairing anything an event missed (`30s`).
    #[serde(default = "default_resync")]
    pub resync_interval: String,
    #[serde(default)]
    pub collections: Vec<DockerCollection>,
    #[serde(default)]
    pub backups: Vec<DockerBackup>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig { resync_interval: default_resync(), collections: Vec::new(), backups: Vec::new() }
    }
}

fn default_resync() -> String {
    "30s".into()
}

/// A `LogCollectionConfig` for containers.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerCollection {
    pub name: String,
    #[serde(default)]
    pub selector: ContainerSelector,
    #[serde(default)]
    pub sources: LogSources,
    #[serde(default)]
    pub start: StartPosition,
    #[serde(default)]
    pub multiline: Option<MultilineSpec>,
    #[serde(default)]
    pub parse: ParseSpec,
    #[serde(default)]
    pub filters: FilterSpec,
    /// `labels` are container labels, `env` the container's environment variables.
    #[serde(default)]
    pub metadata: MetadataSpec,
    pub outputs: Vec<OutputSpec>,
}

/// A `LogBackupPolicy` for containers.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerBackup {
    pub name: String,
    #[serde(default)]
    pub selector: ContainerSelector,
    /// What to copy; as for policies, stdout and stderr only unless told otherwise.
    #[serde(default)]
    pub sources: LogSources,
    /// Destination under the backup root. Placeholders: `{service}`, `{pod-or-container-name}`,
    /// `{namespace}`, `{pod}`, `{container}`, `{container-name}`, `{container-id}` (12 hex
    /// digits), `{image}`, `{node}`.
    #[serde(default = "default_layout")]
    pub layout: String,
    /// Where `{service}` comes from.
    #[serde(default)]
    pub service: ServiceSource,
    #[serde(default = "tailor_crds::backup::default_interval")]
    pub interval: String,
    #[serde(default)]
    pub retention: RetentionSpec,
    /// Keep copying stopped containers (until they are removed).
    #[serde(default = "tailor_crds::backup::default_keep_terminated")]
    pub keep_terminated: bool,
    #[serde(default)]
    pub compression: BackupCompression,
}

fn default_layout() -> String {
    DEFAULT_LAYOUT.into()
}

/// Where a container's service name comes from: the label, else the env variable, else the
/// Compose service / Kubernetes container labels, else the container's name.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSource {
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
}

/// `PodSelector` over container labels, plus image and environment selection.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSelector {
    #[serde(default)]
    pub include_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub exclude_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelRequirement>,
    /// Container names (the Kubernetes container name on cri-dockerd nodes).
    #[serde(default)]
    pub containers: ContainerFilter,
    /// Image references (`Config.Image`), `*` and `?` wildcards; empty: any image.
    #[serde(default)]
    pub images: Vec<String>,
    /// Environment variables that must all be set to these values.
    #[serde(default)]
    pub include_env: BTreeMap<String, String>,
    /// A container with any of these variables at this value (`*`: any value) is left out.
    #[serde(default)]
    pub exclude_env: BTreeMap<String, String>,
}

impl ContainerSelector {
    /// The label part, with the exact semantics of the custom resources.
    pub fn pod_selector(&self) -> PodSelector {
        PodSelector {
            include_labels: self.include_labels.clone(),
            exclude_labels: self.exclude_labels.clone(),
            match_expressions: self.match_expressions.clone(),
            containers: self.containers.clone(),
        }
    }
}

impl DockerConfig {
    /// Parses and validates a file's content.
    pub fn parse(yaml: &str) -> Result<Self, ConfigError> {
        let config: DockerConfig =
            if yaml.trim().is_empty() { DockerConfig::default() } else { serde_yaml_ng::from_str(yaml)? };
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text)
    }

    /// The resync period.
    pub fn resync(&self) -> Duration {
        parse_duration(&self.resync_interval).unwrap_or(Duration::from_secs(30))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |what, name: &str, message: String| ConfigError::Invalid {
            what,
            name: name.to_string(),
            message,
        };
        parse_duration(&self.resync_interval)
            .map_err(|e| invalid("resyncInterval", &self.resync_interval, e.to_string()))?;
        let mut names = BTreeSet::new();
        for c in &self.collections {
            check_name("collection", &c.name, &mut names)?;
            check_sources("collection", &c.name, &c.sources)?;
            if c.outputs.is_empty() {
                return Err(invalid("collection", &c.name, "needs at least one output".into()));
            }
        }
        let mut names = BTreeSet::new();
        for b in &self.backups {
            check_name("backup", &b.name, &mut names)?;
            check_sources("backup", &b.name, &b.sources)?;
            if b.layout.starts_with('/') || b.layout.split('/').any(|p| p == "..") {
                return Err(invalid("backup", &b.name, "layout must be relative, without '..'".into()));
            }
            parse_duration(&b.interval).map_err(|e| invalid("backup", &b.name, format!("interval: {e}")))?;
        }
        Ok(())
    }
}

fn check_name(what: &'static str, name: &str, seen: &mut BTreeSet<String>) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(ConfigError::Invalid {
            what,
            name: name.into(),
            message: "names are 1-63 of [a-z0-9-]".into(),
        });
    }
    if !seen.insert(name.to_string()) {
        return Err(ConfigError::Invalid { what, name: name.into(), message: "duplicate name".into() });
    }
    Ok(())
}

fn check_sources(what: &'static str, name: &str, sources: &LogSources) -> Result<(), ConfigError> {
    for f in &sources.files {
        if !f.path.starts_with('/') || f.path.split('/').any(|p| p == "..") {
            return Err(ConfigError::Invalid {
                what,
                name: name.into(),
                message: format!("file path {:?} must be absolute, without '..'", f.path),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let yaml = r#"
collections:
  - name: web
    selector:
      includeLabels: {io.kubernetes.pod.namespace: shop}
      containers: {exclude: [tailor-agent]}
      images: ["registry.local/web:*"]
      includeEnv: {TENANT: acme}
      excludeEnv: {LOGS: "off"}
    sources: {stdout: true, stderr: true, files: [{path: /opt/logs/*.log}]}
    parse: {format: json}
    outputs: [{name: local, type: file}]
backups:
  - name: opt-logs
    selector: {}
    sources: {stdout: false, stderr: false, files: [{path: /opt/logs/**/*.log}]}
    service: {label: com.example.service, env: SERVICE}
"#;
        let c = DockerConfig::parse(yaml).unwrap();
        assert_eq!(c.collections[0].selector.images, ["registry.local/web:*"]);
        assert_eq!(c.backups[0].layout, DEFAULT_LAYOUT);
        assert!(c.backups[0].keep_terminated);
        assert_eq!(c.resync(), Duration::from_secs(30));
    }

    #[test]
    fn rejects_bad_files() {
        let bad = [
            "collections: [{name: a, outputs: []}]",
            "collections: [{name: A, outputs: [{name: x, type: stdout}]}]",
            "backups: [{name: a}, {name: a}]",
            "backups: [{name: a, layout: /etc}]",
            "backups: [{name: a, layout: 'x/../..'}]",
            "backups: [{name: a, sources: {files: [{path: relative.log}]}}]",
            "collections: [{name: a, selecter: {}, outputs: [{name: x, type: stdout}]}]",
            "resyncInterval: soon",
        ];
        for yaml in bad {
            assert!(DockerConfig::parse(yaml).is_err(), "{yaml}");
        }
        assert_eq!(DockerConfig::parse("").unwrap(), DockerConfig::default());
    }
}
