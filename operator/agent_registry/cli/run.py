"""`agentreg run` (placeholder until its owner lands it)."""

import click


@click.command(name="run")
def command() -> None:
    raise click.ClickException("not implemented yet")
