//! The writable layer of a Docker container, for `containerRootfs` inputs with runtime `docker`:
//! `GraphDriver.Data.MergedDir` while the container runs, `UpperDir` once it has stopped (the
//! merged mount is gone then, but what the container wrote stays in the upper directory until
//! the container is removed).
//!
//! Docker mode keeps the cache current from its discovery; on a Kubernetes node whose runtime
//! is Docker (cri-dockerd) nothing else talks to the engine, so a cache miss or a stale entry
//! asks the engine directly (a blocking inspect: path resolution already runs off the executor).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::client::API_VERSION;
use super::model::{Container, ContainerInspect};
use super::translate::RUNTIME;
use crate::resolve::RootfsLocator;

/// Without discovery, a cached entry older than this is refreshed from the engine.
const STALE_AFTER: Duration = Duration::from_secs(5);
const INSPECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_INSPECT_BYTES: u64 = 4 << 20;

/// The layer directories of one container, as the engine reported them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub status: String,
    pub merged_dir: Option<String>,
    pub upper_dir: Option<String>,
}

impl Layer {
    pub fn of(c: &Container) -> Self {
        Layer { status: c.status.clone(), merged_dir: c.merged_dir.clone(), upper_dir: c.upper_dir.clone() }
    }

    /// Which directory is the container's root now (engine paths, before the host root).
    /// `merged_mounted` says whether the merged directory is there: a container that is dying
    /// may still say `running` a moment after its mount went away.
    pub fn root(&self, merged_mounted: impl Fn(&str) -> bool) -> Option<&str> {
        match self.status.as_str() {
            // Nothing written yet, and the merged mount does not exist before the start.
            "created" => None,
            "running" | "paused" | "restarting" => {
                self.merged_dir.as_deref().filter(|m| merged_mounted(m)).or(self.upper_dir.as_deref())
            }
            _ => self.upper_dir.as_deref(),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    layer: Layer,
    fetched: Instant,
}

/// Finds writable layers of Docker containers; cheap to clone (shared cache).
#[derive(Clone, Debug)]
pub struct DockerRootfs {
    host_root: PathBuf,
    socket: Option<PathBuf>,
    /// `None` when discovery keeps the cache current (docker mode): only misses ask the engine.
    stale_after: Option<Duration>,
    cache: Arc<RwLock<HashMap<String, Entry>>>,
}

impl DockerRootfs {
    /// `host_root` prefixes every engine path (the agent's `--host-root`); `socket` lets a miss
    /// ask the engine.
    pub fn new(host_root: impl Into<PathBuf>, socket: Option<PathBuf>) -> Self {
        DockerRootfs {
            host_root: host_root.into(),
            socket,
            stale_after: Some(STALE_AFTER),
            cache: Arc::default(),
        }
    }

    /// Discovery keeps the cache current from the engine's events: entries never go stale.
    pub fn fed_by_discovery(mut self) -> Self {
        self.stale_after = None;
        self
    }

    /// Records what discovery learnt about a container.
    pub fn update(&self, c: &Container) {
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(c.id.clone(), Entry { layer: Layer::of(c), fetched: Instant::now() });
        }
    }

    /// Forgets a removed container.
    pub fn remove(&self, id: &str) {
        if let Ok(mut cache) = self.cache.write() {
            cache.remove(id);
        }
    }

    /// Replaces the whole cache after a full resync.
    pub fn replace_all<'a>(&self, containers: impl IntoIterator<Item = &'a Container>) {
        let now = Instant::now();
        let fresh: HashMap<String, Entry> = containers
            .into_iter()
            .map(|c| (c.id.clone(), Entry { layer: Layer::of(c), fetched: now }))
            .collect();
        if let Ok(mut cache) = self.cache.write() {
            *cache = fresh;
        }
    }

    fn on_host(&self, engine_path: &str) -> PathBuf {
        self.host_root.join(engine_path.trim_start_matches('/'))
    }
}

impl RootfsLocator for DockerRootfs {
    /// The host directory that is the container's root now, if it has one.
    fn rootfs(&self, runtime: &str, container_id: &str) -> Option<PathBuf> {
        if runtime != RUNTIME {
            return None;
        }
        let cached = self.cache.read().ok().and_then(|c| c.get(container_id).cloned());
        let layer = match (cached, &self.socket) {
            (Some(e), None) => e.layer,
            (Some(e), Some(_)) if self.stale_after.is_none_or(|s| e.fetched.elapsed() < s) => e.layer,
            (cached, Some(socket)) => match blocking_inspect(socket, container_id) {
                Ok(Some(inspect)) => {
                    let c = Container::from_inspect(inspect);
                    self.update(&c);
                    Layer::of(&c)
                }
                Ok(None) => {
                    self.remove(container_id);
                    return None;
                }
                Err(e) => {
                    tracing::debug!(container = container_id, error = %e, "docker inspect failed; using the cache");
                    cached?.layer
                }
            },
            (None, None) => return None,
        };
        let root = layer.root(|m| self.on_host(m).is_dir())?;
        Some(self.on_host(root))
    }
}

/// `GET /containers/{id}/json` over a plain blocking socket (HTTP/1.0: the engine answers
/// without chunking and closes). `Ok(None)` when the container does not exist.
fn blocking_inspect(socket: &Path, id: &str) -> std::io::Result<Option<ContainerInspect>> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(None);
    }
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(INSPECT_TIMEOUT))?;
    stream.set_write_timeout(Some(INSPECT_TIMEOUT))?;
    write!(stream, "GET /{API_VERSION}/containers/{id}/json HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.take(MAX_INSPECT_BYTES).read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header"))?;
    let status_line = raw[..split].split(|&b| b == b'\r').next().unwrap_or_default();
    let status = std::str::from_utf8(status_line).ok().and_then(|l| l.split_whitespace().nth(1));
    match status {
        Some("200") => serde_json::from_slice(&raw[split + 4..]).map(Some).map_err(std::io::Error::other),
        Some("404") => Ok(None),
        other => Err(std::io::Error::other(format!("engine answered {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(status: &str) -> Layer {
        Layer { status: status.into(), merged_dir: Some("/m".into()), upper_dir: Some("/u".into()) }
    }

    #[test]
    fn merged_while_running_upper_once_stopped() {
        assert_eq!(layer("running").root(|_| true), Some("/m"));
        assert_eq!(layer("running").root(|_| false), Some("/u"));
        assert_eq!(layer("exited").root(|_| true), Some("/u"));
        assert_eq!(layer("dead").root(|_| true), Some("/u"));
        assert_eq!(layer("created").root(|_| true), None);
    }

    #[test]
    fn serves_only_docker_and_prefixes_the_host_root() {
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(host.path().join("m")).unwrap();
        let locator = DockerRootfs::new(host.path(), None);
        let c = Container {
            id: "abc".into(),
            status: "running".into(),
            merged_dir: Some("/m".into()),
            upper_dir: Some("/u".into()),
            ..Default::default()
        };
        locator.update(&c);
        assert_eq!(locator.rootfs("docker", "abc"), Some(host.path().join("m")));
        assert_eq!(locator.rootfs("containerd", "abc"), None);
        assert_eq!(locator.rootfs("docker", "other"), None);
        locator.replace_all([&Container { status: "exited".into(), ..c.clone() }]);
        assert_eq!(locator.rootfs("docker", "abc"), Some(host.path().join("u")));
        locator.remove("abc");
        assert_eq!(locator.rootfs("docker", "abc"), None);
    }
}
