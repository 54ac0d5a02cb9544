"""Argo CD support: the Lua health checks run by real Lua interpreters from Debian (lua5.4, and
lua5.1 because Argo CD's gopher-lua is Lua 5.1) against sample objects; the Application and the
sync waves of config/argocd."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
HEALTH = ROOT / "config/argocd/health"
SCRIPTS = {
    "LogCollectionConfig": "selection.lua",
    "LogBackupPolicy": "selection.lua",
    "NodeLogConfig": "nodelogconfig.lua",
    "LogBackup": "logbackup.lua",
}
CASES = yaml.safe_load((HERE / "health_cases.yaml").read_text())
INTERPRETERS = ["lua5.4", "lua5.1"]


def lua_literal(value) -> str:
    """A Python value as a Lua table constructor (JSON-decoded objects are what Argo CD hands in)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{json.dumps(str(k))}] = {lua_literal(v)}" for k, v in value.items() if v is not None) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # JSON string escapes are valid Lua escapes for this data


def run_health(interpreter: str, script: Path, obj: dict, tmp_path: Path) -> tuple[str, str]:
    if shutil.which(interpreter) is None:
        raise RuntimeError(f"{interpreter} is not installed (apt-get install {interpreter})")
    obj_file = tmp_path / "object.lua"
    obj_file.write_text("return " + lua_literal(obj) + "\n")
    proc = subprocess.run([interpreter, str(HERE / "run_health.lua"), str(script), str(obj_file)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    status, message = (proc.stdout.split("\n") + [""])[:2]
    return status, message


@pytest.mark.parametrize("interpreter", INTERPRETERS)
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_health_check(interpreter, case, tmp_path):
    status, message = run_health(interpreter, HEALTH / SCRIPTS[case["kind"]], case["object"], tmp_path)
    assert status == case["expect"], f"{case['name']}: {status}: {message}"
    assert case.get("message", "") in message, message


def test_every_kind_and_every_outcome_is_covered():
    seen = {(c["kind"], c["expect"]) for c in CASES}
    for kind in SCRIPTS:
        for outcome in ("Healthy", "Progressing", "Degraded"):
            assert (kind, outcome) in seen, (kind, outcome)


def test_argocd_cm_carries_the_scripts_verbatim(tmp_path):
    cm = yaml.safe_load((ROOT / "config/argocd/argocd-cm-health.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    keys = {f"resource.customizations.health.logging.tailor.dev_{k}": s for k, s in SCRIPTS.items()}
    assert set(cm["data"]) == set(keys)
    for key, script in keys.items():
        embedded = tmp_path / "embedded.lua"
        embedded.write_text(cm["data"][key])
        # Same text up to trailing blanks, and it runs the same.
        assert [l.rstrip() for l in cm["data"][key].splitlines()] == [l.rstrip() for l in (HEALTH / script).read_text().splitlines()]
        case = next(c for c in CASES if SCRIPTS[c["kind"]] == script)
        assert run_health("lua5.4", embedded, case["object"], tmp_path)[0] == case["expect"]


def kustomize(path: str) -> list[dict]:
    if shutil.which("kubectl") is None:
        raise RuntimeError("kubectl is not installed (apt-get install kubectl)")
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / path)], capture_output=True, text=True, check=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_sync_waves_put_crds_first():
    objects = kustomize("config/argocd")
    wave = lambda o: int(o["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 4
    first = max(wave(o) for o in crds + [o for o in objects if o["kind"] == "Namespace"])
    for o in objects:
        assert "argocd.argoproj.io/sync-wave" in o["metadata"].get("annotations", {}), f"{o['kind']}/{o['metadata']['name']} has no wave"
        if o["kind"] not in ("CustomResourceDefinition", "Namespace"):
            assert wave(o) > first, o["metadata"]["name"]
    rbac = [wave(o) for o in objects if o["kind"] in ("ClusterRole", "ServiceAccount", "ValidatingAdmissionPolicy")]
    workloads = [wave(o) for o in objects if o["kind"] in ("Deployment", "DaemonSet")]
    assert max(rbac) < min(workloads), "the pods start once their RBAC exists"
    # Besides the annotations, the same objects as config/default.
    strip = lambda o: (o["kind"], o["metadata"]["name"])
    assert sorted(map(strip, objects)) == sorted(map(strip, kustomize("config/default")))


def test_application_points_at_the_waved_install():
    app = yaml.safe_load((ROOT / "config/argocd/application.yaml").read_text())
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    src = app["spec"]["source"]
    assert (ROOT / src["path"] / "kustomization.yaml").exists()
    assert src["path"] == "config/argocd"
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    assert app["spec"]["destination"]["namespace"] == "tailor-system"
