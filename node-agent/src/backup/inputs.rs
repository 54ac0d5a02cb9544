//! Turning a target's inputs into host files. The engine depends on the `InputResolver` seam;
//! `AgentResolver` plugs in the agent's `crate::resolve` (globs expanded and files opened inside
//! the input's root, like `openat2(RESOLVE_IN_ROOT)`, container writable layers found through
//! the runtime locators).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tailor_crds::node::Input;

use crate::resolve::{ContainerdLocator, MatchedFile, ResolveError, RootfsLocator, expand_input, input_root};

/// Finds and opens the host files of an input.
pub trait InputResolver: Send + Sync + 'static {
    /// The files the input matches now: their host paths, and their paths inside the input's
    /// root (which stay the same when a container's root moves).
    fn resolve(&self, input: &Input) -> Result<Vec<MatchedFile>, String>;

    /// Opens one of them for reading without leaving the input's root.
    fn open(&self, input: &Input, path: &Path) -> io::Result<File>;
}

/// The agent's resolver.
#[derive(Clone)]
pub struct AgentResolver {
    pub host_root: PathBuf,
    pub locator: Arc<dyn RootfsLocator>,
}

impl AgentResolver {
    /// With the containerd locator only (add others with `with_locator`).
    pub fn new(host_root: impl Into<PathBuf>) -> AgentResolver {
        let host_root = host_root.into();
        AgentResolver { locator: Arc::new(ContainerdLocator { host_root: host_root.clone() }), host_root }
    }

    pub fn with_locator(host_root: impl Into<PathBuf>, locator: Arc<dyn RootfsLocator>) -> AgentResolver {
        AgentResolver { host_root: host_root.into(), locator }
    }
}

fn absent(e: &ResolveError) -> bool {
    matches!(e, ResolveError::NotFound { .. })
}

impl InputResolver for AgentResolver {
    fn resolve(&self, input: &Input) -> Result<Vec<MatchedFile>, String> {
        match expand_input(input, &self.host_root, self.locator.as_ref()) {
            Ok((_, expansion)) => {
                // A directory that does not exist (yet, or any more) is no error for a backup.
                if let Some(p) = expansion.problems.iter().find(|p| !absent(p)) {
                    return Err(p.to_string());
                }
                Ok(expansion.files)
            }
            Err(e) if absent(&e) => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn open(&self, input: &Input, path: &Path) -> io::Result<File> {
        let root = input_root(input, &self.host_root, self.locator.as_ref()).map_err(io::Error::other)?;
        let rel = path
            .strip_prefix(root.path())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path outside the input's root"))?;
        root.open_file(rel).map_err(|e| match e {
            ResolveError::NotFound { .. } => io::Error::from(io::ErrorKind::NotFound),
            ResolveError::Io { source, .. } => source,
            other => io::Error::other(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailor_crds::node::{HostRoot, HostRootKind, InputKind};

    #[test]
    fn globs_stay_in_the_root() {
        let host = tempfile::tempdir().unwrap();
        let d = host.path().join("var/log/pods/ns_p_u/c");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("0.log"), "a").unwrap();
        std::fs::write(host.path().join("secret.log"), "s").unwrap();
        std::os::unix::fs::symlink("/secret.log", d.join("1.log")).unwrap();
        let r = AgentResolver::new(host.path());
        let input = |path: &str| Input {
            kind: InputKind::Stdio,
            streams: vec![],
            container_path: None,
            root: HostRoot {
                kind: HostRootKind::PodLogs,
                host_dir: Some("/var/log/pods/ns_p_u/c".into()),
                container_id: None,
                runtime: None,
            },
            path: path.into(),
        };
        let paths = |i: &Input| r.resolve(i).unwrap().into_iter().map(|m| m.path).collect::<Vec<_>>();
        assert_eq!(paths(&input("0.log*")), vec![d.join("0.log")]);
        assert_eq!(r.resolve(&input("0.log*")).unwrap()[0].rel, Path::new("0.log"));
        // The symlink resolves inside the pod's log directory, where there is no secret.log.
        for p in paths(&input("*.log")) {
            assert!(p.starts_with(&d), "{}", p.display());
        }
        assert!(r.open(&input("*.log"), &host.path().join("secret.log")).is_err());
        assert!(r.resolve(&input("*.log")).is_ok());
        let mut gone = input("*.log");
        gone.root.host_dir = Some("/var/log/pods/ns_gone_u/c".into());
        assert_eq!(paths(&gone), Vec::<PathBuf>::new());
    }
}
