//! The Kafka output end to end against a real Kafka-compatible broker: Tansu (from crates.io,
//! run in this process with in-memory storage, so that a restart keeps the data) and Debian's
//! `kcat` (librdkafka) as the independent consumer. The agent runs as a process and tails CRI files that the test keeps
//! writing; the broker is stopped for a while (connections reset, port closed) and restarted on
//! the same port with the same storage. Every written line must arrive, in the topic its
//! pattern names, keyed by its pod, in the partition the Java client would choose. The contract
//! is at-least-once (no idempotent producer): a batch whose response was lost may repeat, but
//! no line may be missing and the first copies keep the file's order per key.

mod agent_support;

use agent_support::agent_command;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tailor_agent::sinks::kafka::partition_for_key;
use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::StorageContainer;
use tokio::task::JoinHandle;
use url::Url;

const PARTITIONS: i32 = 3;
/// (pod, container): the topic is `logs-{namespace}-{container}`, the key the pod.
const TARGETS: [(&str, &str); 4] = [("p0", "api"), ("p1", "api"), ("p2", "worker"), ("p3", "worker")];
const LINES_PER_TARGET: usize = 1_500;

fn kcat_available() -> bool {
    Command::new("kcat").arg("-V").output().is_ok_and(|o| o.status.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn config(port: u16) -> String {
    let mut targets = String::new();
    for (pod, container) in TARGETS {
        targets.push_str(&format!(
            "    - pod: {{namespace: shop, name: {pod}, uid: u-{pod}}}\n      container: {{name: {container}}}\n      inputs:\n      - kind: stdio\n        root: {{kind: podLogs, hostDir: /var/log/pods/shop_{pod}_u-{pod}/{container}}}\n        path: \"0.log\"\n"
        ));
    }
    format!(
        "apiVersion: logging.tailor.dev/v1alpha1\nkind: NodeLogConfig\nmetadata: {{name: n1, generation: 1}}\nspec:\n  formatVersion: 1\n  collections:\n  - source: {{namespace: shop, name: lcc}}\n    outputs:\n    - name: out\n      type: kafka\n      compression: gzip\n      batch: {{maxEvents: 200, timeoutMs: 50}}\n      kafka: {{brokers: [\"127.0.0.1:{port}\"], topic: \"logs-{{namespace}}-{{container}}\", keyField: pod}}\n    targets:\n{targets}"
    )
}

fn log_path(host: &Path, pod: &str, container: &str) -> std::path::PathBuf {
    host.join(format!("var/log/pods/shop_{pod}_u-{pod}/{container}/0.log"))
}

/// Appends lines `from..to` to every target's file.
fn write_lines(host: &Path, from: usize, to: usize) {
    for (pod, container) in TARGETS {
        let mut f = fs::OpenOptions::new().append(true).open(log_path(host, pod, container)).unwrap();
        let mut buf = Vec::new();
        for i in from..to {
            writeln!(buf, "2026-01-02T03:04:05.000000000Z stdout F {pod} {i:06} payload-payload-payload")
                .unwrap();
        }
        f.write_all(&buf).unwrap();
    }
}

/// The broker, served by a task that can be aborted (which drops its listener and every
/// connection) and started again on the same address with the same storage.
struct TestBroker {
    broker: Broker<Controller<StorageContainer>, StorageContainer>,
    task: Option<JoinHandle<()>>,
}

impl TestBroker {
    async fn new(port: u16) -> Self {
        let url = Url::parse(&format!("tcp://127.0.0.1:{port}")).unwrap();
        let broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(1)
            .cluster_id("tailor-test")
            .incarnation_id(uuid::Uuid::from_u128(fastrand::u128(..)))
            .advertised_listener(url.clone())
            .storage(Url::parse("memory://tansu/").unwrap())
            .listener(url)
            .silent(true)
            .build()
            .await
            .expect("tansu broker");
        let mut b = TestBroker { broker, task: None };
        b.broker.register().await.expect("broker registers with its storage");
        b.start(port).await;
        b
    }

    /// Serves, and returns once the port accepts connections.
    async fn start(&mut self, port: u16) {
        let broker = self.broker.clone();
        self.task = Some(tokio::spawn(async move {
            broker.listen(tokio::time::Instant::now()).await.expect("broker listens");
        }));
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "the broker does not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn create_topics(port: u16, topics: &[&str]) {
    let client =
        rskafka::client::ClientBuilder::new(vec![format!("127.0.0.1:{port}")]).build().await.unwrap();
    let controller = client.controller_client().unwrap();
    for t in topics {
        controller.create_topic(*t, PARTITIONS, 1, 5_000).await.unwrap();
    }
}

/// `(partition, key, value)` of every record of `topic`, read from the beginning by kcat.
fn consume(port: u16, topic: &str) -> Vec<(i32, String, serde_json::Value)> {
    let out = Command::new("kcat")
        // librdkafka 2.0 misreads the tagged fields of Tansu's ApiVersions v3 answer; without
        // the query it uses the request versions of the Kafka release named here.
        .args(["-X", "api.version.request=false", "-X", "broker.version.fallback=0.9.0"])
        .args(["-C", "-q", "-e", "-o", "0", "-f", "%p\t%k\t%s\n"])
        .args(["-b", &format!("127.0.0.1:{port}"), "-t", topic])
        .stderr(Stdio::inherit())
        .output()
        .expect("kcat runs");
    assert!(out.status.success(), "kcat failed: {:?}", out.status);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, '\t');
            let p = parts.next().unwrap().parse().unwrap();
            let k = parts.next().unwrap().to_string();
            let v = serde_json::from_str(parts.next().unwrap()).unwrap();
            (p, k, v)
        })
        .collect()
}

/// The agent process, killed when the test ends, also on a failed assertion.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(dir: &Path) -> Agent {
    Agent(
        agent_command(dir, "n1", &["--checkpoint-interval", "200ms", "--rescan-interval", "200ms"])
            .stderr(Stdio::inherit())
            .spawn()
            .expect("agent starts"),
    )
}

/// Waits until every target's lines have arrived (or the deadline passes) and returns what kcat
/// read per topic.
async fn wait_for_all(port: u16, expected: usize) -> HashMap<String, Vec<(i32, String, serde_json::Value)>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut got = HashMap::new();
        for topic in ["logs-shop-api", "logs-shop-worker"] {
            got.insert(
                topic.to_string(),
                tokio::task::spawn_blocking(move || consume(port, topic)).await.unwrap(),
            );
        }
        let distinct: usize = got
            .values()
            .map(|recs| {
                recs.iter()
                    .map(|(_, _, v)| v["message"].as_str().unwrap().to_string())
                    .collect::<std::collections::HashSet<_>>()
                    .len()
            })
            .sum();
        if distinct >= expected || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_reaches_a_real_broker_through_an_outage() {
    assert!(kcat_available(), "Debian's kcat is needed (apt-get install kcat)");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let host = dir.join("host");
    for (pod, container) in TARGETS {
        let p = log_path(&host, pod, container);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::File::create(&p).unwrap();
    }
    let port = free_port();
    let mut broker = TestBroker::new(port).await;
    create_topics(port, &["logs-shop-api", "logs-shop-worker"]).await;
    fs::write(dir.join("config.yaml"), config(port)).unwrap();
    let agent = start_agent(dir);

    // Lines before, during and after the outage.
    let third = LINES_PER_TARGET / 3;
    write_lines(&host, 0, third);
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.stop().await;
    write_lines(&host, third, 2 * third);
    tokio::time::sleep(Duration::from_secs(15)).await;
    write_lines(&host, 2 * third, LINES_PER_TARGET);
    broker.start(port).await;

    let got = wait_for_all(port, TARGETS.len() * LINES_PER_TARGET).await;
    drop(agent);
    broker.stop().await;

    // line numbers per pod, in the order the broker's partitions hold them
    let mut per_pod: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut records = 0;
    for (topic, recs) in &got {
        for (partition, key, v) in recs {
            records += 1;
            let message = v["message"].as_str().unwrap();
            let (pod, n) = message.split_once(' ').unwrap();
            let container = TARGETS.iter().find(|(p, _)| *p == pod).unwrap().1;
            assert_eq!(*topic, format!("logs-shop-{container}"), "topic from the pattern");
            assert_eq!(key, pod, "key from the pod field");
            assert_eq!(v["pod"], pod);
            assert_eq!(
                *partition,
                partition_for_key(key.as_bytes(), PARTITIONS as usize) as i32,
                "murmur2 partition of the key"
            );
            per_pod.entry(pod.to_string()).or_default().push(n[..6].parse().unwrap());
        }
    }
    for (pod, _) in TARGETS {
        let lines = per_pod.get(pod).cloned().unwrap_or_default();
        let mut first: Vec<usize> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for n in lines {
            if seen.insert(n) {
                first.push(n);
            }
        }
        assert_eq!(
            first,
            (0..LINES_PER_TARGET).collect::<Vec<_>>(),
            "{pod}: every line, first copies in order"
        );
    }
    eprintln!("{records} records for {} lines", TARGETS.len() * LINES_PER_TARGET);
}
