"""The `agentreg` command. Each subcommand lives in its own module and is imported on use,
so `agentreg runtime` in an agent pod never imports the operator or the database layer."""

from __future__ import annotations

import importlib
from typing import Any

import click

# name -> (module, attribute, help)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "migrate": (
        "agent_registry.cli.migrate",
        "command",
        "Upgrade (or downgrade) the registry schema.",
    ),
    "run": ("agent_registry.cli.run", "command", "Run the operator and the registry API."),
    "crds": ("agent_registry.cli.crds", "command", "Write the CRDs generated from the models."),
    "runtime": ("agent_registry.cli.runtime", "command", "Run a Lua behavior as an agent sidecar."),
    "dev": ("agent_registry.cli.dev", "command", "Local development: control plane and demo."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module_name, attribute, _ = _COMMANDS[cmd_name]
        command: Any = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{attribute} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in sorted(_COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="agent-registry", prog_name="agentreg")
def main() -> None:
    """agent-registry: register AI agents, hot-reload their Lua behaviors, track their results."""
