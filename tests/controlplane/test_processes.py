"""Nothing is left running: stop_group ends a whole process group, and a process started with the
parent-death guard dies when its parent is SIGKILLed (what happens to the apiserver and etcd when
a test session is killed without a chance to clean up)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent_registry.devcluster import processes

SPAWNER = """
import sys, time
from pathlib import Path
from agent_registry.devcluster import processes
child = processes.spawn(["sleep", "300"], log_path=Path(sys.argv[1]), die_with_parent=True)
print(child.pid, flush=True)
time.sleep(300)
"""


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not processes.alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_guarded_process_dies_with_its_sigkilled_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", SPAWNER, str(tmp_path / "sleep.log")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert processes.alive(child)

    parent.send_signal(signal.SIGKILL)
    parent.wait()

    assert _gone_within(child, 5)


def test_stop_group_ends_the_process_and_what_it_forked(tmp_path: Path) -> None:
    leader = processes.spawn(
        ["sh", "-c", "sleep 300 & echo $!; wait"],
        log_path=tmp_path / "group.log",
        die_with_parent=True,
    )
    deadline = time.monotonic() + 5
    while not (tmp_path / "group.log").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int((tmp_path / "group.log").read_text().split()[0])
    assert os.getpgid(grandchild) == leader.pid

    processes.stop_group(leader.pid)

    assert not processes.alive(leader.pid)
    assert _gone_within(grandchild, 5)
