"""The operator's PostgreSQL admin credentials arrive as files, never only as variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from hello_operator.settings import OperatorConfig, shared_postgres_admin_url


def test_the_admin_url_is_read_from_a_secret_file(tmp_path: Path) -> None:
    (tmp_path / "SHARED_POSTGRES_ADMIN_URL").write_text("postgresql://admin:pw@db:5433/postgres\n")
    config = OperatorConfig.from_env({"SECRETS_DIR": str(tmp_path)})
    assert config.shared_postgres_admin_url == "postgresql://admin:pw@db:5433/postgres"
    assert (config.shared_postgres_host, config.shared_postgres_port) == ("db", 5433)


def test_a_password_file_fills_the_urls_password(tmp_path: Path) -> None:
    (tmp_path / "SHARED_POSTGRES_PASSWORD").write_text("p@ss:w/rd%\n")
    env = {
        "SECRETS_DIR": str(tmp_path),
        "SHARED_POSTGRES_ADMIN_URL": "postgresql://postgres@pg:5432/hb",
    }
    assert shared_postgres_admin_url(env) == "postgresql://postgres:p%40ss%3Aw%2Frd%25@pg:5432/hb"


def test_the_file_wins_over_the_variable(tmp_path: Path) -> None:
    (tmp_path / "SHARED_POSTGRES_ADMIN_URL").write_text("postgresql://file@a/postgres")
    env = {"SECRETS_DIR": str(tmp_path), "SHARED_POSTGRES_ADMIN_URL": "postgresql://env@b/postgres"}
    assert shared_postgres_admin_url(env) == "postgresql://file@a/postgres"


def test_variables_alone_work_as_before() -> None:
    env = {"SHARED_POSTGRES_ADMIN_URL": "postgresql://admin:pw@db/postgres"}
    assert shared_postgres_admin_url(env) == "postgresql://admin:pw@db/postgres"
    assert shared_postgres_admin_url({}) == ""


def test_a_secrets_dir_that_is_not_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        shared_postgres_admin_url({"SECRETS_DIR": str(tmp_path / "missing")})
