"""Migrations: up and down on both backends, the CLI, and no drift between the models and
the migrations (alembic's autogenerate comparison finds nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, pool

from agent_registry.cli.migrate import command as migrate_command
from agent_registry.registry import downgrade, migrate
from agent_registry.registry.engine import sync_url
from agent_registry.registry.migration import current_revision
from agent_registry.registry.models import Base

TABLES = {
    "agent_behaviors",
    "agent_behavior_revisions",
    "agent_registry",
    "agent_behavior_assignments",
    "processed_report_batches",
}
SEED_INDEXES = {
    "agent_registry": {
        "agent_registry_agent_id_index",
        "agent_registry_role_index",
        "agent_registry_behavior_id_index",
        "agent_registry_status_index",
    },
    "agent_behavior_assignments": {
        "agent_behavior_assignments_agent_id_index",
        "agent_behavior_assignments_behavior_id_index",
        "agent_behavior_assignments_assigned_at_index",
    },
}


@pytest.fixture(params=["postgres", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("empty_postgres_url"))
    return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"


def _tables(url: str) -> set[str]:
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _drift(url: str) -> list[object]:
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    assert _tables(empty_url) == set()
    migrate(empty_url)
    assert _tables(empty_url) == TABLES
    assert current_revision(empty_url) == "0002"
    downgrade(empty_url, "base")
    assert _tables(empty_url) == set()
    assert current_revision(empty_url) is None
    migrate(empty_url)
    assert _tables(empty_url) == TABLES


def test_models_and_migrations_do_not_drift(empty_url: str) -> None:
    migrate(empty_url)
    assert _drift(empty_url) == []


def test_drift_check_can_fail(empty_url: str) -> None:
    """The comparison does see a difference (a table the migrations do not create)."""
    migrate(empty_url)
    downgrade(empty_url, "base")
    assert _drift(empty_url) != []


def test_seed_indexes_exist(empty_url: str) -> None:
    migrate(empty_url)
    engine = create_engine(sync_url(empty_url), poolclass=pool.NullPool)
    try:
        inspector = inspect(engine)
        for table, wanted in SEED_INDEXES.items():
            names = {ix["name"] for ix in inspector.get_indexes(table)}
            assert wanted <= names, (table, wanted - names)
    finally:
        engine.dispose()


def test_cli_upgrade_and_downgrade(empty_url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(migrate_command, ["--database-url", empty_url])
    assert result.exit_code == 0, result.output
    assert "at revision 0002" in result.output
    assert _tables(empty_url) == TABLES
    result = runner.invoke(migrate_command, ["--database-url", empty_url, "--downgrade", "base"])
    assert result.exit_code == 0, result.output
    assert _tables(empty_url) == set()


def test_cli_reads_url_from_environment(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'env.db'}"
    result = CliRunner().invoke(migrate_command, [], env={"AGENTREG_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    assert _tables(url) == TABLES


def test_cli_default_is_a_sqlite_file_in_the_working_directory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent_registry", "migrate"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "agent-registry.db").exists()
    assert _tables(f"sqlite:///{tmp_path / 'agent-registry.db'}") == TABLES


def test_cli_failure_is_one_clear_error(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    result = CliRunner().invoke(migrate_command, ["--database-url", url])
    assert result.exit_code != 0
    assert "migration of" in result.output


LOAD_FAILURE_COLUMNS = {"load_error", "load_error_line", "load_failed_sha256", "load_failed_at"}


def _agent_columns(url: str) -> set[str]:
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    try:
        return {c["name"] for c in inspect(engine).get_columns("agent_registry")}
    finally:
        engine.dispose()


def test_0002_adds_and_removes_the_load_failure_columns(empty_url: str) -> None:
    migrate(empty_url, "0001")
    assert not _agent_columns(empty_url) & LOAD_FAILURE_COLUMNS
    migrate(empty_url)
    assert _agent_columns(empty_url) >= LOAD_FAILURE_COLUMNS
    downgrade(empty_url, "0001")
    assert current_revision(empty_url) == "0001"
    assert not _agent_columns(empty_url) & LOAD_FAILURE_COLUMNS
    # What 0001 created survives the downgrade (SQLite rebuilds the table for it).
    migrate(empty_url)
    assert _drift(empty_url) == []
