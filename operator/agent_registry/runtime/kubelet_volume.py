"""Write a directory exactly as the kubelet writes a ConfigMap volume (its AtomicWriter).

There is no kubelet here (no pods in the local control plane), so tests, benchmarks and the
local demo use this to produce the real on-disk layout the runtime must read:

    <dir>/behavior.lua   -> ..data/behavior.lua        (user-visible symlinks, created once)
    <dir>/..data         -> ..2026_11_25_21_57_39.1234  (swapped atomically)
    <dir>/..2026_11_25_21_57_39.1234/behavior.lua      (the real files)

The steps follow pkg/volume/util/atomic_writer.go: write the payload into a fresh
timestamped directory, create missing user-visible symlinks, point `..data_tmp` at the new
directory, rename `..data_tmp` over `..data` (the one atomic step readers may observe),
remove user-visible names no longer in the payload, then delete the old timestamped
directory (so a reader still inside it can see its files vanish: readers must retry).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

DATA_DIR = "..data"
DATA_DIR_TMP = "..data_tmp"


def write_configmap_volume(
    target: str | os.PathLike[str],
    files: Mapping[str, str | bytes],
    *,
    before_swap: Callable[[], object] | None = None,
) -> str:
    """Atomically replace the volume's content with `files` (flat keys). Returns the new
    timestamped directory's name. Does nothing (returns the current one) when unchanged.
    `before_swap` runs just before the atomic rename (benchmarks time the swap from there)."""
    target_dir = Path(target)
    target_dir.mkdir(parents=True, exist_ok=True)
    payload = {key: _as_bytes(value) for key, value in files.items()}
    for key in payload:
        _validate_key(key)
    data_link = target_dir / DATA_DIR
    try:
        old_ts = os.readlink(data_link)
    except FileNotFoundError:
        old_ts = ""
    if old_ts and not _changed(payload, target_dir / old_ts):
        return old_ts
    old_keys = set(os.listdir(target_dir / old_ts)) if old_ts else set()

    ts_dir = tempfile.mkdtemp(
        prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()), dir=target_dir
    )
    os.chmod(ts_dir, 0o755)
    for key, content in payload.items():
        path = Path(ts_dir, key)
        path.write_bytes(content)
        os.chmod(path, 0o644)
    ts_name = os.path.basename(ts_dir)

    for key in payload:
        visible = target_dir / key
        if not visible.is_symlink():
            os.symlink(os.path.join(DATA_DIR, key), visible)

    tmp_link = target_dir / DATA_DIR_TMP
    os.symlink(ts_name, tmp_link)
    if before_swap is not None:
        before_swap()
    os.rename(tmp_link, data_link)

    for key in old_keys - set(payload):
        (target_dir / key).unlink(missing_ok=True)
    if old_ts:
        _remove_tree(target_dir / old_ts)
    return ts_name


def _changed(payload: Mapping[str, bytes], old_dir: Path) -> bool:
    try:
        if set(os.listdir(old_dir)) != set(payload):
            return True
        return any((old_dir / key).read_bytes() != content for key, content in payload.items())
    except FileNotFoundError:
        return True


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def _validate_key(key: str) -> None:
    # ConfigMap keys are flat names; the kubelet refuses '..'-prefixed and nested paths.
    if not key or "/" in key or key.startswith(".."):
        raise ValueError(f"invalid ConfigMap key for a volume: {key!r}")


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value
