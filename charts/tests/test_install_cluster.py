"""Installs for real on a throwaway control plane (`helm install` + `helm upgrade` of the chart as
release `obs`, and the kustomize base) and checks, with real ServiceAccount tokens bound to pods on nodes, what
each identity can do: RBAC through `kubectl auth can-i`, the node restriction through writes."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from conftest import ROOT, render, strip_test_annotations


def apply(cluster, text: str):
    cluster.kubectl("apply", "--server-side", "--field-manager=test", "-f", "-", input=text)


def fixtures(namespace: str) -> str:
    """Two nodes, each with a NodeLogConfig, and a LogBackup per node in a team namespace."""
    docs = []
    for node in ("node-a", "node-b"):
        docs += [
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}},
            {"apiVersion": "logging.tailor.dev/v1alpha1", "kind": "NodeLogConfig", "metadata": {"name": node}, "spec": {"formatVersion": 1}},
            {
                "apiVersion": "logging.tailor.dev/v1alpha1",
                "kind": "LogBackup",
                "metadata": {"name": f"web-{node}", "namespace": "team-a"},
                "spec": {"policy": "web", "nodeName": node},
            },
        ]
    return yaml.safe_dump_all([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}, *docs])


def bound_token(cluster, namespace: str, sa: str, node: str) -> str:
    """A token like the kubelet gives a pod of `sa` on `node`: bound to the pod, so the API server
    puts the node's name in the user's extra."""
    pod = f"{sa}-{node}"
    apply(
        cluster,
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": namespace},
                "spec": {"nodeName": node, "serviceAccountName": sa, "containers": [{"name": "c", "image": "tailor/tailor-agent:test"}]},
            }
        ),
    )
    uid = cluster.kubectl("get", "pod", "-n", namespace, pod, "-o", "jsonpath={.metadata.uid}").stdout
    return cluster.kubectl(
        "create", "token", sa, "-n", namespace, "--bound-object-kind=Pod", f"--bound-object-name={pod}", f"--bound-object-uid={uid}"
    ).stdout.strip()


def status_patch(cluster, token: str, kind: str, name: str, namespace: str | None = None):
    args = ["patch", kind, name, "--subresource=status", "--type=merge", "-p", json.dumps({"status": {"lastError": "probe"} if kind == "logbackup" else {"activeTargets": 1}})]
    if namespace:
        args += ["-n", namespace]
    return cluster.kubectl(*args, token=token, check=False)


def wait_for_service_account(cluster, namespace: str, sa: str):
    for _ in range(50):
        if cluster.kubectl("get", "serviceaccount", "-n", namespace, sa, check=False).returncode == 0:
            return
    raise AssertionError(f"no ServiceAccount {namespace}/{sa}")


INSTALLS = {
    # name: (how to get the objects, namespace, operator SA, agent SA)
    "kustomize": ("kustomize", "tailor-system", "tailor-operator", "tailor-agent"),
    "helm": ("helm", "observability", "obs-operator", "obs-agent"),
}


@pytest.fixture(scope="module")
def installed(cluster):
    # A real `helm install` (Helm's Go library through helm-python-sdk): CRDs from the chart's
    # crds/ folder, then the templates, recorded as release `obs`; then an upgrade.
    import helm_python as helm

    with helm.Config(kubeconfig_path=cluster.kubeconfig, namespace="observability") as cfg:
        release = cfg.install(str(ROOT / "charts/tailor"), "obs", namespace="observability", create_namespace=True, timeout=120)
        assert release["status"] == "deployed", release
        release = cfg.upgrade(str(ROOT / "charts/tailor"), "obs", {"agent": {"logLevel": "debug"}}, namespace="observability", timeout=120)
        assert release["revision"] == 2 and release["status"] == "deployed", release
    for crd in ("logcollectionconfigs", "logbackuppolicies", "logbackups", "nodelogconfigs"):
        cluster.kubectl("get", "crd", f"{crd}.logging.tailor.dev")
    ds = json.loads(cluster.kubectl("get", "ds", "-n", "observability", "obs-agent", "-o", "json").stdout)
    assert {"name": "RUST_LOG", "value": "debug"} in ds["spec"]["template"]["spec"]["containers"][0]["env"]
    # The kustomize install next to it (same CRDs, other names and namespace).
    cluster.kubectl("apply", "--server-side", "-k", str(ROOT / "config/default"))
    apply(cluster, fixtures("team-a"))
    return cluster


@pytest.mark.parametrize("install", INSTALLS)
def test_rbac_as_seen_by_the_api_server(installed, install):
    _, ns, operator, agent = INSTALLS[install]
    expectations = [
        (operator, True, "list pods --all-namespaces"),
        (operator, True, "watch nodes"),
        (operator, True, "create nodelogconfigs.logging.tailor.dev"),
        (operator, True, "delete logbackups.logging.tailor.dev -n team-a"),
        (operator, True, "patch logcollectionconfigs.logging.tailor.dev --subresource=status -n team-a"),
        (operator, True, f"update leases.coordination.k8s.io -n {ns}"),
        (operator, False, "update leases.coordination.k8s.io -n kube-system"),
        (operator, False, "patch logcollectionconfigs.logging.tailor.dev -n team-a"),  # never a user's spec
        (operator, True, "get secrets -n team-a"),  # one by one, the Secrets outputs name
        (operator, False, "list secrets -n team-a"),
        (operator, False, "watch secrets --all-namespaces"),
        (operator, False, "patch secrets -n team-a"),
        (operator, True, f"create secrets -n {ns}"),  # mirrors, in its own namespace only
        (operator, True, f"list secrets -n {ns}"),
        (operator, False, "patch pods -n team-a"),
        (agent, True, "watch nodelogconfigs.logging.tailor.dev"),
        (agent, True, "patch nodelogconfigs.logging.tailor.dev --subresource=status"),
        (agent, True, "update logbackups.logging.tailor.dev --subresource=status -n team-a"),
        (agent, True, "create events.events.k8s.io -n team-a"),
        (agent, False, "patch nodelogconfigs.logging.tailor.dev"),  # never a spec
        (agent, False, "create logbackups.logging.tailor.dev -n team-a"),
        (agent, False, "list secrets --all-namespaces"),
        (agent, False, "get secrets -n team-a"),
        (agent, True, f"watch secrets -n {ns}"),  # the operator's mirrors
        (agent, False, f"create secrets -n {ns}"),
        (agent, False, "list pods --all-namespaces"),
    ]

    def answer(who, question):
        proc = installed.kubectl("auth", "can-i", f"--as=system:serviceaccount:{ns}:{who}", *question.split(), check=False)
        return proc.stdout.strip() == "yes"

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda e: answer(e[0], e[2]), expectations))
    wrong = [f"{who} {'can' if want else 'cannot'} {q}" for (who, want, q), got in zip(expectations, answers) if got != want]
    assert not wrong, "expected, but the API server says otherwise:\n" + "\n".join(wrong)


@pytest.mark.parametrize("install", INSTALLS)
def test_each_agent_writes_only_its_own_nodes_objects(installed, install):
    _, ns, _, agent = INSTALLS[install]
    wait_for_service_account(installed, ns, agent)
    token = bound_token(installed, ns, agent, "node-a")

    ok = status_patch(installed, token, "nodelogconfig", "node-a")
    assert ok.returncode == 0, ok.stderr
    denied = status_patch(installed, token, "nodelogconfig", "node-b")
    assert denied.returncode != 0 and "may only write NodeLogConfig node-a, not node-b" in denied.stderr, denied.stderr

    ok = status_patch(installed, token, "logbackup", "web-node-a", "team-a")
    assert ok.returncode == 0, ok.stderr
    denied = status_patch(installed, token, "logbackup", "web-node-b", "team-a")
    assert denied.returncode != 0 and "may only write LogBackups of its own node" in denied.stderr, denied.stderr

    # A token that names no node (not bound to a pod) may write nothing.
    unbound = installed.kubectl("create", "token", agent, "-n", ns).stdout.strip()
    denied = status_patch(installed, unbound, "nodelogconfig", "node-a")
    assert denied.returncode != 0 and "name no node" in denied.stderr, denied.stderr

    # The policy is about the agent only: the operator still writes every node's objects.
    _, _, operator, _ = INSTALLS[install]
    op_token = installed.kubectl("create", "token", operator, "-n", ns).stdout.strip()
    ok = installed.kubectl("patch", "nodelogconfig", "node-b", "--type=merge", "-p", '{"spec":{"targetCount":0}}', token=op_token, check=False)
    assert ok.returncode == 0, ok.stderr


def test_admission_policy_type_checks_cleanly(installed):
    for name in ("tailor-agent-node-restriction", "obs-agent-node-restriction"):
        for _ in range(50):
            status = json.loads(installed.kubectl("get", "validatingadmissionpolicy", name, "-o", "json").stdout).get("status", {})
            if "typeChecking" in status:
                break
        assert status.get("typeChecking", {}).get("expressionWarnings") is None, status


def test_samples_are_accepted_by_the_api_server(cluster):
    """The samples against the real CRD schemas (defaults, CEL rules): strict server dry run."""
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "charts/tailor/crds/tailor.crds.yaml"))
    cluster.kubectl("create", "namespace", "shop", check=False)
    for path in sorted((ROOT / "config/samples").rglob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for d in docs:
            # The demo's Pods carry the UIDs a real API server would have given them; a create
            # cannot choose its UID, so it is left out here.
            d["metadata"].pop("uid", None)
        proc = cluster.kubectl(
            "apply", "--server-side", "--dry-run=server", "--validate=strict", "--field-manager=samples", "-f", "-",
            input=yaml.safe_dump_all(docs), check=False,
        )
        assert proc.returncode == 0, f"{path}: {proc.stderr}"
        assert proc.stdout.count("(server dry run)") == len(docs), proc.stdout


def test_api_server_rejects_a_bad_sample(cluster):
    """The dry run above can fail: a layout escaping the backup root is refused by the CRD."""
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "charts/tailor/crds/tailor.crds.yaml"))
    cluster.kubectl("create", "namespace", "shop", check=False)
    bad = yaml.safe_load((ROOT / "config/samples/logbackuppolicy.yaml").read_text())
    bad["spec"]["layout"] = "../../etc"
    proc = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert proc.returncode != 0 and "must not contain '..'" in proc.stderr, proc.stderr
