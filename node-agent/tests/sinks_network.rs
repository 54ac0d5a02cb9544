//! HTTP, Elasticsearch and Loki sinks against in-test servers that speak their protocols
//! (NDJSON POST, `_bulk` with per-item statuses, `/loki/api/v1/push`), with faults injected:
//! refused connections, timeouts, 429 and 5xx, partial bulk failures, a destination down for a
//! while. Every event is accounted for: delivered to the receiver or dead-lettered.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tailor_agent::event::{Event, EventFlags, FileId, TargetMeta};
use tailor_agent::sinks::elasticsearch::ElasticsearchSink;
use tailor_agent::sinks::http::HttpSink;
use tailor_agent::sinks::loki::LokiSink;
use tailor_agent::sinks::net::{NetOptions, NetStats, RetryPolicy, compress};
use tailor_agent::sinks::{Sink, SinkContext, SinkError};
use tailor_crds::collection::{
    BatchSpec, BufferSpec, Compression, ElasticsearchOutput, HttpOutput, LokiOutput, OutputSpec, OutputType,
};
use tailor_crds::node::SourceRef;
use tokio::net::TcpListener;
use tokio::sync::watch;

// ---------------------------------------------------------------- fixtures

fn events(n: usize, pods: usize) -> Vec<Event> {
    let metas: Vec<Arc<TargetMeta>> = (0..pods)
        .map(|p| {
            Arc::new(TargetMeta {
                target: format!("pod/shop/api-{p}/api"),
                node: "node-1".into(),
                namespace: "shop".into(),
                pod: format!("api-{p}"),
                pod_uid: format!("uid-{p}"),
                container: "api".into(),
                image: "shop/api:1".into(),
                workload: None,
                fields: BTreeMap::from([("tenant".into(), "t1".into())]),
            })
        })
        .collect();
    (0..n)
        .map(|i| {
            let mut msg = format!("line {i:08} ");
            while msg.len() < 256 {
                msg.push('x');
            }
            Event {
                meta: metas[i % pods].clone(),
                file: FileId { dev: 1, ino: 100 + (i % pods) as u64, fingerprint: 7 },
                offset: (i as u64 + 1) * 257,
                timestamp_nanos: 1_767_323_045_000_000_000 + i as i64,
                stream: None,
                message: Bytes::from(msg),
                fields: None,
                flags: EventFlags::default(),
            }
        })
        .collect()
}

fn line_no(message: &str) -> usize {
    message[5..13].parse().unwrap()
}

fn output(type_: OutputType, compression: Compression) -> OutputSpec {
    OutputSpec {
        name: "out".into(),
        type_,
        elasticsearch: None,
        loki: None,
        kafka: None,
        http: None,
        batch: BatchSpec::default(),
        compression,
        tls: None,
        credentials_secret_ref: None,
        buffer: BufferSpec::default(),
    }
}

/// The agent's context for output `out` of `shop/cfg`, with quick retries; the sender stops it.
fn context(state: &std::path::Path) -> (SinkContext, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(false);
    let ctx = SinkContext {
        node_name: "node-1".into(),
        collection: SourceRef { namespace: "shop".into(), name: "cfg".into(), generation: 1 },
        output_dir: None,
        state_dir: state.to_path_buf(),
        file_max_bytes: 0,
        file_max_files: 0,
        force_stop: rx,
        net: NetOptions {
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(200),
                request_timeout: Duration::from_millis(500),
                connect_timeout: Duration::from_millis(200),
            },
            ..NetOptions::default()
        },
    };
    (ctx, tx)
}

fn dead_letters(state: &std::path::Path) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(state.join("dead-letter/shop_cfg_out.ndjson")) {
        Ok(t) => t.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
        Err(_) => Vec::new(),
    }
}

async fn deliver_in_batches(sink: &mut dyn Sink, evs: &[Event], batch: usize) {
    for chunk in evs.chunks(batch) {
        tokio::time::timeout(Duration::from_secs(30), sink.deliver(chunk))
            .await
            .expect("delivery finished")
            .expect("delivered");
    }
}

// ---------------------------------------------------------------- a scriptable server

/// What the server does with the next request, before the protocol handler runs.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Status(u16),
    /// Answer only after the client's request timeout.
    Hang,
}

#[derive(Default)]
struct Server {
    faults: Mutex<VecDeque<Fault>>,
    requests: Mutex<usize>,
}

type Handler = Arc<dyn Fn(&HeaderMap, Vec<u8>) -> Response + Send + Sync>;

/// Binds a port now, serves on it only after `down_for` (connections are refused until then).
async fn serve(server: Arc<Server>, handler: Handler, down_for: Duration) -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    tokio::spawn(async move {
        tokio::time::sleep(down_for).await;
        let listener = TcpListener::bind(addr).await.unwrap();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let server = server.clone();
            let handler = handler.clone();
            async move {
                *server.requests.lock().unwrap() += 1;
                let fault = server.faults.lock().unwrap().pop_front();
                let (parts, body) = req.into_parts();
                let raw = to_bytes(body, 256 << 20).await.unwrap();
                match fault {
                    Some(Fault::Status(s)) => {
                        return (StatusCode::from_u16(s).unwrap(), "injected").into_response();
                    }
                    Some(Fault::Hang) => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        return (StatusCode::OK, "too late").into_response();
                    }
                    None => {}
                }
                let enc = parts.headers.get("content-encoding").map(|v| v.to_str().unwrap().to_string());
                let body = compress::decode(enc.as_deref(), &raw).unwrap();
                handler(&parts.headers, body)
            }
        });
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

// ---------------------------------------------------------------- HTTP

#[tokio::test]
async fn http_ndjson_survives_refusals_timeouts_and_errors() {
    let state = tempfile::tempdir().unwrap();
    let received: Arc<Mutex<Vec<usize>>> = Arc::default();
    let server = Arc::new(Server::default());
    server.faults.lock().unwrap().extend([
        Fault::Status(503),
        Fault::Hang,
        Fault::Status(429),
        Fault::Status(500),
        Fault::Status(413),
    ]);
    let rx = received.clone();
    let handler: Handler = Arc::new(move |headers, body| {
        assert_eq!(headers["x-api-key"], "k1");
        assert_eq!(headers["content-type"], "application/x-ndjson");
        assert_eq!(headers["authorization"], "Bearer tok");
        let text = String::from_utf8(body).unwrap();
        // One malformed-on-purpose event makes the receiver refuse its whole request.
        if text.contains("line 00000666") {
            return (StatusCode::BAD_REQUEST, "bad event").into_response();
        }
        let mut rx = rx.lock().unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            rx.push(line_no(v["message"].as_str().unwrap()));
        }
        StatusCode::OK.into_response()
    });
    let addr = serve(server.clone(), handler, Duration::from_millis(300)).await;

    let mut spec = output(OutputType::Http, Compression::Gzip);
    spec.http = Some(HttpOutput {
        uri: format!("http://{addr}/ingest"),
        headers: BTreeMap::from([("X-Api-Key".into(), "k1".into())]),
    });
    let (mut ctx, _stop) = context(state.path());
    ctx.net.credentials = Some(tailor_agent::sinks::net::Credentials::Token("tok".into()));
    let stats = ctx.net.stats.clone();
    let mut sink = HttpSink::new(&spec, &ctx).unwrap();
    let evs = events(2000, 3);
    deliver_in_batches(&mut sink, &evs, 100).await;

    let got = received.lock().unwrap().clone();
    let unique: HashSet<usize> = got.iter().copied().collect();
    let dead: Vec<usize> =
        dead_letters(state.path()).iter().map(|d| line_no(d["event"]["message"].as_str().unwrap())).collect();
    // The 400 dead-lettered the batch with line 666 (the 413 split the first batch in halves).
    assert_eq!(dead.len(), 100, "{dead:?}");
    assert!(dead.contains(&666));
    for i in 0..2000 {
        assert!(unique.contains(&i) ^ dead.contains(&i), "line {i}: delivered xor dead-lettered");
    }
    assert_eq!(NetStats::get(&stats.delivered), 1900);
    assert_eq!(NetStats::get(&stats.dead_lettered), 100);
    assert!(NetStats::get(&stats.failed_requests) >= 5, "refused + injected faults were retried");
    // Only the request that hung past the timeout may have been received twice.
    assert!(got.len() - unique.len() <= 100);
}

#[tokio::test]
async fn shutdown_gives_the_batch_back_while_the_destination_is_down() {
    let state = tempfile::tempdir().unwrap();
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let mut spec = output(OutputType::Http, Compression::None);
    spec.http = Some(HttpOutput { uri: format!("http://{addr}/"), headers: BTreeMap::new() });
    let (ctx, stop) = context(state.path());
    let stats = ctx.net.stats.clone();
    let mut sink = HttpSink::new(&spec, &ctx).unwrap();
    let evs = events(10, 1);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.send(true).unwrap();
    });
    let res = tokio::time::timeout(Duration::from_secs(10), sink.deliver(&evs)).await.unwrap();
    assert!(matches!(res, Err(SinkError::ShuttingDown { .. })), "{res:?}");
    assert_eq!(NetStats::get(&stats.delivered), 0);
    assert!(NetStats::get(&stats.failed_requests) >= 1);
}

// ---------------------------------------------------------------- Elasticsearch

/// A `_bulk` endpoint: documents by `_id`; an item is pushed back with 429
/// `es_rejected_execution_exception` the first time its `_id` is seen if its line number is a
/// multiple of 3; events with "poison" in their message fail with a mapping error.
#[derive(Default)]
struct EsIndex {
    docs: HashMap<String, (String, serde_json::Value)>,
    index_ops: usize,
    seen: HashSet<String>,
}

fn es_handler(index: Arc<Mutex<EsIndex>>) -> Handler {
    Arc::new(move |headers, body| {
        assert_eq!(headers["authorization"], "Basic ZWxhc3RpYzpwdw==");
        let text = String::from_utf8(body).unwrap();
        let mut lines = text.lines();
        let mut items = Vec::new();
        let mut errors = false;
        let mut idx = index.lock().unwrap();
        while let Some(action) = lines.next() {
            let action: serde_json::Value = serde_json::from_str(action).unwrap();
            let doc: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
            let meta = &action["index"];
            let id = meta["_id"].as_str().unwrap().to_string();
            let index_name = meta["_index"].as_str().unwrap().to_string();
            let message = doc["message"].as_str().unwrap();
            let first_time = idx.seen.insert(id.clone());
            let item = if message.contains("poison") {
                errors = true;
                serde_json::json!({"index": {"_id": id, "status": 400,
                    "error": {"type": "mapper_parsing_exception", "reason": "failed to parse"}}})
            } else if first_time && line_no(message).is_multiple_of(3) {
                errors = true;
                serde_json::json!({"index": {"_id": id, "status": 429,
                    "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}})
            } else {
                idx.index_ops += 1;
                idx.docs.insert(id.clone(), (index_name, doc));
                serde_json::json!({"index": {"_id": id, "status": 201}})
            };
            items.push(item);
        }
        let body =
            serde_json::to_vec(&serde_json::json!({"took": 1, "errors": errors, "items": items})).unwrap();
        ([("content-type", "application/json")], body).into_response()
    })
}

#[tokio::test]
async fn elasticsearch_partial_failures_retry_and_dead_letter_without_duplicates() {
    let state = tempfile::tempdir().unwrap();
    let index: Arc<Mutex<EsIndex>> = Arc::default();
    let server = Arc::new(Server::default());
    server.faults.lock().unwrap().extend([Fault::Status(503), Fault::Hang, Fault::Status(429)]);
    // The first endpoint is down for good: the sink moves on to the second.
    let dead_probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead_probe.local_addr().unwrap();
    drop(dead_probe);
    let addr = serve(server.clone(), es_handler(index.clone()), Duration::from_millis(200)).await;

    let mut spec = output(OutputType::Elasticsearch, Compression::Zstd);
    spec.elasticsearch = Some(ElasticsearchOutput {
        endpoints: vec![format!("http://{dead_addr}"), format!("http://{addr}/")],
        index: "logs-%Y.%m.%d".into(),
        pipeline: None,
    });
    let (mut ctx, _stop) = context(state.path());
    ctx.net.credentials = Some(tailor_agent::sinks::net::Credentials::Basic {
        username: "elastic".into(),
        password: "pw".into(),
    });
    let stats = ctx.net.stats.clone();
    let mut sink = ElasticsearchSink::new(&spec, &ctx).unwrap();
    let mut evs = events(3000, 4);
    for i in [5, 500, 2999] {
        evs[i].message = Bytes::from(format!("line {i:08} poison"));
    }
    deliver_in_batches(&mut sink, &evs, 500).await;
    // Re-sending everything (as after a crash before the checkpoint) overwrites, never duplicates.
    deliver_in_batches(&mut sink, &evs[..1000], 500).await;

    let idx = index.lock().unwrap();
    assert_eq!(idx.docs.len(), 2997, "every event but the poison ones is indexed exactly once");
    let lines: HashSet<usize> =
        idx.docs.values().map(|(_, d)| line_no(d["message"].as_str().unwrap())).collect();
    assert_eq!(lines.len(), 2997);
    assert!(idx.docs.values().all(|(i, _)| i == "logs-2026.01.02"));
    assert!(idx.index_ops > 2997, "re-sent items overwrote by _id");
    let dead = dead_letters(state.path());
    assert_eq!(dead.len(), 5, "three poison events, then two of them again");
    assert!(dead.iter().all(|d| d["reason"].as_str().unwrap().contains("mapper_parsing_exception")));
    assert_eq!(NetStats::get(&stats.dead_lettered), 5);
    assert_eq!(NetStats::get(&stats.delivered), 3000 - 3 + 1000 - 2);
    assert!(NetStats::get(&stats.retried) >= 1000, "items pushed back with 429 were retried");
}

// ---------------------------------------------------------------- Loki

#[derive(Default)]
struct LokiStore {
    /// stream labels → entries (ts, line) in arrival order.
    streams: BTreeMap<BTreeMap<String, String>, Vec<(i64, String)>>,
}

fn loki_handler(store: Arc<Mutex<LokiStore>>) -> Handler {
    Arc::new(move |headers, body| {
        assert_eq!(headers["x-scope-orgid"], "team-a");
        let push: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut store = store.lock().unwrap();
        for s in push["streams"].as_array().unwrap() {
            let labels: BTreeMap<String, String> = serde_json::from_value(s["stream"].clone()).unwrap();
            let entries = store.streams.entry(labels).or_default();
            for v in s["values"].as_array().unwrap() {
                let ts: i64 = v[0].as_str().unwrap().parse().unwrap();
                // Loki refuses entries older than the newest of their stream (per push).
                if entries.last().is_some_and(|(last, _)| ts < *last) {
                    return (StatusCode::BAD_REQUEST, "entry out of order").into_response();
                }
                let line = v[1].as_str().unwrap().to_string();
                // Loki drops exact duplicates (same stream, time and line).
                if !entries.iter().any(|(t, l)| *t == ts && *l == line) {
                    entries.push((ts, line));
                }
            }
        }
        StatusCode::NO_CONTENT.into_response()
    })
}

#[tokio::test]
async fn loki_streams_by_labels_in_order_through_faults() {
    let state = tempfile::tempdir().unwrap();
    let store: Arc<Mutex<LokiStore>> = Arc::default();
    let server = Arc::new(Server::default());
    server.faults.lock().unwrap().extend([Fault::Status(429), Fault::Hang, Fault::Status(502)]);
    let addr = serve(server, loki_handler(store.clone()), Duration::from_millis(300)).await;
    let mut spec = output(OutputType::Loki, Compression::Gzip);
    spec.loki = Some(LokiOutput {
        endpoint: format!("http://{addr}"),
        labels: BTreeMap::from([("namespace".into(), "namespace".into()), ("pod".into(), "pod".into())]),
        tenant: Some("team-a".into()),
    });
    let (ctx, _stop) = context(state.path());
    let stats = ctx.net.stats.clone();
    let mut sink = LokiSink::new(&spec, &ctx).unwrap();
    // Each batch's events arrive shuffled in time; the sink sorts them per stream.
    let mut evs = events(1200, 3);
    for chunk in evs.chunks_mut(100) {
        chunk.reverse();
    }
    deliver_in_batches(&mut sink, &evs, 100).await;

    let store = store.lock().unwrap();
    assert_eq!(store.streams.len(), 3);
    let mut total = 0;
    for (labels, entries) in &store.streams {
        assert_eq!(labels["namespace"], "shop");
        assert!(entries.windows(2).all(|w| w[0].0 <= w[1].0), "ordered per stream");
        total += entries.len();
    }
    assert_eq!(total, 1200, "each event once (re-sent pushes are deduplicated like Loki does)");
    assert_eq!(NetStats::get(&stats.delivered), 1200);
    assert_eq!(NetStats::get(&stats.dead_lettered), 0);
}

#[tokio::test]
async fn loki_refusal_is_dead_lettered() {
    let state = tempfile::tempdir().unwrap();
    let store: Arc<Mutex<LokiStore>> = Arc::default();
    let addr = serve(Arc::new(Server::default()), loki_handler(store.clone()), Duration::ZERO).await;
    let mut spec = output(OutputType::Loki, Compression::None);
    spec.loki = Some(LokiOutput {
        endpoint: format!("http://{addr}"),
        labels: BTreeMap::new(),
        tenant: Some("team-a".into()),
    });
    let (ctx, _stop) = context(state.path());
    let stats = ctx.net.stats.clone();
    let mut sink = LokiSink::new(&spec, &ctx).unwrap();
    let evs = events(20, 1);
    deliver_in_batches(&mut sink, &evs[10..], 10).await;
    // Older than what the stream has: refused for good.
    deliver_in_batches(&mut sink, &evs[..10], 10).await;
    assert_eq!(NetStats::get(&stats.delivered), 10);
    assert_eq!(NetStats::get(&stats.dead_lettered), 10);
    let dead = dead_letters(state.path());
    assert_eq!(dead.len(), 10);
    assert!(dead[0]["reason"].as_str().unwrap().contains("out of order"));
}
