//! Turning a target's inputs into host files. The engine depends on the `InputResolver` seam;
//! the agent's `crate::resolve` (confinement in the container's root, container rootfs lookup)
//! plugs in there. `HostGlobResolver` is the engine's own resolver for inputs whose root is a
//! host directory (pod logs, emptyDir, hostPath, docker json): it expands globs under the root
//! and never follows a symlink, so nothing outside the root is read.

use std::path::{Path, PathBuf};

use tailor_crds::node::{HostRootKind, Input};

/// Finds the host files of an input.
pub trait InputResolver: Send + Sync + 'static {
    fn resolve(&self, input: &Input) -> Result<Vec<PathBuf>, String>;
}

/// Resolves host-directory inputs under `host_root`.
#[derive(Clone, Debug)]
pub struct HostGlobResolver {
    pub host_root: PathBuf,
}

impl InputResolver for HostGlobResolver {
    fn resolve(&self, input: &Input) -> Result<Vec<PathBuf>, String> {
        if input.root.kind == HostRootKind::ContainerRootfs {
            return Err("container rootfs inputs need the agent's resolver".into());
        }
        let host_dir = input.root.host_dir.as_deref().ok_or("input root has no hostDir")?;
        let mut root = self.host_root.clone();
        for part in host_dir.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(format!("hostDir {host_dir:?} has `..`")),
                p => root.push(p),
            }
        }
        let parts: Vec<&str> = input.path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        if parts.contains(&"..") {
            return Err(format!("path {:?} has `..`", input.path));
        }
        let mut out = Vec::new();
        expand(&root, &parts, &mut out);
        out.sort();
        out.dedup();
        Ok(out)
    }
}

fn expand(dir: &Path, parts: &[&str], out: &mut Vec<PathBuf>) {
    let Some((first, rest)) = parts.split_first() else { return };
    if *first == "**" {
        expand(dir, rest, out);
        for (path, is_dir) in entries(dir) {
            if is_dir {
                expand(&path, parts, out);
            }
        }
        return;
    }
    for (path, is_dir) in entries(dir) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if !wildcard_match(first.as_bytes(), name.as_bytes()) {
            continue;
        }
        if rest.is_empty() {
            if !is_dir {
                out.push(path);
            }
        } else if is_dir {
            expand(&path, rest, out);
        }
    }
}

/// Entries of a directory that are regular files or directories (symlinks are skipped).
fn entries(dir: &Path) -> Vec<(PathBuf, bool)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let ft = e.file_type().ok()?;
            (ft.is_file() || ft.is_dir()).then(|| (e.path(), ft.is_dir()))
        })
        .collect()
}

/// Shell wildcard match: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`; a leading `.` must match literally.
pub fn wildcard_match(pat: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pat.first() != Some(&b'.') {
        return false;
    }
    matches(pat, name)
}

fn matches(pat: &[u8], name: &[u8]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| matches(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && matches(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().skip(1).position(|&c| c == b']').map(|p| p + 1) else {
                return name.first() == Some(&b'[') && matches(rest, &name[1..]);
            };
            let Some(&c) = name.first() else { return false };
            let (negate, set) = match rest[..end].split_first() {
                Some((b'!', s)) | Some((b'^', s)) => (true, s),
                _ => (false, &rest[..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && matches(&rest[end + 1..], &name[1..])
        }
        Some((&p, rest)) => name.first() == Some(&p) && matches(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailor_crds::node::{HostRoot, InputKind};

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*.log*", b"0.log.20240101-000000.gz"));
        assert!(wildcard_match(b"[0-9].log", b"3.log"));
        assert!(!wildcard_match(b"[!0-9].log", b"3.log"));
        assert!(!wildcard_match(b"*.log", b".hidden.log"));
        assert!(wildcard_match(b"a?c", b"abc"));
    }

    #[test]
    fn globs_stay_in_the_root_and_skip_symlinks() {
        let host = tempfile::tempdir().unwrap();
        let d = host.path().join("var/log/pods/ns_p_u/c");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("0.log"), "a").unwrap();
        std::fs::write(d.join("sub/1.log"), "b").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("2.log")).unwrap();
        let r = HostGlobResolver { host_root: host.path().into() };
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
        assert_eq!(r.resolve(&input("*.log")).unwrap(), vec![d.join("0.log")]);
        assert_eq!(r.resolve(&input("**/*.log")).unwrap(), vec![d.join("0.log"), d.join("sub/1.log")]);
        assert!(r.resolve(&input("../*.log")).is_err());
    }
}
