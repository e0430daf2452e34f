"""ConfigMaps changed behind the operator's back: found by a periodic list, re-applied.

The reconciler skips the apply of a ConfigMap it applied already with the same content
(arbitration.apply_decision), which at 10,000 Agents saves most API calls of a restart or a
behavior's new revision. Nothing watches ConfigMaps (a watch of 10,000 of them would cost
kopf's per-object memory), so a ConfigMap deleted or edited by hand would stay that way until
the Agent's next change. This loop lists the operator's ConfigMaps (by label, paged, one list
per namespace) every `interval` seconds and sends the Agents whose ConfigMap is missing or
holds other data back to the reconciler."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from agent_registry.controller.context import OperatorContext
from agent_registry.controller.kubeapi import KubeError
from agent_registry.controller.rendering import MANAGED_BY, MANAGED_BY_LABEL, configmap_name

logger = logging.getLogger(__name__)

Key = tuple[str, str]


def data_digest(data: Mapping[str, Any] | None) -> bytes:
    """The digest of a ConfigMap's data, as applied and as read back (the server keeps the
    strings exactly)."""
    text = json.dumps(dict(data or {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).digest()


def drifted(applied: Mapping[Key, bytes], live: Mapping[Key, bytes]) -> list[Key]:
    """The Agents whose ConfigMap is gone or holds data other than what was applied (pure).
    `applied`: agent -> digest of the data this process applied; `live`: agent -> digest of
    the data listed, for the namespaces listed."""
    return [key for key, digest in applied.items() if live.get(key) != digest]


async def check_once(ctx: OperatorContext) -> list[Key]:
    """One pass: list, compare, hand the drifted Agents back to the reconciler."""
    by_namespace: dict[str, list[Key]] = defaultdict(list)
    for key in ctx.applied_configmaps:
        by_namespace[key[0]].append(key)
    found: list[Key] = []
    for namespace, keys in by_namespace.items():
        items = await ctx.kube.list(
            "v1", "configmaps", namespace, label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        )
        names = {configmap_name(key[1]): key for key in keys}
        live: dict[Key, bytes] = {}
        for item in items:
            owner = names.get(item.get("metadata", {}).get("name", ""))
            if owner is not None:
                live[owner] = data_digest(item.get("data"))
        # Only what this process applied (and still means to): read after the awaits.
        applied = {k: ctx.applied_configmaps[k].data for k in keys if k in ctx.applied_configmaps}
        found.extend(drifted(applied, live))
    if ctx.fleet is not None:
        for key in found:
            ctx.fleet.redo(key)
    return found


async def run_configmap_resync(ctx: OperatorContext, interval: float) -> None:
    """check_once every `interval` seconds, until cancelled; a failed pass waits for the next."""
    while True:
        await asyncio.sleep(interval)
        try:
            found = await check_once(ctx)
        except KubeError as exc:
            logger.warning(f"ConfigMap resync: {exc}")
            continue
        if found:
            logger.info(
                f"ConfigMap resync: {len(found)} ConfigMap(s) deleted or edited outside the "
                f"operator, re-applying: {', '.join(f'{ns}/{name}' for ns, name in found[:10])}"
            )


__all__ = ["check_once", "data_digest", "drifted", "run_configmap_resync"]
