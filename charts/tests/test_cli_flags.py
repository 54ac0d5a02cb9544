"""The flags the chart passes are flags the binaries have: the DaemonSet's and the Deployment's
`args` checked against `tailor-agent run --help` and `tailor-operator run --help` of this tree."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import ROOT, render

SCENARIOS = {
    "default": {},
    "no-output-no-election": {"agent": {"outputDir": ""}, "operator": {"replicas": 1, "leaderElection": {"enabled": False}}},
}


@pytest.fixture(scope="module")
def binaries():
    subprocess.run(["cargo", "build", "--locked", "-q", "-p", "tailor-agent", "-p", "tailor-operator"], cwd=ROOT, check=True, timeout=1800)
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return {"agent": f"{target}/debug/tailor-agent", "operator": f"{target}/debug/tailor-operator"}


def known_flags(binary: str) -> set[str]:
    out = subprocess.run([binary, "run", "--help"], capture_output=True, text=True, check=True, timeout=60).stdout
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_args_are_known_to_the_binaries(binaries, scenario):
    objects = render(SCENARIOS[scenario])
    for kind, component in (("DaemonSet", "agent"), ("Deployment", "operator")):
        (workload,) = [o for o in objects if o["kind"] == kind]
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        assert args[0] == "run"
        flags = {a.split("=", 1)[0] for a in args[1:]}
        unknown = flags - known_flags(binaries[component])
        assert not unknown, f"tailor-{component} run has no {sorted(unknown)}"
