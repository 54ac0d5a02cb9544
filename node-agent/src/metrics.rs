//! Counters of the agent and their Prometheus text exposition (`/metrics`), plus `/healthz`.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::pipeline::PipelineCounters;
use crate::sinks::net::NetStats;
use crate::sinks::runner::SinkStats;

/// Picks one counter of a pipeline's.
type PickCounter = fn(&PipelineCounters) -> &AtomicU64;

/// Counters updated by the collection engine (relaxed atomics: figures, not synchronisation).
#[derive(Debug, Default)]
pub struct Metrics {
    pub bytes_read: AtomicU64,
    pub lines_read: AtomicU64,
    pub events_sent: AtomicU64,
    pub lines_truncated: AtomicU64,
    pub lines_malformed: AtomicU64,
    pub files_tracked: AtomicI64,
    pub files_open: AtomicI64,
    pub targets_active: AtomicI64,
    pub rotations: AtomicU64,
    pub truncations: AtomicU64,
    pub files_released: AtomicU64,
    pub resolve_errors: AtomicU64,
    pub checkpoint_writes: AtomicU64,
    pub checkpoint_failures: AtomicU64,
    pub checkpoint_corrupt: AtomicU64,
    /// Unix seconds of the last successful checkpoint write.
    pub checkpoint_last_write: AtomicI64,
    pub backpressure_waits: AtomicU64,
    pub config_generation: AtomicI64,
    /// The engine loop's last turn, Unix seconds (health).
    pub heartbeat: AtomicI64,
    /// Counters of the live sinks, by name.
    pub sinks: Mutex<Vec<(String, Arc<SinkStats>)>>,
    /// Counters of the network outputs, by sink name (`<namespace>/<collection>/<output>`).
    pub net_sinks: Mutex<Vec<(String, Arc<NetStats>)>>,
    /// Counters of the pipelines of each collection (`namespace/name`).
    pub pipelines: Mutex<Vec<(String, Arc<PipelineCounters>)>>,
}

/// Picks one counter out of a network sink's counters.
type NetCounter = fn(&NetStats) -> &AtomicU64;

/// The per-output counters of network sinks: (metric, help, counter).
const NET_COUNTERS: [(&str, &str, NetCounter); 5] = [
    ("tailor_agent_output_delivered_total", "Events a network output's destination accepted", |s| {
        &s.delivered
    }),
    ("tailor_agent_output_retried_total", "Events re-sent after a transient failure", |s| &s.retried),
    (
        "tailor_agent_output_dead_lettered_total",
        "Events the destination rejected for good, written to the dead-letter file",
        |s| &s.dead_lettered,
    ),
    ("tailor_agent_output_dropped_total", "Events dropped by a full dropNewest buffer", |s| &s.dropped),
    (
        "tailor_agent_output_failed_requests_total",
        "Requests that failed (transport error, timeout, retryable status)",
        |s| &s.failed_requests,
    ),
];

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 13] = [
            ("tailor_agent_read_bytes_total", "Bytes read from log files", &self.bytes_read),
            ("tailor_agent_read_lines_total", "Lines read from log files", &self.lines_read),
            ("tailor_agent_events_sent_total", "Events handed to sinks", &self.events_sent),
            (
                "tailor_agent_lines_truncated_total",
                "Lines cut at the maximum event size",
                &self.lines_truncated,
            ),
            (
                "tailor_agent_lines_malformed_total",
                "Lines that did not match their format",
                &self.lines_malformed,
            ),
            ("tailor_agent_rotations_total", "Files seen rotated (renamed or replaced)", &self.rotations),
            ("tailor_agent_truncations_total", "Files seen truncated (copy-truncate)", &self.truncations),
            ("tailor_agent_files_released_total", "Files drained and let go", &self.files_released),
            ("tailor_agent_resolve_errors_total", "Inputs that failed to resolve", &self.resolve_errors),
            ("tailor_agent_checkpoint_writes_total", "Checkpoint writes", &self.checkpoint_writes),
            (
                "tailor_agent_checkpoint_failures_total",
                "Checkpoint writes that failed",
                &self.checkpoint_failures,
            ),
            (
                "tailor_agent_checkpoint_corrupt_total",
                "Corrupt checkpoint slots found at start",
                &self.checkpoint_corrupt,
            ),
            (
                "tailor_agent_backpressure_total",
                "Reads skipped because a sink queue was full",
                &self.backpressure_waits,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let gauges: [(&str, &str, &AtomicI64); 5] = [
            ("tailor_agent_files_tracked", "Files tracked", &self.files_tracked),
            ("tailor_agent_files_open", "File descriptors held on log files", &self.files_open),
            ("tailor_agent_targets_active", "Targets applied", &self.targets_active),
            (
                "tailor_agent_checkpoint_last_write_seconds",
                "Unix time of the last checkpoint",
                &self.checkpoint_last_write,
            ),
            ("tailor_agent_config_generation", "NodeLogConfig generation applied", &self.config_generation),
        ];
        for (name, help, g) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                g.load(Ordering::Relaxed)
            );
        }
        let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        for (metric, help) in [
            ("tailor_agent_sink_events_total", "Events delivered by a sink"),
            ("tailor_agent_sink_batches_total", "Batches delivered by a sink"),
            ("tailor_agent_sink_failures_total", "Batches a sink gave up on"),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for (name, s) in sinks.iter() {
                let v = match metric {
                    "tailor_agent_sink_events_total" => &s.events,
                    "tailor_agent_sink_batches_total" => &s.batches,
                    _ => &s.failures,
                };
                let _ = writeln!(
                    out,
                    "{metric}{{sink=\"{}\"}} {}",
                    name.replace('"', "'"),
                    v.load(Ordering::Relaxed)
                );
            }
        }
        drop(sinks);
        let net = self.net_sinks.lock().unwrap_or_else(|p| p.into_inner());
        for (metric, help, counter) in NET_COUNTERS {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for (name, s) in net.iter() {
                let output = name.rsplit('/').next().unwrap_or(name);
                let _ = writeln!(
                    out,
                    "{metric}{{sink=\"{}\",output=\"{}\"}} {}",
                    label_value(name),
                    label_value(output),
                    counter(s).load(Ordering::Relaxed)
                );
            }
        }
        drop(net);
        self.render_pipelines(&mut out);
        out
    }

    fn render_pipelines(&self, out: &mut String) {
        let pipelines = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        let pick: [(&str, &str, PickCounter); 8] = [
            ("events_in", "Events handed to the pipeline (lines, before multiline)", |c| &c.events_in),
            ("events_out", "Events the pipeline handed to the sinks", |c| &c.events_out),
            ("lines_joined", "Lines joined to an earlier line by multiline", |c| &c.lines_joined),
            ("parse_failed", "Events the parser could not parse (kept raw)", |c| &c.parse_failed),
            ("timestamp_failed", "Events whose timestamp field was missing or malformed", |c| {
                &c.timestamp_failed
            }),
            ("field_conflicts", "Parsed fields moved under _parsed (metadata names)", |c| &c.field_conflicts),
            ("dropped_include", "Events dropped because no include filter matched", |c| &c.dropped_include),
            ("dropped_exclude", "Events dropped by an exclude filter", |c| &c.dropped_exclude),
        ];
        for (name, help, counter) in pick {
            let metric = format!("tailor_agent_pipeline_{name}_total");
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for (collection, c) in pipelines.iter() {
                let v = counter(c).load(Ordering::Relaxed);
                let _ = writeln!(out, "{metric}{{collection=\"{}\"}} {v}", collection.replace('"', "'"));
            }
        }
    }

    /// Healthy while the engine loop turned within the last 30 seconds.
    pub fn healthy(&self, now_unix: i64) -> bool {
        now_unix - self.heartbeat.load(Ordering::Relaxed) < 30
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let m1 = metrics.clone();
    let m2 = metrics;
    let app = axum::Router::new()
        .route("/metrics", get(move || async move { m1.render() }))
        .route(
            "/healthz",
            get(move || async move {
                if m2.healthy(chrono::Utc::now().timestamp()) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "engine stalled")
                }
            }),
        )
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_output_counters_are_exported_per_output() {
        let m = Metrics::default();
        let es = Arc::new(NetStats::default());
        NetStats::add(&es.delivered, 7);
        NetStats::add(&es.retried, 2);
        NetStats::add(&es.dead_lettered, 1);
        NetStats::add(&es.failed_requests, 3);
        let loki = Arc::new(NetStats::default());
        NetStats::add(&loki.dropped, 5);
        *m.net_sinks.lock().unwrap() = vec![("team/web/es".into(), es), ("team/web/lo\"ki".into(), loki)];
        let text = m.render();
        for line in [
            "tailor_agent_output_delivered_total{sink=\"team/web/es\",output=\"es\"} 7",
            "tailor_agent_output_retried_total{sink=\"team/web/es\",output=\"es\"} 2",
            "tailor_agent_output_dead_lettered_total{sink=\"team/web/es\",output=\"es\"} 1",
            "tailor_agent_output_failed_requests_total{sink=\"team/web/es\",output=\"es\"} 3",
            "tailor_agent_output_dropped_total{sink=\"team/web/es\",output=\"es\"} 0",
            "tailor_agent_output_dropped_total{sink=\"team/web/lo\\\"ki\",output=\"lo\\\"ki\"} 5",
            "# TYPE tailor_agent_output_delivered_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn pipeline_counters_are_exported_per_collection() {
        let m = Metrics::default();
        let c = Arc::new(PipelineCounters::default());
        PipelineCounters::add(&c.dropped_exclude, 3);
        PipelineCounters::add(&c.parse_failed, 2);
        m.pipelines.lock().unwrap().push(("shop/json".into(), c));
        let text = m.render();
        assert!(text.contains("# TYPE tailor_agent_pipeline_dropped_exclude_total counter"));
        assert!(text.contains("tailor_agent_pipeline_dropped_exclude_total{collection=\"shop/json\"} 3\n"));
        assert!(text.contains("tailor_agent_pipeline_parse_failed_total{collection=\"shop/json\"} 2\n"));
        assert!(text.contains("tailor_agent_pipeline_events_out_total{collection=\"shop/json\"} 0\n"));
    }
}
