"""Removing what a killed test session could not: its temp dir and its etcd data on tmpfs.

A SIGKILLed pytest takes etcd and kube-apiserver along (parent-death signal) but cannot delete
files. The next start sweeps them: a cluster dir or etcd data dir that no running process names on
its command line, and that is old enough not to be one being set up right now, is garbage.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from agent_registry.devcluster.layout import PRIVATE_PREFIX

GRACE_SECONDS = 300.0  # a start writes its files and spawns its processes well within this


def _command_lines() -> str:
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return "\n".join(lines)


def _stale(path: Path, in_use: str, now: float) -> bool:
    try:
        age = now - path.stat().st_mtime
    except OSError:
        return False
    return age > GRACE_SECONDS and str(path) not in in_use


def sweep() -> list[Path]:
    """Deletes stale private cluster dirs and etcd data dirs; returns what it deleted."""
    in_use = _command_lines()
    now = time.time()
    candidates = [
        *Path(tempfile.gettempdir()).glob(f"{PRIVATE_PREFIX}*"),
        *Path("/dev/shm").glob("agent-registry-etcd-*"),
    ]
    removed = []
    for path in candidates:
        if path.is_dir() and _stale(path, in_use, now):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
