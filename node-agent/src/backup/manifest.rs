//! The manifest of a destination directory (`.tailor-backup.json`): which pod and container
//! each file came from, so that backups can be found by namespace, pod and container long after
//! the pod is gone, whatever layout the policy used.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::BackupError;
use super::layout::{MANIFEST, strip_compression};
use crate::fsutil::write_atomic;

/// Where files of one container came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    pub namespace: String,
    pub pod: String,
    #[serde(default)]
    pub pod_uid: String,
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// `namespace/name` of the policy.
    pub policy: String,
    pub node: String,
    /// Destination file names (without our compression suffix).
    #[serde(default)]
    pub files: Vec<String>,
    /// When each file's content begins (Unix seconds): the source's creation time, or when the
    /// copy started; the end is the file's modification time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub first_write: BTreeMap<String, i64>,
}

impl Origin {
    fn same_container(&self, other: &Origin) -> bool {
        self.namespace == other.namespace
            && self.pod == other.pod
            && self.pod_uid == other.pod_uid
            && self.container == other.container
            && self.policy == other.policy
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub version: u32,
    pub origins: Vec<Origin>,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Manifest, BackupError> {
        let path = dir.join(MANIFEST);
        match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| BackupError::State { path, message: e.to_string() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Manifest { version: 1, origins: Vec::new() })
            }
            Err(e) => Err(BackupError::io("read", path, e)),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), BackupError> {
        let path = dir.join(MANIFEST);
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| BackupError::State { path: path.clone(), message: e.to_string() })?;
        write_atomic(&path, &bytes).map_err(|e| BackupError::io("write", path, e))
    }

    /// Records that `name` belongs to `origin`, its content beginning at `first_write` (Unix
    /// seconds); returns whether anything changed.
    pub fn add_file(&mut self, origin: &Origin, name: &str, first_write: Option<i64>) -> bool {
        let name = strip_compression(name);
        let idx = match self.origins.iter().position(|o| o.same_container(origin)) {
            Some(i) => i,
            None => {
                let mut o = origin.clone();
                o.files.clear();
                o.first_write.clear();
                self.origins.push(o);
                self.origins.len() - 1
            }
        };
        let o = &mut self.origins[idx];
        let mut changed = false;
        if let Some(t) = first_write
            && o.first_write.get(name) != Some(&t)
        {
            o.first_write.insert(name.to_string(), t);
            changed = true;
        }
        if !o.files.iter().any(|f| f == name) {
            o.files.push(name.to_string());
            o.files.sort();
            changed = true;
        }
        changed
    }

    /// When the content of a file on disk begins, if recorded.
    pub fn first_write_of(&self, name: &str) -> Option<i64> {
        let base = strip_compression(name);
        self.origin_of(name)
            .and_then(|o| o.first_write.get(base).or_else(|| o.first_write.get(name)).copied())
    }

    /// Forgets files that are no longer on disk; drops origins without files.
    pub fn retain_files(&mut self, present: impl Fn(&str) -> bool) -> bool {
        let before = self.clone();
        for o in &mut self.origins {
            o.files.retain(|f| present(f));
            let files = o.files.clone();
            o.first_write.retain(|f, _| files.contains(f));
        }
        self.origins.retain(|o| !o.files.is_empty());
        before != *self
    }

    /// The origin of a file on disk (compressed by us or not).
    pub fn origin_of(&self, name: &str) -> Option<&Origin> {
        let base = strip_compression(name);
        self.origins.iter().find(|o| o.files.iter().any(|f| f == base || f == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_map_to_their_container() {
        let a =
            Origin { namespace: "ns".into(), pod: "a".into(), container: "c".into(), ..Default::default() };
        let b = Origin { pod: "b".into(), ..a.clone() };
        let mut m = Manifest::default();
        assert!(m.add_file(&a, "0.log", Some(5)));
        assert!(!m.add_file(&a, "0.log.zst", None));
        assert!(m.add_file(&b, "0.log.1", None));
        assert_eq!(m.first_write_of("0.log.zst"), Some(5));
        assert_eq!(m.first_write_of("0.log.1"), None);
        assert_eq!(m.origin_of("0.log.zst").unwrap().pod, "a");
        assert_eq!(m.origin_of("0.log.1").unwrap().pod, "b");
        assert!(m.origin_of("x").is_none());
        assert!(m.retain_files(|f| f != "0.log.1"));
        assert_eq!(m.origins.len(), 1);
    }
}
