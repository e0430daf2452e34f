"""Running the Alembic migrations (shipped as the agent_registry._migrations package)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool

from agent_registry.registry.engine import default_database_url, sync_url


def migrations_dir() -> Path:
    """The installed agent_registry._migrations package, or migrations/ of a source checkout
    (setuptools' editable finder only maps packages its `packages.find` discovered)."""
    try:
        return Path(str(resources.files("agent_registry._migrations")))
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[3] / "migrations"
        if (checkout / "env.py").exists():
            return checkout
        raise


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    rendered = sync_url(url or default_database_url()).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))  # configparser escaping
    return cfg


def migrate(url: str | None = None, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (default head). Blocking: from async code run it in a
    thread (`await asyncio.to_thread(migrate, url)`)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Downgrade the schema to `revision` ("base" drops every registry table)."""
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str | None = None) -> str | None:
    engine = create_engine(sync_url(url or default_database_url()), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


__all__ = ["alembic_config", "current_revision", "downgrade", "migrate", "migrations_dir"]
