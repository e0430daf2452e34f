"""Behavior from a directory: a ConfigMap volume as the kubelet writes it, or a plain one.

Change detection: inotify on the directory (via ctypes, see inotify.py) as the wake-up, and
a readlink of `..data` every `poll_interval` as the safety net. Why both: inotify reacts in
about a millisecond to the kubelet's rename of `..data_tmp` over `..data`, but it can be
missing (not Linux, the per-user watch limit exhausted, a directory that appears later);
the poll costs one readlink syscall per interval (4 a second by default) and bounds the
detection delay by the interval whatever happens. The check itself is the same either way:
compare `readlink(..data)` with the last one loaded, so spurious wake-ups cost nothing.

Reading: `..data` is resolved once and every key (behavior.json, behavior.lua and the other
scripts of a multi-script bundle, behavior-N.lua) is read from that timestamped directory, so
the scripts and their behavior.json always come from the same version. The kubelet deletes
the old directory right after a swap, file by file; so `..data` is read again after the keys,
and a read it does not confirm (a swap happened meanwhile) is retried on the new version.

A plain directory (no `..data`, files edited in place, for local development) is keyed on
the files' (inode, size, mtime): a non-atomic edit may be seen half-written, fails to load
(the last good script stays), and the write's final event loads the whole file.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from agent_registry.runtime.bundle import (
    META_KEY,
    SCRIPT_KEY,
    BehaviorBundle,
    BundleError,
    is_script_key,
    parse_bundle,
)
from agent_registry.runtime.inotify import DirectoryWatch, InotifyUnavailable
from agent_registry.runtime.kubelet_volume import DATA_DIR
from agent_registry.runtime.source import BundleCallback

log = logging.getLogger(__name__)

_VersionKey = tuple[object, ...]
_READ_ATTEMPTS = 5


class DirectorySource:
    """Watches `path` and delivers a BehaviorBundle whenever its content version changes."""

    def __init__(
        self, path: str | os.PathLike[str], *, poll_interval: float = 0.25, use_inotify: bool = True
    ) -> None:
        self.path = Path(path)
        self.poll_interval = poll_interval
        self.use_inotify = use_inotify
        self.mode = "poll"  # "inotify+poll" once the inotify watch is set up
        self._last_key: _VersionKey | None = None
        self._on_bundle: BundleCallback | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1

    # -- reading -------------------------------------------------------------------------

    def version_key(self) -> _VersionKey | None:
        """Cheap: what identifies the content now (None when there is nothing to read)."""
        try:
            return ("kubelet", os.readlink(self.path / DATA_DIR))
        except FileNotFoundError:
            pass
        except OSError:  # `..data` exists but is not a symlink: treat as a plain directory
            pass
        parts: list[object] = ["plain"]
        for key in (SCRIPT_KEY, META_KEY, *_extra_script_keys(self.path)):
            try:
                st = os.stat(self.path / key)
            except FileNotFoundError:
                parts.append(None)
                continue
            parts.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return None if parts[1] is None else tuple(parts)

    def read(self) -> tuple[_VersionKey, BehaviorBundle] | None:
        """The current version key and bundle, read consistently; None if there is no
        script. Raises BundleError when the script is unusable (not UTF-8)."""
        for _ in range(_READ_ATTEMPTS):
            key = self.version_key()
            if key is None:
                return None
            base = self.path / str(key[1]) if key[0] == "kubelet" else self.path
            try:
                files = _read_keys(base)
            except FileNotFoundError:
                continue  # the kubelet removed that version while we read it: look again
            if self.version_key() != key:
                # Swapped (or edited) while we read: the kubelet deletes the old directory's
                # files one by one right after the swap, so what we read may lack a key.
                # Unchanged means no swap began before our reads ended (timestamped names are
                # never reused), hence nothing of that version had been deleted yet.
                continue
            if SCRIPT_KEY not in files:
                return None
            return key, parse_bundle(
                files, origin=f"{self.path} ({key[1] if key[0] == 'kubelet' else 'plain'})"
            )
        log.warning("behavior directory %s kept changing while read; will retry", self.path)
        return None

    # -- watching ------------------------------------------------------------------------

    def start(self, on_bundle: BundleCallback) -> None:
        if self._thread is not None:
            raise RuntimeError("DirectorySource already started")
        self._on_bundle = on_bundle
        self._wake_r, self._wake_w = os.pipe()
        self.check()
        self._thread = threading.Thread(
            target=self._run, name=f"behavior-dir:{self.path}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r, self._wake_w = -1, -1

    def check(self) -> bool:
        """Deliver the content if its version changed since the last delivery."""
        key = self.version_key()
        if key is None or key == self._last_key:
            return False
        try:
            result = self.read()
        except BundleError as exc:
            log.error("behavior in %s unusable: %s", self.path, exc)
            self._last_key = key  # do not spin on it; the next version gets a new key
            return False
        if result is None:
            return False
        self._last_key, bundle = result
        if self._on_bundle is not None:
            self._on_bundle(bundle)
        return True

    def _run(self) -> None:
        watch = self._open_watch()
        try:
            while not self._stop.is_set():
                if watch is None:
                    watch = self._open_watch()  # the directory may have appeared
                if watch is not None:
                    watch.wait(self.poll_interval, self._wake_r)
                else:
                    self._stop.wait(self.poll_interval)
                if self._stop.is_set():
                    break
                try:
                    self.check()
                except Exception:
                    # A callback or filesystem error must not end the watch: log, keep going.
                    log.exception("checking behavior directory %s failed", self.path)
        finally:
            if watch is not None:
                watch.close()

    def _open_watch(self) -> DirectoryWatch | None:
        if not self.use_inotify or not self.path.is_dir():
            return None
        try:
            watch = DirectoryWatch(self.path)
        except InotifyUnavailable as exc:
            log.info(
                "inotify unavailable for %s (%s); polling every %.2fs",
                self.path,
                exc,
                self.poll_interval,
            )
            self.use_inotify = False
            return None
        self.mode = "inotify+poll"
        return watch


def _extra_script_keys(base: Path) -> list[str]:
    """behavior-N.lua files in `base` (sorted, so a version key is stable)."""
    try:
        names = os.listdir(base)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(name for name in names if name != SCRIPT_KEY and is_script_key(name))


def _read_keys(base: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for key in (SCRIPT_KEY, META_KEY, *_extra_script_keys(base)):
        try:
            files[key] = (base / key).read_bytes()
        except FileNotFoundError:
            if not base.is_dir():
                raise
    return files
