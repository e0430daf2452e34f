"""Which scripts the registry delivered to each agent, cached in-process for record_tasks.

Both facts cached here only ever become true: a script row in agent_revision_stats is never
deleted, and an agent's current_sha256, once set, is only ever replaced by another script
(there is no unassign). So a cached "delivered" or "has a current script" is right forever,
also when another process made the delivery; only an absence can be stale, and a miss
re-reads the database. The cache is bounded (least recently used agents go first).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import select

from agent_registry.registry.errors import AgentNotFound
from agent_registry.registry.models import AGENTS, REVISION_STATS
from agent_registry.registry.stats import Needs
from agent_registry.registry.transactions import Database

_A = AGENTS
_R = REVISION_STATS

MAX_AGENTS = 100_000


@dataclass(frozen=True, slots=True)
class Delivered:
    shas: frozenset[str]
    has_current: bool

    def covers(self, needs: Needs) -> bool:
        return needs.shas <= self.shas and (self.has_current or not needs.current)

    def union(self, other: Delivered) -> Delivered:
        return Delivered(self.shas | other.shas, self.has_current or other.has_current)


NOTHING = Delivered(frozenset(), False)


class DeliveredScripts:
    def __init__(self, max_agents: int = MAX_AGENTS) -> None:
        self._max = max_agents
        self._agents: OrderedDict[str, Delivered] = OrderedDict()

    async def covering(self, db: Database, agent_id: str, needs: Needs) -> Delivered:
        """What is known delivered to the agent, read again when the cache lacks a need.
        Raises AgentNotFound when it reads and the agent does not exist."""
        known = self._agents.get(agent_id)
        if known is not None:
            self._agents.move_to_end(agent_id)
            if known.covers(needs):
                return known
        return self._put(agent_id, await _read(db, agent_id))

    def delivered(self, agent_id: str, sha256: str, *, current: bool) -> None:
        """Called after a delivery committed. Only refines an agent already cached: one not
        cached is read on its first batch anyway."""
        known = self._agents.get(agent_id)
        if known is not None:
            self._put(agent_id, Delivered(frozenset({sys.intern(sha256)}), current))

    def _put(self, agent_id: str, read: Delivered) -> Delivered:
        # A union, not a replacement: a read that started before a delivery this process
        # recorded meanwhile must not forget it.
        known = self._agents.get(agent_id)
        merged = read if known is None else known.union(read)
        self._agents[agent_id] = merged
        self._agents.move_to_end(agent_id)
        while len(self._agents) > self._max:
            self._agents.popitem(last=False)
        return merged


async def _read(db: Database, agent_id: str) -> Delivered:
    stmt = (
        select(_A.c.current_sha256, _R.c.script_sha256)
        .select_from(_A.outerjoin(_R, _R.c.agent_id == _A.c.agent_id))
        .where(_A.c.agent_id == agent_id)
    )
    async with db.read("record_tasks") as conn:
        rows = (await conn.execute(stmt)).all()
    if not rows:
        raise AgentNotFound(agent_id)
    # Interned: thousands of agents run the same few scripts.
    shas = frozenset(sys.intern(r.script_sha256) for r in rows if r.script_sha256 is not None)
    return Delivered(shas, rows[0].current_sha256 is not None)


__all__ = ["MAX_AGENTS", "NOTHING", "Delivered", "DeliveredScripts"]
