//! Identity of a source file: (device, inode) plus a fingerprint of its first bytes, so that a
//! reused inode (after a restart, when no descriptor pinned the old file) and a truncated file
//! that grew again are told apart from the file we copied.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

/// Bytes of a file's head that its fingerprint covers, at most.
pub const FINGERPRINT_BYTES: usize = 1024;

/// Hash of the first `len` bytes of a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    /// Fingerprint of the first `min(size, FINGERPRINT_BYTES)` bytes.
    pub fn of_file(file: &File, size: u64) -> io::Result<Fingerprint> {
        let len = size.min(FINGERPRINT_BYTES as u64) as usize;
        Self::of_prefix(file, len)
    }

    /// Fingerprint of exactly the first `len` bytes (fewer if the file is shorter now).
    pub fn of_prefix(file: &File, len: usize) -> io::Result<Fingerprint> {
        let mut buf = [0u8; FINGERPRINT_BYTES];
        let len = len.min(FINGERPRINT_BYTES);
        let mut got = 0;
        while got < len {
            match file.read_at(&mut buf[got..len], got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        Ok(Fingerprint { len: got as u32, hash: fnv1a(&buf[..got]) })
    }

    /// Does `file` (now `size` bytes long) still start with the bytes this fingerprint covers?
    pub fn matches(&self, file: &File, size: u64) -> io::Result<bool> {
        if size < u64::from(self.len) {
            return Ok(false);
        }
        Ok(Self::of_prefix(file, self.len as usize)? == *self)
    }

    /// Is it worth refreshing (the file was shorter than the fingerprint window when taken)?
    pub fn is_partial(&self) -> bool {
        (self.len as usize) < FINGERPRINT_BYTES
    }
}

/// FNV-1a, 64 bits: stable across builds and releases (the state file outlives the binary).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fingerprint_follows_the_head_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let mut f = File::create(&p).unwrap();
        f.write_all(b"hello\n").unwrap();
        let r = File::open(&p).unwrap();
        let fp = Fingerprint::of_file(&r, 6).unwrap();
        assert_eq!(fp.len, 6);
        f.write_all(&[b'x'; 4000]).unwrap();
        assert!(fp.matches(&r, 4006).unwrap());
        f.set_len(0).unwrap();
        assert!(!fp.matches(&r, 0).unwrap());
        f.write_all(b"other\nmore").unwrap();
        assert!(!fp.matches(&r, 10).unwrap());
    }
}
