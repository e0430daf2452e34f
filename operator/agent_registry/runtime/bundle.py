"""What a behavior ConfigMap holds, parsed: the script(s) plus the `behavior.json` metadata.

Pure: no I/O. Both sources (the kubelet volume and the API watch) read the keys and hand them
here, so a behavior means the same thing whichever way it arrived.

A one-script bundle is `behavior.lua` + `behavior.json` (name, namespace, revision, sha256,
limits). A multi-script bundle adds to behavior.json a `scripts` list, primary first:
`{"key", "name", "namespace", "revision", "sha256", "weight", "limits"}`, the primary's key
`behavior.lua`, the others `behavior-1.lua`, `behavior-2.lua`, ... (docs/runtime.md). The
top-level keys stay the primary's, so a runtime that predates `scripts` still runs the primary.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCRIPT_KEY = "behavior.lua"
META_KEY = "behavior.json"
SCRIPTS_FIELD = "scripts"
# LoadedBehavior.scripts holds at most this many, and each script is a sandbox of its own
# (up to its memory ceiling): a bound on what one agent process can be asked to hold.
MAX_SCRIPTS = 16
_EXTRA_SCRIPT_KEY = re.compile(r"behavior-[1-9][0-9]*\.lua")
_MAX_NAME = 253

# behavior.json's limit keys (camelCase, rendered by the controller) -> Limits field names.
_LIMIT_KEYS = {
    "maxInstructions": "max_instructions",
    "maxMemoryBytes": "max_memory_bytes",
    "timeoutMs": "timeout_ms",
}

Identity = tuple[str, tuple[tuple[str, int], ...]]


class BundleError(ValueError):
    """The ConfigMap does not hold a usable behavior (no script)."""


def script_key(index: int) -> str:
    """The ConfigMap key of the bundle's `index`-th script (0 is the primary)."""
    if index < 0:
        raise ValueError("index must be >= 0")
    return SCRIPT_KEY if index == 0 else f"behavior-{index}.lua"


def is_script_key(key: str) -> bool:
    return key == SCRIPT_KEY or _EXTRA_SCRIPT_KEY.fullmatch(key) is not None


@dataclass(frozen=True)
class BundleScript:
    """One script of a bundle, with the share of tasks drawn for it (normalized weight)."""

    key: str
    script: str
    sha256: str
    weight: float = 1.0
    revision: int | None = None
    name: str | None = None
    namespace: str | None = None
    limits: Mapping[str, int] = field(default_factory=dict)

    @property
    def identity(self) -> Identity:
        """What makes two scripts the same sandbox: the source and its limits."""
        return self.sha256, tuple(sorted(self.limits.items()))

    @property
    def labels(self) -> tuple[str | None, str | None, int | None]:
        return self.namespace, self.name, self.revision


@dataclass(frozen=True)
class BehaviorBundle:
    """One version of an agent's behavior as delivered.

    The top-level fields describe the primary script (behavior.lua) as behavior.json's top
    level does. `scripts` is set only for a bundle whose behavior.json lists them: every
    script, primary first, weights normalized to sum to 1.

    `meta_error` is set when behavior.json was present but unusable: the primary script is
    still known (so a failure can be reported against its sha256) but nothing may be loaded,
    because its limits, or which scripts to run, are unknown.
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
    scripts: tuple[BundleScript, ...] = ()

    @property
    def entries(self) -> tuple[BundleScript, ...]:
        """The scripts to run, primary first: `scripts`, or the primary alone at weight 1."""
        if self.scripts:
            return self.scripts
        return (
            BundleScript(
                key=SCRIPT_KEY,
                script=self.script,
                sha256=self.sha256,
                revision=self.revision,
                name=self.name,
                namespace=self.namespace,
                limits=self.limits,
            ),
        )

    @property
    def multi(self) -> bool:
        return len(self.scripts) > 1

    @property
    def identity(self) -> tuple[tuple[Identity, float], ...]:
        """What makes two bundles the same load: each script, its limits and its weight
        (not the origin, nor the labels)."""
        return tuple((entry.identity, entry.weight) for entry in self.entries)


def script_sha256(script: str | bytes) -> str:
    data = script.encode("utf-8") if isinstance(script, str) else script
    return hashlib.sha256(data).hexdigest()


def parse_bundle(files: Mapping[str, str | bytes], *, origin: str = "") -> BehaviorBundle:
    """Build a bundle from the ConfigMap keys. Raises BundleError when there is no script."""
    raw_script = files.get(SCRIPT_KEY)
    if raw_script is None:
        raise BundleError(f"no {SCRIPT_KEY} key in {origin or 'the behavior'}")
    try:
        script = _text(raw_script)
    except UnicodeDecodeError as exc:
        raise BundleError(f"{SCRIPT_KEY} is not UTF-8: {exc}") from exc
    sha = script_sha256(script)
    raw_meta = files.get(META_KEY)
    if raw_meta is None:
        return BehaviorBundle(script=script, sha256=sha, origin=origin)
    try:
        doc = _load_meta(raw_meta)
        meta = _parse_meta(doc)
        scripts = _parse_scripts(doc.get(SCRIPTS_FIELD), files)
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
        scripts=scripts,
    )


def _text(raw: str | bytes) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else raw


def _load_meta(raw: str | bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc


def _parse_meta(doc: Mapping[str, Any]) -> dict[str, Any]:
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


def _parse_scripts(raw: object, files: Mapping[str, str | bytes]) -> tuple[BundleScript, ...]:
    """The `scripts` list, checked against the ConfigMap's keys; () when there is none."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{SCRIPTS_FIELD} must be a non-empty list")
    if len(raw) > MAX_SCRIPTS:
        raise ValueError(f"{SCRIPTS_FIELD} lists {len(raw)} scripts, at most {MAX_SCRIPTS}")
    parsed: list[tuple[BundleScript, float]] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"{SCRIPTS_FIELD}[{index}]"
        try:
            entry, weight = _parse_entry(item, files, first=index == 0)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        if entry.key in seen:
            raise ValueError(f"{where}: key {entry.key} is listed twice")
        seen.add(entry.key)
        parsed.append((entry, weight))
    total = math.fsum(weight for _, weight in parsed)
    if total <= 0:
        raise ValueError(f"{SCRIPTS_FIELD}: the weights sum to 0, no script would ever run")
    # The controller renders weights that sum to 1; dividing by the sum absorbs its float
    # rounding, so the draw never depends on how the weights were written.
    return tuple(
        BundleScript(
            key=entry.key,
            script=entry.script,
            sha256=entry.sha256,
            weight=weight / total,
            revision=entry.revision,
            name=entry.name,
            namespace=entry.namespace,
            limits=entry.limits,
        )
        for entry, weight in parsed
    )


def _parse_entry(
    item: object, files: Mapping[str, str | bytes], *, first: bool
) -> tuple[BundleScript, float]:
    if not isinstance(item, dict):
        raise ValueError("not a JSON object")
    key = item.get("key")
    if not isinstance(key, str):
        raise ValueError("key must be a string")
    if first and key != SCRIPT_KEY:
        raise ValueError(f"the first script is the primary and must be {SCRIPT_KEY}, not {key}")
    if not first and (key == SCRIPT_KEY or not is_script_key(key)):
        raise ValueError(f"key must be behavior-N.lua, not {key}")
    raw_script = files.get(key)
    if raw_script is None:
        raise ValueError(f"key {key} is not in the ConfigMap")
    try:
        script = _text(raw_script)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{key} is not UTF-8: {exc}") from exc
    declared = item.get("sha256")
    if not isinstance(declared, str):
        raise ValueError("sha256 must be a string")
    actual = script_sha256(script)
    if declared != actual:
        # Unlike the primary's top-level sha256 (a warning, kept for older bundles), a listed
        # script is credited by this sha256: running other content would credit the wrong one.
        raise ValueError(f"sha256 {declared} does not match {key}'s content ({actual})")
    weight = item.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise ValueError(f"weight must be a number, not {weight!r}")
    if weight < 0:
        raise ValueError(f"weight must be >= 0, not {weight!r}")
    meta = _parse_meta(item)
    name = meta.get("name")
    if name is not None and len(name) > _MAX_NAME:
        raise ValueError(f"name longer than {_MAX_NAME} characters")
    entry = BundleScript(
        key=key,
        script=script,
        sha256=actual,
        revision=meta.get("revision"),
        name=name,
        namespace=meta.get("namespace"),
        limits=meta.get("limits", {}),
    )
    return entry, float(weight)


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
