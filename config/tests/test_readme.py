"""The README's two set-up commands are the ones CI runs, exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def code_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", text, re.S)]


def test_the_two_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands on a fresh machine", 1)[1].split("\n## ", 1)[0]
    assert code_blocks(section) == ["./scripts/demo.sh", "bash .ci/run"]
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert "./scripts/demo.sh" in ci, ".ci/run must run the demo exactly as the README writes it"
    assert "./scripts/test.sh" in ci
    assert (ROOT / "scripts/demo.sh").stat().st_mode & 0o111, "scripts/demo.sh must be executable"


def test_readme_links_point_at_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), target


def test_every_crd_field_is_in_the_readme():
    """Each spec field of the user-facing resources appears in the reference tables."""
    import yaml

    readme = (ROOT / "README.md").read_text()
    # Words inside `code spans` and the YAML examples.
    code = re.findall(r"`([^`\n]+)`", readme) + re.findall(r"```yaml\n(.*?)```", readme, re.S)
    documented = {w for span in code for w in re.findall(r"[A-Za-z][A-Za-z0-9]*", span)}
    for crd in yaml.safe_load_all((ROOT / "crds/tailor.crds.yaml").read_text()):
        if not crd:
            continue
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

        def walk(schema, path):
            for name, sub in (schema.get("properties") or {}).items():
                yield name, path + [name]
                inner = sub.get("items", sub)
                yield from walk(inner, path + [name])

        kind = crd["spec"]["names"]["kind"]
        for name, path in walk(spec, []):
            assert name in documented, f"{kind}: spec.{'.'.join(path)} is not documented in README.md"
