//! Where copies go: checking a rendered destination and naming destination files.
//!
//! The operator renders and sanitises destinations already; the agent checks again because a
//! destination is joined under the backup root and must never leave it.

use std::path::PathBuf;

use super::error::BackupError;

/// Name of the per-directory manifest that tells which pod and container a file came from.
pub const MANIFEST: &str = ".tailor-backup.json";

/// Suffixes of compressed files: ours (`.zst`, `.gz`) and the writer's (kubelet gzips rotated logs).
pub const COMPRESSED_SUFFIXES: [&str; 2] = [".zst", ".gz"];

/// Checks a rendered destination: relative, no `..`, `.` or empty components, no NUL, not the
/// manifest. Returns it as a relative path.
pub fn checked_destination(dest: &str) -> Result<PathBuf, BackupError> {
    let bad =
        |reason: &str| BackupError::Destination { destination: dest.to_string(), reason: reason.to_string() };
    if dest.is_empty() {
        return Err(bad("empty"));
    }
    if dest.starts_with('/') {
        return Err(bad("absolute"));
    }
    if dest.contains('\0') || dest.contains('\\') {
        return Err(bad("NUL or backslash"));
    }
    let mut out = PathBuf::new();
    for part in dest.trim_end_matches('/').split('/') {
        match part {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("`.` or `..` component")),
            p if p.starts_with(".tailor") => return Err(bad("reserved name")),
            p => out.push(p),
        }
    }
    Ok(out)
}

/// Is `name` one path component that can be a destination file name?
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && !name.starts_with(".tailor")
        && !name.ends_with(".tmp")
}

/// The name without our or the writer's compression suffix.
pub fn strip_compression(name: &str) -> &str {
    COMPRESSED_SUFFIXES.iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

/// Was the file compressed by its writer (copied as is, never compressed again)?
pub fn is_writer_compressed(name: &str) -> bool {
    COMPRESSED_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// `desired` if neither it nor a compressed form of it is taken, else `desired.1`, `desired.2`...
/// so that two sources never share a destination file.
pub fn free_name(desired: &str, taken: impl Fn(&str) -> bool) -> String {
    let used = |n: &str| taken(n) || COMPRESSED_SUFFIXES.iter().any(|s| taken(&format!("{n}{s}")));
    if !used(desired) {
        return desired.to_string();
    }
    (1u64..).map(|i| format!("{desired}.{i}")).find(|n| !used(n)).unwrap_or_else(|| desired.to_string())
}

/// Longest common directory of the destinations (for the status: where the copy lives).
pub fn common_dir<'a>(dests: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut common: Option<Vec<&str>> = None;
    for d in dests {
        let parts: Vec<&str> = d.split('/').filter(|p| !p.is_empty()).collect();
        common = Some(match common {
            None => parts,
            Some(c) => c.iter().zip(parts.iter()).take_while(|(a, b)| a == b).map(|(a, _)| *a).collect(),
        });
    }
    common.map(|c| c.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_stay_under_the_root() {
        assert_eq!(checked_destination("ns/web/web-1/app").unwrap(), PathBuf::from("ns/web/web-1/app"));
        assert_eq!(checked_destination("ns/app/").unwrap(), PathBuf::from("ns/app"));
        for bad in
            ["", "/etc", "a/../b", "..", "a//b", "./a", "a/./b", "a\\..\\b", "a/.tailor-backup.json", "a\0b"]
        {
            assert!(checked_destination(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn free_names_never_collide() {
        let taken = ["0.log", "0.log.1.zst"];
        let is_taken = |n: &str| taken.contains(&n);
        assert_eq!(free_name("1.log", is_taken), "1.log");
        assert_eq!(free_name("0.log", is_taken), "0.log.2");
        assert_eq!(free_name("0", |n| n == "0.gz"), "0.1");
    }

    #[test]
    fn names() {
        assert!(is_plain_file_name("0.log.20240101-000000"));
        assert!(!is_plain_file_name("../x"));
        assert!(!is_plain_file_name(".tailor-backup.json"));
        assert_eq!(strip_compression("0.log.zst"), "0.log");
        assert!(is_writer_compressed("0.log.20240101.gz"));
        assert_eq!(common_dir(["ns/web/a/c", "ns/web/b/c"]).as_deref(), Some("ns/web"));
        assert_eq!(common_dir(["x/y"]).as_deref(), Some("x/y"));
        assert_eq!(common_dir(Vec::<&str>::new()), None);
    }
}
