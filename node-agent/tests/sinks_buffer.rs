//! The disk buffer in front of a sink that is down: batches are acknowledged once on disk,
//! survive a restart (and a torn write), are delivered in order exactly once when the sink is
//! back; a full buffer blocks or drops (counted) as configured.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tailor_agent::buffer::{DiskBuffer, buffer_dir};
use tailor_agent::event::{Event, EventFlags, FileId, TargetMeta};
use tailor_agent::sinks::net::{NetContext, NetOptions, NetStats, RetryPolicy};
use tailor_agent::sinks::{Sink, SinkError};
use tailor_crds::collection::{BufferSpec, BufferType, WhenFull};
use tokio::sync::watch;

/// A destination that is down until `up` is set, then records event offsets.
struct Recorder {
    up: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<u64>>>,
    stop: watch::Receiver<bool>,
}

impl Sink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            while !self.up.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    _ = tailor_agent::sinks::net::stopped(&self.stop) => return Err(SinkError::ShuttingDown { sink: "recorder".into() }),
                }
            }
            self.got.lock().unwrap().extend(events.iter().map(|e| e.offset));
            Ok(())
        })
    }
}

fn batch(first: u64, n: u64) -> Vec<Event> {
    let meta = Arc::new(TargetMeta {
        target: "pod/shop/api-0/api".into(),
        namespace: "shop".into(),
        pod: "api-0".into(),
        container: "api".into(),
        fields: BTreeMap::from([("tenant".into(), "t1".into())]),
        ..TargetMeta::default()
    });
    (first..first + n)
        .map(|i| Event {
            meta: meta.clone(),
            file: FileId { dev: 1, ino: 2, fingerprint: 3 },
            offset: i,
            timestamp_nanos: i as i64,
            stream: None,
            message: Bytes::from(format!("{i:0>256}")),
            fields: None,
            flags: EventFlags::default(),
        })
        .collect()
}

fn ctx(state: &std::path::Path, stop: &watch::Receiver<bool>) -> NetContext {
    let retry = RetryPolicy {
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    NetContext {
        name: "shop/cfg/out".into(),
        state_dir: state.to_path_buf(),
        opts: NetOptions { retry, ..NetOptions::default() },
        force_stop: stop.clone(),
    }
}

fn spec(max: &str, when_full: WhenFull) -> BufferSpec {
    BufferSpec { type_: BufferType::Disk, max_size: max.into(), when_full }
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn restart_during_an_outage_loses_nothing() {
    let state = tempfile::tempdir().unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let got: Arc<Mutex<Vec<u64>>> = Arc::default();

    // First run: the destination is down; every batch is acknowledged once it is on disk.
    let (stop, rx) = watch::channel(false);
    let c = ctx(state.path(), &rx);
    let inner = Recorder { up: up.clone(), got: got.clone(), stop: rx.clone() };
    let mut buf = DiskBuffer::open(&spec("2Mi", WhenFull::Block), &c, Box::new(inner)).unwrap();
    for b in 0..50 {
        buf.deliver(&batch(b * 100, 100)).await.unwrap();
    }
    assert!(buf.pending_bytes() > 50 * 100 * 256);
    stop.send(true).unwrap();
    wait_for("the drain task to stop", || !buf.is_draining()).await;
    drop(buf);
    assert!(got.lock().unwrap().is_empty());

    // The crash tore a write at the end of the newest segment.
    let dir = buffer_dir(state.path(), "shop/cfg/out");
    let mut segs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    assert!(segs.len() > 1, "several segments: {segs:?}");
    std::fs::OpenOptions::new()
        .append(true)
        .open(segs.last().unwrap())
        .unwrap()
        .write_all(&[200, 0, 0, 0, 1, 2])
        .unwrap();

    // Second run: the destination is back.
    up.store(true, Ordering::SeqCst);
    let (stop, rx) = watch::channel(false);
    let c = ctx(state.path(), &rx);
    let inner = Recorder { up: up.clone(), got: got.clone(), stop: rx.clone() };
    let mut buf = DiskBuffer::open(&spec("2Mi", WhenFull::Block), &c, Box::new(inner)).unwrap();
    buf.deliver(&batch(5000, 100)).await.unwrap();
    wait_for("every event", || got.lock().unwrap().len() >= 5100).await;
    assert_eq!(*got.lock().unwrap(), (0..5100).collect::<Vec<u64>>(), "all, once, in order");
    wait_for("the buffer to empty", || buf.pending_bytes() == 0).await;
    let left = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|e| e == "seg"))
        .count();
    assert_eq!(left, 1, "delivered segments are deleted");
    stop.send(true).unwrap();
}

#[tokio::test]
async fn full_buffer_drops_newest_and_counts() {
    let state = tempfile::tempdir().unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let got: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (stop, rx) = watch::channel(false);
    let c = ctx(state.path(), &rx);
    let stats = c.opts.stats.clone();
    let inner = Recorder { up: up.clone(), got: got.clone(), stop: rx.clone() };
    let mut buf = DiskBuffer::open(&spec("200Ki", WhenFull::DropNewest), &c, Box::new(inner)).unwrap();
    for b in 0..40 {
        buf.deliver(&batch(b * 100, 100)).await.unwrap();
    }
    let dropped = NetStats::get(&stats.dropped);
    assert!(dropped > 0 && dropped.is_multiple_of(100) && dropped < 4000, "{dropped}");
    assert!(buf.pending_bytes() <= 200 * 1024);
    up.store(true, Ordering::SeqCst);
    let kept = 4000 - dropped as usize;
    wait_for("the kept events", || got.lock().unwrap().len() >= kept).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), kept);
    assert_eq!(got, (0..kept as u64).collect::<Vec<_>>(), "the oldest were kept, the newest dropped");
    stop.send(true).unwrap();
}

#[tokio::test]
async fn full_buffer_blocks_until_the_sink_makes_room() {
    let state = tempfile::tempdir().unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let got: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (stop, rx) = watch::channel(false);
    let c = ctx(state.path(), &rx);
    let stats = c.opts.stats.clone();
    let inner = Recorder { up: up.clone(), got: got.clone(), stop: rx.clone() };
    let mut buf = DiskBuffer::open(&spec("100Ki", WhenFull::Block), &c, Box::new(inner)).unwrap();
    let batches: Vec<Vec<Event>> = (0..10).map(|b| batch(b * 100, 100)).collect();
    let mut accepted = 0;
    for b in &batches {
        let fut = buf.deliver(b);
        tokio::pin!(fut);
        // Not a timing assertion: a batch that does not fit stays pending however long we wait.
        match tokio::time::timeout(Duration::from_millis(200), &mut fut).await {
            Ok(res) => {
                res.unwrap();
                accepted += 1;
            }
            Err(_) => {
                up.store(true, Ordering::SeqCst);
                fut.await.unwrap();
                accepted += 1;
                break;
            }
        }
    }
    assert!(up.load(Ordering::SeqCst), "the buffer filled up and blocked");
    assert!((2..10).contains(&accepted), "{accepted}");
    wait_for("the accepted events", || got.lock().unwrap().len() >= accepted * 100).await;
    assert_eq!(*got.lock().unwrap(), (0..accepted as u64 * 100).collect::<Vec<_>>());
    assert_eq!(NetStats::get(&stats.dropped), 0);
    stop.send(true).unwrap();
}

/// The whole path as the agent builds it (`sinks::build` with `buffer.type: disk`): an HTTP
/// destination that is down while batches come in and the agent restarts, then comes back.
#[tokio::test]
async fn disk_buffered_http_output_through_an_outage_and_a_restart() {
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use tailor_agent::sinks::SinkContext;
    use tailor_crds::collection::{Compression, HttpOutput, OutputSpec, OutputType};
    use tailor_crds::node::SourceRef;

    let state = tempfile::tempdir().unwrap();
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let spec: OutputSpec = serde_json::from_value(serde_json::json!({
        "name": "out", "type": "http", "compression": "zstd",
        "http": {"uri": format!("http://{addr}/ingest")},
        "buffer": {"type": "disk", "maxSize": "8Mi"}
    }))
    .unwrap();
    assert_eq!((spec.type_, spec.compression), (OutputType::Http, Compression::Zstd));
    assert!(matches!(spec.http, Some(HttpOutput { .. })));
    let context = |stop: &watch::Receiver<bool>| SinkContext {
        node_name: "node-1".into(),
        collection: SourceRef { namespace: "shop".into(), name: "cfg".into(), generation: 1 },
        output_dir: None,
        state_dir: state.path().to_path_buf(),
        file_max_bytes: 0,
        file_max_files: 0,
        force_stop: stop.clone(),
        net: NetOptions {
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(100),
                request_timeout: Duration::from_millis(500),
                connect_timeout: Duration::from_millis(200),
            },
            ..NetOptions::default()
        },
    };

    // First run: nothing listens; every batch is acknowledged from disk.
    let (stop, rx) = watch::channel(false);
    let ctx = context(&rx);
    let mut sink = tailor_agent::sinks::build(&spec, &ctx).unwrap();
    for b in 0..20 {
        tokio::time::timeout(Duration::from_secs(10), sink.deliver(&batch(b * 100, 100)))
            .await
            .unwrap()
            .unwrap();
    }
    stop.send(true).unwrap();
    drop(sink);
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The destination comes back; the agent restarts and drains the buffer.
    let received: Arc<Mutex<Vec<u64>>> = Arc::default();
    let rx_lines = received.clone();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let rx_lines = rx_lines.clone();
        async move {
            assert_eq!(req.headers()["content-encoding"], "zstd");
            let body = to_bytes(req.into_body(), 64 << 20).await.unwrap();
            let text = tailor_agent::sinks::net::compress::decode(Some("zstd"), &body).unwrap();
            let mut got = rx_lines.lock().unwrap();
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                got.push(v["message"].as_str().unwrap().parse::<u64>().unwrap());
            }
            StatusCode::OK
        }
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (stop, rx) = watch::channel(false);
    let ctx = context(&rx);
    let mut sink = tailor_agent::sinks::build(&spec, &ctx).unwrap();
    sink.deliver(&batch(2000, 100)).await.unwrap();
    wait_for("every event at the destination", || received.lock().unwrap().len() >= 2100).await;
    assert_eq!(*received.lock().unwrap(), (0..2100).collect::<Vec<u64>>(), "all, once, in order");
    assert_eq!(NetStats::get(&ctx.net.stats.delivered), 2100);
    stop.send(true).unwrap();
    server.abort();
}
