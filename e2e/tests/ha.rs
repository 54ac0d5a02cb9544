//! Scenario 7, high availability: two operator replicas; only the Lease holder writes; after the
//! leader is killed with SIGKILL the other takes over within the lease duration and rendering goes
//! on. Its own test binary (and control plane): killing a leader must not disturb other suites.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use serde_json::json;
use tailor_e2e::fixtures::{PodFixture, collection_config};
use tailor_e2e::kubeconfig::SYSTEM_NAMESPACE;
use tailor_e2e::observe::{collection_keys, node_config};
use tailor_e2e::operator::Operators;
use tailor_e2e::{Scene, eventually, metrics};

const SETTLE: Duration = Duration::from_secs(90);
/// Allowance on top of the lease duration for the candidate's retry period.
const RETRY_ALLOWANCE: Duration = Duration::from_secs(5);

/// (lease name, holder, lease duration) of the lease held by one of `identities`.
async fn held_lease(client: &kube::Client, identities: &[String]) -> Result<(String, String, Duration)> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    for lease in leases.list(&ListParams::default()).await? {
        let spec = lease.spec.unwrap_or_default();
        if let Some(holder) = spec.holder_identity.filter(|h| identities.contains(h)) {
            let secs = spec.lease_duration_seconds.context("lease without a duration")?;
            return Ok((
                lease.metadata.name.unwrap_or_default(),
                holder,
                Duration::from_secs(u64::try_from(secs)?),
            ));
        }
    }
    bail!("no lease in {SYSTEM_NAMESPACE} held by {identities:?}")
}

fn writes(addr: &str) -> Result<f64> {
    Ok(metrics::sum(&metrics::scrape(addr)?, "tailor_operator_writes_total"))
}

#[tokio::test]
async fn leader_killed_the_other_takes_over() -> Result<()> {
    let mut scene = Scene::new("ha").await?;
    let mut ops = Operators::start(scene.cluster, "ha", 2)?;
    scene.cluster.register_operator_logs(ops.logs());
    let identities: Vec<String> = ops.replicas.iter().map(|r| r.identity.clone()).collect();
    let ns = scene.namespace("apps").await?;
    let n1 = scene.node("n1").await?;
    let n2 = scene.node("n2").await?;
    scene.pod(PodFixture::new(&ns, "web-1", &n1.name).label("app", "web").container("app")).await?;
    scene.apply(&[&collection_config(&ns, "web", json!({"includeLabels": {"app": "web"}}), &[])])?;
    eventually("the first node rendered", SETTLE, || async {
        node_config(&scene.client, &n1.name).await?.context("not yet").map(|_| ())
    })
    .await?;
    let (lease, leader, duration) =
        eventually("a replica holding the lease", SETTLE, || held_lease(&scene.client, &identities)).await?;

    // Only the holder writes.
    let li = ops.replicas.iter().position(|r| r.identity == leader).context("leader is not ours")?;
    let fi = 1 - li;
    let follower_writes = writes(&ops.replicas[fi].metrics_addr)?;
    ensure!(writes(&ops.replicas[li].metrics_addr)? > 0.0, "the leader {leader} reports no writes");
    ensure!(
        follower_writes == 0.0,
        "the follower {} wrote {follower_writes} times",
        ops.replicas[fi].identity
    );

    ops.replicas[li].process.kill9();
    let killed = Instant::now();
    let follower = ops.replicas[fi].identity.clone();
    eventually(&format!("{follower} to take lease {lease} over"), duration * 3, || async {
        let (_, holder, _) = held_lease(&scene.client, std::slice::from_ref(&follower)).await?;
        ensure!(holder == follower, "held by {holder}");
        Ok(())
    })
    .await?;
    let takeover = killed.elapsed();
    eprintln!(
        "ha: lease {lease} taken over {:.1} s after SIGKILL (lease duration {} s)",
        takeover.as_secs_f64(),
        duration.as_secs()
    );
    ensure!(
        takeover <= duration + RETRY_ALLOWANCE,
        "takeover took {takeover:?}, lease duration is {duration:?}"
    );

    // Rendering goes on under the new leader.
    let web2 =
        scene.pod(PodFixture::new(&ns, "web-2", &n2.name).label("app", "web").container("app")).await?;
    let want = vec![format!("{ns}/{}/app", web2.name())];
    eventually("the new pod rendered by the new leader", SETTLE, || async {
        let nlc = node_config(&scene.client, &n2.name).await?.context("no config yet")?;
        ensure!(collection_keys(&nlc) == want, "targets {:?}", collection_keys(&nlc));
        Ok(())
    })
    .await?;
    // The counter moves just after the write the API server already shows.
    eventually("the new leader to count its writes", Duration::from_secs(10), || async {
        ensure!(writes(&ops.replicas[fi].metrics_addr)? > 0.0, "the new leader reports no writes");
        Ok(())
    })
    .await?;
    drop(ops);
    scene.pass();
    Ok(())
}
