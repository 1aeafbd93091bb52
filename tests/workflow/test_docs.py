"""docs/: the guides exist, cover what the issue asks, and point only at things that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .helpers import REPO_ROOT

DOCS = {
    "docs/operations.md": [
        "k8s/k3s/config.yaml",
        "DNS and TLS",
        "helm upgrade --install",
        "kubectl",
        "helm test",
        "Upgrade",
        "Roll back",
        "pg_dump",
        "pg_restore",
        "--rollback-on-failure",
        "KUBE_CONFIG",
    ],
    "docs/development.md": [
        "scripts/run chat",
        "scripts/run poll",
        "skaffold dev",
        "Adding a handler",
        "Adding a migration",
        "Adding a string or a language",
        "watchfiles",
    ],
    "docs/reference.md": [
        "## Commands",
        "## Settings",
        "### Exit codes",
        "### Schema policy",
        "## HTTP endpoints",
        "`GET /readyz`",
        "`TelegramBot`",
        "hello-bot.dev/v1alpha1",
    ],
}
LINK = re.compile(r"\]\(([^)#\s]+)")
REPO_PATH = re.compile(
    r"`((?:bot|charts|k8s|docs|scripts|tests|migrations|tools|operator)/[\w./-]*\w)`"
)


@pytest.mark.parametrize("doc", DOCS)
def test_guide_covers_its_topics(doc: str) -> None:
    text = (REPO_ROOT / doc).read_text()
    assert [topic for topic in DOCS[doc] if topic not in text] == []


@pytest.mark.parametrize("doc", [*DOCS, "README.md", "k8s/deploy/README.md"])
def test_links_and_repository_paths_exist(doc: str) -> None:
    path = REPO_ROOT / doc
    text = path.read_text()
    links = [link for link in LINK.findall(text) if "://" not in link]
    missing = [link for link in links if not (path.parent / link).exists()]
    missing += [p for p in REPO_PATH.findall(text) if "<" not in p and not (REPO_ROOT / p).exists()]
    assert missing == []


def test_readme_links_the_guides() -> None:
    docs_list = (REPO_ROOT / "README.md").read_text().split("\n## Docs\n", 1)[1]
    for doc in DOCS:
        assert f"\n- [{doc}]({doc})" in docs_list


def test_readme_points_at_the_contract_in_the_repository() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "shared/" not in readme  # a clone has no shared/ folder next to it
    assert re.search(
        r"The contract \([^)]*\) is\s+\[docs/reference\.md\]\(docs/reference\.md\)", readme
    )


def test_path_check_would_catch_a_stale_path(tmp_path: Path) -> None:
    assert not (REPO_ROOT / "bot/handlers/nope.py").exists()
    assert REPO_PATH.findall("see `bot/handlers/nope.py`") == ["bot/handlers/nope.py"]
