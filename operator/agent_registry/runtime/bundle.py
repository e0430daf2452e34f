"""What a behavior ConfigMap holds, parsed: the script plus its `behavior.json` metadata.

Pure: no I/O. Both sources (the kubelet volume and the API watch) read the two keys and hand
them here, so a behavior means the same thing whichever way it arrived.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCRIPT_KEY = "behavior.lua"
META_KEY = "behavior.json"

# behavior.json's limit keys (camelCase, rendered by the controller) -> Limits field names.
_LIMIT_KEYS = {
    "maxInstructions": "max_instructions",
    "maxMemoryBytes": "max_memory_bytes",
    "timeoutMs": "timeout_ms",
}


class BundleError(ValueError):
    """The ConfigMap does not hold a usable behavior (no script)."""


@dataclass(frozen=True)
class BehaviorBundle:
    """One version of an agent's behavior as delivered.

    `meta_error` is set when behavior.json was present but unusable: the script is still
    known (so a failure can be reported against its sha256) but must not be loaded, because
    its limits are unknown.
    """

    script: str
    sha256: str
    revision: int | None = None
    name: str | None = None
    namespace: str | None = None
    limits: Mapping[str, int] = field(default_factory=dict)
    declared_sha256: str | None = None
    meta_error: str | None = None
    origin: str = ""

    @property
    def identity(self) -> tuple[str, tuple[tuple[str, int], ...]]:
        """What makes two bundles the same load: the script and its limits (not the origin)."""
        return self.sha256, tuple(sorted(self.limits.items()))


def script_sha256(script: str | bytes) -> str:
    data = script.encode("utf-8") if isinstance(script, str) else script
    return hashlib.sha256(data).hexdigest()


def parse_bundle(files: Mapping[str, str | bytes], *, origin: str = "") -> BehaviorBundle:
    """Build a bundle from the ConfigMap keys. Raises BundleError when there is no script."""
    raw_script = files.get(SCRIPT_KEY)
    if raw_script is None:
        raise BundleError(f"no {SCRIPT_KEY} key in {origin or 'the behavior'}")
    try:
        script = raw_script.decode("utf-8") if isinstance(raw_script, bytes) else raw_script
    except UnicodeDecodeError as exc:
        raise BundleError(f"{SCRIPT_KEY} is not UTF-8: {exc}") from exc
    sha = script_sha256(script)
    raw_meta = files.get(META_KEY)
    if raw_meta is None:
        return BehaviorBundle(script=script, sha256=sha, origin=origin)
    try:
        meta = _parse_meta(raw_meta)
    except ValueError as exc:
        return BehaviorBundle(
            script=script, sha256=sha, meta_error=f"{META_KEY}: {exc}", origin=origin
        )
    return BehaviorBundle(
        script=script,
        sha256=sha,
        revision=meta.get("revision"),
        name=meta.get("name"),
        namespace=meta.get("namespace"),
        limits=meta.get("limits", {}),
        declared_sha256=meta.get("sha256"),
        origin=origin,
    )


def _parse_meta(raw: str | bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    out: dict[str, Any] = {}
    revision = doc.get("revision")
    if revision is not None:
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
            raise ValueError(f"revision must be a positive integer, not {revision!r}")
        out["revision"] = revision
    for key in ("name", "namespace", "sha256"):
        value = doc.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
            out[key] = value
    out["limits"] = _parse_limits(doc.get("limits"))
    return out


def _parse_limits(raw: object) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError("limits must be an object")
    limits: dict[str, int] = {}
    for key, value in raw.items():
        field_name = _LIMIT_KEYS.get(key)
        if field_name is None:
            # Unknown keys come from a newer controller: ignore, the defaults still hold.
            continue
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"limits.{key} must be a positive integer, not {value!r}")
        limits[field_name] = value
    return limits
