//! The backup root, opened once; every destination directory and file is reached from its
//! descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so that neither a bad
//! destination nor a symlink planted under the root can make the agent write elsewhere.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags};

/// Resolution flags for everything under the root.
fn confined() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// The backup root.
#[derive(Debug)]
pub struct DestRoot {
    path: PathBuf,
    fd: OwnedFd,
}

/// One destination directory under the root.
#[derive(Debug)]
pub struct DestDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl DestRoot {
    /// Opens (creating it if needed) the backup root.
    pub fn open(path: &Path) -> io::Result<DestRoot> {
        std::fs::create_dir_all(path)?;
        let fd = rustix::fs::open(path, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(DestRoot { path: path.to_path_buf(), fd })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the destination directory `rel` (relative, already checked), creating missing parts.
    pub fn dir(&self, rel: &Path, create: bool) -> io::Result<DestDir> {
        let mut cur: Option<OwnedFd> = None;
        for comp in rel.components() {
            let Component::Normal(name) = comp else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "destination is not a plain relative path",
                ));
            };
            let parent = cur.as_ref().map(|f| f.as_fd()).unwrap_or(self.fd.as_fd());
            if create {
                match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o750)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let next = rustix::fs::openat2(
                parent,
                name,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
                confined(),
            )?;
            cur = Some(next);
        }
        let fd = match cur {
            Some(fd) => fd,
            None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty destination")),
        };
        Ok(DestDir { path: self.path.join(rel), fd })
    }
}

impl DestDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self, name: &str, flags: OFlags) -> io::Result<File> {
        if !super::layout::is_plain_file_name(name) && !name.ends_with(".tmp") {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad file name {name:?}")));
        }
        let fd = rustix::fs::openat2(
            &self.fd,
            name,
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            // openat2 refuses a mode without O_CREAT.
            if flags.contains(OFlags::CREATE) { Mode::from_raw_mode(0o640) } else { Mode::empty() },
            confined(),
        )?;
        Ok(File::from(fd))
    }

    /// Opens a destination file for writing at explicit offsets, creating it if missing.
    pub fn open_write(&self, name: &str) -> io::Result<File> {
        self.open(name, OFlags::WRONLY | OFlags::CREATE)
    }

    /// Creates a fresh file (truncating a leftover of an interrupted run).
    pub fn create(&self, name: &str) -> io::Result<File> {
        self.open(name, OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC)
    }

    pub fn open_read(&self, name: &str) -> io::Result<File> {
        self.open(name, OFlags::RDONLY)
    }

    /// Renames `from` to `to` in this directory; never replaces an existing `to`.
    pub fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<()> {
        rustix::fs::renameat_with(&self.fd, from, &self.fd, to, RenameFlags::NOREPLACE)?;
        Ok(())
    }

    /// Renames `from` over `to` (for a finished temporary file).
    pub fn rename_over(&self, from: &str, to: &str) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to)?;
        Ok(())
    }

    pub fn remove(&self, name: &str) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// fsync of the directory, so that creations and renames survive a power loss.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd)?;
        Ok(())
    }

    /// Regular files of the directory (symlinks and the manifest left out).
    pub fn files(&self) -> io::Result<Vec<(String, Metadata)>> {
        list_files(&self.path)
    }
}

/// Regular files of a directory, without following symlinks; the manifest and temporary files
/// left out.
pub fn list_files(dir: &Path) -> io::Result<Vec<(String, Metadata)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if !super::layout::is_plain_file_name(&name) {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.file_type().is_file() {
            out.push((name, meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_under_the_root_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        let r = DestRoot::open(root.path()).unwrap();
        assert!(r.dir(Path::new("evil/x"), true).is_err());
        assert!(r.dir(Path::new("../x"), true).is_err());
        let d = r.dir(Path::new("ns/pod"), true).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), root.path().join("ns/pod/link")).unwrap();
        assert!(d.open_write("link").is_err());
        assert!(d.open_write("../x").is_err());
        assert!(!outside.path().join("f").exists());
        d.open_write("0.log").unwrap();
        assert!(root.path().join("ns/pod/0.log").exists());
    }
}
