//! Finding the originals: walks the backup root (never following symlinks), reads each
//! destination's manifest, and lists, prints or greps the files of a namespace, pod, container
//! and time range, decompressing `.zst` and `.gz` transparently.
//!
//! Callers never pass a path: files are chosen by equality on manifest fields and names from
//! the walk, and opened below the root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::dest::{DestRoot, list_files};
use super::error::BackupError;
use super::layout::MANIFEST;
use super::manifest::Manifest;

/// Deepest directory level searched under the root.
const MAX_DEPTH: usize = 16;

/// Which backup files a query selects. Empty fields select everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub policy: Option<String>,
    /// One file name as listed (e.g. `0.log.20240101-000000.zst`).
    #[serde(default)]
    pub file: Option<String>,
    /// Files written to at or after this time (RFC 3339, or a duration ago such as `2h`).
    #[serde(default)]
    pub since: Option<String>,
    /// Files started at or before this time.
    #[serde(default)]
    pub until: Option<String>,
}

/// One backup file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    pub policy: String,
    pub node: String,
    /// Directory relative to the backup root.
    pub destination: String,
    pub file: String,
    pub bytes: u64,
    /// When the copy was started (file birth time where the filesystem has one).
    pub first_write: chrono::DateTime<chrono::Utc>,
    /// The source's last modification (copies carry it, like `rsync -a`).
    pub last_write: chrono::DateTime<chrono::Utc>,
}

/// Parses `--since`/`--until`: RFC 3339 or a duration ago (`30m`, `2h`, `7d`).
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime, BackupError> {
    if let Ok(d) = tailor_crds::units::parse_duration(s) {
        return Ok(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| SystemTime::from(t.with_timezone(&chrono::Utc)))
        .map_err(|_| BackupError::Api(format!("bad time {s:?}: expected RFC 3339 or a duration like 2h")))
}

fn eq(want: &Option<String>, have: &str) -> bool {
    want.as_deref().is_none_or(|w| w.is_empty() || w == have)
}

/// Lists the backup files under `root` that match `filter`, sorted by namespace, pod,
/// container, first write, last write and name (so `cat` prints a container's logs in order).
pub fn list(root: &Path, filter: &Filter) -> Result<Vec<Entry>, BackupError> {
    let now = SystemTime::now();
    let since = filter.since.as_deref().map(|s| parse_time(s, now)).transpose()?;
    let until = filter.until.as_deref().map(|s| parse_time(s, now)).transpose()?;
    let mut dirs = Vec::new();
    find_manifests(root, Path::new(""), 0, &mut dirs);
    let mut out = Vec::new();
    for rel in dirs {
        let dir = root.join(&rel);
        let Ok(manifest) = Manifest::load(&dir) else { continue };
        let Ok(files) = list_files(&dir) else { continue };
        for (name, meta) in files {
            let Some(o) = manifest.origin_of(&name) else { continue };
            if !(eq(&filter.namespace, &o.namespace)
                && eq(&filter.pod, &o.pod)
                && eq(&filter.container, &o.container)
                && eq(&filter.policy, &o.policy)
                && eq(&filter.file, &name))
            {
                continue;
            }
            let last = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let recorded = manifest
                .first_write_of(&name)
                .map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s.max(0) as u64));
            let first = recorded.or_else(|| meta.created().ok()).unwrap_or(last).min(last);
            if since.is_some_and(|s| last < s) || until.is_some_and(|u| first > u) {
                continue;
            }
            out.push(Entry {
                namespace: o.namespace.clone(),
                pod: o.pod.clone(),
                pod_uid: o.pod_uid.clone(),
                container: o.container.clone(),
                policy: o.policy.clone(),
                node: o.node.clone(),
                destination: rel.to_string_lossy().into_owned(),
                file: name,
                bytes: meta.len(),
                first_write: first.into(),
                last_write: last.into(),
            });
        }
    }
    out.sort_by(|a, b| {
        (&a.namespace, &a.pod, &a.container, a.first_write, a.last_write, &a.file).cmp(&(
            &b.namespace,
            &b.pod,
            &b.container,
            b.first_write,
            b.last_write,
            &b.file,
        ))
    });
    Ok(out)
}

/// Directories (relative to the root) that hold a manifest.
fn find_manifests(root: &Path, rel: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(rd) = std::fs::read_dir(root.join(rel)) else { return };
    let mut subdirs = Vec::new();
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name();
        if ft.is_file() && name == MANIFEST && depth > 0 {
            out.push(rel.to_path_buf());
        } else if ft.is_dir() {
            subdirs.push(rel.join(name));
        }
    }
    subdirs.sort();
    for d in subdirs {
        find_manifests(root, &d, depth + 1, out);
    }
}

/// Opens a listed file below the root and returns its decompressed content.
pub fn open(root: &DestRoot, entry: &Entry) -> Result<Box<dyn Read + Send>, BackupError> {
    let dir = root
        .dir(Path::new(&entry.destination), false)
        .map_err(|e| BackupError::io("open", root.path().join(&entry.destination), e))?;
    let f: File =
        dir.open_read(&entry.file).map_err(|e| BackupError::io("open", dir.path().join(&entry.file), e))?;
    let io_err = |e| BackupError::io("decompress", dir.path().join(&entry.file), e);
    Ok(if entry.file.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(f).map_err(io_err)?)
    } else if entry.file.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, f)))
    } else {
        Box::new(f)
    })
}

/// Writes the content of every selected file, in order.
pub fn cat(root: &DestRoot, entries: &[Entry], out: &mut dyn Write) -> Result<u64, BackupError> {
    let mut total = 0;
    for e in entries {
        let mut r = open(root, e)?;
        total += io::copy(&mut r, out)
            .map_err(|err| BackupError::io("read", root.path().join(&e.destination).join(&e.file), err))?;
    }
    Ok(total)
}

/// Writes the lines matching `re`, prefixed by `namespace/pod/container/file:line:`; stops after
/// `max_matches`. Returns the number of matches.
pub fn grep(
    root: &DestRoot,
    entries: &[Entry],
    re: &regex::bytes::Regex,
    max_matches: usize,
    out: &mut dyn Write,
) -> Result<usize, BackupError> {
    let mut matches = 0;
    let mut line = Vec::with_capacity(4096);
    for e in entries {
        let path = root.path().join(&e.destination).join(&e.file);
        let mut r = BufReader::with_capacity(1 << 20, open(root, e)?);
        let mut n = 0u64;
        loop {
            line.clear();
            let got = r.read_until(b'\n', &mut line).map_err(|err| BackupError::io("read", &path, err))?;
            if got == 0 {
                break;
            }
            n += 1;
            if re.is_match(&line) {
                let w = |err| BackupError::io("write", "output", err);
                write!(out, "{}/{}/{}/{}:{}:", e.namespace, e.pod, e.container, e.file, n).map_err(w)?;
                out.write_all(&line).map_err(w)?;
                if !line.ends_with(b"\n") {
                    out.write_all(b"\n").map_err(w)?;
                }
                matches += 1;
                if matches >= max_matches {
                    return Ok(matches);
                }
            }
        }
    }
    Ok(matches)
}

/// Human-readable table of entries.
pub fn write_table(entries: &[Entry], out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "NAMESPACE\tPOD\tCONTAINER\tFILE\tBYTES\tFIRST WRITE\tLAST WRITE\tPATH")?;
    for e in entries {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}/{}",
            e.namespace,
            e.pod,
            e.container,
            e.file,
            e.bytes,
            e.first_write.format("%Y-%m-%dT%H:%M:%SZ"),
            e.last_write.format("%Y-%m-%dT%H:%M:%SZ"),
            e.destination,
            e.file
        )?;
    }
    Ok(())
}
