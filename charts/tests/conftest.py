"""Shared fixtures of the install tests: the chart rendered by Helm's engine, and a throwaway
Kubernetes control plane (../shared/k8s/up) to validate rendered objects against."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("gen_install", ROOT / "scripts" / "gen-install.py")
gen_install = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_install)


def render(values: dict | None = None, release: str = "tailor", namespace: str = "tailor-system") -> list[dict]:
    """Every object the chart renders (templates only; CRDs come from its crds/ folder)."""
    manifests = gen_install.render_chart(values, release=release, namespace=namespace)
    objects = []
    for name, text in sorted(manifests.items()):
        if name.endswith(".txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                doc["metadata"]["annotations"]["test/template"] = name
                objects.append(doc)
    return objects


def strip_test_annotations(obj: dict) -> dict:
    obj = yaml.safe_load(yaml.safe_dump(obj))
    ann = obj["metadata"].get("annotations", {})
    ann.pop("test/template", None)
    if not ann:
        obj["metadata"].pop("annotations", None)
    return obj


def find_k8s_up() -> Path:
    for candidate in [ROOT.parent / "shared" / "k8s", ROOT.parent.parent / "shared" / "k8s", Path("/work/shared/k8s")]:
        if (candidate / "up").exists():
            return candidate
    raise RuntimeError("no ../shared/k8s/up next to the repository: the install tests need a control plane")


class Cluster:
    def __init__(self, kubeconfig: str, tmp: Path):
        self.kubeconfig = kubeconfig
        self.tmp = tmp

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, token: str | None = None) -> subprocess.CompletedProcess:
        if shutil.which("kubectl") is None:
            raise RuntimeError("kubectl is not installed (apt-get install kubectl)")
        env = dict(os.environ, KUBECONFIG=self.kubeconfig)
        cmd = ["kubectl"]
        if token is not None:
            server = subprocess.run(
                ["kubectl", "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"],
                env=env, capture_output=True, text=True, check=True,
            ).stdout
            cmd += ["--kubeconfig=/dev/null", f"--server={server}", "--insecure-skip-tls-verify", f"--token={token}"]
        proc = subprocess.run(cmd + list(args), env=env, input=input, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture(scope="session")
def cluster():
    k8s = find_k8s_up()
    tmp = Path(tempfile.mkdtemp(prefix="tailor-install-k8s-"))
    up = subprocess.run([str(k8s / "up"), str(tmp)], capture_output=True, text=True, timeout=180)
    if up.returncode != 0:
        raise RuntimeError(f"k8s/up failed:\n{up.stdout}\n{up.stderr}")
    try:
        yield Cluster(str(tmp / "kubeconfig"), tmp)
    finally:
        subprocess.run([str(k8s / "down"), str(tmp)], capture_output=True, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
