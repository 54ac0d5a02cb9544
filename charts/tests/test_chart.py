"""The Helm chart, rendered by Helm's own engine (PyPI helm-python-sdk), for default and
non-default values: every object is checked for what it must and must not grant or mount, and
validated by a real API server (server-side dry run, strict field validation)."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
import sys

import pytest
import yaml

from conftest import ROOT, gen_install, render, strip_test_annotations

GROUP = "logging.tailor.dev"

# The RBAC the install must grant, and no more (BRIEF.md / DESIGN.md): (namespace or None for
# cluster-wide, apiGroup, resource) → verbs.
READ = {"get", "list", "watch"}
STATUS = {"get", "patch", "update"}
EVENTS = {("", "events"): {"create", "patch"}, ("events.k8s.io", "events"): {"create", "patch"}}


def operator_rules(namespace: str) -> dict:
    return {
        (None, "", "pods"): READ,
        (None, "", "nodes"): READ,
        (None, GROUP, "logcollectionconfigs"): READ,
        (None, GROUP, "logbackuppolicies"): READ,
        (None, GROUP, "logcollectionconfigs/status"): STATUS,
        (None, GROUP, "logbackuppolicies/status"): STATUS,
        (None, GROUP, "nodelogconfigs"): READ | {"create", "patch", "delete"},
        (None, GROUP, "logbackups"): READ | {"create", "patch", "delete"},
        **{(None, g, r): v for (g, r), v in EVENTS.items()},
        (namespace, "coordination.k8s.io", "leases"): {"get", "create", "update"},
        # Secrets outputs name: `get` anywhere (never list/watch), mirrors in its own namespace.
        (None, "", "secrets"): {"get"},
        (namespace, "", "secrets"): READ | {"create", "patch", "delete"},
    }


def agent_rules(namespace: str) -> dict:
    return {
        (None, GROUP, "nodelogconfigs"): READ,
        (None, GROUP, "logbackups"): READ,
        (None, GROUP, "nodelogconfigs/status"): STATUS,
        (None, GROUP, "logbackups/status"): STATUS,
        **{(None, g, r): v for (g, r), v in EVENTS.items()},
        # The operator's mirrors only: Secrets of the release namespace, read-only.
        (namespace, "", "secrets"): READ,
    }

NON_DEFAULT = {
    "fullnameOverride": "logs",
    "commonLabels": {"team": "platform"},
    "imagePullSecrets": [{"name": "regcred"}],
    "operator": {
        "replicas": 3,
        "image": {"repository": "registry.example/tailor-operator", "digest": "sha256:" + "a" * 64},
        "serviceAccount": {"name": "custom-operator"},
        "metrics": {"port": 9000},
        "podDisruptionBudget": {"minAvailable": 2},
        "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "agent": {
        "image": {"tag": "9.9.9"},
        "serviceAccount": {"name": "custom-agent"},
        "stateDir": "/data/tailor/state",
        "backupRoot": "/data/backups",
        "outputDir": "",
        "hostPaths": {"containerdRun": ""},
        "extraHostPaths": ["/var/lib/docker/containers", "/srv/app-logs"],
        "priorityClassName": "",
        "updateStrategy": {"maxUnavailable": 2},
        "checkpointInterval": "2s",
        "extraArgs": ["--docker=false"],
    },
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
}

SCENARIOS = {
    "default": ({}, "tailor", "tailor-system"),
    "non-default": (NON_DEFAULT, "obs", "observability"),
    "operator-only": ({"agent": {"enabled": False}}, "tailor", "tailor-system"),
    "agent-only": ({"operator": {"enabled": False}, "agent": {"nodeRestriction": {"enabled": False}}}, "tailor", "tailor-system"),
}


def merged(values: dict) -> dict:
    """The chart's defaults overlaid with `values` (as Helm merges them), for expectations."""
    base = yaml.safe_load((ROOT / "charts/tailor/values.yaml").read_text())

    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    return merge(base, yaml.safe_load(yaml.safe_dump(values)))


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def granted(objects: list[dict], sa_name: str, namespace: str) -> dict:
    """(namespace | None, group, resource) → verbs granted to a ServiceAccount by the rendered RBAC."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects if o["kind"] in ("Role", "ClusterRole")}
    out: dict = {}
    for b in objects:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == sa_name and s.get("namespace") == namespace for s in b["subjects"]):
            continue
        ref = b["roleRef"]
        scope = b["metadata"]["namespace"] if b["kind"] == "RoleBinding" else None
        role_ns = scope if ref["kind"] == "Role" else None
        role = roles[(ref["kind"], role_ns, ref["name"])]
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule, rule
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    out.setdefault((scope, g, r), set()).update(rule["verbs"])
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_is_a_known_kind_with_labels(scenario):
    values, release, namespace = SCENARIOS[scenario]
    objects = render(values, release, namespace)
    allowed = {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment",
        "PodDisruptionBudget", "Service", "DaemonSet", "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding", "ServiceMonitor",
    }
    assert objects
    for o in objects:
        assert o["kind"] in allowed, o["kind"]
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "tailor" and labels["app.kubernetes.io/instance"] == release
        if o["kind"] in ("ServiceAccount", "Role", "RoleBinding", "Deployment", "DaemonSet", "Service", "PodDisruptionBudget", "ServiceMonitor"):
            assert o["metadata"]["namespace"] == namespace, o["metadata"]["name"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_grants_exactly_the_list(scenario):
    values, release, namespace = SCENARIOS[scenario]
    v = merged(values)
    objects = render(values, release, namespace)
    for o in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        for rule in o["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
            if "secrets" in rule["resources"]:
                # Cluster-wide, Secrets may only be read one by one (no list/watch, no writes);
                # anything more is confined to the release namespace.
                assert o["kind"] == "Role" or set(rule["verbs"]) == {"get"}, (o["metadata"]["name"], rule)
                assert rule["resources"] == ["secrets"], rule
    base = v.get("fullnameOverride") or release
    sas = {o["metadata"]["name"] for o in by_kind(objects, "ServiceAccount")}
    if v["operator"]["enabled"]:
        sa = v["operator"]["serviceAccount"]["name"] or f"{base}-operator"
        assert sa in sas
        assert granted(objects, sa, namespace) == operator_rules(namespace)
    if v["agent"]["enabled"]:
        sa = v["agent"]["serviceAccount"]["name"] or f"{base}-agent"
        assert sa in sas
        assert granted(objects, sa, namespace) == agent_rules(namespace)
    # Nothing else is bound to anybody.
    for b in by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding"):
        for s in b["subjects"]:
            assert s["kind"] == "ServiceAccount" and s["name"] in sas and s["namespace"] == namespace, s


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_admission_policy_names_the_agent_service_account(scenario):
    values, release, namespace = SCENARIOS[scenario]
    v = merged(values)
    objects = render(values, release, namespace)
    policies = by_kind(objects, "ValidatingAdmissionPolicy")
    if not (v["agent"]["enabled"] and v["agent"]["nodeRestriction"]["enabled"]):
        assert policies == [] and by_kind(objects, "ValidatingAdmissionPolicyBinding") == []
        return
    policy = one(objects, "ValidatingAdmissionPolicy")
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    sa = v["agent"]["serviceAccount"]["name"] or f"{v.get('fullnameOverride') or release}-agent"
    (cond,) = policy["spec"]["matchConditions"]
    assert cond["expression"] == f"request.userInfo.username == 'system:serviceaccount:{namespace}:{sa}'"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert set(rule["resources"]) == {"nodelogconfigs", "nodelogconfigs/status", "logbackups", "logbackups/status"}
    assert "authentication.kubernetes.io/node-name" in policy["spec"]["variables"][0]["expression"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_daemonset_mounts_what_the_agent_reads_and_writes(scenario):
    values, release, namespace = SCENARIOS[scenario]
    v = merged(values)
    objects = render(values, release, namespace)
    if not v["agent"]["enabled"]:
        assert by_kind(objects, "DaemonSet") == []
        return
    ag = v["agent"]
    ds = one(objects, "DaemonSet")
    spec = ds["spec"]
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": ag["updateStrategy"]["maxUnavailable"]}}
    pod = spec["template"]["spec"]
    assert pod["tolerations"] == ag["tolerations"]
    assert pod.get("priorityClassName", "") == ag["priorityClassName"]
    assert pod["terminationGracePeriodSeconds"] == ag["terminationGracePeriodSeconds"]
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}

    args = c["args"]
    assert args[0] == "run"
    flags = dict(a.split("=", 1) for a in args[1:] if a.startswith("--") and "=" in a)
    assert flags["--node-name"] == "$(NODE_NAME)"
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    host_root = flags["--host-root"]

    volumes = {vol["name"]: vol for vol in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    host_paths = {vol["hostPath"]["path"]: vol for vol in volumes.values() if "hostPath" in vol}

    # Read-only: exactly the host folders the agent reads (DESIGN.md's mapping table), under --host-root.
    reads = [ag["hostPaths"]["podLogs"], ag["hostPaths"]["kubeletPods"], ag["hostPaths"]["containerdRun"], *ag["extraHostPaths"]]
    reads = [p for p in reads if p]
    ro_mounts = {p: m for p, m in mounts.items() if m.get("readOnly")}
    assert set(ro_mounts) == {host_root + p for p in reads}
    for p in reads:
        m = ro_mounts[host_root + p]
        assert volumes[m["name"]]["hostPath"] == {"path": p, "type": "Directory"}
        if p != ag["hostPaths"]["podLogs"]:
            assert m["mountPropagation"] == "HostToContainer", p

    # Writable: its state, the backup root and the file-output root (own DirectoryOrCreate
    # hostPaths, at the paths its flags name), and /tmp. Nothing else.
    writes = {"--state-dir": ag["stateDir"], "--backup-root": ag["backupRoot"]}
    if ag["outputDir"]:
        writes["--output-dir"] = ag["outputDir"]
    else:
        assert "--output-dir" not in flags
    rw_mounts = {p: m for p, m in mounts.items() if not m.get("readOnly")}
    assert set(rw_mounts) == set(writes.values()) | {"/tmp"}
    for flag, path in writes.items():
        assert flags[flag] == path
        vol = volumes[rw_mounts[path]["name"]]
        assert vol["hostPath"] == {"path": path, "type": "DirectoryOrCreate"}, flag
    assert "emptyDir" in volumes[rw_mounts["/tmp"]["name"]]
    assert len({v["name"] for v in host_paths.values()}) == len(reads) + len(writes)
    assert flags["--metrics-addr"] == f"0.0.0.0:{ag['metrics']['port']}"
    assert c["livenessProbe"]["httpGet"]["port"] == "metrics" and c["readinessProbe"]["httpGet"]["port"] == "metrics"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_deployment(scenario):
    values, release, namespace = SCENARIOS[scenario]
    v = merged(values)
    objects = render(values, release, namespace)
    op = v["operator"]
    if not op["enabled"]:
        assert by_kind(objects, "Deployment") == [] and by_kind(objects, "PodDisruptionBudget") == []
        return
    d = one(objects, "Deployment")
    assert d["spec"]["replicas"] == op["replicas"]
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][0] == "run"
    assert "--lease-namespace=$(POD_NAMESPACE)" in c["args"]
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in c["env"]
    assert c["livenessProbe"]["httpGet"]["path"] == op["probes"]["livenessPath"]
    assert c["readinessProbe"]["httpGet"]["path"] == op["probes"]["readinessPath"]
    assert c["resources"] == op["resources"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "volumes" not in pod, "the operator mounts nothing"
    if op["image"].get("digest"):
        assert c["image"] == f"{op['image']['repository']}@{op['image']['digest']}"
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == op["podDisruptionBudget"]["minAvailable"]
    assert pdb["spec"]["selector"] == d["spec"]["selector"]


def test_service_monitors_only_when_asked():
    assert by_kind(render({}), "ServiceMonitor") == []
    monitors = by_kind(render(NON_DEFAULT, "obs", "observability"), "ServiceMonitor")
    assert sorted(m["metadata"]["name"] for m in monitors) == ["logs-agent", "logs-operator"]
    services = by_kind(render(NON_DEFAULT, "obs", "observability"), "Service")
    for m in monitors:
        assert m["metadata"]["labels"]["release"] == "prom"
        sel = m["spec"]["selector"]["matchLabels"]
        assert any(all(s["metadata"]["labels"].get(k) == val for k, val in sel.items()) for s in services), m["metadata"]["name"]
        assert m["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize(
    "bad",
    [
        {"agent": {"stateDirr": "/x"}},
        {"agent": {"stateDir": "relative/path"}},
        {"operator": {"replicas": "two"}},
        {"agent": {"updateStrategy": {"maxUnavailable": "ten"}}},
        {"operator": {"image": {"pullPolicy": "Sometimes"}}},
        {"agent": {"extraHostPaths": ["relative"]}},
    ],
)
def test_schema_rejects_bad_values(bad):
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError):
        render(bad)


def test_several_replicas_need_leader_election():
    import helm_python as helm

    with pytest.raises(helm.HelmRenderError, match="leaderElection"):
        render({"operator": {"replicas": 2, "leaderElection": {"enabled": False}}})
    (d,) = by_kind(render({"operator": {"replicas": 1, "leaderElection": {"enabled": False}}}), "Deployment")
    assert not any(a.startswith("--lease-namespace") for a in d["spec"]["template"]["spec"]["containers"][0]["args"])


def test_every_value_is_documented_in_the_schema():
    schema = yaml.safe_load((ROOT / "charts/tailor/values.schema.json").read_text())
    values = yaml.safe_load((ROOT / "charts/tailor/values.yaml").read_text())

    def walk(vals, sch, path):
        assert sch.get("description"), f"{path or '<root>'} has no description"
        if isinstance(vals, dict) and "properties" in sch:
            for k, v in vals.items():
                assert k in sch["properties"], f"{path}.{k} is not in values.schema.json"
                walk(v, sch["properties"][k], f"{path}.{k}")

    schema.setdefault("description", schema["title"])
    walk(values, schema, "")


def test_generated_files_match_their_sources():
    """The chart's CRDs equal crds/tailor.crds.yaml; config/ equals the chart rendered."""
    assert (ROOT / "charts/tailor/crds/tailor.crds.yaml").read_bytes() == (ROOT / "crds/tailor.crds.yaml").read_bytes()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/gen-install.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rendered_objects_pass_the_api_servers_validation(cluster):
    """Each scenario's objects, sent to a real API server as a strict server-side dry run."""
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "charts/tailor/crds/tailor.crds.yaml"))

    def dry_run(scenario):
        values, release, namespace = SCENARIOS[scenario]
        cluster.kubectl("create", "namespace", namespace, check=False)
        objects = [strip_test_annotations(o) for o in render(values, release, namespace) if o["kind"] != "ServiceMonitor"]
        proc = cluster.kubectl(
            "apply", "--server-side", "--dry-run=server", "--validate=strict", f"--field-manager=test-{scenario}", "-f", "-",
            input=yaml.safe_dump_all(objects), check=False,
        )
        assert proc.returncode == 0, f"{scenario}: {proc.stderr}"
        assert proc.stdout.count("(server dry run)") == len(objects), proc.stdout

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(dry_run, SCENARIOS))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(scenario):
    """`helm lint --strict`: only the INFO that the chart has no icon."""
    import helm_python as helm

    result = helm.lint(str(ROOT / "charts/tailor"), SCENARIOS[scenario][0], strict=True)
    assert result["errors"] == []
    assert [m["error"] for m in result["messages"] if m["severity"] > 1] == []
