//! The agent process with outputs that name Secrets, resolved from `--secrets-dir`
//! (`DIR/<namespace>/<name>/<key>`, the layout of mounted Secrets): an HTTPS receiver whose
//! certificate a test CA signed (trusted only through the Secret's `ca.crt`) and which requires
//! basic auth receives every line; a rotated password is picked up without a restart; a
//! collection whose Secret is missing is held with a clear error (the agent goes on) and starts
//! once the Secret appears; the per-output counters are on the metrics endpoint.

mod agent_support;

use agent_support::agent_command;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

mod tls_support;

/// What the receiver accepted and refused.
#[derive(Default)]
struct Receiver {
    /// Passwords of user `shipper` it accepts now.
    passwords: Vec<String>,
    /// (password used, message) of every line accepted.
    lines: Vec<(String, String)>,
    refused: usize,
}

impl Receiver {
    fn messages(&self, prefix: &str) -> Vec<String> {
        self.lines.iter().filter(|(_, m)| m.starts_with(prefix)).map(|(_, m)| m.clone()).collect()
    }
}

/// The password of a `Basic` authorization for user `shipper`, if that is what it is.
fn basic_password(header: Option<&hyper::header::HeaderValue>) -> Option<String> {
    let encoded = header?.to_str().ok()?.strip_prefix("Basic ")?;
    let raw = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).ok()?).ok()?;
    raw.strip_prefix("shipper:").map(str::to_string)
}

/// An HTTPS NDJSON receiver that answers 401 unless the request carries an accepted password.
async fn receiver(cert: &[u8], key: &[u8], state: Arc<Mutex<Receiver>>) -> SocketAddr {
    let acceptor = tls_support::acceptor(cert, key);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, state) = (acceptor.clone(), state.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move {
                        let password = basic_password(req.headers().get("authorization"));
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut s = state.lock().unwrap();
                        let status = match password {
                            Some(p) if s.passwords.contains(&p) => {
                                for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                                    let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                                    s.lines.push((p.clone(), v["message"].as_str().unwrap().to_string()));
                                }
                                200
                            }
                            _ => {
                                s.refused += 1;
                                401
                            }
                        };
                        let resp = hyper::Response::builder().status(status).body(Full::new(Bytes::new()));
                        Ok::<_, Infallible>(resp.unwrap())
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

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, metrics: SocketAddr) -> Agent {
        let log = dir.join("agent.log");
        let child = agent_command(dir, "n1", &["--rescan-interval", "200ms", "--secrets-dir"])
            .arg(dir.join("secrets"))
            .args(["--metrics-addr", &metrics.to_string()])
            .env("RUST_LOG", "info")
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn secret(dir: &Path, name: &str, keys: &[(&str, &[u8])]) {
    let d = dir.join("secrets/ns").join(name);
    fs::create_dir_all(&d).unwrap();
    for (k, v) in keys {
        // Written aside and renamed, as the kubelet swaps a mounted Secret's files.
        let tmp = d.join(format!(".{k}.tmp"));
        fs::write(&tmp, v).unwrap();
        fs::rename(&tmp, d.join(k)).unwrap();
    }
}

fn collection(name: &str, pod: &str, port: u16, creds: &str) -> String {
    format!(
        "  - source: {{namespace: ns, name: {name}}}
    outputs:
    - name: receiver
      type: http
      http: {{uri: 'https://localhost:{port}/ingest'}}
      batch: {{timeoutMs: 20}}
      credentialsSecretRef: {{name: {creds}}}
      tls: {{secretRef: {{name: receiver-ca}}}}
    targets:
    - pod: {{namespace: ns, name: {pod}, uid: u-{pod}}}
      container: {{name: app}}
      inputs:
      - kind: stdio
        root: {{kind: podLogs, hostDir: /var/log/pods/ns_{pod}_u-{pod}/app}}
        path: '*.log'
"
    )
}

fn append(dir: &Path, pod: &str, msgs: impl IntoIterator<Item = String>) {
    let d = dir.join(format!("host/var/log/pods/ns_{pod}_u-{pod}/app"));
    fs::create_dir_all(&d).unwrap();
    let mut f = fs::OpenOptions::new().create(true).append(true).open(d.join("0.log")).unwrap();
    for m in msgs {
        f.write_all(format!("2024-05-01T12:00:00Z stdout F {m}\n").as_bytes()).unwrap();
    }
}

fn wait_for(what: &str, agent: &Agent, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; agent log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scrape(addr: SocketAddr) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else { return String::new() };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn delivers_over_tls_with_basic_auth_from_a_secrets_dir_and_follows_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, cert, key) = tls_support::make_certs(dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let state =
        Arc::new(Mutex::new(Receiver { passwords: vec!["s3cr3t-one".into()], ..Receiver::default() }));
    let addr = rt.block_on(receiver(&cert, &key, state.clone()));
    let received = |prefix: &str| state.lock().unwrap().messages(prefix);

    secret(dir, "receiver-ca", &[("ca.crt", &ca)]);
    secret(dir, "receiver-creds", &[("username", b"shipper\n"), ("password", b"s3cr3t-one\n")]);
    let config = format!(
        "apiVersion: logging.tailor.dev/v1alpha1\nkind: NodeLogConfig\nmetadata: {{name: n1, generation: 1}}\nspec:\n  formatVersion: 1\n  collections:\n{}{}",
        collection("secure", "a", addr.port(), "receiver-creds"),
        collection("late", "b", addr.port(), "late-creds"),
    );
    fs::write(dir.join("config.yaml"), config).unwrap();
    let first: Vec<String> = (0..200).map(|i| format!("a-{i}")).collect();
    append(dir, "a", first.clone());
    append(dir, "b", (0..20).map(|i| format!("b-{i}")));
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let agent = Agent::start(dir, metrics);

    // Every line, in order, with the Secret's password, over TLS trusted through its CA only.
    wait_for("the first lines", &agent, || received("a-").len() >= first.len());
    assert_eq!(received("a-"), first);
    assert_eq!(state.lock().unwrap().refused, 0, "requests without the right credentials");

    // The collection whose Secret is missing is held with an error naming it; nothing of it
    // was sent, and the agent runs on.
    wait_for("the missing Secret's error", &agent, || {
        agent.log().contains("secret ns/late-creds not found under --secrets-dir")
    });
    assert!(received("b-").is_empty());
    assert!(!agent.log().contains("s3cr3t-one"), "a secret value in the log:\n{}", agent.log());

    // The counters of the output, labelled with its name.
    let want = format!(
        "tailor_agent_output_delivered_total{{sink=\"ns/secure/receiver\",output=\"receiver\"}} {}",
        first.len()
    );
    wait_for("the delivered counter", &agent, || scrape(metrics).lines().any(|l| l == want));
    assert!(
        scrape(metrics).contains("tailor_agent_output_failed_requests_total{sink=\"ns/secure/receiver\"")
    );

    // The Secret appears: the held collection starts and delivers what was waiting.
    secret(dir, "late-creds", &[("username", b"shipper"), ("password", b"s3cr3t-one")]);
    wait_for("the held collection's lines", &agent, || received("b-").len() >= 20);
    assert_eq!(received("b-"), (0..20).map(|i| format!("b-{i}")).collect::<Vec<_>>());

    // Rotation: the receiver accepts both passwords while the Secret changes, then only the new
    // one. Lines are written one at a time until one arrives with the new password.
    state.lock().unwrap().passwords.push("s3cr3t-two".into());
    secret(dir, "receiver-creds", &[("password", b"s3cr3t-two")]);
    let mut i = 0;
    wait_for("a line sent with the rotated password", &agent, || {
        let n = received("rot-").len();
        if n == i {
            append(dir, "a", [format!("rot-{i}")]);
            i += 1;
        }
        state.lock().unwrap().lines.last().is_some_and(|(p, _)| p == "s3cr3t-two")
    });
    wait_for("every rotation line", &agent, || received("rot-").len() == i);
    state.lock().unwrap().passwords = vec!["s3cr3t-two".into()];
    let after: Vec<String> = (0..100).map(|i| format!("after-{i}")).collect();
    append(dir, "a", after.clone());
    wait_for("the lines after rotation", &agent, || received("after-").len() >= after.len());
    assert_eq!(received("after-"), after);
    let s = state.lock().unwrap();
    let after_passwords: BTreeSet<&str> =
        s.lines.iter().filter(|(_, m)| m.starts_with("after-")).map(|(p, _)| p.as_str()).collect();
    assert_eq!(after_passwords, BTreeSet::from(["s3cr3t-two"]));
    assert_eq!(s.refused, 0);
    // Nothing was delivered twice.
    let all: Vec<&str> = s.lines.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), all.len());
}
