"""Starting and stopping the control plane's processes.

Each process runs in a process group of its own (so stopping it stops anything it forked, and a
Ctrl-C in the terminal reaches only the Python parent, which then stops them in order). A process
started for a test session also gets a parent-death signal: if pytest is killed with SIGKILL,
the kernel kills the apiserver and etcd too, and nothing is left running.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> Callable[[], None]:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        # Runs in the child between fork and exec. SIGKILL, not SIGTERM: the parent is gone,
        # nobody waits for a graceful shutdown.
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def spawn(
    args: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    die_with_parent: bool,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Starts args in a new process group, stdout and stderr appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [os.fspath(a) for a in args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent() if die_with_parent else None,
            env=env,
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) answers kill(0): look at its state.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def stop_group(pid: int, *, timeout: float = 10.0) -> None:
    """SIGTERM to the process group led by pid, SIGKILL after timeout. Idempotent."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    if pgid != pid:
        # Not a group leader we started (the pid was reused): only signal the process itself
        # if it still is ours, which the caller checked; never a foreign group.
        pgid = 0
    _signal(pid, pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid):
            return
        time.sleep(0.05)
    _signal(pid, pgid, signal.SIGKILL)
    for _ in range(100):
        _reap(pid)
        if not alive(pid):
            return
        time.sleep(0.05)


def _signal(pid: int, pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        if pgid:
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collects an exited child of ours, so alive() does not see it as a zombie forever."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError as error:  # pragma: no cover - defensive
        if error.errno != errno.ECHILD:
            raise
