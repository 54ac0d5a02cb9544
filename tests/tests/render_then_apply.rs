//! The operator renders a node's configuration from resources, pods and nodes; the agent's
//! engine applies it against a host laid out as the kubelet and containerd would: stdout/stderr
//! from the pod's CRI log, files from an emptyDir volume and from the writable layer (with a
//! hostile symlink that must stay inside the container), with the metadata the resource asked for.

use std::fs;
use std::os::unix::fs::symlink;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tailor_agent::engine::{Applied, Engine, EngineConfig, EngineStatus, Shutdown};
use tailor_agent::metrics::Metrics;
use tailor_agent::resolve::ContainerdLocator;
use tokio::sync::watch;

const RESOURCES: &str = r#"
apiVersion: logging.tailor.dev/v1alpha1
kind: LogCollectionConfig
metadata: {name: web, namespace: shop, uid: 1c1c1c1c-0000-4000-8000-000000000001, generation: 3}
spec:
  selector:
    includeLabels: {app: web}
  sources:
    files: [{path: /var/log/app/*.log}, {path: /opt/logs/*.log}]
  metadata:
    labels: [app]
    fields: {cluster: test}
  outputs: [{name: local, type: file, batch: {timeoutMs: 20}}]
---
apiVersion: v1
kind: Node
metadata: {name: node-a, uid: 0b0b0b0b-0000-4000-8000-00000000000a}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  uid: 2d2d2d2d-0000-4000-8000-000000000001
  labels: {app: web}
spec:
  nodeName: node-a
  containers:
    - name: app
      image: shop/web:1
      volumeMounts: [{name: logs, mountPath: /var/log/app}]
  volumes: [{name: logs, emptyDir: {}}]
status:
  phase: Running
  containerStatuses:
    - {name: app, image: shop/web:1, imageID: "", ready: true, restartCount: 0, containerID: "containerd://abc123",
       state: {running: {startedAt: "2026-01-01T00:00:00Z"}}}
"#;

#[test]
fn operator_rendering_applied_by_the_agent_engine() {
    let input = tailor_operator::files::parse_objects(RESOURCES, "inline").unwrap();
    let rendered = tailor_operator::render::render(&input);
    let spec = rendered.nodes.get("node-a").expect("node-a has targets").clone();

    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    let uid = "2d2d2d2d-0000-4000-8000-000000000001";
    let pod_logs = host.join(format!("var/log/pods/shop_web-1_{uid}/app"));
    fs::create_dir_all(&pod_logs).unwrap();
    fs::write(
        pod_logs.join("0.log"),
        "2024-05-01T12:00:00Z stdout F out-line\n2024-05-01T12:00:01Z stderr F err-line\n",
    )
    .unwrap();
    let empty_dir = host.join(format!("var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~empty-dir/logs"));
    fs::create_dir_all(&empty_dir).unwrap();
    fs::write(empty_dir.join("app.log"), "volume-line\n").unwrap();
    let rootfs = host.join("run/containerd/io.containerd.runtime.v2.task/k8s.io/abc123/rootfs");
    fs::create_dir_all(rootfs.join("opt/logs")).unwrap();
    fs::write(rootfs.join("opt/logs/app.log"), "rootfs-line\n").unwrap();
    fs::create_dir_all(host.join("etc")).unwrap();
    fs::write(host.join("etc/shadow"), "HOST-SECRET\n").unwrap();
    symlink("/etc/shadow", rootfs.join("opt/logs/evil.log")).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut cfg = EngineConfig::new("node-a", &host, &tmp.path().join("state"));
    cfg.output_dir = Some(tmp.path().join("out"));
    cfg.rescan_interval = Duration::from_millis(100);
    fs::create_dir_all(&cfg.state_dir).unwrap();
    let engine = Engine::new(
        cfg,
        Arc::new(ContainerdLocator { host_root: host.clone() }),
        rt.handle().clone(),
        Arc::new(Metrics::default()),
    );
    let (_config_tx, config_rx) = watch::channel(Some(Applied { generation: 1, spec }));
    let (status_tx, status_rx) = watch::channel(EngineStatus::default());
    let shutdown = Shutdown::default();
    let stop = shutdown.clone();
    let thread = std::thread::spawn(move || engine.run(config_rx, status_tx, stop));

    let out = tmp.path().join("out/shop/web/local/shop_web-1_app.ndjson");
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines: Vec<serde_json::Value> = fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= 4 {
            break lines;
        }
        assert!(Instant::now() < deadline, "only {} lines: {lines:?}", lines.len());
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    shutdown.request();
    thread.join().unwrap();
    let status = status_rx.borrow().clone();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.active_targets, 1);

    let mut messages: Vec<&str> = lines.iter().map(|l| l["message"].as_str().unwrap()).collect();
    messages.sort();
    assert_eq!(messages, ["err-line", "out-line", "rootfs-line", "volume-line"], "{lines:?}");
    for l in &lines {
        assert_eq!(l["namespace"], "shop");
        assert_eq!(l["pod"], "web-1");
        assert_eq!(l["container"], "app");
        assert_eq!(l["node"], "node-a");
        assert_eq!(l["cluster"], "test");
    }
    let err = lines.iter().find(|l| l["message"] == "err-line").unwrap();
    assert_eq!(err["stream"], "stderr");
    assert!(lines.iter().all(|l| !l.to_string().contains("HOST-SECRET")));
}
