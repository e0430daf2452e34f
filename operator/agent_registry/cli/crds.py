"""`agentreg crds` (placeholder until its owner lands it)."""

import click


@click.command(name="crds")
def command() -> None:
    raise click.ClickException("not implemented yet")
