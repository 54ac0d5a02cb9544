//! The agent against a real API server (`shared/k8s/up`): it applies only its own node's
//! NodeLogConfig, hot-applies a spec change, acknowledges it in the status, and leaves the
//! object alone while nothing changes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tailor_crds::node::NodeLogConfig;

/// A control plane started with `up`, stopped with `down` on drop.
struct ControlPlane {
    scripts: PathBuf,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    fn start() -> ControlPlane {
        let candidates = std::env::var_os("TAILOR_K8S_DIR").map(PathBuf::from).into_iter().chain([
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/k8s"),
            PathBuf::from("/work/shared/k8s"),
        ]);
        let scripts = candidates
            .into_iter()
            .find(|d| d.join("up").is_file())
            .expect("control-plane scripts: set TAILOR_K8S_DIR to the folder with `up` and `down`");
        let dir = tempfile::Builder::new().prefix("tailor-agent-k8s.").tempdir().unwrap();
        let out = Command::new(scripts.join("up")).arg(dir.path()).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "up failed: {}", String::from_utf8_lossy(&out.stderr));
        ControlPlane { scripts, dir }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(self.scripts.join("down")).arg(self.dir.path()).stdin(Stdio::null()).output();
    }
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node_config(name: &str, pods: &[&str]) -> NodeLogConfig {
    let targets: Vec<serde_json::Value> = pods
        .iter()
        .map(|p| {
            serde_json::json!({
                "pod": {"namespace": "ns", "name": p, "uid": format!("u-{p}")},
                "container": {"name": "app"},
                "inputs": [{"kind": "stdio", "root": {"kind": "podLogs", "hostDir": format!("/var/log/pods/ns_{p}_u-{p}/app")}, "path": "*.log"}]
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "logging.tailor.dev/v1alpha1",
        "kind": "NodeLogConfig",
        "metadata": {"name": name},
        "spec": {"formatVersion": 1, "targetCount": pods.len(), "collections": [{
            "source": {"namespace": "ns", "name": "lcc", "generation": 1},
            "outputs": [{"name": "out", "type": "file", "batch": {"timeoutMs": 20}}],
            "targets": targets
        }]}
    }))
    .unwrap()
}

fn write_log(host: &Path, pod: &str, msg: &str) {
    let d = host.join(format!("var/log/pods/ns_{pod}_u-{pod}/app"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("0.log"), format!("2024-05-01T12:00:00Z stdout F {msg}\n")).unwrap();
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_only_its_own_node_config_and_acknowledges_it_without_churn() {
    // The test build also links aws-lc-rs (a dev-dependency enables it): name the provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cp = ControlPlane::start();
    let kc = kube::config::Kubeconfig::read_from(cp.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    let client = Client::try_from(config).unwrap();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let yaml =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/tailor.crds.yaml"))
            .unwrap();
    for doc in serde_yaml_ng::Deserializer::from_str(&yaml) {
        let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let api: Api<NodeLogConfig> = Api::all(client.clone());
    eventually("the NodeLogConfig CRD", async || api.list(&Default::default()).await.ok()).await;
    api.create(&PostParams::default(), &node_config("n1", &["a"])).await.unwrap();
    api.create(&PostParams::default(), &node_config("n2", &["other"])).await.unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    write_log(&host, "a", "from-a");
    write_log(&host, "b", "from-b");
    write_log(&host, "other", "from-other-node");
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_tailor-agent"))
            .args(["run", "--node-name", "n1", "--rescan-interval", "200ms", "--checkpoint-interval", "1s"])
            .arg("--host-root")
            .arg(&host)
            .arg("--state-dir")
            .arg(tmp.path().join("state"))
            .arg("--output-dir")
            .arg(tmp.path().join("out"))
            .env("KUBECONFIG", cp.kubeconfig())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = tmp.path().join("out/ns/lcc/out");
    eventually("a's line", async || std::fs::read_to_string(out.join("ns_a_app.ndjson")).ok()).await;
    let status = eventually("the acknowledgement of generation 1", async || {
        let o = api.get("n1").await.ok()?;
        let s = o.status?;
        (s.observed_generation == Some(1) && s.active_targets == 1).then_some(s)
    })
    .await;
    assert_eq!(status.active_files, 1);
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"), "{status:?}");

    // A spec change is hot-applied: b is added, a keeps its place.
    let mut changed = node_config("n1", &["a", "b"]);
    changed.metadata.managed_fields = None;
    api.patch("n1", &PatchParams::apply("test").force(), &Patch::Apply(&changed)).await.unwrap();
    eventually("b's line", async || std::fs::read_to_string(out.join("ns_b_app.ndjson")).ok()).await;
    eventually("the acknowledgement of generation 2", async || {
        let s = api.get("n1").await.ok()?.status?;
        (s.observed_generation == Some(2) && s.active_targets == 2).then_some(())
    })
    .await;
    assert_eq!(std::fs::read_to_string(out.join("ns_a_app.ndjson")).unwrap().lines().count(), 1);
    assert!(!out.join("ns_other_app.ndjson").exists(), "another node's configuration was applied");
    assert!(api.get("n2").await.unwrap().status.is_none(), "another node's status was written");

    // Nothing changes: the object is not written again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rv = api.get("n1").await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(api.get("n1").await.unwrap().metadata.resource_version, rv, "the status churns");
}
