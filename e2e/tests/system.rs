//! The whole system on a real control plane: the install's CRDs and RBAC, two operator replicas
//! and one agent per node as processes acting as their ServiceAccounts, node filesystems laid out
//! as the kubelet would. One control plane and one operator pair serve every test of this file;
//! each test has its own namespaces and nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tailor_crds::{LogBackup, LogBackupPolicy, LogCollectionConfig, NodeLogConfig};
use tailor_e2e::fixtures::{PodFixture, backup_policy, collection_config};
use tailor_e2e::observe::{self, acknowledged, backup_keys, collection_keys, node_config};
use tailor_e2e::scene::{SceneNode, ScenePod};
use tailor_e2e::{Scene, eventually};

/// Generous bound for anything the system does asynchronously (no kubelet, 2 shared cores).
const SETTLE: Duration = Duration::from_secs(90);

/// A scene with the shared operator pair running.
async fn scene(name: &str) -> Result<Scene> {
    let scene = Scene::new(name).await?;
    scene.cluster.shared_operators()?;
    Ok(scene)
}

fn include(labels: Value) -> Value {
    json!({"includeLabels": labels})
}

async fn wait_config(
    scene: &Scene,
    node: &str,
    what: &str,
    pred: impl Fn(&NodeLogConfig) -> bool,
) -> Result<NodeLogConfig> {
    eventually(&format!("NodeLogConfig {node}: {what}"), SETTLE, || async {
        let nlc = node_config(&scene.client, node).await?.context("no NodeLogConfig yet")?;
        if pred(&nlc) {
            Ok(nlc)
        } else {
            bail!(
                "collections {:?}, backups {:?}, status {:?}",
                collection_keys(&nlc),
                backup_keys(&nlc),
                nlc.status
            )
        }
    })
    .await
}

async fn wait_no_config(scene: &Scene, node: &str, why: &str) -> Result<()> {
    eventually(&format!("NodeLogConfig {node} to be deleted ({why})"), SETTLE, || async {
        match node_config(&scene.client, node).await? {
            None => Ok(()),
            Some(nlc) => bail!("still there with {:?}", collection_keys(&nlc)),
        }
    })
    .await
}

fn key(pod: &ScenePod, container: &str) -> String {
    format!("{}/{}/{container}", pod.namespace(), pod.name())
}

fn lines(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag} line {i}")).collect()
}

/// Scenario 1: NodeLogConfigs exist exactly for the nodes that run selected pods; excluded pods and
/// every pod of another namespace stay out, even when their labels match.
#[tokio::test]
async fn selection_and_tenancy() -> Result<()> {
    let mut scene = scene("tenancy").await?;
    let team = scene.namespace("team").await?;
    let other = scene.namespace("other").await?;
    let n1 = scene.node("n1").await?;
    let n2 = scene.node("n2").await?;
    let n3 = scene.node("n3").await?;
    let web1 = scene
        .pod(
            PodFixture::new(&team, "web-1", &n1.name)
                .label("app", "web")
                .container("app")
                .container("sidecar"),
        )
        .await?;
    let web2 =
        scene.pod(PodFixture::new(&team, "web-2", &n2.name).label("app", "web").container("app")).await?;
    scene
        .pod(
            PodFixture::new(&team, "web-canary", &n3.name)
                .label("app", "web")
                .label("logging", "off")
                .container("app"),
        )
        .await?;
    scene.pod(PodFixture::new(&team, "db", &n3.name).label("app", "db").container("db")).await?;
    scene.pod(PodFixture::new(&other, "web-x", &n3.name).label("app", "web").container("app")).await?;
    scene.pod(PodFixture::new(&other, "web-y", &n1.name).label("app", "web").container("app")).await?;
    let selector = json!({"includeLabels": {"app": "web"}, "excludeLabels": {"logging": "off"}, "containers": {"exclude": ["sidecar"]}});
    let lcc = collection_config(&team, "web", selector.clone(), &[]);
    let lbp = backup_policy(&team, "web", selector, &[]);
    scene.apply(&[&lcc, &lbp])?;

    let nlc1 = wait_config(&scene, &n1.name, "web-1/app only", |c| {
        collection_keys(c) == [key(&web1, "app")] && backup_keys(c) == [key(&web1, "app")]
    })
    .await?;
    let nlc2 = wait_config(&scene, &n2.name, "web-2/app only", |c| {
        collection_keys(c) == [key(&web2, "app")] && backup_keys(c) == [key(&web2, "app")]
    })
    .await?;
    // The user resources' status says the rendering is complete; only then is absence meaningful.
    let lccs: Api<LogCollectionConfig> = Api::namespaced(scene.client.clone(), &team);
    eventually("LogCollectionConfig web status: 2 pods on 2 nodes", SETTLE, || async {
        let s = lccs.get("web").await?.status.unwrap_or_default();
        ensure!(
            s.pods == 2 && s.nodes == 2 && s.node_names == [n1.name.clone(), n2.name.clone()],
            "status {s:?}"
        );
        Ok(())
    })
    .await?;
    ensure!(
        node_config(&scene.client, &n3.name).await?.is_none(),
        "{} runs no selected pod but has a NodeLogConfig",
        n3.name
    );
    for nlc in [&nlc1, &nlc2] {
        let text = serde_json::to_string(&nlc.spec)?;
        ensure!(!text.contains(&other), "NodeLogConfig {:?} mentions namespace {other}", nlc.metadata.name);
        ensure!(
            nlc.spec.collections.iter().all(|c| c.source.namespace == team && c.source.name == "web"),
            "foreign source in {:?}",
            nlc.metadata.name
        );
    }
    // One LogBackup per (policy, node), owned by the policy.
    let backups: Api<LogBackup> = Api::namespaced(scene.client.clone(), &team);
    let list = eventually("two LogBackups", SETTLE, || async {
        let l = backups.list(&ListParams::default()).await?.items;
        ensure!(l.len() == 2, "{} LogBackups", l.len());
        Ok(l)
    })
    .await?;
    let mut nodes: Vec<String> = list.iter().map(|b| b.spec.node_name.clone()).collect();
    nodes.sort();
    ensure!(nodes == [n1.name.clone(), n2.name.clone()], "LogBackups for nodes {nodes:?}");
    for b in &list {
        ensure!(b.spec.policy == "web", "LogBackup {:?} for policy {}", b.metadata.name, b.spec.policy);
        let owners = b.metadata.owner_references.clone().unwrap_or_default();
        ensure!(
            owners.iter().any(|o| o.kind == "LogBackupPolicy" && o.name == "web"),
            "LogBackup {:?} not owned by its policy",
            b.metadata.name
        );
    }
    ensure!(
        Api::<LogBackup>::namespaced(scene.client.clone(), &other)
            .list(&ListParams::default())
            .await?
            .items
            .is_empty(),
        "LogBackups in {other}"
    );
    scene.pass();
    Ok(())
}

/// A namespace with `pods` pods (one per node, labelled `app=shop`, container `app` writing to
/// stdout and to `/var/log/app/app.log` in an emptyDir), a LogCollectionConfig and a
/// LogBackupPolicy selecting them, and an agent per node.
struct Shop {
    ns: String,
    nodes: Vec<SceneNode>,
    pods: Vec<ScenePod>,
    lcc: Value,
    lbp: Value,
}

async fn shop(scene: &mut Scene, nodes: usize, agents: bool) -> Result<Shop> {
    let ns = scene.namespace("shop").await?;
    let mut shop =
        Shop { ns: ns.clone(), nodes: Vec::new(), pods: Vec::new(), lcc: Value::Null, lbp: Value::Null };
    for i in 0..nodes {
        let node = scene.node(&format!("n{i}")).await?;
        let pod = scene
            .pod(
                PodFixture::new(&ns, &format!("shop-{i}"), &node.name)
                    .label("app", "shop")
                    .container("app")
                    .empty_dir("logs", "/var/log/app"),
            )
            .await?;
        scene.write_stdout(&pod, "app", &lines(&format!("{}-stdout-before", pod.name()), 3))?;
        scene.write_volume_file(
            &pod,
            "logs",
            "app.log",
            &lines(&format!("{}-file-before", pod.name()), 3),
        )?;
        if agents {
            scene.start_agent(&node)?;
        }
        shop.nodes.push(node);
        shop.pods.push(pod);
    }
    shop.lcc = collection_config(&ns, "shop", include(json!({"app": "shop"})), &["/var/log/app/*.log"]);
    shop.lbp = backup_policy(&ns, "shop", include(json!({"app": "shop"})), &["/var/log/app/*.log"]);
    scene.apply(&[&shop.lcc, &shop.lbp])?;
    Ok(shop)
}

async fn wait_acknowledged(scene: &Scene, nodes: &[SceneNode]) -> Result<()> {
    for node in nodes {
        wait_config(scene, &node.name, "acknowledged by its agent", acknowledged).await?;
    }
    Ok(())
}

/// Scenario 2: every agent acknowledges its NodeLogConfig; the user resources list the nodes that
/// applied them; stdout and in-container file lines arrive in the file sink with their metadata;
/// the LogBackups reach Synced and `kubectl get logbackups` shows it.
#[tokio::test]
async fn acknowledged_end_to_end() -> Result<()> {
    let mut scene = scene("ack").await?;
    let shop = shop(&mut scene, 2, true).await?;
    wait_acknowledged(&scene, &shop.nodes).await?;
    let node_names: Vec<String> = shop.nodes.iter().map(|n| n.name.clone()).collect();
    let lccs: Api<LogCollectionConfig> = Api::namespaced(scene.client.clone(), &shop.ns);
    let lbps: Api<LogBackupPolicy> = Api::namespaced(scene.client.clone(), &shop.ns);
    eventually("both user resources applied on both nodes", SETTLE, || async {
        let a = lccs.get("shop").await?.status.unwrap_or_default();
        let b = lbps.get("shop").await?.status.unwrap_or_default();
        ensure!(
            a.applied_nodes == node_names && a.ready.as_deref() == Some("2/2"),
            "LogCollectionConfig status {a:?}"
        );
        ensure!(
            b.applied_nodes == node_names && b.ready.as_deref() == Some("2/2"),
            "LogBackupPolicy status {b:?}"
        );
        Ok(())
    })
    .await?;

    // Lines written after the config was applied arrive too.
    for pod in &shop.pods {
        scene.write_stdout(pod, "app", &lines(&format!("{}-stdout-after", pod.name()), 2))?;
        scene.write_volume_file(pod, "logs", "app.log", &lines(&format!("{}-file-after", pod.name()), 2))?;
    }
    for (node, pod) in shop.nodes.iter().zip(&shop.pods) {
        for kind in ["stdout-before", "file-before", "stdout-after", "file-after"] {
            let last = format!("{}-{kind} line {}", pod.name(), if kind.ends_with("before") { 2 } else { 1 });
            let event =
                eventually(&format!("{last:?} in the file sink of {}", node.name), SETTLE, || async {
                    observe::events_containing(&node.dirs.output, &last)
                        .into_iter()
                        .next()
                        .context("not there")
                })
                .await?;
            for meta in [&shop.ns, pod.name(), "app", &node.name, "e2e"] {
                ensure!(observe::has_string_value(&event, meta), "event {event} lacks metadata {meta:?}");
            }
        }
    }

    // Backups: Synced, with pods, files and bytes, shown by kubectl.
    let backups: Api<LogBackup> = Api::namespaced(scene.client.clone(), &shop.ns);
    eventually("every LogBackup Synced with pods, files and bytes", SETTLE, || async {
        let list = backups.list(&ListParams::default()).await?.items;
        ensure!(list.len() == 2, "{} LogBackups", list.len());
        for b in &list {
            let s = b.status.clone().unwrap_or_default();
            ensure!(
                format!("{:?}", s.phase) == "Synced"
                    && s.pods == 1
                    && s.files >= 2
                    && s.bytes > 0
                    && s.last_sync_time.is_some(),
                "{:?}: {s:?}",
                b.metadata.name
            );
        }
        Ok(())
    })
    .await?;
    for (node, pod) in shop.nodes.iter().zip(&shop.pods) {
        for kind in ["stdout-after", "file-after"] {
            let last = format!("{}-{kind} line 1", pod.name());
            eventually(&format!("{last:?} in the backup of {}", node.name), SETTLE, || async {
                observe::files_containing(&node.dirs.backup, &last).into_iter().next().context("not there")
            })
            .await?;
        }
    }
    let out = scene.kubectl.run(&["get", "logbackups", "-n", &shop.ns])?;
    let rows = observe::table(&out)?;
    let header: Vec<&str> =
        out.lines().next().unwrap_or_default().split("  ").map(str::trim).filter(|s| !s.is_empty()).collect();
    ensure!(
        header == ["NAME", "POLICY", "NODE", "PHASE", "PODS", "FILES", "SIZE", "LAST SYNC", "AGE"],
        "kubectl get logbackups columns: {header:?}"
    );
    ensure!(rows.len() == 2, "kubectl get logbackups:\n{out}");
    for row in &rows {
        ensure!(
            row["POLICY"] == "shop" && row["PHASE"] == "Synced" && row["PODS"] == "1",
            "kubectl get logbackups:\n{out}"
        );
        ensure!(
            node_names.contains(&row["NODE"]) && !row["SIZE"].is_empty() && !row["LAST SYNC"].is_empty(),
            "kubectl get logbackups:\n{out}"
        );
    }
    let out = scene.kubectl.run(&["get", "lcc", "-n", &shop.ns])?;
    let rows = observe::table(&out)?;
    ensure!(
        rows.len() == 1 && rows[0]["PODS"] == "2" && rows[0]["NODES"] == "2" && rows[0]["READY"] == "2/2",
        "kubectl get lcc:\n{out}"
    );
    scene.pass();
    Ok(())
}

/// Scenario 3: a pod loses its label; its target leaves its node's config and no other
/// NodeLogConfig changes: the operator alone ...
#[tokio::test]
async fn pod_losing_its_label_changes_only_its_node_operator_only() -> Result<()> {
    change(scene("change-op").await?, false).await
}

/// ... and with the agents, which acknowledge, let go of the target, and write no other status.
#[tokio::test]
async fn pod_losing_its_label_changes_only_its_node() -> Result<()> {
    change(scene("change").await?, true).await
}

async fn change(mut scene: Scene, agents: bool) -> Result<()> {
    let shop = shop(&mut scene, 3, agents).await?;
    // A second selected pod on the first node, so that its config stays and changes.
    let extra = scene
        .pod(
            PodFixture::new(&shop.ns, "shop-extra", &shop.nodes[0].name)
                .label("app", "shop")
                .container("app")
                .empty_dir("logs", "/var/log/app"),
        )
        .await?;
    let leaving = &shop.pods[0];
    let n0 = &shop.nodes[0].name;
    wait_config(&scene, n0, "both pods", |c| collection_keys(c).len() == 2).await?;
    for node in &shop.nodes[1..] {
        wait_config(&scene, &node.name, "rendered", |c| collection_keys(c).len() == 1).await?;
    }
    if agents {
        wait_acknowledged(&scene, &shop.nodes).await?;
    }
    let others: Vec<String> = shop.nodes[1..].iter().map(|n| n.name.clone()).collect();
    // The agents finish reporting what they found (files discovered after the acknowledgement)
    // before the snapshot: from then on the other nodes' objects must not move at all.
    let mut before = observe::resource_versions(&scene.client, &[], &others).await?;
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let now = observe::resource_versions(&scene.client, &[], &others).await?;
        if now == before {
            break;
        }
        before = now;
    }
    let before_n0 = node_config(&scene.client, n0).await?.context("config of the first node")?;

    let pods: Api<Pod> = Api::namespaced(scene.client.clone(), &shop.ns);
    pods.patch(
        leaving.name(),
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": null}}})),
    )
    .await?;
    let after_n0 = wait_config(&scene, n0, "only the pod that kept its label (acknowledged)", |c| {
        collection_keys(c) == [key(&extra, "app")]
            && backup_keys(c) == [key(&extra, "app")]
            && (!agents || acknowledged(c))
    })
    .await?;
    ensure!(after_n0.metadata.generation > before_n0.metadata.generation, "generation did not move");
    if agents {
        eventually("the agent to let go of the target", SETTLE, || async {
            let s = node_config(&scene.client, n0).await?.and_then(|c| c.status).unwrap_or_default();
            ensure!(
                s.active_targets < before_n0.status.clone().unwrap_or_default().active_targets,
                "status {s:?}"
            );
            Ok(())
        })
        .await?;
    }
    let after = observe::resource_versions(&scene.client, &[], &others).await?;
    let changed = observe::changed(&before, &after);
    ensure!(changed.is_empty(), "other nodes' NodeLogConfigs changed: {changed:?}");
    scene.pass();
    Ok(())
}

/// Scenario 4: re-applying identical manifests server-side, as Argo CD does, changes no
/// resourceVersion of any object of the project for 30 s: the operator alone (its statuses and
/// renderings do not flap) ...
#[tokio::test]
async fn gitops_reapply_changes_nothing_operator_only() -> Result<()> {
    gitops(scene("gitops-op").await?, false).await
}

/// ... and with the agents writing their statuses.
#[tokio::test]
async fn gitops_reapply_changes_nothing() -> Result<()> {
    gitops(scene("gitops").await?, true).await
}

async fn gitops(mut scene: Scene, agents: bool) -> Result<()> {
    let shop = shop(&mut scene, 2, agents).await?;
    if agents {
        wait_acknowledged(&scene, &shop.nodes).await?;
        let backups: Api<LogBackup> = Api::namespaced(scene.client.clone(), &shop.ns);
        eventually("LogBackups Synced", SETTLE, || async {
            let list = backups.list(&ListParams::default()).await?.items;
            ensure!(
                list.len() == 2
                    && list
                        .iter()
                        .all(|b| b.status.as_ref().is_some_and(|s| format!("{:?}", s.phase) == "Synced")),
                "not yet"
            );
            Ok(())
        })
        .await?;
    } else {
        for node in &shop.nodes {
            wait_config(&scene, &node.name, "rendered", |c| collection_keys(c).len() == 1).await?;
        }
    }
    let namespaces = [shop.ns.clone()];
    let nodes: Vec<String> = shop.nodes.iter().map(|n| n.name.clone()).collect();
    // Settled: nothing changes for 5 s in a row.
    let mut last = observe::resource_versions(&scene.client, &namespaces, &nodes).await?;
    let mut quiet = 0;
    let mut rounds = 0;
    while quiet < 5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = observe::resource_versions(&scene.client, &namespaces, &nodes).await?;
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
        rounds += 1;
        ensure!(rounds < 90, "the project's objects never stopped changing: {last:?}");
    }
    scene.apply(&[&shop.lcc, &shop.lbp])?;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = observe::resource_versions(&scene.client, &namespaces, &nodes).await?;
        let changed = observe::changed(&last, &now);
        ensure!(changed.is_empty(), "re-applying identical manifests changed {changed:?}");
    }
    scene.pass();
    Ok(())
}

/// Scenario 5, operator part: a regex that does not compile (which the schema cannot check) marks
/// its resource `Invalid` with the reason; it renders nothing and hurts nothing else.
#[tokio::test]
async fn invalid_regex_is_marked_invalid_and_hurts_nothing_else() -> Result<()> {
    let mut scene = scene("invalid").await?;
    let ns = scene.namespace("apps").await?;
    let node = scene.node("n1").await?;
    let pod = scene.pod(PodFixture::new(&ns, "web", &node.name).label("app", "web").container("app")).await?;
    let good = collection_config(&ns, "good", include(json!({"app": "web"})), &[]);
    let mut bad_parse = collection_config(&ns, "bad-parse", include(json!({"app": "web"})), &[]);
    bad_parse["spec"]["parse"] = json!({"format": "regex", "pattern": "(?P<unclosed"});
    let mut bad_filter = collection_config(&ns, "bad-filter", include(json!({"app": "web"})), &[]);
    bad_filter["spec"]["filters"] = json!({"exclude": [{"pattern": "[unterminated"}]});
    scene.apply(&[&good, &bad_parse, &bad_filter])?;

    let lccs: Api<LogCollectionConfig> = Api::namespaced(scene.client.clone(), &ns);
    for name in ["bad-parse", "bad-filter"] {
        eventually(&format!("{name} marked Invalid with a reason"), SETTLE, || async {
            let o = lccs.get(name).await?;
            let s = o.status.unwrap_or_default();
            let c = s.conditions.iter().find(|c| c.type_ == "Invalid").context("no Invalid condition")?;
            ensure!(
                c.status == "True" && !c.message.is_empty() && s.observed_generation == o.metadata.generation,
                "status {s:?}"
            );
            let ready = s.conditions.iter().find(|c| c.type_ == "Ready");
            ensure!(ready.is_none_or(|r| r.status == "False"), "invalid but Ready: {s:?}");
            Ok(())
        })
        .await?;
    }
    let nlc = wait_config(&scene, &node.name, "the good config only", |c| {
        c.spec.collections.iter().map(|x| x.source.name.as_str()).collect::<Vec<_>>() == ["good"]
    })
    .await?;
    ensure!(collection_keys(&nlc) == [key(&pod, "app")], "targets {:?}", collection_keys(&nlc));
    let s = lccs.get("good").await?.status.unwrap_or_default();
    ensure!(
        s.conditions.iter().all(|c| c.type_ != "Invalid" || c.status == "False"),
        "good is marked invalid: {s:?}"
    );
    ensure!(s.pods == 1 && s.nodes == 1, "good status {s:?}");
    scene.pass();
    Ok(())
}

/// Scenario 8, what the operator does: a pod deleted with grace period 0 leaves its node's config;
/// a deleted policy takes its LogBackups with it (owner references, garbage collector); a deleted
/// Node takes its NodeLogConfig although its pods' objects remain.
#[tokio::test]
async fn deletions() -> Result<()> {
    let mut scene = scene("deletions").await?;
    let shop = shop(&mut scene, 2, false).await?;
    let (n0, n1) = (&shop.nodes[0], &shop.nodes[1]);
    for node in [n0, n1] {
        wait_config(&scene, &node.name, "rendered", |c| {
            collection_keys(c).len() == 1 && backup_keys(c).len() == 1
        })
        .await?;
    }
    scene.delete_pod(&shop.pods[1]).await?;
    wait_no_config(&scene, &n1.name, "its only pod was deleted").await?;

    let backups: Api<LogBackup> = Api::namespaced(scene.client.clone(), &shop.ns);
    eventually("one LogBackup left, for the remaining node", SETTLE, || async {
        let b = backups.list(&ListParams::default()).await?.items;
        ensure!(
            b.len() == 1 && b[0].spec.node_name == n0.name,
            "{:?}",
            b.iter().map(|b| &b.spec).collect::<Vec<_>>()
        );
        Ok(())
    })
    .await?;
    Api::<LogBackupPolicy>::namespaced(scene.client.clone(), &shop.ns)
        .delete("shop", &DeleteParams::default())
        .await?;
    // The garbage collector may take up to 30 s to learn a new kind.
    eventually("the policy's LogBackups to be garbage-collected", Duration::from_secs(60), || async {
        let b = backups.list(&ListParams::default()).await?.items;
        ensure!(b.is_empty(), "{} LogBackups left", b.len());
        Ok(())
    })
    .await?;
    wait_config(&scene, &n0.name, "no backups left", |c| {
        c.spec.backups.is_empty() && collection_keys(c).len() == 1
    })
    .await?;

    Api::<Node>::all(scene.client.clone()).delete(&n0.name, &DeleteParams::default()).await?;
    wait_no_config(&scene, &n0.name, "its Node was deleted").await?;
    scene.pass();
    Ok(())
}

/// Scenario 8, what the agents do: a deleted pod's last lines are shipped before its node's config
/// goes, and the backup copies stay on disk when their policy is deleted.
#[tokio::test]
async fn deleted_pods_are_drained_and_backups_stay() -> Result<()> {
    let mut scene = scene("drain").await?;
    let shop = shop(&mut scene, 2, true).await?;
    wait_acknowledged(&scene, &shop.nodes).await?;
    let (n0, n1) = (&shop.nodes[0], &shop.nodes[1]);
    let (p0, p1) = (&shop.pods[0], &shop.pods[1]);

    // The container writes its last line and exits; the pod object goes at once (grace 0).
    let last = format!("{}-last words", p1.name());
    scene.write_stdout(p1, "app", std::slice::from_ref(&last))?;
    scene.terminate_pod(p1).await?;
    scene.delete_pod(p1).await?;
    wait_no_config(&scene, &n1.name, "its only pod was deleted").await?;
    // The agent drains the files of a target that left its config before letting go.
    eventually("the deleted pod's last line in the file sink", SETTLE, || async {
        ensure!(!observe::events_containing(&n1.dirs.output, &last).is_empty(), "not shipped");
        Ok(())
    })
    .await?;

    let backups: Api<LogBackup> = Api::namespaced(scene.client.clone(), &shop.ns);
    eventually("the remaining LogBackup Synced", SETTLE, || async {
        let b = backups.list(&ListParams::default()).await?.items;
        ensure!(
            b.len() == 1 && b[0].status.as_ref().is_some_and(|s| format!("{:?}", s.phase) == "Synced"),
            "{:?}",
            b.iter().map(|b| &b.status).collect::<Vec<_>>()
        );
        Ok(())
    })
    .await?;
    let copied = observe::files_containing(&n0.dirs.backup, &format!("{}-stdout-before line 2", p0.name()));
    ensure!(!copied.is_empty(), "no backup copy of {} on {}", p0.name(), n0.name);
    Api::<LogBackupPolicy>::namespaced(scene.client.clone(), &shop.ns)
        .delete("shop", &DeleteParams::default())
        .await?;
    eventually("the policy's LogBackups to be garbage-collected", Duration::from_secs(60), || async {
        let b = backups.list(&ListParams::default()).await?.items;
        ensure!(b.is_empty(), "{} LogBackups left", b.len());
        Ok(())
    })
    .await?;
    wait_config(&scene, &n0.name, "no backups left, acknowledged", |c| {
        c.spec.backups.is_empty() && acknowledged(c)
    })
    .await?;
    for f in &copied {
        ensure!(f.is_file(), "backup copy {} was removed with its policy", f.display());
    }
    scene.pass();
    Ok(())
}

/// Issue 3's check of the samples: the install's sample resources and demo cluster, applied to a
/// real API server, render in the cluster to the same targets as `tailor-operator render -f
/// config/samples` offline; the agents apply them and `kubectl get logbackups` shows the backups.
#[tokio::test]
async fn samples_render_in_the_cluster_as_offline() -> Result<()> {
    let mut scene = scene("samples").await?;
    let samples = tailor_e2e::paths::repo_root().join("config/samples");
    scene.namespace_named("shop").await?;
    let mut nodes = Vec::new();
    for name in ["demo-node-1", "demo-node-2"] {
        nodes.push(scene.node_named(name).await?);
    }
    // The demo's pods, as the API server would have them. Their owner references name
    // ReplicaSets and StatefulSets that do not exist here (the garbage collector would delete
    // the pods), so they are dropped; target keys do not depend on them.
    let text = std::fs::read_to_string(samples.join("demo-cluster/pods.yaml"))?;
    let pods: Api<Pod> = Api::namespaced(scene.client.clone(), "shop");
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut pod: Value = serde::Deserialize::deserialize(doc)?;
        if pod.is_null() {
            continue;
        }
        let status = pod["status"].take();
        for field in ["uid", "ownerReferences", "resourceVersion", "creationTimestamp"] {
            if let Some(m) = pod["metadata"].as_object_mut() {
                m.remove(field);
            }
        }
        let name = pod["metadata"]["name"].as_str().context("pod without name")?.to_string();
        let created = eventually(&format!("creating pod shop/{name}"), SETTLE, || async {
            Ok(pods.create(&Default::default(), &serde_json::from_value(pod.clone())?).await?)
        })
        .await?;
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
        let uid = created.metadata.uid.context("pod without uid")?;
        let node = scene
            .scene_node(created.spec.as_ref().and_then(|s| s.node_name.as_deref()).context("unbound pod")?)?;
        for c in created.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default() {
            let path = node.fs().cri_log("shop", &name, &uid, &c.name, 0);
            tailor_e2e::node_fs::append(
                &path,
                &tailor_e2e::node_fs::cri_line("stdout", &format!("{{\"msg\":\"{name} started\"}}")),
            )?;
        }
    }
    for node in &nodes {
        scene.start_agent(node)?;
    }
    let manifests: Vec<Value> = ["logcollectionconfig.yaml", "logbackuppolicy.yaml"]
        .iter()
        .map(|f| Ok(serde_yaml_ng::from_str(&std::fs::read_to_string(samples.join(f))?)?))
        .collect::<Result<_>>()?;
    scene.apply(&manifests.iter().collect::<Vec<_>>())?;

    // What the operator renders offline from the same files.
    let bins = tailor_e2e::paths::binaries()?;
    let out = std::process::Command::new(&bins.operator).arg("render").arg("-f").arg(&samples).output()?;
    ensure!(out.status.success(), "tailor-operator render failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut offline: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout)) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if v["kind"] == "NodeLogConfig" {
            let nlc: NodeLogConfig = serde_json::from_value(v)?;
            offline.insert(
                nlc.metadata.name.clone().unwrap_or_default(),
                (collection_keys(&nlc), backup_keys(&nlc)),
            );
        }
    }
    ensure!(!offline.is_empty(), "the offline render printed no NodeLogConfig");
    for (node, (collections, backups)) in &offline {
        wait_config(&scene, node, "the targets of the offline render, acknowledged", |c| {
            &collection_keys(c) == collections && &backup_keys(c) == backups && acknowledged(c)
        })
        .await?;
    }
    let lccs: Api<LogCollectionConfig> = Api::namespaced(scene.client.clone(), "shop");
    eventually("shop-json Ready on every node", SETTLE, || async {
        let s = lccs.get("shop-json").await?.status.unwrap_or_default();
        ensure!(s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"), "status {s:?}");
        Ok(())
    })
    .await?;
    let backup_nodes: Vec<&String> =
        offline.iter().filter(|(_, (_, b))| !b.is_empty()).map(|(n, _)| n).collect();
    let rows = eventually("kubectl get logbackups: every backup Synced", SETTLE, || async {
        let out = scene.kubectl.run(&["get", "logbackups", "-n", "shop"])?;
        let rows = observe::table(&out)?;
        ensure!(rows.len() == backup_nodes.len() && rows.iter().all(|r| r["PHASE"] == "Synced"), "{out}");
        Ok(rows)
    })
    .await?;
    for row in rows {
        ensure!(row["POLICY"] == "checkout-backup" && backup_nodes.contains(&&row["NODE"]), "row {row:?}");
    }
    scene.pass();
    Ok(())
}

/// Outputs that name Secrets: the operator mirrors an opted-in Secret (only the keys outputs
/// use) into the install namespace and renders the mirror's name into the NodeLogConfig; the
/// node's agent, which may not read the original, resolves the mirror; a missing Secret is a
/// condition on its resource and an error on its agent's targets; an unnamed mirror is deleted.
#[tokio::test]
async fn output_secrets_are_mirrored_for_the_agent() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    use tailor_e2e::kubeconfig::{Identity, SYSTEM_NAMESPACE, write_impersonating};

    let mut scene = scene("secrets").await?;
    let team = scene.namespace("team").await?;
    let n1 = scene.node("n1").await?;
    let web1 =
        scene.pod(PodFixture::new(&team, "web-1", &n1.name).label("app", "web").container("app")).await?;
    let api1 =
        scene.pod(PodFixture::new(&team, "api-1", &n1.name).label("app", "api").container("app")).await?;
    for pod in [&web1, &api1] {
        scene.write_stdout(pod, "app", &lines(pod.name(), 1))?;
    }
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "es-creds", "namespace": team, "labels": {"logging.tailor.dev/output-secret": "true"}},
        "stringData": {"username": "shipper", "password": "s3cr3t", "db-url": "postgres://not-for-logs"}});
    let with_creds = |name: &str, app: &str, creds: &str| {
        let mut lcc = collection_config(&team, name, include(json!({"app": app})), &[]);
        lcc["spec"]["outputs"] = json!([{"name": "es", "type": "http",
            "http": {"uri": "https://es.invalid:9200/bulk"}, "credentialsSecretRef": {"name": creds}}]);
        lcc
    };
    let web = with_creds("web", "web", "es-creds");
    let api = with_creds("api", "api", "missing-creds");
    scene.apply(&[&secret, &web, &api])?;
    scene.start_agent(&n1)?;

    // The mirror: in the install namespace, the output keys only, annotated with its source.
    let mirrors: Api<Secret> = Api::namespaced(scene.client.clone(), SYSTEM_NAMESPACE);
    let mirror_of = |ns: String| {
        let mirrors = mirrors.clone();
        async move {
            let list =
                mirrors.list(&ListParams::default().labels("logging.tailor.dev/secret-mirror=true")).await?;
            Ok::<_, anyhow::Error>(list.items.into_iter().find(|s| {
                let a = s.metadata.annotations.clone().unwrap_or_default();
                a.get("logging.tailor.dev/source-namespace") == Some(&ns)
                    && a.get("logging.tailor.dev/source-name").map(String::as_str) == Some("es-creds")
            }))
        }
    };
    let mirror = eventually("the mirror of es-creds", SETTLE, || async {
        mirror_of(team.clone()).await?.context("no mirror yet")
    })
    .await?;
    let mirror_name = mirror.metadata.name.clone().context("mirror without name")?;
    let data = mirror.data.clone().unwrap_or_default();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    ensure!(keys == ["password", "username"], "mirror keys {keys:?}");
    ensure!(data["username"].0 == b"shipper" && data["password"].0 == b"s3cr3t", "mirror values differ");

    // The NodeLogConfig names the mirror, not the user's Secret; the agent resolves it (no error
    // on web's target) and reports the missing one on api's target.
    let nlc = wait_config(&scene, &n1.name, "both collections, acknowledged with api's error only", |c| {
        let errors = c.status.as_ref().map(|s| s.errors.clone()).unwrap_or_default();
        acknowledged(c)
            && c.spec.collections.len() == 2
            && errors.len() == 1
            && errors[0].target.contains("api-1")
            && errors[0].message.contains("output es: secret")
            && errors[0].message.contains("not found")
    })
    .await?;
    let refs: BTreeMap<String, String> = nlc
        .spec
        .collections
        .iter()
        .map(|c| {
            let name =
                c.outputs[0].credentials_secret_ref.as_ref().map(|r| r.name.clone()).unwrap_or_default();
            (c.source.name.clone(), name)
        })
        .collect();
    ensure!(refs["web"] == mirror_name, "web's output names {:?}, not the mirror {mirror_name}", refs["web"]);
    ensure!(
        refs["api"] != "missing-creds" && refs["api"].starts_with("tailor-"),
        "api names {:?}",
        refs["api"]
    );
    ensure!(!serde_json::to_string(&nlc)?.contains("s3cr3t"), "a Secret value in the NodeLogConfig");

    // The missing Secret: a condition that says which and why.
    let lccs: Api<LogCollectionConfig> = Api::namespaced(scene.client.clone(), &team);
    eventually("api Degraded with SecretUnavailable", SETTLE, || async {
        let s = lccs.get("api").await?.status.unwrap_or_default();
        let d = s.conditions.iter().find(|c| c.type_ == "Degraded").context("no Degraded condition")?;
        ensure!(
            d.status == "True"
                && d.reason == "SecretUnavailable"
                && d.message.contains("missing-creds not found"),
            "{d:?}"
        );
        Ok(())
    })
    .await?;

    // The agent's identity reads the mirror in its namespace, and no Secret anywhere else.
    let kubeconfig = scene.dir().join("agent.kubeconfig");
    write_impersonating(scene.cluster.kubeconfig(), &Identity::Agent { node: n1.name.clone() }, &kubeconfig)?;
    let agent = tailor_e2e::kubeconfig::client(&kubeconfig).await?;
    let forbidden = |r: Result<Secret, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    Api::<Secret>::namespaced(agent.clone(), SYSTEM_NAMESPACE)
        .get(&mirror_name)
        .await
        .context("agent reads the mirror")?;
    ensure!(
        forbidden(Api::<Secret>::namespaced(agent.clone(), &team).get("es-creds").await),
        "the agent read the user's Secret"
    );
    let listed = Api::<Secret>::all(agent).list(&ListParams::default()).await;
    ensure!(
        matches!(listed, Err(kube::Error::Api(s)) if s.code == 403),
        "the agent listed Secrets cluster-wide"
    );

    // Rotation: the operator reads the Secret again and updates its mirror.
    Api::<Secret>::namespaced(scene.client.clone(), &team)
        .patch(
            "es-creds",
            &PatchParams::apply(tailor_e2e::scene::GITOPS_MANAGER),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "es-creds", "labels": {"logging.tailor.dev/output-secret": "true"}},
                "stringData": {"username": "shipper", "password": "rotated"}})),
        )
        .await?;
    eventually("the rotated password in the mirror", SETTLE, || async {
        let m = mirrors.get(&mirror_name).await?;
        let password = m.data.unwrap_or_default().get("password").map(|p| p.0.clone());
        ensure!(password.as_deref() == Some(&b"rotated"[..]), "not yet");
        Ok(())
    })
    .await?;

    // No output names es-creds any more: its mirror goes. (Both resources go, so that the
    // shared operators stop reading Secrets for this scene.)
    for name in ["web", "api"] {
        lccs.delete(name, &DeleteParams::default()).await?;
    }
    eventually("the mirror to be deleted", SETTLE, || async {
        ensure!(mirror_of(team.clone()).await?.is_none(), "still there");
        Ok(())
    })
    .await?;
    scene.pass();
    Ok(())
}
