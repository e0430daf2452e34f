"""`agentreg run`'s Underperforming options: on the command line and from AGENTREG_* env,
validated before anything starts (a bad value is a usage error, exit code 2)."""

from __future__ import annotations

from click.testing import CliRunner

from agent_registry.cli.run import command


def test_help_lists_the_underperforming_options() -> None:
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0, result.output
    assert "--underperforming-threshold" in result.output
    assert "--underperforming-min-tasks" in result.output


def test_out_of_range_values_are_refused_from_flags_and_env() -> None:
    runner = CliRunner()
    flag = runner.invoke(command, ["--underperforming-threshold", "1.5"])
    assert flag.exit_code == 2
    assert "--underperforming-threshold" in flag.output
    env = runner.invoke(command, [], env={"AGENTREG_UNDERPERFORMING_MIN_TASKS": "0"})
    assert env.exit_code == 2
    assert "--underperforming-min-tasks" in env.output
