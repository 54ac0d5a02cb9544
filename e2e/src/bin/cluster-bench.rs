//! Loads a real API server with many Nodes and Pods, runs the operator against it, and prints how
//! long it takes from applying the configs until every NodeLogConfig is rendered, how many writes
//! the operator made and its peak memory; then the same after one pod's label changes.
//!
//! `cargo run -p tailor-e2e --bin cluster-bench -- --nodes 500 --pods 10000 --configs 100`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tailor_crds::NodeLogConfig;
use tailor_e2e::control_plane::ControlPlane;
use tailor_e2e::fixtures::{self, PodFixture};
use tailor_e2e::kubeconfig::{Identity, SYSTEM_NAMESPACE, write_impersonating};
use tailor_e2e::kubectl::Kubectl;
use tailor_e2e::operator::free_port;
use tailor_e2e::process::{Process, peak_rss};
use tailor_e2e::{install, metrics, paths};

#[derive(Parser)]
#[command(about = "Operator figures against a real API server")]
struct Args {
    #[arg(long, default_value_t = 500)]
    nodes: usize,
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// LogCollectionConfigs (each selects its own share of the pods).
    #[arg(long, default_value_t = 100)]
    configs: usize,
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Concurrent API requests while loading the cluster.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Give up waiting for a rendering after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.configs < args.namespaces || args.namespaces == 0 {
        bail!("need at least one config per namespace");
    }
    let control_plane = ControlPlane::from_env_or_start()?;
    let kubectl = Kubectl::new(control_plane.kubeconfig());
    install::install_crds(&kubectl)?;
    install::install_rbac(&kubectl)?;
    let client = tailor_e2e::kubeconfig::client(control_plane.kubeconfig()).await?;
    let work = tempfile::tempdir()?;

    let t = Instant::now();
    let pods = load(&client, &args).await?;
    println!(
        "loaded {} nodes, {} pods in {} namespaces in {:.1} s",
        args.nodes,
        args.pods,
        args.namespaces,
        t.elapsed().as_secs_f64()
    );

    let bins = paths::binaries()?;
    let kubeconfig = work.path().join("operator.kubeconfig");
    write_impersonating(control_plane.kubeconfig(), &Identity::Operator, &kubeconfig)?;
    let metrics_addr = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = std::process::Command::new(&bins.operator);
    cmd.args(["run", "--metrics-addr", &metrics_addr, "--lease-namespace", SYSTEM_NAMESPACE])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", "tailor-operator-bench")
        .env("RUST_LOG", "warn");
    let log = work.path().join("operator.log");
    let mut operator = Process::spawn("operator", cmd, &log)?;
    let ready = Instant::now();
    wait(Duration::from_secs(args.timeout_secs), "the operator to lead", || {
        Ok(metrics::sum(&metrics::scrape(&metrics_addr)?, "tailor_operator_leader") >= 1.0)
    })
    .await
    .with_context(|| format!("operator log:\n{}", operator.log_tail(30)))?;
    println!("operator synced its caches and leads after {:.1} s", ready.elapsed().as_secs_f64());
    let before = writes_by_kind(&metrics_addr)?;

    // Apply every config at once, as a GitOps sync would.
    let configs: Vec<serde_json::Value> = (0..args.configs)
        .map(|c| {
            fixtures::collection_config(
                &namespace_of(c, &args),
                &format!("cfg-{c}"),
                json!({"includeLabels": {"app": format!("app-{c}")}}),
                &[],
            )
        })
        .collect();
    let expected = expected_targets(&pods);
    let t0 = Instant::now();
    kubectl.apply_server_side(&fixtures::manifest_list(&configs.iter().collect::<Vec<_>>()), "bench")?;
    let nlcs: Api<NodeLogConfig> = Api::all(client.clone());
    wait_rendered(&nlcs, &expected, Duration::from_secs(args.timeout_secs)).await?;
    let render = t0.elapsed();
    let after = writes_by_kind(&metrics_addr)?;
    println!(
        "all {} NodeLogConfigs rendered {:.2} s after applying {} configs; operator writes: {}; peak RSS {:.1} MiB",
        expected.len(),
        render.as_secs_f64(),
        args.configs,
        describe(&diff(&before, &after)),
        peak_rss(operator.pid()).unwrap_or(0) as f64 / 1048576.0
    );

    // One pod moves from its config to another config of its namespace, on the same node.
    let (pod_ns, pod_name, node, from) = pods.first().cloned().context("no pods")?;
    let to = (0..args.configs)
        .find(|c| *c != from && namespace_of(*c, &args) == pod_ns)
        .context("no second config in the namespace")?;
    let before = after;
    let t1 = Instant::now();
    Api::<Pod>::namespaced(client.clone(), &pod_ns)
        .patch(
            &pod_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": format!("app-{to}")}}})),
        )
        .await?;
    let want = format!("cfg-{to}");
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    loop {
        let nlc = nlcs.get(&node).await?;
        let moved = nlc
            .spec
            .collections
            .iter()
            .any(|c| c.source.name == want && c.targets.iter().any(|t| t.pod.name == pod_name));
        if moved {
            break;
        }
        if Instant::now() > deadline {
            bail!("the relabelled pod never moved to {want}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved = t1.elapsed();
    // Let status writes that follow the rendering land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = writes_by_kind(&metrics_addr)?;
    println!(
        "one pod relabelled: rendered {:.3} s later; operator writes: {}; peak RSS {:.1} MiB",
        moved.as_secs_f64(),
        describe(&diff(&before, &after)),
        peak_rss(operator.pid()).unwrap_or(0) as f64 / 1048576.0
    );
    operator.stop(Duration::from_secs(10));
    drop(control_plane);
    Ok(())
}

fn namespace_of(config: usize, args: &Args) -> String {
    format!("bench-{}", config % args.namespaces)
}

/// Creates namespaces, Nodes and Pods (with running statuses); returns (namespace, pod, node,
/// config index) per pod.
async fn load(client: &kube::Client, args: &Args) -> Result<Vec<(String, String, String, usize)>> {
    for n in 0..args.namespaces {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": format!("bench-{n}")}}))?;
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..args.nodes)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                nodes
                    .create(&PostParams::default(), &fixtures::node(&format!("node-{i:04}")))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    // Pod i: config i % configs (so namespace config % namespaces), node i % nodes.
    let plan: Vec<(String, String, String, usize)> = (0..args.pods)
        .map(|i| {
            let c = i % args.configs;
            (namespace_of(c, args), format!("pod-{i:05}"), format!("node-{:04}", i % args.nodes), c)
        })
        .collect();
    // The namespaces' default ServiceAccounts must exist before pods are admitted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    futures::stream::iter(plan.clone())
        .map(|(ns, name, node, c)| {
            let client = client.clone();
            async move {
                let fixture =
                    PodFixture::new(&ns, &name, &node).label("app", &format!("app-{c}")).container("app");
                let pods: Api<Pod> = Api::namespaced(client, &ns);
                let mut attempt = 0;
                let created = loop {
                    match pods.create(&PostParams::default(), &fixture.pod()).await {
                        Ok(p) => break p,
                        Err(e) if attempt < 20 => {
                            attempt += 1;
                            eprintln!("retrying pod {ns}/{name}: {e}");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => return Err(anyhow::Error::from(e)),
                    }
                };
                let uid = created.metadata.uid.unwrap_or_default();
                pods.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(fixture.running_status(&uid)),
                )
                .await?;
                Ok::<(), anyhow::Error>(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(plan)
}

/// Collection targets each node must end up with.
fn expected_targets(pods: &[(String, String, String, usize)]) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for (_, _, node, _) in pods {
        *out.entry(node.clone()).or_insert(0) += 1;
    }
    out
}

async fn wait_rendered(
    nlcs: &Api<NodeLogConfig>,
    expected: &BTreeMap<String, u32>,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let have: BTreeMap<String, u32> = nlcs
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|n| (n.metadata.name.unwrap_or_default(), n.spec.target_count))
            .collect();
        if &have == expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "rendering incomplete after {timeout:?}: {} of {} nodes rendered",
                have.len(),
                expected.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait(timeout: Duration, what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check().unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `tailor_operator_writes_total` by its labels.
fn writes_by_kind(addr: &str) -> Result<BTreeMap<String, f64>> {
    let text = metrics::scrape(addr)?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("tailor_operator_writes_total"))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels.trim_matches(|c| c == '{' || c == '}').replace('"', ""), value.parse().ok()?))
        })
        .collect())
}

fn diff(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn describe(writes: &BTreeMap<String, f64>) -> String {
    let total: f64 = writes.values().sum();
    let parts: Vec<String> = writes.iter().map(|(k, v)| format!("{v} {k}")).collect();
    format!("{total} ({})", parts.join(", "))
}
