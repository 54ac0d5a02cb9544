//! One test's world: its namespaces, Nodes, Pods, node filesystems and agents, on the shared
//! cluster. Unless the test calls [`Scene::pass`], dropping the scene (after a panic or an early
//! `?` return) prints what a person needs to understand the failure: the objects involved as
//! YAML, the events, and the tails of the operator's and the agents' logs.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::cluster::{Cluster, cluster};
use crate::fixtures::{self, PodFixture};
use crate::kubectl::Kubectl;
use crate::node_fs::{self, NodeFs};
use crate::operator::{AgentDirs, start_agent};
use crate::process::{Process, tail};

/// Field manager the suites use for user manifests (as Argo CD would).
pub const GITOPS_MANAGER: &str = "argocd-controller";

/// A Node of the scene and its agent's folders.
#[derive(Clone, Debug)]
pub struct SceneNode {
    pub name: String,
    pub dirs: AgentDirs,
    base: PathBuf,
}

impl SceneNode {
    pub fn fs(&self) -> &NodeFs {
        &self.dirs.fs
    }
}

/// A created Pod.
#[derive(Clone, Debug)]
pub struct ScenePod {
    pub fixture: PodFixture,
    pub uid: String,
}

impl ScenePod {
    pub fn namespace(&self) -> &str {
        &self.fixture.namespace
    }
    pub fn name(&self) -> &str {
        &self.fixture.name
    }
}

pub struct Scene {
    pub name: String,
    pub cluster: &'static Cluster,
    pub client: kube::Client,
    pub kubectl: Kubectl,
    dir: tempfile::TempDir,
    namespaces: Vec<String>,
    nodes: BTreeMap<String, SceneNode>,
    agents: Vec<Process>,
    passed: bool,
    started: Instant,
}

impl Scene {
    /// A scene named after the test (names of its namespaces and nodes start with it).
    pub async fn new(name: &str) -> Result<Self> {
        let cluster = cluster()?;
        let client = cluster.client().await?;
        let dir = tempfile::Builder::new().prefix(&format!("{name}.")).tempdir_in(cluster.work_dir())?;
        Ok(Self {
            name: name.to_string(),
            cluster,
            client,
            kubectl: cluster.kubectl(),
            dir,
            namespaces: Vec::new(),
            nodes: BTreeMap::new(),
            agents: Vec::new(),
            passed: false,
            started: Instant::now(),
        })
    }

    /// Marks the test as passed: no diagnostics on drop.
    pub fn pass(mut self) {
        eprintln!("e2e: {} passed in {:.1} s", self.name, self.started.elapsed().as_secs_f64());
        self.passed = true;
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates namespace `<scene>-<suffix>` and waits for its `default` ServiceAccount.
    pub async fn namespace(&mut self, suffix: &str) -> Result<String> {
        let name = format!("{}-{suffix}", self.name);
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        self.namespaces.push(name.clone());
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &name);
        eventually(&format!("the default ServiceAccount of {name}"), Duration::from_secs(30), || async {
            sas.get_opt("default").await?.map(|_| ()).context("not yet")
        })
        .await?;
        Ok(name)
    }

    /// Creates Node `<scene>-<suffix>` (Ready) and its agent's folders.
    pub async fn node(&mut self, suffix: &str) -> Result<SceneNode> {
        let name = format!("{}-{suffix}", self.name);
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .create(&PostParams::default(), &fixtures::node(&name))
            .await
            .with_context(|| format!("creating node {name}"))?;
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(fixtures::node_ready_status()))
            .await?;
        let base = self.dir.path().join("nodes").join(&name);
        let node = SceneNode { name: name.clone(), dirs: AgentDirs::create(&base)?, base };
        self.nodes.insert(name, node.clone());
        Ok(node)
    }

    /// Starts the agent of `node`.
    pub fn start_agent(&mut self, node: &SceneNode) -> Result<()> {
        let agent = start_agent(self.cluster, &node.name, &node.dirs, &node.base)?;
        self.agents.push(agent);
        Ok(())
    }

    /// Stops the agent of `node` (SIGTERM) if it runs.
    pub fn stop_agent(&mut self, node: &SceneNode) {
        let name = format!("agent-{}", node.name);
        if let Some(i) = self.agents.iter().position(|a| a.name() == name) {
            let mut agent = self.agents.remove(i);
            agent.stop(Duration::from_secs(10));
            self.agents.push(agent); // keep its log for diagnostics
        }
    }

    /// Creates the pod (retrying while its namespace's ServiceAccount admission is not ready),
    /// patches the status a kubelet would report, and returns it.
    pub async fn pod(&mut self, fixture: PodFixture) -> Result<ScenePod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &fixture.namespace);
        let created = eventually(
            &format!("creating pod {}/{}", fixture.namespace, fixture.name),
            Duration::from_secs(30),
            || async { Ok(pods.create(&PostParams::default(), &fixture.pod()).await?) },
        )
        .await?;
        let uid = created.metadata.uid.context("pod without uid")?;
        pods.patch_status(
            &fixture.name,
            &PatchParams::default(),
            &Patch::Merge(fixture.running_status(&uid)),
        )
        .await?;
        Ok(ScenePod { fixture, uid })
    }

    /// Marks every container of the pod terminated (exit code 0) and the pod Succeeded, as the
    /// kubelet reports a pod whose containers exited.
    pub async fn terminate_pod(&self, pod: &ScenePod) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), pod.namespace());
        pods.patch_status(
            pod.name(),
            &PatchParams::default(),
            &Patch::Merge(pod.fixture.terminated_status(&pod.uid)),
        )
        .await?;
        Ok(())
    }

    /// Deletes a pod with grace period 0 (no kubelet will ever confirm a graceful deletion).
    pub async fn delete_pod(&self, pod: &ScenePod) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), pod.namespace());
        pods.delete(pod.name(), &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() })
            .await?;
        Ok(())
    }

    fn scene_node(&self, name: &str) -> Result<&SceneNode> {
        self.nodes.get(name).ok_or_else(|| anyhow!("node {name} is not part of scene {}", self.name))
    }

    /// Appends CRI lines to a container's stdout log on its node.
    pub fn write_stdout(&self, pod: &ScenePod, container: &str, lines: &[String]) -> Result<PathBuf> {
        let node = self.scene_node(&pod.fixture.node)?;
        let restart =
            pod.fixture.containers.iter().find(|c| c.name == container).map_or(0, |c| c.restart_count);
        let path = node.fs().cri_log(pod.namespace(), pod.name(), &pod.uid, container, restart);
        let text: String = lines.iter().map(|l| node_fs::cri_line("stdout", l)).collect();
        node_fs::append(&path, &text)?;
        Ok(path)
    }

    /// Appends plain lines to a file inside an emptyDir volume of the pod, on its node.
    pub fn write_volume_file(
        &self,
        pod: &ScenePod,
        volume: &str,
        relative: &str,
        lines: &[String],
    ) -> Result<PathBuf> {
        let node = self.scene_node(&pod.fixture.node)?;
        let path = node.fs().empty_dir(&pod.uid, volume).join(relative);
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        node_fs::append(&path, &text)?;
        Ok(path)
    }

    /// `kubectl apply --server-side` of manifests, as Argo CD does.
    pub fn apply(&self, manifests: &[&serde_json::Value]) -> Result<String> {
        self.kubectl.apply_server_side(&fixtures::manifest_list(manifests), GITOPS_MANAGER)
    }

    fn diagnostics(&self) -> String {
        let mut out = format!("\n======== e2e diagnostics for {} ========\n", self.name);
        let mut section = |title: &str, args: &[&str]| {
            out.push_str(&format!("---- {title}\n"));
            match self.kubectl.output(args, None) {
                Ok(o) => {
                    out.push_str(&String::from_utf8_lossy(&o.stdout));
                    out.push_str(&String::from_utf8_lossy(&o.stderr));
                }
                Err(e) => out.push_str(&format!("{e:#}\n")),
            }
        };
        for ns in &self.namespaces {
            section(
                &format!("tailor objects and pods in {ns}"),
                &["get", "tailor,pods", "-n", ns, "-o", "yaml"],
            );
            section(&format!("events in {ns}"), &["get", "events", "-n", ns, "--sort-by=.lastTimestamp"]);
        }
        if !self.nodes.is_empty() {
            let mut args = vec!["get", "nodelogconfigs", "-o", "yaml", "--ignore-not-found"];
            args.extend(self.nodes.keys().map(String::as_str));
            section("NodeLogConfigs of the scene's nodes", &args);
        }
        section("NodeLogConfigs (all)", &["get", "nodelogconfigs"]);
        section(
            "events of cluster-scoped objects",
            &["get", "events", "-n", "default", "--sort-by=.lastTimestamp"],
        );
        section("leases", &["get", "leases", "-n", crate::kubeconfig::SYSTEM_NAMESPACE, "-o", "wide"]);
        for (name, log) in self.cluster.operator_logs() {
            out.push_str(&format!("---- last lines of {name} ({})\n{}\n", log.display(), tail(&log, 60)));
        }
        for agent in &self.agents {
            out.push_str(&format!(
                "---- last lines of {} ({})\n{}\n",
                agent.name(),
                agent.log_path().display(),
                agent.log_tail(60)
            ));
        }
        out.push_str(&format!("======== end of diagnostics for {} ========\n", self.name));
        out
    }

    /// Best-effort removal of what the scene created, on a cluster this process does not own
    /// (a throw-away control plane simply goes away at exit).
    fn clean_up(&self) {
        if self.cluster.is_owned() {
            return;
        }
        for ns in &self.namespaces {
            let _ = self
                .kubectl
                .output(&["delete", "pods", "--all", "-n", ns, "--grace-period=0", "--force"], None);
            let _ = self.kubectl.output(&["delete", "namespace", ns, "--wait=false"], None);
        }
        for node in self.nodes.keys() {
            let _ = self.kubectl.output(&["delete", "node", node, "--wait=false"], None);
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if !self.passed {
            eprintln!("{}", self.diagnostics());
        }
        for agent in &mut self.agents {
            agent.stop(Duration::from_secs(5));
        }
        self.clean_up();
    }
}

/// Polls `check` every 200 ms until it returns `Ok`, or fails after `timeout` with the last
/// error it returned (what was observed instead).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                bail!("timed out after {:?} waiting for {what}; last observation: {e:#}", timeout)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
