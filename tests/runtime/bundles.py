"""Build behavior ConfigMap payloads for the runtime tests, one-script or multi-script, as the
controller renders them (docs/runtime.md, "Bundle format")."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agent_registry.runtime.bundle import BehaviorBundle, parse_bundle, script_sha256


@dataclass(frozen=True)
class Script:
    source: str
    weight: float = 1.0
    name: str = "b"
    revision: int = 1
    limits: dict[str, int] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return script_sha256(self.source)


def identifying(label: str) -> str:
    """A script that returns `label` and counts its own calls in ctx.state."""
    return (
        "function on_task(task, ctx)\n"
        "  ctx.state.calls = (ctx.state.calls or 0) + 1\n"
        f"  return {{who = {json.dumps(label)}, calls = ctx.state.calls}}\n"
        "end\n"
    )


def _meta(script: Script) -> dict[str, Any]:
    return {
        "name": script.name,
        "namespace": "team-a",
        "revision": script.revision,
        "sha256": script.sha256,
        "limits": dict(script.limits),
    }


def bundle_files(*scripts: Script) -> dict[str, str]:
    """The ConfigMap keys: behavior.lua + behavior.json, and with more than one script the
    behavior-N.lua keys and behavior.json's `scripts` list."""
    primary = scripts[0]
    files = {"behavior.lua": primary.source}
    meta = _meta(primary)
    if len(scripts) > 1:
        entries = []
        for index, script in enumerate(scripts):
            key = "behavior.lua" if index == 0 else f"behavior-{index}.lua"
            files[key] = script.source
            entries.append({"key": key, "weight": script.weight, **_meta(script)})
        meta["scripts"] = entries
    files["behavior.json"] = json.dumps(meta)
    return files


def make_bundle(*scripts: Script) -> BehaviorBundle:
    return parse_bundle(bundle_files(*scripts), origin="test")
