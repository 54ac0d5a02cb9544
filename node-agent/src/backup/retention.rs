//! Retention: which backup files to delete, oldest first, so that a policy's files on this node
//! stay within its maximum age and maximum bytes. Files still being written are never deleted.

use std::time::{Duration, SystemTime};

/// A file in a policy's backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupFile {
    pub destination: String,
    pub name: String,
    pub len: u64,
    pub mtime: SystemTime,
    /// Still the copy of a tracked source: never deleted by retention.
    pub active: bool,
}

/// Indices of the files to delete.
pub fn expired(files: &[BackupFile], max_age: Duration, max_bytes: u64, now: SystemTime) -> Vec<usize> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| {
        files[a].mtime.cmp(&files[b].mtime).then_with(|| files[a].name.cmp(&files[b].name))
    });
    let mut total: u64 = files.iter().map(|f| f.len).sum();
    let mut out = Vec::new();
    for i in order {
        let f = &files[i];
        if f.active {
            continue;
        }
        let too_old = now.duration_since(f.mtime).map(|age| age > max_age).unwrap_or(false);
        if too_old || total > max_bytes {
            total -= f.len;
            out.push(i);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, len: u64, age_s: u64, active: bool, now: SystemTime) -> BackupFile {
        BackupFile {
            destination: "d".into(),
            name: name.into(),
            len,
            mtime: now - Duration::from_secs(age_s),
            active,
        }
    }

    #[test]
    fn oldest_first_by_age_and_bytes() {
        let now = SystemTime::now();
        let files = vec![
            file("new", 100, 10, false, now),
            file("old", 100, 1000, false, now),
            file("mid", 100, 500, false, now),
            file("live", 100, 5000, true, now),
        ];
        assert_eq!(expired(&files, Duration::from_secs(600), u64::MAX, now), vec![1]);
        // 400 bytes, keep 200: the two oldest inactive go (live is never deleted).
        assert_eq!(expired(&files, Duration::from_secs(1 << 30), 200, now), vec![1, 2]);
        assert!(expired(&files, Duration::from_secs(1 << 30), 400, now).is_empty());
    }
}
