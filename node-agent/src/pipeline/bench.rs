//! A benchmark of the pipeline alone: JSON parse + enrichment (+ an exclude filter) at a given
//! line size, in events/s and CPU seconds per GB of input. It prints nothing; the caller (the
//! agent's `bench` command) reports the figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tailor_crds::collection::{FieldMatch, FilterSpec, ParseFormat, ParseSpec, TimestampSpec};
use tailor_crds::common::StartPosition;
use tailor_crds::node::{NodeCollection, SourceRef, StdStream};

use super::{Pipeline, PipelineError, Processor};
use crate::event::{Event, EventFlags, FileId, TargetMeta};

/// Figures of one run.
#[derive(Clone, Copy, Debug)]
pub struct BenchReport {
    pub events: u64,
    pub bytes: u64,
    pub wall: Duration,
    /// CPU time of the calling thread (the pipeline is single-threaded per target).
    pub cpu: Duration,
    pub events_per_sec: f64,
    pub cpu_secs_per_gb: f64,
}

/// Runs `events` JSON lines of about `line_bytes` bytes through a pipeline that parses JSON,
/// takes the time from a field, resolves conflicts with metadata and applies one exclude filter.
pub fn bench_pipeline(events: u64, line_bytes: usize) -> Result<BenchReport, PipelineError> {
    let collection = NodeCollection {
        source: SourceRef { namespace: "bench".into(), name: "bench".into(), generation: 1 },
        start: StartPosition::Beginning,
        multiline: None,
        parse: ParseSpec {
            format: ParseFormat::Json,
            timestamp: Some(TimestampSpec { field: "ts".into(), format: "rfc3339".into() }),
            ..ParseSpec::default()
        },
        filters: FilterSpec {
            include: vec![],
            exclude: vec![FieldMatch { field: "level".into(), pattern: "^trace$".into() }],
        },
        outputs: vec![],
        targets: vec![],
    };
    let meta = Arc::new(TargetMeta {
        target: "bench/bench/web-1/app".into(),
        node: "node-1".into(),
        namespace: "bench".into(),
        pod: "web-1".into(),
        pod_uid: "0b6f3c1e-0000-4000-8000-000000000001".into(),
        container: "app".into(),
        image: "registry.example.com/web:1.2.3".into(),
        workload: Some("Deployment/web".into()),
        fields: [("team".to_string(), "payments".to_string())].into(),
    });
    let mut pipeline = Pipeline::new(&collection, &meta, Arc::default())?;
    let lines = sample_lines(line_bytes);
    let mut out = Vec::with_capacity(1024);
    let mut bytes = 0u64;
    let cpu_start = thread_cpu();
    let start = Instant::now();
    for i in 0..events {
        let message = lines[(i % lines.len() as u64) as usize].clone();
        bytes += message.len() as u64 + 1;
        let event = Event {
            meta: meta.clone(),
            file: FileId { dev: 1, ino: 1, fingerprint: 1 },
            offset: bytes,
            timestamp_nanos: 0,
            stream: Some(StdStream::Stdout),
            message,
            fields: None,
            flags: EventFlags::default(),
        };
        pipeline.process(event, &mut out);
        if out.len() >= 1024 {
            out.clear();
        }
    }
    pipeline.flush(Instant::now(), true, &mut out);
    let wall = start.elapsed();
    let cpu = thread_cpu().zip(cpu_start).map_or(wall, |(end, start)| end.saturating_sub(start));
    Ok(BenchReport {
        events,
        bytes,
        wall,
        cpu,
        events_per_sec: events as f64 / wall.as_secs_f64().max(1e-9),
        cpu_secs_per_gb: cpu.as_secs_f64() / (bytes as f64 / 1e9).max(1e-12),
    })
}

/// A few realistic JSON lines padded to `line_bytes` (the `msg` field takes the padding).
fn sample_lines(line_bytes: usize) -> Vec<Bytes> {
    (0..16)
        .map(|i| {
            let head = format!(
                r#"{{"ts":"2024-05-01T10:00:{:02}.{:03}Z","level":"{}","logger":"com.example.api.OrderService","trace_id":"4bf92f3577b34da6a3ce929d0e0e{:04x}","http":{{"method":"GET","status":{},"path":"/api/v1/orders/{}"}},"msg":""#,
                i % 60,
                i * 7,
                ["info", "warn", "error", "debug"][i % 4],
                i,
                [200, 404, 500, 201][i % 4],
                1000 + i
            );
            let pad = line_bytes.saturating_sub(head.len() + 2);
            let mut line = head;
            line.extend(std::iter::repeat_n('x', pad));
            line.push_str("\"}");
            Bytes::from(line)
        })
        .collect()
}

/// CPU time of this thread, from Linux's schedstat (nanoseconds on the CPU); `None` elsewhere.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = text.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(nanos))
}
