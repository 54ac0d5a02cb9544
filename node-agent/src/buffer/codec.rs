//! A batch of events as bytes, for the disk buffer: everything the sinks read from an event,
//! with the per-target metadata stored once per batch. Decoding shares one buffer for all
//! messages of a batch (no per-event allocation for them).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use tailor_crds::node::StdStream;

use crate::event::{Event, EventFlags, FileId, TargetMeta};

const VERSION: u8 = 1;
const NO_FIELDS: u32 = u32::MAX;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("buffer record version {0} is not known")]
    Version(u8),
    #[error("buffer record is cut short")]
    Short,
    #[error("buffer record has an invalid {0}")]
    Invalid(&'static str),
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.extend_from_slice(b);
}

/// Encodes a batch.
pub fn encode_batch(events: &[Event], out: &mut Vec<u8>) {
    out.put_u8(VERSION);
    // Metadata table: consecutive events of one target share their `Arc`.
    let mut metas: Vec<&Arc<TargetMeta>> = Vec::new();
    let mut index = Vec::with_capacity(events.len());
    for ev in events {
        let i = match metas.iter().rposition(|m| Arc::ptr_eq(m, &ev.meta)) {
            Some(i) => i,
            None => {
                metas.push(&ev.meta);
                metas.len() - 1
            }
        };
        index.push(i as u32);
    }
    out.put_u32_le(metas.len() as u32);
    for m in &metas {
        for s in [&m.target, &m.node, &m.namespace, &m.pod, &m.pod_uid, &m.container, &m.image] {
            put_bytes(out, s.as_bytes());
        }
        match &m.workload {
            Some(w) => {
                out.put_u8(1);
                put_bytes(out, w.as_bytes());
            }
            None => out.put_u8(0),
        }
        out.put_u32_le(m.fields.len() as u32);
        for (k, v) in &m.fields {
            put_bytes(out, k.as_bytes());
            put_bytes(out, v.as_bytes());
        }
    }
    out.put_u32_le(events.len() as u32);
    for (ev, mi) in events.iter().zip(index) {
        out.put_u32_le(mi);
        out.put_u64_le(ev.file.dev);
        out.put_u64_le(ev.file.ino);
        out.put_u64_le(ev.file.fingerprint);
        out.put_u64_le(ev.offset);
        out.put_i64_le(ev.timestamp_nanos);
        out.put_u8(match ev.stream {
            None => 0,
            Some(StdStream::Stdout) => 1,
            Some(StdStream::Stderr) => 2,
        });
        out.put_u8(u8::from(ev.flags.truncated) | (u8::from(ev.flags.parse_failed) << 1));
        put_bytes(out, &ev.message);
        match &ev.fields {
            Some(f) => {
                // Serializing a JSON map into a Vec cannot fail.
                let json = serde_json::to_vec(f).unwrap_or_default();
                put_bytes(out, &json);
            }
            None => out.put_u32_le(NO_FIELDS),
        }
    }
}

struct Reader {
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), CodecError> {
        if self.buf.remaining() < n { Err(CodecError::Short) } else { Ok(()) }
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        self.need(4)?;
        Ok(self.buf.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        self.need(8)?;
        Ok(self.buf.get_u64_le())
    }
    fn bytes_len(&mut self, len: usize) -> Result<Bytes, CodecError> {
        self.need(len)?;
        Ok(self.buf.split_to(len))
    }
    fn bytes(&mut self) -> Result<Bytes, CodecError> {
        let len = self.u32()? as usize;
        self.bytes_len(len)
    }
    fn string(&mut self) -> Result<String, CodecError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| CodecError::Invalid("string"))
    }
}

/// Decodes a batch that `encode_batch` wrote.
pub fn decode_batch(buf: Bytes) -> Result<Vec<Event>, CodecError> {
    let mut r = Reader { buf };
    let v = r.u8()?;
    if v != VERSION {
        return Err(CodecError::Version(v));
    }
    let n_metas = r.u32()? as usize;
    let mut metas = Vec::with_capacity(n_metas.min(4096));
    for _ in 0..n_metas {
        let mut m = TargetMeta {
            target: r.string()?,
            node: r.string()?,
            namespace: r.string()?,
            pod: r.string()?,
            pod_uid: r.string()?,
            container: r.string()?,
            image: r.string()?,
            workload: None,
            fields: BTreeMap::new(),
        };
        if r.u8()? == 1 {
            m.workload = Some(r.string()?);
        }
        for _ in 0..r.u32()? {
            let k = r.string()?;
            m.fields.insert(k, r.string()?);
        }
        metas.push(Arc::new(m));
    }
    let n = r.u32()? as usize;
    let mut events = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let meta = metas.get(r.u32()? as usize).ok_or(CodecError::Invalid("metadata index"))?.clone();
        let file = FileId { dev: r.u64()?, ino: r.u64()?, fingerprint: r.u64()? };
        let offset = r.u64()?;
        let timestamp_nanos = r.u64()? as i64;
        let stream = match r.u8()? {
            0 => None,
            1 => Some(StdStream::Stdout),
            2 => Some(StdStream::Stderr),
            _ => return Err(CodecError::Invalid("stream")),
        };
        let flags = r.u8()?;
        let message = r.bytes()?;
        let fields = match r.u32()? {
            NO_FIELDS => None,
            len => {
                let json = r.bytes_len(len as usize)?;
                Some(serde_json::from_slice(&json).map_err(|_| CodecError::Invalid("fields"))?)
            }
        };
        events.push(Event {
            meta,
            file,
            offset,
            timestamp_nanos,
            stream,
            message,
            fields,
            flags: EventFlags { truncated: flags & 1 != 0, parse_failed: flags & 2 != 0 },
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::net::testutil::sample_event;

    #[test]
    fn round_trips_and_shares_metadata() {
        let a = sample_event(1);
        let mut b = sample_event(2);
        b.meta = a.meta.clone();
        b.fields = None;
        b.stream = Some(StdStream::Stderr);
        b.flags.truncated = true;
        let mut c = sample_event(3);
        c.stream = None;
        c.flags.parse_failed = true;
        let mut buf = Vec::new();
        encode_batch(&[a.clone(), b.clone(), c.clone()], &mut buf);
        let out = decode_batch(Bytes::from(buf.clone())).unwrap();
        assert_eq!(out.len(), 3);
        assert!(Arc::ptr_eq(&out[0].meta, &out[1].meta));
        for (x, y) in [a, b, c].iter().zip(&out) {
            assert_eq!(*x.meta, *y.meta);
            assert_eq!(
                (x.file, x.offset, x.timestamp_nanos, x.stream),
                (y.file, y.offset, y.timestamp_nanos, y.stream)
            );
            assert_eq!((&x.message, &x.fields, x.flags), (&y.message, &y.fields, y.flags));
        }
        for cut in [0, 1, 10, buf.len() - 1] {
            assert!(decode_batch(Bytes::copy_from_slice(&buf[..cut])).is_err());
        }
    }
}
