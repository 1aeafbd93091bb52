"""Real scanners over what we ship: checkov over the chart rendered with every value set the chart
tests use (one directory, one run), `k8s/` and the Dockerfile; zizmor over .github/workflows.
Nothing may be found except what tests/chart/scanner_exceptions.yaml lists with its reason, and
every listed exception must still occur (so the list shrinks when a finding is fixed).

The scanners live in their own venv, .tools/scanners, which scripts/_bootstrap.sh installs at
the versions it pins (their dependencies conflict with the project's)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helpers import ALL_ON, REPO_ROOT, VARIANTS

SCANNERS = REPO_ROOT / ".tools" / "scanners" / "bin"
EXCEPTIONS = Path(__file__).with_name("scanner_exceptions.yaml")
VALUE_SETS = {**VARIANTS, **ALL_ON}

Finding = tuple[str, str, str]  # (check, where, resource)


def scanner(name: str) -> Path:
    path = SCANNERS / name
    assert path.exists(), f"{path} is missing: run `source scripts/_bootstrap.sh` (it installs it)"
    return path


def listed(tool: str) -> dict[Finding, str]:
    """The exceptions file's entries for one scanner: finding -> why."""
    entries = yaml.safe_load(EXCEPTIONS.read_text())[tool]
    return {
        (entry["check"], entry["where"], resource): entry["why"]
        for entry in entries
        for resource in entry["resources"]
    }


def differences(found: set[Finding], allowed: dict[Finding, str]) -> dict[str, list[Finding]]:
    return {
        "not listed": sorted(found - allowed.keys()),
        "listed but no longer found": sorted(allowed.keys() - found),
    }


@pytest.fixture(scope="module")
def checkov_findings(render, tmp_path_factory: pytest.TempPathFactory) -> set[Finding]:
    """One checkov run over chart/ (a file per value set), k8s/ and the Dockerfile."""
    stage = tmp_path_factory.mktemp("scan")
    (stage / "chart").mkdir()
    for name, values in VALUE_SETS.items():
        (stage / "chart" / f"{name}.yaml").write_text(yaml.safe_dump_all(render(values)))
    shutil.copytree(REPO_ROOT / "k8s", stage / "k8s")
    shutil.copy(REPO_ROOT / "Dockerfile", stage / "Dockerfile")
    result = subprocess.run(
        [
            scanner("checkov"), "-d", str(stage), "--framework", "kubernetes", "dockerfile",
            "--skip-download", "--quiet", "-o", "json",
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr  # 1: something failed a check
    reports: Any = json.loads(result.stdout)
    assert {report["check_type"] for report in reports} == {"kubernetes", "dockerfile"}
    found: set[Finding] = set()
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["check_type"]
        assert report["summary"]["passed"] > 0, report["check_type"]
        for failed in report["results"]["failed_checks"]:
            where = failed["file_path"].lstrip("/").split("/")[0]
            found.add((failed["check_id"], where, failed["resource"]))
    return found


def test_checkov_finds_nothing_unlisted(checkov_findings: set[Finding]) -> None:
    assert differences(checkov_findings, listed("checkov")) == {
        "not listed": [],
        "listed but no longer found": [],
    }


def zizmor_findings() -> set[Finding]:
    result = subprocess.run(
        [scanner("zizmor"), "--offline", "--format", "json", str(REPO_ROOT / ".github/workflows")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
    )
    assert result.stdout, result.stderr
    found: set[Finding] = set()
    for finding in json.loads(result.stdout):
        location = finding["locations"][0]["symbolic"]
        path = location["key"]["Local"]["verbatim_path"]
        route = ".".join(
            str(part.get("Key", part.get("Index"))) for part in location["route"]["route"]
        )
        found.add((finding["ident"], Path(path).name, route))
    return found


def test_zizmor_finds_nothing_unlisted() -> None:
    assert differences(zizmor_findings(), listed("zizmor")) == {
        "not listed": [],
        "listed but no longer found": [],
    }


def test_every_exception_says_why() -> None:
    for tool in ("checkov", "zizmor"):
        for entry in yaml.safe_load(EXCEPTIONS.read_text())[tool]:
            assert entry["resources"], entry
            assert len(entry["why"].split()) >= 8, entry


def test_a_new_finding_fails_the_comparison() -> None:
    allowed = {("CKV_K8S_1", "chart", "Deployment.bots.x"): "a reason"}
    found = {("CKV_K8S_2", "chart", "Deployment.bots.x")}
    assert differences(found, allowed) == {
        "not listed": [("CKV_K8S_2", "chart", "Deployment.bots.x")],
        "listed but no longer found": [("CKV_K8S_1", "chart", "Deployment.bots.x")],
    }
