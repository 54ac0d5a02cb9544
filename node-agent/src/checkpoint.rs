//! Checkpoints: how far every file is committed, persisted under `--state-dir`.
//!
//! Two slots (`checkpoints.a` and `checkpoints.b`) are written in turn, each atomically (temp
//! file, fsync, rename, fsync dir). A slot starts with a header line carrying a sequence number,
//! the body's length and a checksum of the body, so a torn or corrupt slot is detected; loading
//! takes the valid slot with the highest sequence and reports the other one. Only when both are
//! unreadable does the agent start without checkpoints, and it says so loudly.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

const MAGIC: &str = "tailor-checkpoint v1";
const SLOTS: [&str; 2] = ["checkpoints.a", "checkpoints.b"];

/// The checkpoint of one file of one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    /// `collection/<namespace>/<name>/<pod>/<container>`.
    pub target: String,
    pub dev: u64,
    pub ino: u64,
    /// Hash of the first `fingerprint_len` bytes (decompressed, for `.gz`).
    pub fingerprint: u64,
    pub fingerprint_len: u32,
    /// Every event before this offset is acknowledged by every sink of the target.
    pub offset: u64,
    /// Where the file was last seen on the host, and the container path it maps.
    pub host_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    /// The path inside the input's root (inside the container for a writable layer): the same
    /// file seen through another root of its container is found by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel: Option<PathBuf>,
    /// Generation of the NodeLogConfig and of the source resource when last written.
    pub node_generation: i64,
    pub source_generation: i64,
    /// Unix seconds when the file was last seen; orphans expire from it.
    pub seen: u64,
}

impl FileCheckpoint {
    pub fn key(&self) -> CheckpointKey {
        (self.target.clone(), self.dev, self.ino)
    }
}

/// `(target, dev, ino)`.
pub type CheckpointKey = (String, u64, u64);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Body {
    files: Vec<FileCheckpoint>,
    /// Targets already applied once: `start: end` only applies to a target's first time.
    #[serde(default)]
    applied_targets: Vec<String>,
}

/// Why checkpoints could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("checkpoint {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl CheckpointError {
    pub fn category(&self) -> &'static str {
        match self {
            CheckpointError::Io { .. } => "io",
            CheckpointError::Corrupt { .. } => "corrupt",
        }
    }
}

/// What loading found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub files: BTreeMap<CheckpointKey, FileCheckpoint>,
    pub applied_targets: std::collections::BTreeSet<String>,
    /// Slots that exist but could not be used.
    pub problems: Vec<CheckpointError>,
    /// Both slots existed and neither was usable: the agent starts without checkpoints.
    pub lost: bool,
}

/// The two slots under the state directory.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    seq: u64,
    last_written: Option<Vec<u8>>,
}

impl CheckpointStore {
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf(), seq: 0, last_written: None }
    }

    /// Reads the newest valid slot.
    pub fn load(&mut self) -> Loaded {
        let mut loaded = Loaded::default();
        let mut best: Option<(u64, Body)> = None;
        let mut existing = 0;
        for slot in SLOTS {
            let path = self.dir.join(slot);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    existing += 1;
                    loaded.problems.push(CheckpointError::Io { path, source });
                    continue;
                }
            };
            existing += 1;
            match decode(&bytes) {
                Ok((seq, files)) => {
                    if best.as_ref().is_none_or(|(s, _)| seq > *s) {
                        best = Some((seq, files));
                    }
                }
                Err(reason) => loaded.problems.push(CheckpointError::Corrupt { path, reason }),
            }
        }
        match best {
            Some((seq, body)) => {
                self.seq = seq;
                loaded.files = body.files.into_iter().map(|f| (f.key(), f)).collect();
                loaded.applied_targets = body.applied_targets.into_iter().collect();
            }
            None => loaded.lost = existing > 0,
        }
        loaded
    }

    /// Writes `files` into the older slot, unless nothing changed since the last write.
    pub fn write(
        &mut self,
        files: &[FileCheckpoint],
        applied_targets: &[String],
    ) -> Result<bool, CheckpointError> {
        let body = Body { files: files.to_vec(), applied_targets: applied_targets.to_vec() };
        let body = serde_json::to_vec(&body)
            .map_err(|e| CheckpointError::Corrupt { path: self.dir.clone(), reason: e.to_string() })?;
        if self.last_written.as_deref() == Some(&body[..]) {
            return Ok(false);
        }
        self.seq += 1;
        let bytes = encode(self.seq, &body);
        let path = self.dir.join(SLOTS[(self.seq % 2) as usize]);
        write_atomic(&path, &bytes).map_err(|source| CheckpointError::Io { path, source })?;
        self.last_written = Some(body);
        Ok(true)
    }
}

fn encode(seq: u64, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{MAGIC} {seq} {} {:016x}\n", body.len(), fnv1a(body)).into_bytes();
    out.extend_from_slice(body);
    out
}

fn decode(bytes: &[u8]) -> Result<(u64, Body), String> {
    let nl = memchr::memchr(b'\n', bytes).ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not text")?;
    let rest = header.strip_prefix(MAGIC).ok_or("unknown header")?;
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let [seq, len, sum] = parts.as_slice() else { return Err("malformed header".into()) };
    let seq: u64 = seq.parse().map_err(|_| "bad sequence")?;
    let len: usize = len.parse().map_err(|_| "bad length")?;
    let sum = u64::from_str_radix(sum, 16).map_err(|_| "bad checksum")?;
    let body = &bytes[nl + 1..];
    if body.len() != len {
        return Err(format!("body is {} bytes, header says {len} (torn write)", body.len()));
    }
    if fnv1a(body) != sum {
        return Err("checksum mismatch".into());
    }
    let body: Body = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    Ok((seq, body))
}

/// FNV-1a, 64 bit: checksums and fingerprints (not security relevant).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(offset: u64) -> FileCheckpoint {
        FileCheckpoint {
            target: "collection/ns/c/p/app".into(),
            dev: 1,
            ino: 2,
            fingerprint: 3,
            fingerprint_len: 64,
            offset,
            host_path: "/var/log/pods/x/0.log".into(),
            container_path: None,
            rel: None,
            node_generation: 4,
            source_generation: 5,
            seen: 6,
        }
    }

    #[test]
    fn round_trip_and_unchanged_state_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = CheckpointStore::new(dir.path());
        assert!(s.write(&[cp(10)], &[]).unwrap());
        assert!(!s.write(&[cp(10)], &[]).unwrap());
        assert!(s.write(&[cp(20)], &[]).unwrap());
        let loaded = CheckpointStore::new(dir.path()).load();
        assert!(loaded.problems.is_empty());
        assert_eq!(loaded.files.values().next().unwrap().offset, 20);
    }

    #[test]
    fn a_corrupt_newest_slot_falls_back_to_the_previous_good_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = CheckpointStore::new(dir.path());
        s.write(&[cp(10)], &[]).unwrap(); // seq 1 → slot b
        s.write(&[cp(20)], &[]).unwrap(); // seq 2 → slot a
        let newest = dir.path().join("checkpoints.a");
        let mut bytes = std::fs::read(&newest).unwrap();
        bytes.truncate(bytes.len() - 7); // torn write
        std::fs::write(&newest, &bytes).unwrap();
        let mut s2 = CheckpointStore::new(dir.path());
        let loaded = s2.load();
        assert_eq!(loaded.files.values().next().unwrap().offset, 10);
        assert!(matches!(loaded.problems.as_slice(), [CheckpointError::Corrupt { .. }]));
        assert!(!loaded.lost);
        // The next write goes over the corrupt slot, not the good one.
        s2.write(&[cp(30)], &[]).unwrap();
        assert_eq!(CheckpointStore::new(dir.path()).load().files.values().next().unwrap().offset, 30);
        let good = std::fs::read(dir.path().join("checkpoints.b")).unwrap();
        assert_eq!(decode(&good).unwrap().1.files[0].offset, 10);
    }

    #[test]
    fn flipped_bits_and_garbage_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = CheckpointStore::new(dir.path());
        s.write(&[cp(10)], &[]).unwrap();
        let p = dir.path().join("checkpoints.b");
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 5] ^= 0x01;
        std::fs::write(&p, &bytes).unwrap();
        let loaded = CheckpointStore::new(dir.path()).load();
        assert!(loaded.lost, "the only slot is corrupt");
        assert!(loaded.files.is_empty());
        std::fs::write(&p, b"\x00\x00garbage").unwrap();
        assert!(CheckpointStore::new(dir.path()).load().lost);
        assert!(!CheckpointStore::new(tempfile::tempdir().unwrap().path()).load().lost);
    }
}
