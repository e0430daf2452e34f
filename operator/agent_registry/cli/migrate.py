"""`agentreg migrate`: upgrade (or downgrade) the registry schema with its Alembic migrations."""

from __future__ import annotations

import click
from sqlalchemy.engine import make_url

from agent_registry.registry.engine import DATABASE_URL_ENV, DEFAULT_DATABASE_URL


@click.command(name="migrate")
@click.option(
    "--database-url",
    envvar=DATABASE_URL_ENV,
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help=f"SQLAlchemy URL of the registry database (env {DATABASE_URL_ENV}).",
)
@click.option(
    "--revision",
    default="head",
    show_default=True,
    help="Revision to upgrade to.",
)
@click.option(
    "--downgrade",
    "downgrade_to",
    metavar="REVISION",
    default=None,
    help="Downgrade to REVISION instead ('base' drops every registry table).",
)
def command(database_url: str, revision: str, downgrade_to: str | None) -> None:
    """Upgrade the registry schema to the latest revision (or --downgrade it)."""
    # Imported here: alembic and the models are only needed by this command.
    from agent_registry.registry.migration import current_revision, downgrade, migrate

    shown = make_url(database_url).render_as_string(hide_password=True)
    try:
        if downgrade_to is not None:
            downgrade(database_url, downgrade_to)
        else:
            migrate(database_url, revision)
        now = current_revision(database_url)
    except Exception as error:  # any failure: one clear line, non-zero exit
        raise click.ClickException(f"migration of {shown} failed: {error}") from error
    click.echo(f"registry schema of {shown} at revision {now or 'base (empty)'}")
