//! The engine's persistent state: per source file, its identity, how far it was copied and into
//! which destination file; per policy, its retention (kept after the policy is deleted so the
//! data is still aged out). Written with `fsutil::write_atomic` only after the copies it
//! describes were fsynced, so a crash can leave copied bytes that the state does not know
//! (they are cut off again on restart) but never a state that claims bytes that are not there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tailor_crds::backup::BackupCompression;

use super::error::BackupError;
use super::identity::Fingerprint;
use crate::fsutil::write_atomic;

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;
/// File name of the state under the state dir.
pub const STATE_FILE: &str = "backup-state.json";

/// Codec of a destination file that we compressed (its later appends are new frames/members,
/// which zstd and gzip readers concatenate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Codec {
    Zstd,
    Gzip,
}

impl Codec {
    pub fn from_policy(c: BackupCompression) -> Option<Codec> {
        match c {
            BackupCompression::Zstd => Some(Codec::Zstd),
            BackupCompression::Gzip => Some(Codec::Gzip),
            BackupCompression::None => None,
        }
    }
    pub fn suffix(self) -> &'static str {
        match self {
            Codec::Zstd => ".zst",
            Codec::Gzip => ".gz",
        }
    }
}

/// One source file of one policy and the destination file that holds its copy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRecord {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// `namespace/pod/container`.
    pub target: String,
    pub dev: u64,
    pub ino: u64,
    pub fingerprint: Fingerprint,
    /// Where the source was last seen (host path).
    pub source_path: PathBuf,
    /// Its path inside the input's root (inside the container for a writable layer): the same
    /// file seen through another root of its container (`moved_root`) keeps this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel: Option<PathBuf>,
    /// Destination directory, relative to the backup root.
    pub destination: String,
    /// Destination file name in that directory.
    pub dest_name: String,
    /// Source bytes copied so far: copying resumes here.
    pub offset: u64,
    /// Committed length of the destination file (differs from `offset` once compressed or
    /// after a truncation started a new destination file).
    pub dest_len: u64,
    /// Set once we compressed the destination file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<Codec>,
    /// Retention removed the copy while the source is still on the node: never copied again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

impl SourceRecord {
    pub fn key(&self) -> SourceKey {
        SourceKey { policy: self.policy.clone(), dev: self.dev, ino: self.ino }
    }
}

/// A source file of one policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub policy: String,
    pub dev: u64,
    pub ino: u64,
}

/// What retention needs to know about a policy, even after it is gone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRecord {
    pub max_age: String,
    pub max_bytes: String,
    pub compression: BackupCompression,
    /// Every destination directory the policy wrote to on this node.
    pub destinations: Vec<String>,
    /// False once the policy left the node's configuration.
    pub active: bool,
}

/// A closed destination file waiting to be compressed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct PendingCompression {
    pub policy: String,
    pub destination: String,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupState {
    pub version: u32,
    pub sources: Vec<SourceRecord>,
    pub policies: BTreeMap<String, PolicyRecord>,
    #[serde(default)]
    pub pending_compression: Vec<PendingCompression>,
}

impl BackupState {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    /// Loads the state; a missing file is an empty state.
    pub fn load(state_dir: &Path) -> Result<BackupState, BackupError> {
        let path = Self::path(state_dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(BackupState { version: STATE_VERSION, ..Default::default() });
            }
            Err(e) => return Err(BackupError::io("read", path, e)),
        };
        let state: BackupState = serde_json::from_slice(&bytes)
            .map_err(|e| BackupError::State { path: path.clone(), message: e.to_string() })?;
        if state.version != STATE_VERSION {
            return Err(BackupError::State { path, message: format!("unknown version {}", state.version) });
        }
        Ok(state)
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), BackupError> {
        let path = Self::path(state_dir);
        let bytes = serde_json::to_vec(self)
            .map_err(|e| BackupError::State { path: path.clone(), message: e.to_string() })?;
        write_atomic(&path, &bytes).map_err(|e| BackupError::io("write", path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let empty = BackupState::load(dir.path()).unwrap();
        assert!(empty.sources.is_empty());
        let mut s = empty.clone();
        s.sources.push(SourceRecord {
            policy: "ns/p".into(),
            target: "ns/pod/c".into(),
            dev: 1,
            ino: 2,
            fingerprint: Fingerprint { len: 3, hash: 4 },
            source_path: "/var/log/pods/x/c/0.log".into(),
            rel: Some("0.log".into()),
            destination: "ns/w/pod/c".into(),
            dest_name: "0.log".into(),
            offset: 10,
            dest_len: 10,
            codec: None,
            expired: false,
        });
        s.save(dir.path()).unwrap();
        assert_eq!(BackupState::load(dir.path()).unwrap(), s);
    }
}
