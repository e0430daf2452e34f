"""`agentreg migrate` (placeholder until its owner lands it)."""

import click


@click.command(name="migrate")
def command() -> None:
    raise click.ClickException("not implemented yet")
