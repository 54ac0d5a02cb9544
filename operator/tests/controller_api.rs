//! The controller against a mocked API server (kube's tower-test pattern): each scenario lists
//! the exact calls, in order, that one pass must make; the verifier answers them like the API
//! server would, and a call that is missing, extra or different fails the test.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tailor_crds::node::NodeLogConfigStatus;
use tailor_operator::controller::{Context, LoopState, PassReport, Snapshot, pass};
use tailor_operator::metrics::Metrics;
use tailor_operator::plan::{Observed, Plan, plan};
use tailor_operator::render::{ResourceKind, render};
use tower_test::mock::{self, Handle};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const NLC: &str = "/apis/logging.tailor.dev/v1alpha1/nodelogconfigs";
const SHOP: &str = "/apis/logging.tailor.dev/v1alpha1/namespaces/shop";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces";

/// One expected call and how to answer it.
struct Step {
    method: Method,
    path: String,
    fail: bool,
    check: Box<dyn Fn(&Value) + Send>,
    /// The answer, when not the echo of the body.
    reply: Option<(StatusCode, Value)>,
}

fn patch(path: String, check: impl Fn(&Value) + Send + 'static) -> Step {
    Step { method: Method::PATCH, path, fail: false, check: Box::new(check), reply: None }
}

fn post(path: String, check: impl Fn(&Value) + Send + 'static) -> Step {
    Step { method: Method::POST, path, fail: false, check: Box::new(check), reply: None }
}

fn delete(path: String) -> Step {
    Step { method: Method::DELETE, path, fail: false, check: Box::new(|_| {}), reply: None }
}

fn get(path: String, status: StatusCode, reply: Value) -> Step {
    Step { method: Method::GET, path, fail: false, check: Box::new(|_| {}), reply: Some((status, reply)) }
}

/// Answers the steps in order and hands the handle back.
async fn verify(mut handle: ApiHandle, steps: Vec<Step>) -> ApiHandle {
    for step in steps {
        let (req, send) = handle
            .next_request()
            .await
            .unwrap_or_else(|| panic!("expected {} {}, but no more calls came", step.method, step.path));
        assert_eq!((req.method(), req.uri().path()), (&step.method, step.path.as_str()), "unexpected call");
        let query = req.uri().query().unwrap_or_default().to_string();
        if step.method == Method::PATCH && !step.path.starts_with(EVENTS) {
            assert!(query.contains("fieldManager=tailor-operator"), "{query}");
            assert!(query.contains("force=true"), "{query}");
        }
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (step.check)(&body);
        let (status, reply) = if let Some(r) = step.reply {
            r
        } else if step.fail {
            let s = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd is sad",
                           "reason": "InternalError", "code": 500});
            (StatusCode::INTERNAL_SERVER_ERROR, s)
        } else if step.method == Method::DELETE {
            (StatusCode::OK, json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}))
        } else {
            (StatusCode::OK, echo(&step.path, body))
        };
        let response =
            Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap()));
        send.send_response(response.unwrap());
    }
    handle
}

/// What the API server returns for an apply: the object (status patches carry no spec, so a
/// minimal one is added).
fn echo(path: &str, mut body: Value) -> Value {
    if path.ends_with("/status") {
        let name = path.trim_end_matches("/status").rsplit('/').next().unwrap();
        body["metadata"] = json!({"name": name, "namespace": "shop"});
        body["spec"] = json!({"outputs": [{"name": "o", "type": "stdout"}]});
    }
    body
}

/// Runs one pass (as leader) against the steps; fails on a missing, different or extra call.
async fn scenario(snapshot: Snapshot, steps: Vec<Step>) -> PassReport {
    scenario_with(snapshot, steps, &mut LoopState::default()).await
}

async fn scenario_with(snapshot: Snapshot, steps: Vec<Step>, state: &mut LoopState) -> PassReport {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Context::new(Client::new(service, "default"), Arc::new(Metrics::new()), "test-0");
    let verifier = tokio::spawn(verify(handle, steps));
    let report = tokio::time::timeout(Duration::from_secs(10), pass(&ctx, snapshot, state, true))
        .await
        .expect("the pass hung: it made a call the scenario does not answer");
    drop(ctx);
    let mut handle = tokio::time::timeout(Duration::from_secs(5), verifier)
        .await
        .expect("scenario timed out: a call is missing")
        .expect("verifier failed");
    let extra = tokio::time::timeout(Duration::from_secs(1), handle.next_request()).await.unwrap();
    assert!(extra.is_none(), "an extra call was made: {:?}", extra.map(|(r, _)| r.uri().clone()));
    report
}

fn fixture() -> Snapshot {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    Snapshot { input: tailor_operator::files::load_paths(&[dir]).unwrap(), observed: Observed::default() }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap())
}

/// Applies a plan to the snapshot as the API server and prompt agents would: applied
/// NodeLogConfigs get a new generation that their agent acknowledges at once.
fn apply_locally(s: &mut Snapshot, p: &Plan) {
    let o = &mut s.observed;
    for nlc in &p.apply_node_configs {
        let name = nlc.metadata.name.clone();
        let generation =
            o.node_configs.iter().find(|n| n.metadata.name == name).and_then(|n| n.metadata.generation);
        let mut n = nlc.clone();
        n.metadata.generation = Some(generation.unwrap_or(0) + 1);
        n.status =
            Some(NodeLogConfigStatus { observed_generation: n.metadata.generation, ..Default::default() });
        o.node_configs.retain(|x| x.metadata.name != name);
        o.node_configs.push(Arc::new(n));
    }
    o.node_configs.retain(|n| !p.delete_node_configs.contains(n.metadata.name.as_ref().unwrap()));
    for lb in &p.apply_log_backups {
        o.log_backups.retain(|x| x.metadata.name != lb.metadata.name);
        o.log_backups.push(Arc::new(lb.clone()));
    }
    o.log_backups.retain(|b| {
        !p.delete_log_backups
            .iter()
            .any(|(ns, n)| b.metadata.namespace.as_ref() == Some(ns) && b.metadata.name.as_ref() == Some(n))
    });
    for u in &p.statuses {
        let is = |m: &kube::api::ObjectMeta| {
            m.namespace.as_deref() == Some(&u.key.namespace) && m.name.as_deref() == Some(&u.key.name)
        };
        match u.key.kind {
            ResourceKind::Collection => {
                for c in s.input.collections.iter_mut().filter(|c| is(&c.metadata)) {
                    Arc::make_mut(c).status = Some(u.status.clone());
                }
            }
            ResourceKind::Backup => {
                for b in s.input.backups.iter_mut().filter(|b| is(&b.metadata)) {
                    Arc::make_mut(b).status = Some(u.status.clone());
                }
            }
        }
    }
}

/// The cluster after the operator and the agents caught up with the snapshot.
fn settled(mut s: Snapshot) -> Snapshot {
    for _ in 0..4 {
        let p = plan(&s.input, &render(&s.input), &s.observed, &BTreeMap::new(), &now());
        if p.is_empty() {
            return s;
        }
        apply_locally(&mut s, &p);
    }
    panic!("the cluster does not settle");
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap()
}

#[tokio::test]
async fn first_pass_creates_node_configs_log_backups_and_statuses() {
    let steps = vec![
        patch(format!("{NLC}/node-a"), |b| {
            assert_eq!(b["kind"], "NodeLogConfig");
            assert_eq!(b["metadata"]["labels"]["app.kubernetes.io/managed-by"], "tailor-operator");
            assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "Node");
            // web (app; istio-proxy excluded) and web-backup (app and istio-proxy).
            assert_eq!(b["spec"]["targetCount"], 3);
            assert_eq!(b["spec"]["collections"][0]["targets"][0]["pod"]["name"], "web-7d4b9c8f6-x2x4p");
        }),
        patch(format!("{NLC}/node-b"), |b| {
            assert_eq!(b["spec"]["collections"][0]["targets"][0]["container"]["terminated"], true);
        }),
        patch(format!("{SHOP}/logbackups/web-backup-node-a"), |b| {
            assert_eq!(b["spec"], json!({"policy": "web-backup", "nodeName": "node-a"}));
            let owner = &b["metadata"]["ownerReferences"][0];
            assert_eq!((&owner["kind"], &owner["controller"]), (&json!("LogBackupPolicy"), &json!(true)));
            assert_eq!(owner["uid"], "1c1c1c1c-0000-4000-8000-000000000002");
        }),
        patch(format!("{SHOP}/logbackups/web-backup-node-b"), |_| {}),
        patch(format!("{SHOP}/logcollectionconfigs/broken/status"), |b| {
            assert_eq!(b["kind"], "LogCollectionConfig");
            assert!(b.get("spec").is_none(), "a status write never carries the user's spec");
            let s = &b["status"];
            assert_eq!(s["observedGeneration"], 5);
            let invalid = condition(s, "Invalid");
            assert_eq!((&invalid["status"], &invalid["reason"]), (&json!("True"), &json!("InvalidRegex")));
            assert!(invalid["message"].as_str().unwrap().contains("parse.pattern"));
        }),
        patch(format!("{SHOP}/logcollectionconfigs/web/status"), |b| {
            let s = &b["status"];
            assert_eq!((&s["pods"], &s["nodes"], &s["ready"]), (&json!(2), &json!(2), &json!("0/2")));
            assert_eq!(s["nodeNames"], json!(["node-a", "node-b"]));
            assert_eq!(condition(s, "Ready")["reason"], "Pending");
            assert_eq!(condition(s, "Degraded")["reason"], "UnmappedSources");
        }),
        patch(format!("{SHOP}/logbackuppolicies/web-backup/status"), |b| {
            assert_eq!(b["kind"], "LogBackupPolicy");
            assert_eq!(b["status"]["observedGeneration"], 1);
        }),
        // Warning events for the problems that just appeared, on the resources themselves.
        post(format!("{EVENTS}/shop/events"), |b| {
            assert_eq!((&b["type"], &b["reason"]), (&json!("Warning"), &json!("InvalidRegex")));
            assert_eq!(b["regarding"]["name"], "broken");
            assert_eq!(b["reportingController"], "tailor-operator");
        }),
        post(format!("{EVENTS}/shop/events"), |b| {
            assert_eq!((&b["reason"], &b["regarding"]["name"]), (&json!("UnmappedSources"), &json!("web")));
        }),
    ];
    let report = scenario(fixture(), steps).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let s = report.stats;
    assert_eq!((s.node_configs_applied, s.log_backups_applied, s.statuses, s.events), (2, 2, 3, 2));
}

#[tokio::test]
async fn a_pod_change_rewrites_only_its_node() {
    let mut s = settled(fixture());
    let pod =
        s.input.pods.iter_mut().find(|p| p.metadata.name.as_deref() == Some("web-7d4b9c8f6-x2x4p")).unwrap();
    let status = Arc::make_mut(pod).status.as_mut().unwrap();
    status.container_statuses.as_mut().unwrap()[0].restart_count = 2;
    let steps = vec![patch(format!("{NLC}/node-a"), |b| {
        assert_eq!(b["spec"]["collections"][0]["targets"][0]["container"]["restartCount"], 2);
    })];
    let report = scenario(s, steps).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.stats.node_configs_applied, 1);
}

#[tokio::test]
async fn a_deleted_pod_takes_its_node_config_and_log_backup_with_it() {
    let mut s = settled(fixture());
    s.input.pods.retain(|p| p.metadata.name.as_deref() != Some("web-7d4b9c8f6-q8k2m"));
    let steps = vec![
        delete(format!("{SHOP}/logbackups/web-backup-node-b")),
        delete(format!("{NLC}/node-b")),
        patch(format!("{SHOP}/logcollectionconfigs/web/status"), |b| {
            let s = &b["status"];
            assert_eq!((&s["pods"], &s["nodes"], &s["ready"]), (&json!(1), &json!(1), &json!("1/1")));
            assert_eq!(condition(s, "Ready")["status"], "True");
            assert_eq!(s["appliedNodes"], json!(["node-a"]));
        }),
        patch(format!("{SHOP}/logbackuppolicies/web-backup/status"), |b| {
            assert_eq!(b["status"]["nodes"], 1);
        }),
    ];
    let report = scenario(s, steps).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.stats.node_configs_deleted, report.stats.log_backups_deleted), (1, 1));
}

#[tokio::test]
async fn nothing_is_written_when_nothing_changed() {
    let s = settled(fixture());
    // The settled statuses say every node applied the current generation.
    let web = s.input.collections.iter().find(|c| c.metadata.name.as_deref() == Some("web")).unwrap();
    assert_eq!(web.status.as_ref().unwrap().ready.as_deref(), Some("2/2"));
    let report = scenario(s.clone(), vec![]).await;
    assert!(report.plan.is_empty());
    // A replica that does not hold the lease never writes, even when there is something to do.
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Context::new(Client::new(service, "default"), Arc::new(Metrics::new()), "test-0");
    let report = pass(&ctx, fixture(), &mut LoopState::default(), false).await;
    assert!(!report.plan.is_empty());
    drop(ctx);
    let call = tokio::time::timeout(Duration::from_secs(1), handle.next_request()).await.unwrap();
    assert!(call.is_none(), "a follower wrote");
}

#[tokio::test]
async fn a_failed_write_does_not_stop_the_others() {
    let mut s = settled(fixture());
    for pod in s.input.pods.iter_mut() {
        if let Some(st) = Arc::make_mut(pod).status.as_mut() {
            for c in st.container_statuses.iter_mut().flatten() {
                c.restart_count += 1;
            }
        }
    }
    let mut steps = vec![patch(format!("{NLC}/node-a"), |_| {}), patch(format!("{NLC}/node-b"), |_| {})];
    steps[0].fail = true;
    let report = scenario(s, steps).await;
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].category(), "api");
    assert!(report.errors[0].to_string().contains("NodeLogConfig/node-a"), "{}", report.errors[0]);
    assert_eq!(report.stats.node_configs_applied, 1);
}

#[tokio::test]
async fn a_malformed_resource_gets_its_status_once() {
    let mut s = settled(fixture());
    let text = "apiVersion: logging.tailor.dev/v1alpha1\nkind: LogBackupPolicy\n\
                metadata: {name: odd, namespace: shop, uid: u-odd, generation: 2}\n\
                spec: {keepTerminated: maybe}\n";
    s.input.malformed = tailor_operator::files::parse_objects(text, "t").unwrap().malformed;
    let mut state = LoopState::default();
    let steps = vec![
        patch(format!("{SHOP}/logbackuppolicies/odd/status"), |b| {
            let invalid = condition(&b["status"], "Invalid");
            assert_eq!((&invalid["status"], &invalid["reason"]), (&json!("True"), &json!("Malformed")));
            assert!(invalid["message"].as_str().unwrap().contains("\"maybe\""), "{invalid}");
        }),
        post(format!("{EVENTS}/shop/events"), |b| assert_eq!(b["reason"], "Malformed")),
    ];
    scenario_with(s.clone(), steps, &mut state).await;
    // Its status cannot be read back from the cache, yet the next pass does not rewrite it.
    let report = scenario_with(s, vec![], &mut state).await;
    assert!(report.plan.is_empty());
}

/// Outputs that name Secrets: each named Secret is read (the operator may `get`, not list),
/// copied (only the keys outputs use) into a mirror in the operator's namespace before the
/// NodeLogConfigs that now name the mirror, a mirror no longer named is deleted, and a missing
/// Secret degrades the resource with an Event.
#[tokio::test]
async fn named_secrets_are_mirrored_before_the_node_configs_and_missing_ones_reported() {
    use tailor_operator::secrets::mirror_name;
    let mut s = settled(fixture());
    for c in s.input.collections.iter_mut().filter(|c| c.metadata.name.as_deref() == Some("web")) {
        let c = Arc::make_mut(c);
        c.metadata.generation = Some(3);
        c.spec.outputs.push(
            serde_json::from_value(json!({"name": "es", "type": "http", "http": {"uri": "https://es:9200"},
                "credentialsSecretRef": {"name": "es-creds"}, "tls": {"secretRef": {"name": "es-ca"}}}))
            .unwrap(),
        );
    }
    let stale: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": mirror_name("gone", "old"), "namespace": "default"}}))
    .unwrap();
    s.observed.mirrors.push(Arc::new(stale));
    let creds = mirror_name("shop", "es-creds");
    let ca = mirror_name("shop", "es-ca");
    let not_found =
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
    let source = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "es-creds", "namespace": "shop", "labels": {"logging.tailor.dev/output-secret": "true"}},
        "data": {"username": "ZWxhc3RpYw==", "password": "czNjcmV0", "db-url": "eA=="}});
    let (creds2, ca2) = (creds.clone(), ca.clone());
    let node_config = move |b: &Value| {
        let out = &b["spec"]["collections"][0]["outputs"][1];
        assert_eq!(out["credentialsSecretRef"]["name"], json!(creds2));
        assert_eq!(out["tls"]["secretRef"]["name"], json!(ca2));
    };
    let steps = vec![
        get("/api/v1/namespaces/shop/secrets/es-ca".into(), StatusCode::NOT_FOUND, not_found),
        get("/api/v1/namespaces/shop/secrets/es-creds".into(), StatusCode::OK, source),
        patch(format!("/api/v1/namespaces/default/secrets/{creds}"), |b| {
            assert_eq!(b["kind"], "Secret");
            assert_eq!(b["data"], json!({"username": "ZWxhc3RpYw==", "password": "czNjcmV0"}));
            assert_eq!(b["metadata"]["labels"]["logging.tailor.dev/secret-mirror"], "true");
            assert_eq!(b["metadata"]["annotations"]["logging.tailor.dev/source-namespace"], "shop");
            assert_eq!(b["metadata"]["annotations"]["logging.tailor.dev/source-name"], "es-creds");
        }),
        patch(format!("{NLC}/node-a"), node_config.clone()),
        patch(format!("{NLC}/node-b"), node_config),
        delete(format!("/api/v1/namespaces/default/secrets/{}", mirror_name("gone", "old"))),
        patch(format!("{SHOP}/logcollectionconfigs/web/status"), |b| {
            let s = &b["status"];
            assert_eq!(s["observedGeneration"], 3);
            assert_eq!(condition(s, "Ready")["reason"], "SecretUnavailable");
            let degraded = condition(s, "Degraded");
            assert_eq!(
                (&degraded["status"], &degraded["reason"]),
                (&json!("True"), &json!("SecretUnavailable"))
            );
            assert_eq!(degraded["message"], "output Secret(s) unavailable: Secret es-ca not found");
        }),
        post(format!("{EVENTS}/shop/events"), |b| {
            assert_eq!((&b["reason"], &b["regarding"]["name"]), (&json!("SecretUnavailable"), &json!("web")));
        }),
    ];
    let report = scenario(s, steps).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.stats.mirrors_applied, report.stats.mirrors_deleted), (1, 1));
    // The missing Secret is read again soon, not only at the next resync.
    assert!(report.secrets_due.is_some_and(|d| d <= Duration::from_secs(10)), "{:?}", report.secrets_due);
}
