//! One decision shared by collection (`engine`) and backup (`backup::engine`): is a file found
//! under one root of a container the file already followed under another root of it? A Docker
//! container's writable layer is reached through `GraphDriver.Data.MergedDir` while it runs and
//! through `UpperDir` once it stopped: another host path and device for the same bytes, which
//! must go on at their offset rather than start a second read or a second backup copy.

use std::path::Path;

/// What is known of a file followed before: tracked now, or from persisted state.
pub struct Seen<'a> {
    /// Its path inside the input's root (inside the container for a writable layer).
    pub rel: &'a Path,
    /// Where it was last seen on the host, and its identity there.
    pub host_path: &'a Path,
    pub dev: u64,
    pub ino: u64,
    /// Hash of its first `fingerprint_len` bytes.
    pub fingerprint: u64,
    pub fingerprint_len: u32,
    /// Bytes of it already read or copied.
    pub offset: u64,
}

/// A file found now that no (device, inode) of a followed file matches.
pub struct Found<'a> {
    pub rel: &'a Path,
    pub host_path: &'a Path,
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    /// Hash of its first `Seen::fingerprint_len` bytes; `None` when it is shorter.
    pub prefix: Option<u64>,
}

/// Is `found` the file `seen`, reached through another root of the same target? Same path
/// inside the root, the same first bytes, at least as long as what was read of it, and either
/// another host path (MergedDir <-> UpperDir) or the same host path remounted (a container
/// started again: an overlay's device changes, the inode numbers of its upper layer do not).
/// A file recreated at the same host path (another inode) is a new file, never this.
pub fn moved_root(seen: &Seen<'_>, found: &Found<'_>) -> bool {
    let other_root = seen.host_path != found.host_path;
    let remounted = seen.host_path == found.host_path && seen.ino == found.ino && seen.dev != found.dev;
    seen.fingerprint_len > 0
        && seen.rel == found.rel
        && (other_root || remounted)
        && found.prefix == Some(seen.fingerprint)
        && found.len >= seen.offset
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(rel: &'a str, host_path: &'a str, offset: u64) -> Seen<'a> {
        Seen {
            rel: Path::new(rel),
            host_path: Path::new(host_path),
            dev: 40,
            ino: 9,
            fingerprint: 7,
            fingerprint_len: 64,
            offset,
        }
    }

    fn found<'a>(rel: &'a str, host_path: &'a str, prefix: Option<u64>, len: u64) -> Found<'a> {
        Found { rel: Path::new(rel), host_path: Path::new(host_path), dev: 8, ino: 9, len, prefix }
    }

    #[test]
    fn a_file_moves_with_its_containers_root() {
        let rel = "opt/logs/app.log";
        let (merged_path, upper_path) = ("/d/l1/merged/opt/logs/app.log", "/d/l1/diff/opt/logs/app.log");
        let merged = seen(rel, merged_path, 100);
        // Stopped: the same file under UpperDir, as long or longer.
        assert!(moved_root(&merged, &found(rel, upper_path, Some(7), 100)));
        assert!(moved_root(&merged, &found(rel, upper_path, Some(7), 250)));
        // Other first bytes, shorter than what was read, or another file of the container.
        assert!(!moved_root(&merged, &found(rel, upper_path, Some(8), 250)));
        assert!(!moved_root(&merged, &found(rel, upper_path, None, 250)));
        assert!(!moved_root(&merged, &found(rel, upper_path, Some(7), 99)));
        assert!(!moved_root(&merged, &found("opt/logs/b.log", upper_path, Some(7), 250)));
        // Started again: the merged mount is back with another device, the inode is the same.
        assert!(moved_root(&merged, &found(rel, merged_path, Some(7), 250)));
        // Recreated at the same host path: another inode, a new file read from its start.
        let recreated = Found { ino: 10, ..found(rel, merged_path, Some(7), 250) };
        assert!(!moved_root(&merged, &recreated));
        // Without a fingerprint yet (just truncated) nothing can be told.
        let unknown = Seen { fingerprint_len: 0, ..merged };
        assert!(!moved_root(&unknown, &found(rel, upper_path, Some(7), 250)));
    }
}
