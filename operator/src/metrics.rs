//! Prometheus metrics and the health endpoints (`/metrics`, `/healthz`, `/readyz`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: String,
    pub op: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    /// Render-and-sync passes.
    pub reconciles: Counter,
    /// Failures by category (watch, apply, conflict, forbidden, ...).
    pub errors: Family<CategoryLabels, Counter>,
    /// Time to render the whole cluster.
    pub render_seconds: Histogram,
    /// Rendered targets by kind (collection, backup).
    pub targets: Family<KindLabels, Gauge>,
    /// Nodes with a rendered configuration.
    pub nodes: Gauge,
    /// Writes by object kind and operation (apply, delete, status).
    pub writes: Family<WriteLabels, Counter>,
    /// User resources that are invalid.
    pub invalid_resources: Gauge,
    /// 1 while this replica holds the lease.
    pub leader: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tailor_operator");
        let m = Self {
            reconciles: Counter::default(),
            errors: Family::default(),
            render_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            targets: Family::default(),
            nodes: Gauge::default(),
            writes: Family::default(),
            invalid_resources: Gauge::default(),
            leader: Gauge::default(),
            ready: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register("reconciles", "Render-and-sync passes", m.reconciles.clone());
        registry.register("errors", "Failures by category", m.errors.clone());
        registry.register("render_seconds", "Time to render the whole cluster", m.render_seconds.clone());
        registry.register("targets", "Rendered targets by kind", m.targets.clone());
        registry.register("nodes", "Nodes with a rendered configuration", m.nodes.clone());
        registry.register("writes", "API writes by kind and operation", m.writes.clone());
        registry.register(
            "invalid_resources",
            "User resources that are invalid",
            m.invalid_resources.clone(),
        );
        registry.register("leader", "1 while this replica holds the lease", m.leader.clone());
        Self { registry, ..m }
    }

    pub fn error(&self, category: &str) {
        self.errors.get_or_create(&CategoryLabels { category: category.to_string() }).inc();
    }

    pub fn write(&self, kind: &str, op: &str, n: u32) {
        if n > 0 {
            self.writes.get_or_create(&WriteLabels { kind: kind.into(), op: op.into() }).inc_by(u64::from(n));
        }
    }

    pub fn set_targets(&self, kind: &str, n: u64) {
        self.targets
            .get_or_create(&KindLabels { kind: kind.into() })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Ready once every cache has its initial list.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The HTTP router of the metrics and health endpoints.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(metrics)
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "caches syncing") }
}

/// Serves the endpoints until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(tokio::net::TcpListener::bind(addr).await?, metrics, shutdown).await
}

/// Serves the endpoints on a bound listener until `shutdown` resolves.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn health_and_metrics_over_http() {
        let metrics = Arc::new(Metrics::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, metrics.clone(), async {
            let _ = stopped.await;
        }));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        metrics.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        metrics.reconciles.inc();
        let text = get(addr, "/metrics").await;
        assert!(text.contains("tailor_operator_reconciles_total 1"), "{text}");
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn metrics_are_exposed_with_their_prefix() {
        let m = Metrics::new();
        m.reconciles.inc();
        m.error("conflict");
        m.write("NodeLogConfig", "apply", 2);
        m.set_targets("collection", 7);
        let text = m.encode();
        for needle in [
            "tailor_operator_reconciles_total 1",
            "tailor_operator_errors_total{category=\"conflict\"} 1",
            "tailor_operator_writes_total{kind=\"NodeLogConfig\",op=\"apply\"} 2",
            "tailor_operator_targets{kind=\"collection\"} 7",
            "tailor_operator_render_seconds_bucket",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
