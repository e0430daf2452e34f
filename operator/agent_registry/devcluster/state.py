"""What a running control plane left on disk: its processes, ports and kubeconfig (state.json)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from agent_registry.devcluster import processes


class ProcessRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    pid: int
    binary: str
    log: str

    def running(self) -> bool:
        """True when pid is alive AND still runs our binary (pids get reused after a reboot)."""
        if not processes.alive(self.pid):
            return False
        argv = processes.command_line(self.pid)
        return bool(argv) and argv[0] == self.binary


class ClusterState(BaseModel):
    model_config = ConfigDict(frozen=True)

    kubernetes_version: str
    server: str
    kubeconfig: str
    etcd_data_dir: str
    started_at: float
    start_seconds: float
    processes: tuple[ProcessRecord, ...]

    def all_running(self) -> bool:
        return all(p.running() for p in self.processes)

    def any_running(self) -> bool:
        return any(p.running() for p in self.processes)


def load(path: Path) -> ClusterState | None:
    try:
        return ClusterState.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def save(path: Path, state: ClusterState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.replace(path)
