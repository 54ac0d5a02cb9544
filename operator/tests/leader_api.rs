//! Leader election against a mocked API server that keeps one Lease like the real one does
//! (resourceVersion checked on update, 409 on a stale write, 404 when absent).

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tailor_operator::leader::{self, LeaseSettings};
use tokio::sync::{Mutex, watch};
use tower_test::mock::{self, Handle};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

/// Serves GET, POST and PUT of leases from `store`.
async fn lease_server(
    mut handle: Handle<Request<Body>, Response<Body>>,
    store: std::sync::Arc<Mutex<Option<Value>>>,
) {
    while let Some((req, send)) = handle.next_request().await {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let mut lease = store.lock().await;
        let status = |code: u16, reason: &str| json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code});
        let (code, body) = match (method, path.as_str()) {
            (Method::GET, p) if p == format!("{LEASES}/tailor-operator") => match lease.as_ref() {
                Some(l) => (200, l.clone()),
                None => (404, status(404, "NotFound")),
            },
            (Method::POST, LEASES) if lease.is_none() => {
                let mut l: Value = serde_json::from_slice(&bytes).unwrap();
                l["metadata"]["resourceVersion"] = json!("1");
                *lease = Some(l.clone());
                (201, l)
            }
            (Method::POST, LEASES) => (409, status(409, "AlreadyExists")),
            (Method::PUT, p) if p == format!("{LEASES}/tailor-operator") => {
                let mut l: Value = serde_json::from_slice(&bytes).unwrap();
                let current = lease.as_ref().map(|c| c["metadata"]["resourceVersion"].clone());
                if current != Some(l["metadata"]["resourceVersion"].clone()) {
                    (409, status(409, "Conflict"))
                } else {
                    let next: u64 =
                        l["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().unwrap() + 1;
                    l["metadata"]["resourceVersion"] = json!(next.to_string());
                    *lease = Some(l.clone());
                    (200, l)
                }
            }
            (m, p) => panic!("unexpected call {m} {p}"),
        };
        let response = Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        send.send_response(response);
    }
}

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        namespace: "ops".into(),
        name: "tailor-operator".into(),
        identity: identity.into(),
        duration: Duration::from_secs(1),
        renew_every: Duration::from_millis(20),
    }
}

struct Elector {
    leader: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(client: &Client, identity: &str) -> Elector {
    let (leader_tx, leader) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(leader::run(client.clone(), settings(identity), leader_tx, stop_rx));
    Elector { leader, stop, task }
}

async fn wait_leader(e: &mut Elector) {
    tokio::time::timeout(Duration::from_secs(10), e.leader.wait_for(|l| *l))
        .await
        .expect("never became leader")
        .unwrap();
}

async fn stop(e: Elector) {
    e.stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), e.task).await.expect("election did not stop").unwrap();
    assert!(!*e.leader.borrow(), "still leader after stopping");
}

fn setup() -> (Client, std::sync::Arc<Mutex<Option<Value>>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let store = std::sync::Arc::new(Mutex::new(None));
    tokio::spawn(lease_server(handle, store.clone()));
    (Client::new(service, "default"), store)
}

#[tokio::test]
async fn creates_the_lease_and_releases_it_on_shutdown() {
    let (client, store) = setup();
    let mut a = start(&client, "a");
    wait_leader(&mut a).await;
    let lease = store.lock().await.clone().unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    assert_eq!(lease["spec"]["leaseTransitions"], 0);
    stop(a).await;
    let lease = store.lock().await.clone().unwrap();
    assert!(lease["spec"].get("holderIdentity").is_none_or(|h| h.is_null()), "not released: {lease}");
}

#[tokio::test]
async fn a_stale_holder_is_replaced() {
    let (client, store) = setup();
    *store.lock().await = Some(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "tailor-operator", "namespace": "ops", "resourceVersion": "41"},
        "spec": {"holderIdentity": "crashed", "leaseDurationSeconds": 1, "leaseTransitions": 3,
                 "renewTime": "2026-01-01T00:00:00.000000Z"}
    }));
    let mut b = start(&client, "b");
    wait_leader(&mut b).await;
    let lease = store.lock().await.clone().unwrap();
    assert_eq!(
        (&lease["spec"]["holderIdentity"], &lease["spec"]["leaseTransitions"]),
        (&json!("b"), &json!(4))
    );
    stop(b).await;
}

#[tokio::test]
async fn two_replicas_never_lead_together_and_hand_over_on_shutdown() {
    let (client, store) = setup();
    let mut a = start(&client, "a");
    wait_leader(&mut a).await;
    let mut b = start(&client, "b");
    // While a renews, b follows: check across several of b's looks at the lease.
    for _ in 0..10 {
        let before = store.lock().await.as_ref().map(|l| l["metadata"]["resourceVersion"].clone());
        tokio::time::timeout(Duration::from_secs(5), async {
            while store.lock().await.as_ref().map(|l| l["metadata"]["resourceVersion"].clone()) == before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the holder stopped renewing");
        assert!(!(*a.leader.borrow() && *b.leader.borrow()), "two leaders");
        assert!(!*b.leader.borrow(), "b took over a lease that is being renewed");
    }
    stop(a).await;
    wait_leader(&mut b).await;
    assert_eq!(store.lock().await.as_ref().unwrap()["spec"]["holderIdentity"], "b");
    stop(b).await;
}
