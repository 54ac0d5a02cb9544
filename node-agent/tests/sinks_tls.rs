//! Network sinks over TLS (rustls), against an in-test HTTPS server with a certificate signed by
//! a test CA, both made by the `openssl` command (Debian package `openssl`): the Secret's CA is trusted, an unknown
//! certificate is refused (and retried until stop), `insecureSkipVerify` skips verification.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tailor_agent::event::{Event, EventFlags, FileId, TargetMeta};
use tailor_agent::sinks::http::HttpSink;
use tailor_agent::sinks::net::{NetOptions, NetStats, RetryPolicy, TlsMaterial};
use tailor_agent::sinks::{Sink, SinkContext, SinkError};
use tailor_crds::collection::{
    BatchSpec, BufferSpec, Compression, HttpOutput, OutputSpec, OutputType, TlsSpec,
};
use tailor_crds::node::SourceRef;
use tokio::net::TcpListener;
use tokio::sync::watch;

mod tls_support;
use tls_support::make_certs;

/// An HTTPS server counting the NDJSON lines it receives.
async fn https_server(cert: &[u8], key: &[u8], lines: Arc<AtomicUsize>) -> SocketAddr {
    let acceptor = tls_support::acceptor(cert, key);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let lines = lines.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: not an error here.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let lines = lines.clone();
                    async move {
                        assert_eq!(req.headers()["content-encoding"], "gzip");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let body = tailor_agent::sinks::net::compress::decode(Some("gzip"), &body).unwrap();
                        lines.fetch_add(
                            body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(),
                            Ordering::SeqCst,
                        );
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn events(n: usize) -> Vec<Event> {
    let meta =
        Arc::new(TargetMeta { namespace: "shop".into(), pod: "api-0".into(), ..TargetMeta::default() });
    (0..n)
        .map(|i| Event {
            meta: meta.clone(),
            file: FileId { dev: 1, ino: 2, fingerprint: 3 },
            offset: i as u64,
            timestamp_nanos: i as i64,
            stream: None,
            message: Bytes::from(format!("line {i}")),
            fields: None,
            flags: EventFlags::default(),
        })
        .collect()
}

fn sink(
    state: &Path,
    addr: SocketAddr,
    tls: TlsSpec,
    material: TlsMaterial,
) -> (HttpSink, watch::Sender<bool>, Arc<NetStats>) {
    let spec = OutputSpec {
        name: "out".into(),
        type_: OutputType::Http,
        elasticsearch: None,
        loki: None,
        kafka: None,
        http: Some(HttpOutput {
            uri: format!("https://localhost:{}/", addr.port()),
            headers: BTreeMap::new(),
        }),
        batch: BatchSpec::default(),
        compression: Compression::Gzip,
        tls: Some(tls),
        credentials_secret_ref: None,
        buffer: BufferSpec::default(),
    };
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
            tls: material,
            retry: RetryPolicy {
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(50),
                request_timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(1),
            },
            ..NetOptions::default()
        },
    };
    let stats = ctx.net.stats.clone();
    (HttpSink::new(&spec, &ctx).unwrap(), tx, stats)
}

/// Fails the test instead of hanging it.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f).await.expect("finished in time")
}

#[tokio::test]
async fn tls_with_the_secrets_ca_with_an_unknown_ca_and_without_verification() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path());
    let lines = Arc::new(AtomicUsize::new(0));
    let addr = https_server(&cert, &key, lines.clone()).await;
    let evs = events(10);

    // The Secret's CA: verified and delivered.
    let material = TlsMaterial { ca_pem: Some(ca), ..TlsMaterial::default() };
    let (mut s, _stop, stats) = sink(dir.path(), addr, TlsSpec::default(), material);
    within(s.deliver(&evs)).await.unwrap();
    assert_eq!(NetStats::get(&stats.delivered), 10);
    assert_eq!(lines.load(Ordering::SeqCst), 10);

    // No CA for it: the handshake fails, the sink retries until it is stopped, nothing counted.
    let (mut s, stop, stats) = sink(dir.path(), addr, TlsSpec::default(), TlsMaterial::default());
    let stopper = tokio::spawn(async move {
        while NetStats::get(&stats.failed_requests) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send(true).unwrap();
        stats
    });
    let res = within(s.deliver(&evs)).await;
    assert!(matches!(res, Err(SinkError::ShuttingDown { .. })), "{res:?}");
    let stats = stopper.await.unwrap();
    assert_eq!(NetStats::get(&stats.delivered), 0);
    assert_eq!(lines.load(Ordering::SeqCst), 10);

    // insecureSkipVerify: delivered without a CA.
    let insecure = TlsSpec { secret_ref: None, insecure_skip_verify: true };
    let (mut s, _stop, stats) = sink(dir.path(), addr, insecure, TlsMaterial::default());
    within(s.deliver(&evs)).await.unwrap();
    assert_eq!(NetStats::get(&stats.delivered), 10);
    assert_eq!(lines.load(Ordering::SeqCst), 20);
}
