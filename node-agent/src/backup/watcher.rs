//! Event-driven copying: inotify on the directories that hold followed files, so new bytes,
//! new files and renames are copied within moments instead of at the next sweep.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use tokio::io::unix::AsyncFd;

pub struct DirWatcher {
    fd: AsyncFd<OwnedFd>,
    watches: HashMap<PathBuf, i32>,
    buf: Vec<MaybeUninit<u8>>,
}

impl DirWatcher {
    pub fn new() -> io::Result<DirWatcher> {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        // SAFETY: `fd` is a fresh inotify descriptor that the AsyncFd owns and nothing else
        // closes or replaces.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
        Ok(DirWatcher { fd, watches: HashMap::new(), buf: vec![MaybeUninit::uninit(); 16 * 1024] })
    }

    /// Watches exactly `dirs` (a directory that vanished simply drops out). Returns whether a
    /// watch was added: what was written there before it was added raised no event.
    pub fn set_dirs(&mut self, dirs: &BTreeSet<PathBuf>) -> bool {
        let mut added = false;
        let gone: Vec<PathBuf> = self.watches.keys().filter(|d| !dirs.contains(*d)).cloned().collect();
        for d in gone {
            if let Some(wd) = self.watches.remove(&d) {
                let _ = inotify::remove_watch(self.fd.get_ref(), wd);
            }
        }
        let flags = WatchFlags::MODIFY
            | WatchFlags::CREATE
            | WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::DELETE
            | WatchFlags::ONLYDIR;
        for d in dirs {
            if self.watches.contains_key(d) {
                continue;
            }
            match inotify::add_watch(self.fd.get_ref(), d, flags) {
                Ok(wd) => {
                    self.watches.insert(d.clone(), wd);
                    added = true;
                }
                Err(e) => tracing::debug!(dir = %d.display(), error = %e, "cannot watch"),
            }
        }
        added
    }

    /// Waits until something changed in a watched directory (drains all queued events).
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut got = false;
            let mut reader = inotify::Reader::new(self.fd.get_ref(), &mut self.buf);
            loop {
                match reader.next() {
                    Ok(_) => got = true,
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            guard.clear_ready();
            if got {
                return Ok(());
            }
        }
    }
}
