//! Path resolution confined to a root, like `openat2(RESOLVE_IN_ROOT)`.
//!
//! A container's files are reached through its writable layer or a volume directory on the host.
//! Everything under that directory is controlled by the container, including symlinks, so every
//! path is resolved component by component with directory descriptors: a symlink's target
//! (absolute or relative) is re-interpreted inside the root, `..` never climbs above the root,
//! and no component is ever opened with the kernel following a link (`O_NOFOLLOW`), so a link
//! swapped in between two steps cannot escape either. Globs are expanded during the same walk.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::io::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use tailor_crds::node::{HostRootKind, Input};

/// Symlinks followed in one resolution before giving up, as the kernel's `ELOOP` limit.
const MAX_SYMLINKS: u32 = 40;
/// Directory levels a `**` descends.
const MAX_GLOB_DEPTH: usize = 32;

/// Finds the writable layer (root filesystem) of a running container on this host.
pub trait RootfsLocator: Send + Sync {
    fn rootfs(&self, runtime: &str, container_id: &str) -> Option<PathBuf>;
}

/// containerd's task directory: `<host-root>/run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/rootfs`.
#[derive(Clone, Debug)]
pub struct ContainerdLocator {
    pub host_root: PathBuf,
}

impl RootfsLocator for ContainerdLocator {
    fn rootfs(&self, runtime: &str, container_id: &str) -> Option<PathBuf> {
        if runtime != "containerd" || !is_plain_id(container_id) {
            return None;
        }
        let p = self
            .host_root
            .join("run/containerd/io.containerd.runtime.v2.task/k8s.io")
            .join(container_id)
            .join("rootfs");
        p.is_dir().then_some(p)
    }
}

/// Tries several locators in turn (containerd, docker, ...).
#[derive(Clone, Default)]
pub struct Locators(pub Vec<Arc<dyn RootfsLocator>>);

impl RootfsLocator for Locators {
    fn rootfs(&self, runtime: &str, container_id: &str) -> Option<PathBuf> {
        self.0.iter().find_map(|l| l.rootfs(runtime, container_id))
    }
}

/// A container ID is a single path component of letters, digits, `-`, `_` and `.` (not `.`/`..`).
pub fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Why a path did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot open root {root}: {source}")]
    Root {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("input of kind {kind:?} has no {field}")]
    Incomplete { kind: HostRootKind, field: &'static str },
    #[error("no root filesystem found for {runtime} container {container_id}")]
    NoRootfs { runtime: String, container_id: String },
    #[error("{path}: not found")]
    NotFound { path: PathBuf },
    #[error("{path}: too many levels of symbolic links")]
    Loop { path: PathBuf },
    #[error("{path}: not a directory")]
    NotDirectory { path: PathBuf },
    #[error("{path}: not a regular file")]
    NotRegularFile { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ResolveError {
    /// Label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            ResolveError::Root { .. } => "root",
            ResolveError::Incomplete { .. } => "incomplete",
            ResolveError::NoRootfs { .. } => "no_rootfs",
            ResolveError::NotFound { .. } => "not_found",
            ResolveError::Loop { .. } => "loop",
            ResolveError::NotDirectory { .. } => "not_directory",
            ResolveError::NotRegularFile { .. } => "not_regular_file",
            ResolveError::Io { .. } => "io",
        }
    }
}

/// A directory that confines resolution: nothing outside it is ever returned or opened.
#[derive(Debug)]
pub struct InRoot {
    path: PathBuf,
    fd: OwnedFd,
}

/// Where a walk is: the chain of directories below the root, each with its descriptor.
#[derive(Clone, Default)]
struct Cursor {
    stack: Vec<(OsString, Arc<OwnedFd>)>,
}

/// What a walk ended on.
enum Node {
    Dir(Cursor),
    File { parent: Cursor, name: OsString },
}

impl Cursor {
    fn rel(&self) -> PathBuf {
        self.stack.iter().map(|(n, _)| n.as_os_str()).collect()
    }
}

/// A regular file a pattern matched, by its symlink-free path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MatchedFile {
    /// Relative to the root, free of symlinks, `.` and `..`.
    pub rel: PathBuf,
    /// The same file as a host path (`root` joined with `rel`).
    pub path: PathBuf,
}

/// The result of expanding a pattern: files, plus the branches that could not be followed.
#[derive(Debug, Default)]
pub struct Expansion {
    pub files: Vec<MatchedFile>,
    pub problems: Vec<ResolveError>,
}

impl InRoot {
    /// Opens `path` (a host path the agent trusts: its host root or a runtime's directory).
    pub fn open(path: &Path) -> Result<Self, ResolveError> {
        let fd = rustix::fs::open(path, dir_flags(), Mode::empty())
            .map_err(|e| ResolveError::Root { root: path.to_path_buf(), source: e.into() })?;
        Ok(Self { path: path.to_path_buf(), fd })
    }

    /// The root as a host path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves `rel` (absolute or relative, interpreted inside the root) to a directory and
    /// returns it as a new confining root.
    pub fn subdir(&self, rel: &str) -> Result<InRoot, ResolveError> {
        match self.walk(Cursor::default(), rel.as_ref(), &mut 0)? {
            Node::Dir(c) => {
                let path = self.path.join(c.rel());
                let fd = match c.stack.last() {
                    Some((_, fd)) => dup(fd, &path)?,
                    None => dup(&self.fd, &path)?,
                };
                Ok(InRoot { path, fd })
            }
            Node::File { parent, name } => {
                Err(ResolveError::NotDirectory { path: self.path.join(parent.rel()).join(name) })
            }
        }
    }

    /// Resolves `rel` inside the root to a regular file and returns its symlink-free path.
    pub fn resolve_file(&self, rel: &Path) -> Result<MatchedFile, ResolveError> {
        match self.walk(Cursor::default(), rel, &mut 0)? {
            Node::File { parent, name } => Ok(self.matched(&parent, &name)),
            Node::Dir(c) => Err(ResolveError::NotRegularFile { path: self.path.join(c.rel()) }),
        }
    }

    /// Opens the regular file `rel` for reading, resolved inside the root.
    pub fn open_file(&self, rel: &Path) -> Result<File, ResolveError> {
        match self.walk(Cursor::default(), rel, &mut 0)? {
            Node::File { parent, name } => {
                let path = self.path.join(parent.rel()).join(&name);
                let fd = rustix::fs::openat(
                    self.dir_fd(&parent),
                    name.as_os_str(),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                    Mode::empty(),
                )
                .map_err(|e| io_err(&path, e))?;
                let st = rustix::fs::fstat(&fd).map_err(|e| io_err(&path, e))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    return Err(ResolveError::NotRegularFile { path });
                }
                Ok(File::from(fd))
            }
            Node::Dir(c) => Err(ResolveError::NotRegularFile { path: self.path.join(c.rel()) }),
        }
    }

    /// Expands a glob pattern (`*`, `?`, `[..]`, `**`) inside the root into the regular files it
    /// matches now, sorted and without duplicates.
    pub fn glob(&self, pattern: &str) -> Expansion {
        let comps = parse_pattern(pattern);
        let mut found = BTreeMap::new();
        let mut problems = Vec::new();
        self.expand(Cursor::default(), &comps, 0, &mut found, &mut problems);
        Expansion { files: found.into_values().collect(), problems }
    }

    fn matched(&self, parent: &Cursor, name: &OsStr) -> MatchedFile {
        let rel = parent.rel().join(name);
        MatchedFile { path: self.path.join(&rel), rel }
    }

    fn dir_fd<'a>(&'a self, c: &'a Cursor) -> &'a OwnedFd {
        c.stack.last().map(|(_, fd)| fd.as_ref()).unwrap_or(&self.fd)
    }

    /// Walks `path` from `cur`, following symlinks inside the root.
    fn walk(&self, mut cur: Cursor, path: &Path, links: &mut u32) -> Result<Node, ResolveError> {
        let mut pending: VecDeque<OsString> = split(path.as_os_str().as_bytes()).collect();
        if path.as_os_str().as_bytes().starts_with(b"/") {
            cur.stack.clear();
        }
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                cur.stack.pop();
                continue;
            }
            let here = || self.path.join(cur.rel()).join(&name);
            let dir = self.dir_fd(&cur);
            let st = match rustix::fs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => return Err(ResolveError::NotFound { path: here() }),
                Err(e) => return Err(io_err(&here(), e)),
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => {
                    *links += 1;
                    if *links > MAX_SYMLINKS {
                        return Err(ResolveError::Loop { path: here() });
                    }
                    let target = rustix::fs::readlinkat(dir, name.as_os_str(), Vec::new())
                        .map_err(|e| io_err(&here(), e))?;
                    let target = target.as_bytes();
                    if target.starts_with(b"/") {
                        cur.stack.clear();
                    }
                    for (i, c) in split(target).enumerate() {
                        pending.insert(i, c);
                    }
                }
                FileType::Directory => {
                    let fd = rustix::fs::openat(dir, name.as_os_str(), dir_flags(), Mode::empty())
                        .map_err(|e| io_err(&here(), e))?;
                    cur.stack.push((name, Arc::new(fd)));
                }
                FileType::RegularFile => {
                    if !pending.is_empty() {
                        return Err(ResolveError::NotDirectory { path: here() });
                    }
                    return Ok(Node::File { parent: cur, name });
                }
                _ => return Err(ResolveError::NotRegularFile { path: here() }),
            }
        }
        Ok(Node::Dir(cur))
    }

    fn expand(
        &self,
        cur: Cursor,
        comps: &[PatternComp],
        depth: usize,
        found: &mut BTreeMap<PathBuf, MatchedFile>,
        problems: &mut Vec<ResolveError>,
    ) {
        let Some((first, rest)) = comps.split_first() else { return };
        match first {
            PatternComp::Literal(lit) => self.follow(cur, Path::new(lit), rest, depth, found, problems),
            PatternComp::Glob(pat) => {
                for name in self.list(&cur, problems) {
                    if glob_match(pat.as_bytes(), name.as_bytes()) {
                        self.follow(cur.clone(), Path::new(&name), rest, depth, found, problems);
                    }
                }
            }
            PatternComp::AnyDirs => {
                self.expand(cur.clone(), rest, depth, found, problems);
                if depth >= MAX_GLOB_DEPTH {
                    return;
                }
                // `**` descends real directories only: following links here could loop forever.
                for name in self.list(&cur, problems) {
                    if name.as_bytes().starts_with(b".") {
                        continue;
                    }
                    let dir = self.dir_fd(&cur);
                    if let Ok(fd) = rustix::fs::openat(dir, name.as_os_str(), dir_flags(), Mode::empty()) {
                        let mut child = cur.clone();
                        child.stack.push((name, Arc::new(fd)));
                        self.expand(child, comps, depth + 1, found, problems);
                    }
                }
            }
        }
    }

    /// Steps from `cur` through `step` (resolving links in the root), then expands the rest.
    fn follow(
        &self,
        cur: Cursor,
        step: &Path,
        rest: &[PatternComp],
        depth: usize,
        found: &mut BTreeMap<PathBuf, MatchedFile>,
        problems: &mut Vec<ResolveError>,
    ) {
        match self.walk(cur, step, &mut 0) {
            Ok(Node::Dir(c)) => self.expand(c, rest, depth, found, problems),
            Ok(Node::File { parent, name }) if rest.is_empty() => {
                let m = self.matched(&parent, &name);
                found.insert(m.rel.clone(), m);
            }
            Ok(Node::File { .. }) => {}
            Err(ResolveError::NotFound { .. } | ResolveError::NotDirectory { .. }) => {}
            Err(e) => problems.push(e),
        }
    }

    fn list(&self, cur: &Cursor, problems: &mut Vec<ResolveError>) -> Vec<OsString> {
        let path = || self.path.join(cur.rel());
        let dir = match rustix::fs::Dir::read_from(self.dir_fd(cur)) {
            Ok(d) => d,
            Err(e) => {
                problems.push(io_err(&path(), e));
                return Vec::new();
            }
        };
        let mut names = Vec::new();
        for entry in dir {
            match entry {
                Ok(e) => {
                    let n = e.file_name().to_bytes();
                    if n != b"." && n != b".." {
                        names.push(OsString::from_vec(n.to_vec()));
                    }
                }
                Err(e) => {
                    problems.push(io_err(&path(), e));
                    break;
                }
            }
        }
        names.sort();
        names
    }
}

/// Opens the confining root of `input` (`--host-root` prefixed; a host directory is itself
/// resolved inside the host root).
pub fn input_root(
    input: &Input,
    host_root: &Path,
    locator: &dyn RootfsLocator,
) -> Result<InRoot, ResolveError> {
    let root = &input.root;
    match root.kind {
        HostRootKind::ContainerRootfs => {
            let id = root
                .container_id
                .as_deref()
                .ok_or(ResolveError::Incomplete { kind: root.kind, field: "containerId" })?;
            let runtime = root.runtime.as_deref().unwrap_or("containerd");
            let path = locator.rootfs(runtime, id).ok_or_else(|| ResolveError::NoRootfs {
                runtime: runtime.to_string(),
                container_id: id.to_string(),
            })?;
            InRoot::open(&path)
        }
        _ => {
            let dir = root
                .host_dir
                .as_deref()
                .ok_or(ResolveError::Incomplete { kind: root.kind, field: "hostDir" })?;
            InRoot::open(host_root)?.subdir(dir)
        }
    }
}

/// Expands an `Input` into the host files it currently matches, confined to its root.
pub fn expand_input(
    input: &Input,
    host_root: &Path,
    locator: &dyn RootfsLocator,
) -> Result<(InRoot, Expansion), ResolveError> {
    let root = input_root(input, host_root, locator)?;
    let expansion = root.glob(&input.path);
    Ok((root, expansion))
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn dup(fd: &OwnedFd, path: &Path) -> Result<OwnedFd, ResolveError> {
    fd.try_clone().map_err(|e| ResolveError::Io { path: path.to_path_buf(), source: e })
}

fn io_err(path: &Path, e: rustix::io::Errno) -> ResolveError {
    ResolveError::Io { path: path.to_path_buf(), source: e.into() }
}

/// The non-empty components of a path other than `.`.
fn split(path: &[u8]) -> impl Iterator<Item = OsString> + '_ {
    path.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".").map(|c| OsString::from_vec(c.to_vec()))
}

/// One component of a glob pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternComp {
    /// Consecutive components without wildcards, walked in one go.
    Literal(String),
    Glob(String),
    /// `**`: zero or more directories.
    AnyDirs,
}

fn parse_pattern(pattern: &str) -> Vec<PatternComp> {
    let mut out: Vec<PatternComp> = Vec::new();
    for c in pattern.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let comp = if c == "**" {
            PatternComp::AnyDirs
        } else if c.contains(['*', '?', '[']) {
            PatternComp::Glob(c.to_string())
        } else {
            PatternComp::Literal(c.to_string())
        };
        match (out.last_mut(), comp) {
            (Some(PatternComp::Literal(prev)), PatternComp::Literal(next)) => {
                prev.push('/');
                prev.push_str(&next);
            }
            (_, comp) => out.push(comp),
        }
    }
    out
}

/// Shell-style match of one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`, `\` escapes.
/// A leading `.` must be matched literally, as in the shell.
pub fn glob_match(pat: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pat.first() != Some(&b'.') {
        return false;
    }
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(&pat[p..], name[n]) {
                        if matched {
                            p += next;
                            n += 1;
                            continue;
                        }
                    } else if name[n] == b'[' {
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pat.len() => {
                    if pat[p + 1] == name[n] {
                        p += 2;
                        n += 1;
                        continue;
                    }
                }
                c => {
                    if c == name[n] {
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|c| *c == b'*')
}

/// Matches `[...]` at the start of `pat` against `c`: `(matched, length of the class)`, or
/// `None` when the bracket is not closed (then it is a literal `[`).
fn class_match(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pat.len() {
        if pat[i] == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = pat[i];
        if i + 2 < pat.len() && pat[i + 1] == b'-' && pat[i + 2] != b']' {
            matched |= lo <= c && c <= pat[i + 2];
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    /// A host with a secret outside the container root, and a container root full of traps.
    struct Fixture {
        _dir: tempfile::TempDir,
        host: PathBuf,
        rootfs: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        let rootfs = host.join("run/containerd/io.containerd.runtime.v2.task/k8s.io/abc123/rootfs");
        fs::create_dir_all(host.join("etc")).unwrap();
        fs::write(host.join("etc/shadow"), "root:SECRET\n").unwrap();
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::write(rootfs.join("etc/shadow"), "container shadow\n").unwrap();
        fs::create_dir_all(rootfs.join("opt/logs/sub/deeper")).unwrap();
        fs::write(rootfs.join("opt/logs/app.log"), "app\n").unwrap();
        fs::write(rootfs.join("opt/logs/sub/b.log"), "b\n").unwrap();
        fs::write(rootfs.join("opt/logs/sub/deeper/c.log"), "c\n").unwrap();
        fs::write(rootfs.join("opt/logs/.hidden.log"), "h\n").unwrap();
        fs::write(rootfs.join("opt/logs/notes.txt"), "n\n").unwrap();
        Fixture { _dir: dir, host, rootfs }
    }

    fn contents(root: &InRoot, m: &MatchedFile) -> String {
        let mut s = String::new();
        io::Read::read_to_string(&mut root.open_file(&m.rel).unwrap(), &mut s).unwrap();
        s
    }

    fn rels(e: &Expansion) -> Vec<String> {
        e.files.iter().map(|m| m.rel.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match(b"*.log", b"a.log"));
        assert!(!glob_match(b"*.log", b"a.log.1"));
        assert!(glob_match(b"*.log*", b"a.log.1"));
        assert!(glob_match(b"?.log", b"0.log"));
        assert!(!glob_match(b"?.log", b"10.log"));
        assert!(glob_match(b"[0-9].log", b"7.log"));
        assert!(!glob_match(b"[!0-9].log", b"7.log"));
        assert!(glob_match(b"a[xy]c", b"ayc"));
        assert!(!glob_match(b"*", b".hidden"));
        assert!(glob_match(b".*", b".hidden"));
        assert!(glob_match(b"a\\*", b"a*"));
        assert!(!glob_match(b"a\\*", b"ab"));
        assert!(glob_match(b"[ab", b"[ab"));
        assert!(glob_match(b"*a*b*c", b"xxaxxbxxc"));
    }

    #[test]
    fn expands_globs_and_double_star_inside_the_root() {
        let f = fixture();
        let root = InRoot::open(&f.rootfs).unwrap();
        assert_eq!(rels(&root.glob("/opt/logs/*.log")), ["opt/logs/app.log"]);
        assert_eq!(
            rels(&root.glob("/opt/logs/**/*.log")),
            ["opt/logs/app.log", "opt/logs/sub/b.log", "opt/logs/sub/deeper/c.log"]
        );
        assert_eq!(rels(&root.glob("/opt/*/sub/b.log")), ["opt/logs/sub/b.log"]);
        assert!(root.glob("/nope/*.log").files.is_empty());
    }

    #[test]
    fn absolute_symlink_to_etc_shadow_stays_in_the_root() {
        let f = fixture();
        symlink("/etc/shadow", f.rootfs.join("opt/logs/x.log")).unwrap();
        let root = InRoot::open(&f.rootfs).unwrap();
        let e = root.glob("/opt/logs/x.log");
        assert_eq!(rels(&e), ["etc/shadow"]);
        assert_eq!(contents(&root, &e.files[0]), "container shadow\n");
        assert!(e.files[0].path.starts_with(&f.rootfs));
    }

    #[test]
    fn dot_dot_symlinks_cannot_climb_out() {
        let f = fixture();
        symlink("../../../../../../../../etc/shadow", f.rootfs.join("opt/logs/up.log")).unwrap();
        symlink("../../..", f.rootfs.join("opt/logs/top")).unwrap();
        let root = InRoot::open(&f.rootfs).unwrap();
        let e = root.glob("/opt/logs/up.log");
        assert_eq!(contents(&root, &e.files[0]), "container shadow\n");
        // `top` is the container root itself, so `top/etc/shadow` is the container's file.
        let e = root.glob("/opt/logs/top/etc/shadow");
        assert_eq!(rels(&e), ["etc/shadow"]);
        assert_eq!(contents(&root, &e.files[0]), "container shadow\n");
        // Plain `..` in the pattern is clamped at the root too.
        let m = root.resolve_file(Path::new("../../../../etc/shadow")).unwrap();
        assert_eq!(m.rel, Path::new("etc/shadow"));
    }

    #[test]
    fn a_symlink_to_a_file_that_only_exists_on_the_host_is_not_found() {
        let f = fixture();
        fs::write(f.host.join("etc/host-only"), "host\n").unwrap();
        symlink("/etc/host-only", f.rootfs.join("opt/logs/h.log")).unwrap();
        symlink("../../../../../etc/host-only", f.rootfs.join("opt/logs/h2.log")).unwrap();
        let root = InRoot::open(&f.rootfs).unwrap();
        assert!(root.glob("/opt/logs/h*.log").files.is_empty());
        assert!(matches!(root.open_file(Path::new("opt/logs/h.log")), Err(ResolveError::NotFound { .. })));
    }

    #[test]
    fn symlinked_directories_and_loops() {
        let f = fixture();
        symlink("/", f.rootfs.join("opt/logs/rootlink")).unwrap();
        symlink("loop2", f.rootfs.join("opt/logs/loop1")).unwrap();
        symlink("loop1", f.rootfs.join("opt/logs/loop2")).unwrap();
        symlink(".", f.rootfs.join("opt/logs/self")).unwrap();
        let root = InRoot::open(&f.rootfs).unwrap();
        let e = root.glob("/opt/logs/loop1");
        assert!(e.files.is_empty());
        assert!(matches!(e.problems.as_slice(), [ResolveError::Loop { .. }]));
        // `**` does not follow `self` or `rootlink`, so it terminates and finds each file once.
        let e = root.glob("/opt/**/*.log");
        assert_eq!(rels(&e), ["opt/logs/app.log", "opt/logs/sub/b.log", "opt/logs/sub/deeper/c.log"]);
        // A link to `/` leads to the container root, never the host.
        let e = root.glob("/opt/logs/rootlink/etc/*");
        assert_eq!(rels(&e), ["etc/shadow"]);
        assert_eq!(contents(&root, &e.files[0]), "container shadow\n");
    }

    #[test]
    fn every_match_of_a_hostile_tree_is_inside_the_root() {
        let f = fixture();
        for (i, t) in
            ["/", "..", "../..", "/etc", "/../../etc", "../../../..", "/etc/shadow"].iter().enumerate()
        {
            symlink(t, f.rootfs.join(format!("opt/logs/l{i}"))).unwrap();
        }
        let root = InRoot::open(&f.rootfs).unwrap();
        for pat in ["/opt/logs/*", "/opt/logs/*/*", "/opt/logs/*/etc/*", "/opt/logs/*/*/*", "/**/*"] {
            for m in root.glob(pat).files {
                assert!(m.path.starts_with(&f.rootfs), "{pat} matched {}", m.path.display());
                assert_ne!(contents(&root, &m), "root:SECRET\n");
            }
        }
    }

    #[test]
    fn input_roots_from_host_dirs_and_containerd() {
        let f = fixture();
        let pods = f.host.join("var/log/pods/ns_pod_uid/app");
        fs::create_dir_all(&pods).unwrap();
        fs::write(pods.join("0.log"), "x\n").unwrap();
        let loc = ContainerdLocator { host_root: f.host.clone() };
        let input: Input = serde_json::from_value(serde_json::json!({
            "kind": "stdio", "streams": ["stdout"],
            "root": {"kind": "podLogs", "hostDir": "/var/log/pods/ns_pod_uid/app"}, "path": "*.log"
        }))
        .unwrap();
        let (root, e) = expand_input(&input, &f.host, &loc).unwrap();
        assert_eq!(root.path(), pods);
        assert_eq!(rels(&e), ["0.log"]);
        let input: Input = serde_json::from_value(serde_json::json!({
            "kind": "file", "containerPath": "/opt/logs/*.log",
            "root": {"kind": "containerRootfs", "containerId": "abc123", "runtime": "containerd"},
            "path": "opt/logs/*.log"
        }))
        .unwrap();
        let (root, e) = expand_input(&input, &f.host, &loc).unwrap();
        assert_eq!(root.path(), f.rootfs);
        assert_eq!(rels(&e), ["opt/logs/app.log"]);
        assert!(loc.rootfs("containerd", "../../etc").is_none());
        assert!(loc.rootfs("containerd", "nope").is_none());
        // A host dir that climbs is still confined to the host root.
        let input: Input = serde_json::from_value(serde_json::json!({
            "kind": "file", "root": {"kind": "hostPath", "hostDir": "/../../../"}, "path": "etc/shadow"
        }))
        .unwrap();
        let (root, _) = expand_input(&input, &f.host, &loc).unwrap();
        assert_eq!(root.path(), f.host);
    }
}
