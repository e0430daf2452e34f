"""The one error type of the local control plane: its message tells the user what to do."""

from __future__ import annotations


class DevClusterError(RuntimeError):
    """The control plane could not be built, started or reached."""
