//! Scenarios that need only the API server and the install: what admission rejects (schema and
//! CEL rules of the real CRDs) and what each ServiceAccount may do (RBAC and the
//! ValidatingAdmissionPolicy that keeps agents to their own node).

use anyhow::{Context, Result, bail};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tailor_crds::{LogBackup, NodeLogConfig};
use tailor_e2e::Scene;
use tailor_e2e::kubeconfig::{AGENT_USER, Identity, OPERATOR_USER, SYSTEM_NAMESPACE, write_impersonating};

fn lcc(namespace: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "logging.tailor.dev/v1alpha1", "kind": "LogCollectionConfig",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

fn lbp(namespace: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "logging.tailor.dev/v1alpha1", "kind": "LogBackupPolicy",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

fn file_output() -> Value {
    json!([{"name": "local", "type": "file"}])
}

/// Scenario 5, admission part: what the schema and its CEL rules can say is rejected by the API
/// server with the rule's message; what they cannot say (a regex that does not compile) is
/// accepted here and left to the operator's `Invalid` condition (see `system.rs`).
#[tokio::test]
async fn bad_input_is_rejected_at_admission() -> Result<()> {
    let mut scene = Scene::new("admission").await?;
    let ns = scene.namespace("apps").await?;
    let rejected: Vec<(&str, Value, &str)> = vec![
        (
            "relative file path",
            lcc(
                &ns,
                "relative",
                json!({"sources": {"files": [{"path": "opt/logs/*.log"}]}, "outputs": file_output()}),
            ),
            "path must be an absolute container path",
        ),
        (
            "file path with ..",
            lcc(
                &ns,
                "dotdot",
                json!({"sources": {"files": [{"path": "/opt/../etc/shadow"}]}, "outputs": file_output()}),
            ),
            "must not contain '..'",
        ),
        ("no outputs", lcc(&ns, "no-outputs", json!({"outputs": []})), "spec.outputs"),
        (
            "regex format without pattern",
            lcc(&ns, "regex-no-pattern", json!({"parse": {"format": "regex"}, "outputs": file_output()})),
            "format regex needs pattern",
        ),
        (
            "unknown parse format",
            lcc(&ns, "xml", json!({"parse": {"format": "xml"}, "outputs": file_output()})),
            "Unsupported value: \"xml\"",
        ),
        (
            "In without values",
            lcc(
                &ns,
                "in-empty",
                json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}, "outputs": file_output()}),
            ),
            "In and NotIn need values",
        ),
        (
            "elasticsearch output without settings",
            lcc(&ns, "es", json!({"outputs": [{"name": "es", "type": "elasticsearch"}]})),
            "type elasticsearch needs elasticsearch",
        ),
        (
            "output name not a DNS label",
            lcc(&ns, "bad-name", json!({"outputs": [{"name": "Not_OK", "type": "file"}]})),
            "spec.outputs[0].name",
        ),
        (
            "buffer size not a quantity",
            lcc(
                &ns,
                "buffer",
                json!({"outputs": [{"name": "o", "type": "file", "buffer": {"maxSize": "lots"}}]}),
            ),
            "spec.outputs[0].buffer.maxSize",
        ),
        (
            "absolute backup layout",
            lbp(&ns, "abs-layout", json!({"layout": "/etc/{pod}"})),
            "layout must be relative to the backup root",
        ),
        (
            "backup layout with ..",
            lbp(&ns, "dotdot-layout", json!({"layout": "{namespace}/../../etc"})),
            "layout must not contain '..'",
        ),
        ("interval without unit", lbp(&ns, "interval", json!({"interval": "10"})), "spec.interval"),
        (
            "retention age without unit",
            lbp(&ns, "retention", json!({"retention": {"maxAge": "forever"}})),
            "spec.retention.maxAge",
        ),
    ];
    let mut failures = Vec::new();
    for (case, manifest, expected) in &rejected {
        match scene.apply(&[manifest]) {
            Ok(out) => failures.push(format!("{case}: accepted ({})", out.trim())),
            Err(e) => {
                let msg = format!("{e:#}");
                if !msg.contains(expected) {
                    failures.push(format!("{case}: rejected, but without {expected:?}: {msg}"));
                }
            }
        }
    }
    // Valid resources, including one whose regex the schema cannot check, are accepted and
    // defaulted by the schema.
    let bad_regex = lcc(
        &ns,
        "bad-regex",
        json!({"parse": {"format": "regex", "pattern": "(?P<unclosed"}, "outputs": file_output()}),
    );
    let good_policy = lbp(&ns, "defaults", json!({}));
    scene.apply(&[&bad_regex, &good_policy]).context("valid manifests must be accepted")?;
    let policy = scene.kubectl.run(&["get", "lbp", "defaults", "-n", &ns, "-o", "json"])?;
    let policy: Value = serde_json::from_str(&policy)?;
    for (field, want) in [
        ("layout", json!("{namespace}/{workload}/{pod}/{container}")),
        ("interval", json!("60s")),
        ("keepTerminated", json!(true)),
    ] {
        if policy["spec"][field] != want {
            failures.push(format!("default of spec.{field}: want {want}, got {}", policy["spec"][field]));
        }
    }
    if !failures.is_empty() {
        bail!("admission did not behave:\n  {}", failures.join("\n  "));
    }
    scene.pass();
    Ok(())
}

/// Scenario 6: least privilege, as `kubectl auth can-i --as` shows it, and the admission policy
/// that keeps each agent to its own node's objects (which RBAC alone cannot express).
#[tokio::test]
async fn least_privilege() -> Result<()> {
    let mut scene = Scene::new("privilege").await?;
    scene.cluster.require_rbac()?;
    let ns = scene.namespace("apps").await?;
    let k = scene.kubectl.clone();
    let mut wrong = Vec::new();
    let mut expect = |user: &str,
                      allowed: bool,
                      verb: &str,
                      resource: &str,
                      sub: Option<&str>,
                      namespace: Option<&str>| {
        match k.can_i(user, verb, resource, sub, namespace) {
            Ok(answer) if answer == allowed => {}
            Ok(answer) => wrong.push(format!(
                "{user} {verb} {resource}{} in {}: want {allowed}, got {answer}",
                sub.map(|s| format!("/{s}")).unwrap_or_default(),
                namespace.unwrap_or("all namespaces")
            )),
            Err(e) => wrong.push(format!("{e:#}")),
        }
    };
    let g = |r: &str| format!("{r}.logging.tailor.dev");
    // The agent: reads its configuration, writes statuses, nothing else.
    expect(AGENT_USER, false, "get", "secrets", None, None);
    expect(AGENT_USER, false, "get", "secrets", None, Some(&ns));
    expect(AGENT_USER, false, "list", "secrets", None, Some(&ns));
    // Only the operator's mirrors, read-only.
    expect(AGENT_USER, true, "watch", "secrets", None, Some(SYSTEM_NAMESPACE));
    expect(AGENT_USER, false, "create", "secrets", None, Some(SYSTEM_NAMESPACE));
    expect(AGENT_USER, true, "watch", &g("nodelogconfigs"), None, None);
    expect(AGENT_USER, true, "patch", &g("nodelogconfigs"), Some("status"), None);
    expect(AGENT_USER, false, "patch", &g("nodelogconfigs"), None, None);
    expect(AGENT_USER, false, "update", &g("nodelogconfigs"), None, None);
    expect(AGENT_USER, false, "create", &g("nodelogconfigs"), None, None);
    expect(AGENT_USER, false, "delete", &g("nodelogconfigs"), None, None);
    expect(AGENT_USER, true, "patch", &g("logbackups"), Some("status"), Some(&ns));
    expect(AGENT_USER, false, "patch", &g("logbackups"), None, Some(&ns));
    for user_kind in ["logcollectionconfigs", "logbackuppolicies"] {
        for verb in ["create", "update", "patch", "delete"] {
            expect(AGENT_USER, false, verb, &g(user_kind), None, Some(&ns));
        }
        expect(AGENT_USER, false, "patch", &g(user_kind), Some("status"), Some(&ns));
    }
    expect(AGENT_USER, false, "list", "pods", None, None);
    // The operator: reads the cluster's pods and nodes and the user resources, writes rendered
    // objects and statuses, never a user's spec.
    // Secrets: one by one (the ones outputs name), never listed or watched outside its own
    // namespace, where it keeps their mirrors.
    expect(OPERATOR_USER, true, "get", "secrets", None, None);
    expect(OPERATOR_USER, false, "list", "secrets", None, Some(&ns));
    expect(OPERATOR_USER, false, "watch", "secrets", None, None);
    expect(OPERATOR_USER, false, "create", "secrets", None, Some(&ns));
    expect(OPERATOR_USER, true, "create", "secrets", None, Some(SYSTEM_NAMESPACE));
    expect(OPERATOR_USER, true, "delete", "secrets", None, Some(SYSTEM_NAMESPACE));
    expect(OPERATOR_USER, true, "watch", "pods", None, None);
    expect(OPERATOR_USER, true, "watch", "nodes", None, None);
    expect(OPERATOR_USER, false, "patch", "pods", None, Some(&ns));
    expect(OPERATOR_USER, true, "create", &g("nodelogconfigs"), None, None);
    expect(OPERATOR_USER, true, "delete", &g("nodelogconfigs"), None, None);
    expect(OPERATOR_USER, true, "create", &g("logbackups"), None, Some(&ns));
    for user_kind in ["logcollectionconfigs", "logbackuppolicies"] {
        expect(OPERATOR_USER, true, "watch", &g(user_kind), None, None);
        expect(OPERATOR_USER, true, "patch", &g(user_kind), Some("status"), Some(&ns));
        for verb in ["create", "update", "patch", "delete"] {
            expect(OPERATOR_USER, false, verb, &g(user_kind), None, Some(&ns));
        }
    }
    expect(OPERATOR_USER, true, "create", "leases.coordination.k8s.io", None, Some(SYSTEM_NAMESPACE));
    expect(OPERATOR_USER, false, "create", "leases.coordination.k8s.io", None, Some("default"));

    // One agent may not write another node's objects, even where RBAC lets it write statuses:
    // server-side dry runs go through the ValidatingAdmissionPolicy like real writes.
    let own = scene.node("a").await?;
    let other = scene.node("b").await?;
    let admin_nlc: Api<NodeLogConfig> = Api::all(scene.client.clone());
    let admin_lb: Api<LogBackup> = Api::namespaced(scene.client.clone(), &ns);
    for node in [&own.name, &other.name] {
        let nlc: NodeLogConfig = serde_json::from_value(json!({
            "apiVersion": "logging.tailor.dev/v1alpha1", "kind": "NodeLogConfig",
            "metadata": {"name": node}, "spec": {"formatVersion": 1}}))?;
        admin_nlc.create(&PostParams::default(), &nlc).await?;
        let lb: LogBackup = serde_json::from_value(json!({
            "apiVersion": "logging.tailor.dev/v1alpha1", "kind": "LogBackup",
            "metadata": {"name": format!("p-{node}"), "namespace": ns}, "spec": {"policy": "p", "nodeName": node}}))?;
        admin_lb.create(&PostParams::default(), &lb).await?;
    }
    let agent_kubeconfig = scene.dir().join("agent-a.kubeconfig");
    write_impersonating(
        scene.cluster.kubeconfig(),
        &Identity::Agent { node: own.name.clone() },
        &agent_kubeconfig,
    )?;
    let agent = tailor_e2e::kubeconfig::client(&agent_kubeconfig).await?;
    let nlc_status =
        |node: &str| Patch::Merge(json!({"status": {"activeTargets": 1}, "metadata": {"name": node}}));
    let lb_status = Patch::Merge(json!({"status": {"phase": "Synced"}}));
    let nlc_api: Api<NodeLogConfig> = Api::all(agent.clone());
    let lb_api: Api<LogBackup> = Api::namespaced(agent, &ns);
    let pp =
        PatchParams { field_manager: Some("tailor-agent".into()), dry_run: true, ..PatchParams::default() };
    let mut admission = Vec::new();
    if let Err(e) = nlc_api.patch_status(&own.name, &pp, &nlc_status(&own.name)).await {
        admission.push(format!("agent of {} cannot write its own NodeLogConfig status: {e}", own.name));
    }
    if nlc_api.patch_status(&other.name, &pp, &nlc_status(&other.name)).await.is_ok() {
        admission.push(format!("agent of {} wrote the NodeLogConfig status of {}", own.name, other.name));
    }
    if let Err(e) = lb_api.patch_status(&format!("p-{}", own.name), &pp, &lb_status).await {
        admission.push(format!("agent of {} cannot write its own LogBackup status: {e}", own.name));
    }
    if lb_api.patch_status(&format!("p-{}", other.name), &pp, &lb_status).await.is_ok() {
        admission.push(format!("agent of {} wrote the LogBackup status of {}", own.name, other.name));
    }
    if !wrong.is_empty() || !admission.is_empty() {
        bail!(
            "privileges are not least:\n  {}",
            wrong.into_iter().chain(admission).collect::<Vec<_>>().join("\n  ")
        );
    }
    scene.pass();
    Ok(())
}
