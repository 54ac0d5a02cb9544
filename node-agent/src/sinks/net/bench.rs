//! Figures for `tailor-agent bench`: events per second and CPU seconds per GB of each network
//! sink's request encoding (and of the disk buffer's record codec), on synthetic events with a
//! message of a given size. CPU time is the calling thread's (`CLOCK_THREAD_CPUTIME_ID`), so run
//! it on an otherwise idle thread; GB are GB of event messages (10^9 bytes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tailor_crds::collection::Compression;
use tailor_crds::node::StdStream;

use crate::buffer::{codec, frame};
use crate::event::{Event, EventFlags, FileId, TargetMeta};
use crate::sinks::elasticsearch::{IndexPattern, write_bulk};
use crate::sinks::http::encode_ndjson;
use crate::sinks::kafka::record_for;
use crate::sinks::loki::{LabelMap, write_push};
use crate::sinks::net::compress;

/// One measured encoding.
#[derive(Clone, Debug)]
pub struct EncodingFigure {
    pub name: &'static str,
    pub events: usize,
    /// Bytes of event messages encoded.
    pub message_bytes: u64,
    /// Bytes produced (request bodies, records).
    pub output_bytes: u64,
    pub wall: Duration,
    pub cpu: Duration,
}

impl EncodingFigure {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn cpu_seconds_per_gb(&self) -> f64 {
        self.cpu.as_secs_f64() / (self.message_bytes as f64 / 1e9).max(1e-12)
    }
}

impl std::fmt::Display for EncodingFigure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<24} {:>12.0} events/s  {:>7.2} CPU s/GB  {:>6.2} bytes out per message byte",
            self.name,
            self.events_per_second(),
            self.cpu_seconds_per_gb(),
            self.output_bytes as f64 / self.message_bytes.max(1) as f64
        )
    }
}

/// Synthetic events: `n` messages of `size` bytes from 8 pods, with attached and parsed fields
/// like an enriched JSON log line has.
pub fn synthetic_events(n: usize, size: usize) -> Vec<Event> {
    let metas: Vec<Arc<TargetMeta>> = (0..8)
        .map(|p| {
            Arc::new(TargetMeta {
                target: format!("pod/shop/api-{p}/api"),
                node: "node-1".into(),
                namespace: "shop".into(),
                pod: format!("api-7d9f8c6b5-{p:05}"),
                pod_uid: format!("6f1c2d3e-0000-4000-8000-{p:012}"),
                container: "api".into(),
                image: "registry.example/shop/api:1.42.0".into(),
                workload: Some("Deployment/api".into()),
                fields: BTreeMap::from([("app".into(), "api".into()), ("team".into(), "checkout".into())]),
            })
        })
        .collect();
    (0..n)
        .map(|i| {
            let mut msg = format!("2026-01-02T03:04:05.{i:09}Z INFO request id={i} path=/cart status=200 ");
            while msg.len() < size {
                msg.push(char::from(b'a' + (i % 26) as u8));
            }
            msg.truncate(size);
            let mut fields = serde_json::Map::new();
            fields.insert("level".into(), "info".into());
            fields.insert("status".into(), 200.into());
            Event {
                meta: metas[i % metas.len()].clone(),
                file: FileId { dev: 2049, ino: 1_000_000 + (i % 8) as u64, fingerprint: 0x1234_5678 },
                offset: (i as u64 + 1) * (size as u64 + 1),
                timestamp_nanos: 1_767_323_045_000_000_000 + i as i64 * 1000,
                stream: Some(StdStream::Stdout),
                message: Bytes::from(msg),
                fields: Some(fields),
                flags: EventFlags::default(),
            }
        })
        .collect()
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn measure(
    name: &'static str,
    events: &[Event],
    batch: usize,
    mut encode: impl FnMut(&[Event]) -> usize,
) -> EncodingFigure {
    let message_bytes = events.iter().map(|e| e.message.len() as u64).sum();
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    let mut output_bytes = 0u64;
    for chunk in events.chunks(batch.max(1)) {
        output_bytes += encode(chunk) as u64;
    }
    EncodingFigure {
        name,
        events: events.len(),
        message_bytes,
        output_bytes,
        wall: wall0.elapsed(),
        cpu: thread_cpu() - cpu0,
    }
}

/// Measures every encoding on `n` events of `size`-byte messages, in batches of `batch`.
pub fn bench_encodings(n: usize, size: usize, batch: usize) -> Vec<EncodingFigure> {
    let events = synthetic_events(n, size);
    let mut out = Vec::new();
    for (name, c) in [
        ("http ndjson", Compression::None),
        ("http ndjson gzip", Compression::Gzip),
        ("http ndjson zstd", Compression::Zstd),
    ] {
        out.push(measure(name, &events, batch, |chunk| {
            encode_ndjson(c, chunk).map(|(b, _)| b.len()).unwrap_or(0)
        }));
    }
    for (name, c) in
        [("elasticsearch bulk", Compression::None), ("elasticsearch bulk gzip", Compression::Gzip)]
    {
        let mut index = IndexPattern::parse("logs-%Y.%m.%d");
        out.push(measure(name, &events, batch, |chunk| {
            let ids: Vec<usize> = (0..chunk.len()).collect();
            let mut buf = Vec::with_capacity(chunk.len() * 640);
            write_bulk(&mut buf, &mut index, chunk, &ids);
            compress::encode(c, buf).map(|(b, _)| b.len()).unwrap_or(0)
        }));
    }
    let labels =
        LabelMap::new("bench", &BTreeMap::new()).unwrap_or_else(|_| unreachable!("default labels are valid"));
    for (name, c) in [("loki push", Compression::None), ("loki push gzip", Compression::Gzip)] {
        out.push(measure(name, &events, batch, |chunk| {
            let mut buf = Vec::with_capacity(chunk.len() * 640);
            write_push(&mut buf, &labels, chunk);
            compress::encode(c, buf).map(|(b, _)| b.len()).unwrap_or(0)
        }));
    }
    out.push(measure("kafka records", &events, batch, |chunk| {
        chunk.iter().map(|e| record_for(e, Some("pod")).approximate_size()).sum()
    }));
    out.push(measure("disk buffer record", &events, batch, |chunk| {
        let mut payload = Vec::with_capacity(chunk.len() * 400);
        codec::encode_batch(chunk, &mut payload);
        let mut rec = Vec::with_capacity(payload.len() + frame::HEADER_LEN);
        frame::frame(&payload, &mut rec);
        let n = rec.len();
        // Read it back as the drain task does.
        let back = codec::decode_batch(Bytes::from(payload)).map(|v| v.len()).unwrap_or(0);
        debug_assert_eq!(back, chunk.len());
        n
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_produces_output() {
        let figures = bench_encodings(50, 256, 20);
        assert_eq!(figures.len(), 9);
        for f in &figures {
            assert_eq!(f.events, 50);
            assert_eq!(f.message_bytes, 50 * 256);
            assert!(f.output_bytes > 0, "{}", f.name);
            assert!(!f.to_string().is_empty());
        }
    }
}
