//! A node's filesystem as the kubelet and containerd lay it out, under an agent's `--host-root`:
//! CRI log files under `/var/log/pods` and emptyDir volumes under `/var/lib/kubelet/pods`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The host root of one node.
#[derive(Clone, Debug)]
pub struct NodeFs {
    root: PathBuf,
}

impl NodeFs {
    pub fn create(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join("var/log/pods"))?;
        std::fs::create_dir_all(root.join("var/lib/kubelet/pods"))?;
        Ok(Self { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `/var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log`.
    pub fn cri_log(&self, namespace: &str, pod: &str, uid: &str, container: &str, restart: i32) -> PathBuf {
        self.root.join(format!("var/log/pods/{namespace}_{pod}_{uid}/{container}/{restart}.log"))
    }

    /// `/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>`.
    pub fn empty_dir(&self, uid: &str, volume: &str) -> PathBuf {
        self.root.join(format!("var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~empty-dir/{volume}"))
    }
}

/// One CRI log line (`<RFC3339Nano> <stream> F <message>`), as containerd writes it.
pub fn cri_line(stream: &str, message: &str) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    format!("{now} {stream} F {message}\n")
}

/// Appends `lines` (CRI-framed for stdio, plain for files) to `path`, creating folders.
pub fn append(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
