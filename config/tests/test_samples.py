"""The samples: what they select and how the offline demo's node filesystem matches the pods."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "config/samples"


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_samples() -> list[dict]:
    return [d for p in sorted(SAMPLES.rglob("*.yaml")) for d in load(p)]


def test_samples_cover_the_features_the_readme_shows():
    by_kind = {}
    for d in all_samples():
        by_kind.setdefault(d["kind"], []).append(d)
    (lcc,) = by_kind["LogCollectionConfig"]
    assert lcc["spec"]["parse"]["format"] == "json"
    assert lcc["spec"]["multiline"]["mode"] == "java"
    assert [o["type"] for o in lcc["spec"]["outputs"]] == ["file"]
    assert lcc["spec"]["sources"]["files"]
    (lbp,) = by_kind["LogBackupPolicy"]
    assert lbp["spec"]["sources"]["files"]
    assert {n["metadata"]["name"] for n in by_kind["Node"]} == {"demo-node-1", "demo-node-2"}
    assert len(by_kind["Pod"]) >= 3


def test_demo_lays_out_the_pods_of_the_fixture():
    """scripts/demo.sh writes files at the host paths of these pods; a changed UID or container
    ID in one place and not the other would silently make the demo collect nothing."""
    demo = (ROOT / "scripts/demo.sh").read_text()
    pods = {p["metadata"]["name"]: p for p in all_samples() if p["kind"] == "Pod"}
    for var, pod in [("CHECKOUT_UID", "checkout-6d9f7b8c4-k2x7p"), ("PAYMENTS_UID", "payments-0"), ("DEBUG_UID", "debug-shell")]:
        m = re.search(rf"^{var}=(\S+)$", demo, re.M)
        assert m and m.group(1) == pods[pod]["metadata"]["uid"], var
    ids = {
        ("payments-0", "app"): "PAYMENTS_ID",
        ("checkout-6d9f7b8c4-k2x7p", "app"): "CHECKOUT_ID",
        ("checkout-6d9f7b8c4-k2x7p", "istio-proxy"): "SIDECAR_ID",
        ("debug-shell", "shell"): "DEBUG_ID",
    }
    for (pod, container), var in ids.items():
        m = re.search(rf"^{var}=(\S+)$", demo, re.M)
        (status,) = [c for c in pods[pod]["status"]["containerStatuses"] if c["name"] == container]
        assert m and status["containerID"] == f"containerd://{m.group(1)}", var
    assert re.search(r"^CHECKOUT_POD=checkout-6d9f7b8c4-k2x7p$", demo, re.M)
    assert re.search(r"^NODE=demo-node-1$", demo, re.M)
    for pod in pods.values():
        assert pod["spec"]["nodeName"] in {"demo-node-1", "demo-node-2"}
        for c in pod["status"]["containerStatuses"]:
            assert re.fullmatch(r"containerd://[0-9a-f]{64}", c["containerID"])
