//! A local receiver for the sink benchmarks: it speaks just enough of each destination's API to
//! accept a batch (HTTP NDJSON, Elasticsearch `_bulk`, Loki push) and counts the events it got.
//! It runs on its own runtime thread in the bench process, so its CPU is not charged to the
//! process being measured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

/// A running receiver; stops with its runtime when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    events: Arc<AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    pub fn start() -> anyhow::Result<Receiver> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let events = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .route("/ingest", post(ndjson))
            .route("/_bulk", post(bulk))
            .route("/{index}/_bulk", post(bulk))
            .route("/loki/api/v1/push", post(loki))
            .route("/", get(|| async { r#"{"version":{"number":"8.13.0"}}"# }))
            .layer(DefaultBodyLimit::disable())
            .with_state(events.clone());
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { addr, events, _rt: rt })
    }

    /// Events received so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.events.store(0, Ordering::Relaxed);
    }
}

type Counter = State<Arc<AtomicU64>>;

async fn ndjson(State(n): Counter, body: Bytes) -> StatusCode {
    n.fetch_add(ndjson_events(&body), Ordering::Relaxed);
    StatusCode::OK
}

async fn bulk(State(n): Counter, body: Bytes) -> (StatusCode, &'static str) {
    // Every document is an action line plus a source line.
    n.fetch_add(ndjson_events(&body) / 2, Ordering::Relaxed);
    (StatusCode::OK, r#"{"took":1,"errors":false,"items":[]}"#)
}

async fn loki(State(n): Counter, body: Bytes) -> StatusCode {
    match loki_entries(&body) {
        Some(entries) => {
            n.fetch_add(entries, Ordering::Relaxed);
            StatusCode::NO_CONTENT
        }
        None => StatusCode::BAD_REQUEST,
    }
}

/// Lines of an NDJSON body (a last line without its newline counts too).
pub fn ndjson_events(body: &[u8]) -> u64 {
    let newlines = memchr::memchr_iter(b'\n', body).count() as u64;
    newlines + u64::from(!body.is_empty() && !body.ends_with(b"\n"))
}

/// Entries of a Loki JSON push body, `None` when it is not one.
pub fn loki_entries(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Push {
        streams: Vec<Stream>,
    }
    #[derive(serde::Deserialize)]
    struct Stream {
        values: Vec<serde::de::IgnoredAny>,
    }
    let push: Push = serde_json::from_slice(body).ok()?;
    Some(push.streams.iter().map(|s| s.values.len() as u64).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_each_protocol_carries() {
        assert_eq!(ndjson_events(b""), 0);
        assert_eq!(ndjson_events(b"{}\n{}\n"), 2);
        assert_eq!(ndjson_events(b"{}\n{}"), 2);
        let push = br#"{"streams":[{"stream":{"a":"1"},"values":[["1","x"],["2","y"]]},{"stream":{},"values":[["3","z"]]}]}"#;
        assert_eq!(loki_entries(push), Some(3));
        assert_eq!(loki_entries(b"not json"), None);
    }

    #[test]
    fn serves_and_counts_over_http() {
        let r = Receiver::start().unwrap();
        let post = |path: &str, body: &str| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(r.addr).unwrap();
            write!(
                s,
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).unwrap();
            resp
        };
        assert!(post("/ingest", "{}\n{}\n").starts_with("HTTP/1.1 200"));
        let bulk = post("/logs/_bulk", "{\"index\":{}}\n{}\n{\"index\":{}}\n{}\n");
        assert!(bulk.contains(r#""errors":false"#));
        assert!(
            post("/loki/api/v1/push", r#"{"streams":[{"stream":{},"values":[["1","x"]]}]}"#)
                .starts_with("HTTP/1.1 204")
        );
        assert_eq!(r.events(), 5);
    }
}
