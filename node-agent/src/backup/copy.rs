//! Moving bytes: appending a range of a source file to a destination file with large
//! sequential reads (in-kernel `copy_file_range` where the filesystems allow it, else 1 MiB
//! `pread`/`pwrite`), optionally compressing as a new zstd frame or gzip member; and compressing
//! a closed destination file in place.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use super::dest::DestDir;
use super::state::Codec;

/// Size of one read.
pub const CHUNK: usize = 1 << 20;
/// zstd level: fast, and logs compress well at it.
const ZSTD_LEVEL: i32 = 3;

/// Copies bytes; owns the one reusable buffer.
pub struct Copier {
    buf: Vec<u8>,
    kernel_copy: bool,
}

impl Default for Copier {
    fn default() -> Self {
        Copier { buf: vec![0; CHUNK], kernel_copy: true }
    }
}

/// A writer at an explicit offset of a file (no shared file position).
struct AtOffset<'a> {
    file: &'a File,
    pos: u64,
}

impl Write for AtOffset<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Copier {
    /// Appends source bytes `[from, from + len)` at `dst_off` of `dst`. Returns how many bytes
    /// were copied: fewer than `len` when the source got shorter meanwhile.
    pub fn append_plain(
        &mut self,
        src: &File,
        from: u64,
        len: u64,
        dst: &File,
        dst_off: u64,
    ) -> io::Result<u64> {
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(CHUNK as u64 * 16) as usize;
            if self.kernel_copy {
                let mut off_in = from + done;
                let mut off_out = dst_off + done;
                match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
                    Ok(0) => break,
                    Ok(n) => {
                        done += n as u64;
                        continue;
                    }
                    // Filesystems or kernels that cannot copy between these files: fall back.
                    Err(rustix::io::Errno::XDEV)
                    | Err(rustix::io::Errno::INVAL)
                    | Err(rustix::io::Errno::NOSYS)
                    | Err(rustix::io::Errno::OPNOTSUPP)
                    | Err(rustix::io::Errno::PERM) => self.kernel_copy = false,
                    Err(e) => return Err(e.into()),
                }
            }
            let want = want.min(CHUNK);
            let n = src.read_at(&mut self.buf[..want], from + done)?;
            if n == 0 {
                break;
            }
            dst.write_all_at(&self.buf[..n], dst_off + done)?;
            done += n as u64;
        }
        Ok(done)
    }

    /// Appends source bytes `[from, from + len)` to `dst` at `dst_off` as one new compressed
    /// frame (zstd) or member (gzip). Returns (source bytes copied, new destination length).
    pub fn append_compressed(
        &mut self,
        src: &File,
        from: u64,
        len: u64,
        dst: &File,
        dst_off: u64,
        codec: Codec,
    ) -> io::Result<(u64, u64)> {
        let mut out = AtOffset { file: dst, pos: dst_off };
        let done = match codec {
            Codec::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(&mut out, ZSTD_LEVEL)?;
                let done = pump(&mut self.buf, src, from, len, &mut enc)?;
                enc.finish()?;
                done
            }
            Codec::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
                let done = pump(&mut self.buf, src, from, len, &mut enc)?;
                enc.finish()?;
                done
            }
        };
        Ok((done, out.pos))
    }

    /// Compresses the closed destination file `name` into `name<suffix>` (through a temporary
    /// file, fsynced and renamed), then removes `name`. Returns the new name and its length.
    pub fn compress_in_place(
        &mut self,
        dir: &DestDir,
        name: &str,
        codec: Codec,
    ) -> io::Result<(String, u64)> {
        let target = format!("{name}{}", codec.suffix());
        let tmp = format!("{target}.tmp");
        let src = dir.open_read(name)?;
        let len = src.metadata()?.len();
        let mtime = src.metadata()?.modified().ok();
        let out = dir.create(&tmp)?;
        let (_, out_len) = self.append_compressed(&src, 0, len, &out, 0, codec)?;
        out.set_len(out_len)?;
        if let Some(t) = mtime {
            out.set_modified(t)?;
        }
        out.sync_all()?;
        dir.rename_over(&tmp, &target)?;
        dir.sync()?;
        dir.remove(name)?;
        dir.sync()?;
        Ok((target, out_len))
    }
}

fn pump(buf: &mut [u8], src: &File, from: u64, len: u64, out: &mut impl Write) -> io::Result<u64> {
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = src.read_at(&mut buf[..want], from + done)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        done += n as u64;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::dest::DestRoot;
    use std::io::Read;
    use std::path::Path;

    #[test]
    fn plain_and_compressed_appends_concatenate() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src.log");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src_path, &data).unwrap();
        let src = File::open(&src_path).unwrap();
        let root = DestRoot::open(&dir.path().join("root")).unwrap();
        let d = root.dir(Path::new("a"), true).unwrap();
        let mut c = Copier::default();

        let plain = d.open_write("p").unwrap();
        assert_eq!(c.append_plain(&src, 0, 1_000_000, &plain, 0).unwrap(), 1_000_000);
        assert_eq!(c.append_plain(&src, 1_000_000, 5_000_000, &plain, 1_000_000).unwrap(), 2_000_000);
        assert_eq!(std::fs::read(d.path().join("p")).unwrap(), data);

        for codec in [Codec::Zstd, Codec::Gzip] {
            let z = d.create("z").unwrap();
            let (n1, l1) = c.append_compressed(&src, 0, 1_234_567, &z, 0, codec).unwrap();
            let (n2, _) = c.append_compressed(&src, n1, 9_000_000, &z, l1, codec).unwrap();
            assert_eq!(n1 + n2, data.len() as u64);
            let mut got = Vec::new();
            let f = File::open(d.path().join("z")).unwrap();
            match codec {
                Codec::Zstd => zstd::stream::read::Decoder::new(f).unwrap().read_to_end(&mut got).unwrap(),
                Codec::Gzip => flate2::read::MultiGzDecoder::new(f).read_to_end(&mut got).unwrap(),
            };
            assert_eq!(got, data);
        }

        let (name, _) = c.compress_in_place(&d, "p", Codec::Zstd).unwrap();
        assert_eq!(name, "p.zst");
        assert!(!d.exists("p"));
        let mut got = Vec::new();
        zstd::stream::read::Decoder::new(File::open(d.path().join("p.zst")).unwrap())
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, data);
    }
}
