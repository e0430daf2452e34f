"""`agentreg runtime` (placeholder until its owner lands it)."""

import click


@click.command(name="runtime")
def command() -> None:
    raise click.ClickException("not implemented yet")
