"""`agentreg crds`: write the CRDs generated from the pydantic models."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="crds")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory to write the CRD files to; standard output when omitted.",
)
def command(output: Path | None) -> None:
    """Write the Agent and AgentBehavior CRDs (crds/ in the repository)."""
    from agent_registry.resources.crd import all_crds, render_yaml, write_crds

    if output is None:
        click.echo("---\n".join(render_yaml(crd) for crd in all_crds().values()), nl=False)
        return
    for path in write_crds(output):
        click.echo(f"wrote {path}")
