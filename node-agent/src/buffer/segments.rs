//! The files of a disk buffer: numbered segments of framed records (`<seq>.seg`) and the `ack`
//! file (the position of the first record not yet delivered). Blocking IO: callers run these
//! on the blocking pool.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::frame::{self, HEADER_LEN};
use crate::fsutil::write_atomic;

/// A place in the buffer: segment number and byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub seg: u64,
    pub off: u64,
}

pub fn segment_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:020}.seg"))
}

fn ack_path(dir: &Path) -> PathBuf {
    dir.join("ack")
}

/// Persists the read position (atomically: a crash leaves the old or the new one).
pub fn write_ack(dir: &Path, pos: Position) -> io::Result<()> {
    write_atomic(&ack_path(dir), format!("{} {}\n", pos.seg, pos.off).as_bytes())
}

fn read_ack(dir: &Path) -> io::Result<Option<Position>> {
    let text = match fs::read_to_string(ack_path(dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(seg)), Some(Ok(off))) => Ok(Some(Position { seg, off })),
        // A damaged ack file: start from the oldest segment (re-sends, never loses).
        _ => Ok(None),
    }
}

fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(seq) = name.to_str().and_then(|n| n.strip_suffix(".seg")).and_then(|n| n.parse().ok()) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Appends records to the newest segment, starting a new one past `segment_max`.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    pub seg: u64,
    pub len: u64,
    file: File,
    segment_max: u64,
}

impl Writer {
    fn open(dir: &Path, seg: u64, len: u64, segment_max: u64) -> io::Result<Writer> {
        let file = OpenOptions::new().create(true).append(true).open(segment_path(dir, seg))?;
        Ok(Writer { dir: dir.to_path_buf(), seg, len, file, segment_max })
    }

    /// Appends one framed record durably (fsync). On failure nothing of it stays in the file.
    pub fn append(&mut self, record: &[u8]) -> io::Result<()> {
        if self.len > 0 && self.len + record.len() as u64 > self.segment_max {
            let next = Writer::open(&self.dir, self.seg + 1, 0, self.segment_max)?;
            File::open(&self.dir)?.sync_all()?;
            *self = next;
        }
        let res = self.file.write_all(record).and_then(|()| self.file.sync_data());
        if let Err(e) = res {
            // Cut a partial write so the next record starts on a frame boundary.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += record.len() as u64;
        Ok(())
    }
}

/// What recovery found on disk.
#[derive(Debug)]
pub struct Recovered {
    /// First record not yet delivered.
    pub read: Position,
    pub writer: Writer,
    /// Bytes of records not yet delivered.
    pub pending_bytes: u64,
    /// Bytes cut from damaged or torn segment tails.
    pub discarded_bytes: u64,
}

/// Opens (or creates) a buffer directory after a restart or a crash: drops delivered segments,
/// cuts a torn record at the end of the newest segment (a write the crash interrupted; it was never acknowledged)
/// and counts what is still to deliver.
pub fn recover(dir: &Path, segment_max: u64) -> io::Result<Recovered> {
    fs::create_dir_all(dir)?;
    let mut seqs = list_segments(dir)?;
    let ack = read_ack(dir)?;
    let mut read = match (ack, seqs.first()) {
        (Some(a), _) if seqs.contains(&a.seg) => a,
        (_, Some(&first)) => Position { seg: first, off: 0 },
        (_, None) => Position { seg: ack.map_or(1, |a| a.seg), off: 0 },
    };
    for &seq in seqs.iter().filter(|&&s| s < read.seg) {
        fs::remove_file(segment_path(dir, seq))?;
    }
    seqs.retain(|&s| s >= read.seg);
    let mut pending_bytes = 0;
    let mut discarded_bytes = 0;
    let mut last_len = 0;
    for &seq in &seqs {
        let path = segment_path(dir, seq);
        let len = if Some(&seq) == seqs.last() {
            // Only the newest segment can end in a torn write; older ones were complete when the
            // writer moved on (damage inside them is found and skipped when they are read).
            let buf = fs::read(&path)?;
            let (valid, tail) = frame::valid_prefix(&buf);
            if valid < buf.len() {
                tracing::warn!(segment = %path.display(), valid, len = buf.len(), ?tail, "cutting a torn buffer segment");
                discarded_bytes += (buf.len() - valid) as u64;
                OpenOptions::new().write(true).open(&path)?.set_len(valid as u64)?;
            }
            valid as u64
        } else {
            fs::metadata(&path)?.len()
        };
        if seq == read.seg {
            read.off = read.off.min(len);
            pending_bytes += len - read.off;
        } else {
            pending_bytes += len;
        }
        last_len = len;
    }
    let writer = match seqs.last() {
        Some(&last) => Writer::open(dir, last, last_len, segment_max)?,
        None => Writer::open(dir, read.seg, 0, segment_max)?,
    };
    File::open(dir)?.sync_all()?;
    Ok(Recovered { read, writer, pending_bytes, discarded_bytes })
}

/// What `read_record` found.
#[derive(Debug)]
pub enum ReadOutcome {
    Record {
        payload: Bytes,
        next: u64,
    },
    /// Nothing more in this segment (up to `limit`).
    EndOfSegment,
    /// A record that cannot be read; the rest of the segment is skipped.
    Damaged,
}

/// Reads the record at `pos`, not past `limit` (the durable length of the segment being written).
pub fn read_record(dir: &Path, pos: Position, limit: Option<u64>) -> io::Result<ReadOutcome> {
    let mut f = File::open(segment_path(dir, pos.seg))?;
    let end = match limit {
        Some(l) => l,
        None => f.metadata()?.len(),
    };
    if pos.off >= end {
        return Ok(ReadOutcome::EndOfSegment);
    }
    if end - pos.off < HEADER_LEN as u64 {
        return Ok(ReadOutcome::Damaged);
    }
    f.seek(SeekFrom::Start(pos.off))?;
    let mut header = [0u8; HEADER_LEN];
    f.read_exact(&mut header)?;
    let Some((len, crc)) = frame::parse_header(&header) else { return Ok(ReadOutcome::Damaged) };
    let next = pos.off + HEADER_LEN as u64 + len as u64;
    if len > frame::MAX_RECORD || next > end {
        return Ok(ReadOutcome::Damaged);
    }
    let mut payload = vec![0u8; len];
    f.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(ReadOutcome::Damaged);
    }
    Ok(ReadOutcome::Record { payload: Bytes::from(payload), next })
}

/// Whether a segment file exists.
pub fn segment_exists(dir: &Path, seg: u64) -> bool {
    segment_path(dir, seg).exists()
}

/// Deletes a fully delivered segment.
pub fn remove_segment(dir: &Path, seg: u64) -> io::Result<()> {
    match fs::remove_file(segment_path(dir, seg)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        frame::frame(payload, &mut v);
        v
    }

    #[test]
    fn append_roll_recover_and_read() {
        let d = tempfile::tempdir().unwrap();
        let r = recover(d.path(), 40).unwrap();
        assert_eq!(r.read, Position { seg: 1, off: 0 });
        let mut w = r.writer;
        for p in [b"aaaaaaaaaaaaaaaaaaaa", b"bbbbbbbbbbbbbbbbbbbb", b"cccccccccccccccccccc"] {
            w.append(&record(p)).unwrap();
        }
        assert_eq!(w.seg, 3, "one 28-byte record per 40-byte segment");
        // A torn write at the end, as a crash leaves it.
        let mut f = OpenOptions::new().append(true).open(segment_path(d.path(), 3)).unwrap();
        f.write_all(&record(b"torn")[..6]).unwrap();
        drop((w, f));
        write_ack(d.path(), Position { seg: 2, off: 0 }).unwrap();

        let r = recover(d.path(), 40).unwrap();
        assert_eq!(r.read, Position { seg: 2, off: 0 });
        assert!(!segment_path(d.path(), 1).exists(), "delivered segment removed");
        assert_eq!(r.pending_bytes, 56);
        assert_eq!(r.discarded_bytes, 6);
        assert_eq!((r.writer.seg, r.writer.len), (3, 28));
        let ReadOutcome::Record { payload, next } = read_record(d.path(), r.read, None).unwrap() else {
            panic!()
        };
        assert_eq!(&payload[..], b"bbbbbbbbbbbbbbbbbbbb");
        assert!(matches!(
            read_record(d.path(), Position { seg: 2, off: next }, None).unwrap(),
            ReadOutcome::EndOfSegment
        ));
        assert!(matches!(
            read_record(d.path(), Position { seg: 3, off: 0 }, Some(0)).unwrap(),
            ReadOutcome::EndOfSegment
        ));
    }
}
