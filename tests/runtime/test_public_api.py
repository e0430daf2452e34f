"""The package's public names resolve, and importing the reporter does not load lupa."""

from __future__ import annotations

import subprocess
import sys

import agent_registry.runtime as runtime


def test_every_exported_name_resolves() -> None:
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None, name


def test_reporting_alone_does_not_import_the_sandbox_or_kubernetes() -> None:
    code = (
        "import sys\n"
        "from agent_registry.runtime import OutcomeReporter, DirectorySource\n"
        "assert 'lupa' not in sys.modules, 'lupa loaded'\n"
        "assert 'kubernetes' not in sys.modules, 'kubernetes loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
