//! Docker mode: collect and back up the containers of a local Docker engine, with no
//! Kubernetes. Discovery talks to the engine over its Unix socket and renders the same
//! `NodeLogConfigSpec` the operator renders for a Kubernetes node, so the collection and backup
//! engines apply it unchanged; the rootfs locator serves `containerRootfs` inputs with runtime
//! `docker` in both modes.
//!
//! - `client`: Engine API client (hyper over `UnixStream`)
//! - `model`: the engine's JSON and the trimmed `Container`
//! - `config`: the docker-mode configuration file
//! - `translate`: containers + config → spec (pure)
//! - `locator`: `MergedDir` / `UpperDir` of a container
//! - `discovery`: list, events, resync, back-off; publishes specs

pub mod client;
pub mod config;
pub mod discovery;
pub mod locator;
pub mod model;
pub mod translate;

use std::path::{Path, PathBuf};

use tailor_crds::node::{ContainerInfo, PodInfo};

pub use client::{ClientError, DockerClient};
pub use config::{ConfigError, DockerConfig};
pub use discovery::{Discovery, Publish};
pub use locator::DockerRootfs;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl DockerError {
    pub fn category(&self) -> &'static str {
        match self {
            DockerError::Client(e) => e.category(),
            DockerError::Config(e) => e.category(),
        }
    }
}

/// Everything docker mode needs, built from the command line: the discovery task to spawn and
/// the locator to hand to path resolution.
pub struct DockerMode {
    pub discovery: Discovery,
    pub locator: DockerRootfs,
}

impl DockerMode {
    /// `docker_host` as `--docker-host`; `config_path` is the docker config file (reloaded on
    /// change); `host_root` as `--host-root`.
    pub fn new(
        docker_host: &str,
        config_path: &Path,
        node: &str,
        host_root: &Path,
        publish: Publish,
    ) -> Result<Self, DockerError> {
        let client = DockerClient::from_host(docker_host)?;
        let config = DockerConfig::load(config_path)?;
        let locator = DockerRootfs::new(host_root, Some(client.socket().to_path_buf())).fed_by_discovery();
        let discovery = Discovery::new(client, config, node, locator.clone(), publish)
            .watch_config_file(PathBuf::from(config_path));
        Ok(DockerMode { discovery, locator })
    }
}

/// The key of a target across configurations: a plain Docker container (its pod UID is its own
/// container ID, see `translate`) is keyed on that ID, so a rename keeps its checkpoints and
/// backup records; every other target on namespace, pod and container name, as the custom
/// resources define it (a Kubernetes container's ID changes at each restart, its files do not).
pub fn target_key(pod: &PodInfo, container: &ContainerInfo) -> String {
    match container.container_id.as_deref() {
        Some(id) if !id.is_empty() && pod.uid == id => format!("{}/{id}", pod.namespace),
        _ => format!("{}/{}/{}", pod.namespace, pod.name, container.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_containers_are_keyed_on_their_id_pods_on_names() {
        let pod = |name: &str, uid: &str| PodInfo {
            namespace: "docker".into(),
            name: name.into(),
            uid: uid.into(),
            workload: None,
        };
        let container = |name: &str, id: Option<&str>| ContainerInfo {
            name: name.into(),
            image: "busybox".into(),
            container_id: id.map(Into::into),
            runtime: Some("docker".into()),
            restart_count: 0,
            terminated: false,
        };
        assert_eq!(target_key(&pod("web", "abc"), &container("web", Some("abc"))), "docker/abc");
        assert_eq!(target_key(&pod("renamed", "abc"), &container("renamed", Some("abc"))), "docker/abc");
        // A pod's container (cri-dockerd, or Kubernetes mode) keeps the CRDs' key.
        assert_eq!(target_key(&pod("web-0", "uid-1"), &container("app", Some("abc"))), "docker/web-0/app");
        assert_eq!(target_key(&pod("web-0", ""), &container("app", None)), "docker/web-0/app");
    }
}
