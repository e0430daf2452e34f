"""Per-sandbox limits. Every call into a script (top level, init, on_reload, on_task, call) gets
the whole budget again; memory is a ceiling on the Lua state as a whole."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Bounds of one sandbox. Defaults are sized for a decision function that runs in
    microseconds: a script that needs more says so in its AgentBehavior's `spec.limits`.

    - max_instructions (10,000,000): Lua VM instructions per call, counted by a debug count hook
      that runs every few hundred instructions (so the budget is exact to `hook_interval`).
    - max_memory_bytes (32 MiB): what the script may allocate on top of the sandbox's own
      environment (lupa's allocator ceiling; an allocation past it is a Lua memory error).
    - timeout_ms (1,000): wall-clock time per call, checked in the same hook.
    - max_depth (32) / max_items (10,000): bounds of every Python <-> Lua conversion (call
      arguments, results, ctx.state, json.encode/decode): nesting depth and total values.
    - max_string_bytes (4 MiB): largest string string.rep may build and json.decode may read.
    - max_pattern_cost (30,000,000): matcher steps (3 ns each, at most, measured here) that one
      C call of string.find/match/gmatch/gsub may take in the worst case, since no hook can
      interrupt it; a call over it runs as a loop of smaller calls or is refused (see
      docs/sandbox.md).
    - max_source_bytes (1 MiB): largest script (or chunk passed to load) compiled.
    - max_log_lines (100): log() lines per call; the rest of the call's lines are dropped (one
      line says how many), so a script cannot flood the agent's log.
    """

    max_instructions: int = 10_000_000
    max_memory_bytes: int = 32 * 1024 * 1024
    timeout_ms: int = 1_000
    max_depth: int = 32
    max_items: int = 10_000
    max_string_bytes: int = 4 * 1024 * 1024
    max_pattern_cost: int = 30_000_000
    max_source_bytes: int = 1024 * 1024
    max_log_lines: int = 100

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{field.name} must be a positive integer, got {value!r}")

    @property
    def hook_interval(self) -> int:
        """Most instructions between two runs of the count hook. The hook adapts the interval
        (starting at 100 each call) so one takes ~1 ms, within [16, hook_interval]: larger is
        cheaper (each run reads the clock through Python) but lets a run of slow instructions
        (operators on megabyte strings) overrun the timeout longer."""
        return max(100, min(1_000, self.max_instructions // 10))
