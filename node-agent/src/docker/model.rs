//! The parts of the Docker Engine API's JSON that docker mode reads (API version 1.41, the
//! oldest the engines in the field still speak), and `Container`: the trimmed view of one
//! container that the translation works on.

use std::collections::BTreeMap;

use serde::Deserialize;

/// An entry of `GET /containers/json?all=1`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
}

/// `GET /containers/{id}/json`, only the fields docker mode needs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerInspect {
    pub id: String,
    /// With the leading `/` the engine puts there.
    pub name: String,
    pub state: InspectState,
    pub config: InspectConfig,
    pub log_path: String,
    pub graph_driver: GraphDriver,
    pub mounts: Vec<Mount>,
    pub host_config: HostConfig,
    pub restart_count: i32,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InspectState {
    pub status: String,
    pub running: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InspectConfig {
    pub image: String,
    #[serde(deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_as_default")]
    pub env: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GraphDriver {
    pub name: String,
    #[serde(deserialize_with = "null_as_default")]
    pub data: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Mount {
    /// `bind`, `volume`, `tmpfs`, `npipe`.
    #[serde(rename = "Type")]
    pub kind: String,
    pub source: String,
    pub destination: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub log_config: LogConfig,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: String,
}

/// One message of `GET /events`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EngineEvent {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: EventActor,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventActor {
    #[serde(rename = "ID")]
    pub id: String,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Labels cri-dockerd (and dockershim before it) puts on the containers of pods.
pub mod k8s_label {
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
}

/// The pseudo-namespace of containers that do not belong to a Kubernetes pod.
pub const PLAIN_NAMESPACE: &str = "docker";

/// One container as docker mode sees it: what selection, translation and the rootfs locator need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    /// The image reference it was created from (`Config.Image`).
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited`, `dead`; `removed`
    /// once the engine forgot it (docker mode keeps it a little while).
    pub status: String,
    /// Its writable layer is mounted (`MergedDir` exists).
    pub running: bool,
    pub restart_count: i32,
    /// Set when the logging driver is json-file.
    pub log_path: Option<String>,
    pub merged_dir: Option<String>,
    pub upper_dir: Option<String>,
    /// Bind mounts and volumes, with their host directory.
    pub mounts: Vec<Mount>,
}

impl Container {
    /// Trims an inspect answer.
    pub fn from_inspect(i: ContainerInspect) -> Self {
        let env = i
            .config
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let json_file = i.host_config.log_config.kind == "json-file";
        let dir = |key: &str| i.graph_driver.data.get(key).filter(|d| !d.is_empty()).cloned();
        Container {
            name: i.name.trim_start_matches('/').to_string(),
            image: i.config.image,
            labels: i.config.labels,
            env,
            running: i.state.running,
            status: i.state.status,
            restart_count: i.restart_count,
            log_path: Some(i.log_path).filter(|p| json_file && !p.is_empty()),
            merged_dir: dir("MergedDir"),
            upper_dir: dir("UpperDir"),
            mounts: i
                .mounts
                .into_iter()
                .filter(|m| matches!(m.kind.as_str(), "bind" | "volume") && !m.source.is_empty())
                .collect(),
            id: i.id,
        }
    }

    /// The Kubernetes namespace, or `docker` for a plain container.
    pub fn namespace(&self) -> &str {
        self.labels.get(k8s_label::POD_NAMESPACE).map_or(PLAIN_NAMESPACE, String::as_str)
    }

    /// The pod name, or the container's own name for a plain container.
    pub fn pod_name(&self) -> &str {
        self.labels.get(k8s_label::POD_NAME).unwrap_or(&self.name)
    }

    /// The Kubernetes container name, or the container's own name for a plain container.
    pub fn container_name(&self) -> &str {
        self.labels.get(k8s_label::CONTAINER_NAME).unwrap_or(&self.name)
    }

    /// The pod UID, or the container ID for a plain container.
    pub fn pod_uid(&self) -> &str {
        self.labels.get(k8s_label::POD_UID).unwrap_or(&self.id)
    }

    /// It ran and stopped: its files only need draining.
    pub fn terminated(&self) -> bool {
        matches!(self.status.as_str(), "exited" | "dead" | "removing" | "removed")
    }

    /// Whether it belongs to a Kubernetes pod (cri-dockerd).
    pub fn in_pod(&self) -> bool {
        self.labels.contains_key(k8s_label::POD_NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_an_inspect_answer() {
        let json = r#"{
          "Id": "abc", "Name": "/web-1", "RestartCount": 2,
          "State": {"Status": "running", "Running": true},
          "Config": {"Image": "busybox:1", "Labels": null, "Env": ["A=1", "B=x=y", "NOVALUE"]},
          "LogPath": "/var/lib/docker/containers/abc/abc-json.log",
          "HostConfig": {"LogConfig": {"Type": "json-file"}},
          "GraphDriver": {"Name": "overlay2", "Data": {"MergedDir": "/m", "UpperDir": "/u"}},
          "Mounts": [{"Type": "volume", "Source": "/var/lib/docker/volumes/v/_data", "Destination": "/data"},
                     {"Type": "tmpfs", "Source": "", "Destination": "/tmp"}]
        }"#;
        let c = Container::from_inspect(serde_json::from_str(json).unwrap());
        assert_eq!(c.name, "web-1");
        assert!(c.labels.is_empty());
        assert_eq!(c.env.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(c.env.len(), 2);
        assert_eq!(c.merged_dir.as_deref(), Some("/m"));
        assert_eq!(c.mounts.len(), 1);
        assert_eq!(c.namespace(), PLAIN_NAMESPACE);
        assert_eq!(c.pod_name(), "web-1");
        assert_eq!(c.pod_uid(), "abc");
    }

    #[test]
    fn other_logging_drivers_have_no_log_path() {
        let json = r#"{"Id": "abc", "LogPath": "", "HostConfig": {"LogConfig": {"Type": "journald"}}}"#;
        let c = Container::from_inspect(serde_json::from_str(json).unwrap());
        assert_eq!(c.log_path, None);
    }
}
