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
