"""`agentreg dev` (placeholder until its owner lands it)."""

import click


@click.command(name="dev")
def command() -> None:
    raise click.ClickException("not implemented yet")
