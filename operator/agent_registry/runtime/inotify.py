"""A minimal inotify watch on one directory, through ctypes (Linux only, no dependency).

Used only as a wake-up signal: the caller re-checks what it cares about (the `..data` link)
on every wake, so events are drained, never parsed, and a lost or coalesced event costs at
most one poll interval.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select

# <sys/inotify.h>
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

# A kubelet swap is a rename (IN_MOVED_TO of `..data`); a plain directory edited by hand
# shows up as writes and creations.
DIRECTORY_CHANGES = (
    IN_MOVED_TO
    | IN_MOVED_FROM
    | IN_CREATE
    | IN_DELETE
    | IN_CLOSE_WRITE
    | IN_MODIFY
    | IN_ATTRIB
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)


class InotifyUnavailable(OSError):
    """No inotify here (not Linux, no libc symbol, or the watch limit is exhausted)."""


def _libc() -> ctypes.CDLL:
    # The running interpreter already links libc: dlopen(NULL) finds its symbols without
    # find_library, which may spawn ldconfig or a compiler to look.
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        pass
    name = ctypes.util.find_library("c")
    if name is None:
        raise InotifyUnavailable("libc not found")
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise InotifyUnavailable(f"cannot load {name}: {exc}") from exc


class DirectoryWatch:
    """Wait until something changes in one directory (or a timeout passes)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        libc = _libc()
        try:
            init1 = libc.inotify_init1
            add_watch = libc.inotify_add_watch
        except AttributeError as exc:
            raise InotifyUnavailable(f"inotify not available: {exc}") from exc
        init1.argtypes = [ctypes.c_int]
        init1.restype = ctypes.c_int
        add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        add_watch.restype = ctypes.c_int
        fd = init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            errno = ctypes.get_errno()
            raise InotifyUnavailable(errno, f"inotify_init1: {os.strerror(errno)}")
        if add_watch(fd, os.fsencode(path), DIRECTORY_CHANGES) < 0:
            errno = ctypes.get_errno()
            os.close(fd)
            raise InotifyUnavailable(errno, f"inotify_add_watch {path}: {os.strerror(errno)}")
        self._fd = fd

    def wait(self, timeout: float, wakeup_fd: int | None = None) -> bool:
        """Block up to `timeout` seconds; True if the directory reported a change.
        `wakeup_fd` becoming readable also ends the wait (used to stop promptly)."""
        fds = [self._fd] if wakeup_fd is None else [self._fd, wakeup_fd]
        ready, _, _ = select.select(fds, [], [], timeout)
        if self._fd not in ready:
            return False
        self._drain()
        return True

    def _drain(self) -> None:
        while True:
            try:
                if not os.read(self._fd, 65536):
                    return
            except BlockingIOError:
                return

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
