"""BehaviorHost: runs the agent's current Lua behavior and hot-swaps it safely.

One lock serializes everything that touches a sandbox: task calls and the swap. A load takes
the lock, copies the running sandbox's `ctx.state`, builds the new sandbox from it (a fresh
Lua runtime; its constructor runs `init` and `on_reload(previous_state)`), and swaps it in
only if all of that worked. So a call sees the whole old script or the whole new one, state
handed over is exactly the state after the last call, and a broken script leaves the old
one running. Holding the lock while compiling is deliberate: building a sandbox costs about
0.1 ms for a normal script (fresh runtime + load), bounded by the script's own timeout for a
hostile `init`, and doing it outside the lock would lose the state written in between.

Failing task calls (LuaBehaviorError, LuaLimitExceeded) propagate to the caller, which counts
them as failed tasks; the sandbox stays in place, so the agent keeps working.

A refused script is not tried again until its source delivers something new, except when the
refusal was a wall-clock timeout: that depends on how busy the machine was, not only on the
script, so the host retries it a few times with backoff (unless something newer arrived).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from agent_registry.lua import Limits, LuaError, LuaLimitExceeded, Sandbox
from agent_registry.reports import LoadedBehavior, LoadFailure
from agent_registry.runtime.backoff import Backoff
from agent_registry.runtime.bundle import BehaviorBundle

log = logging.getLogger(__name__)

LoadEvent = LoadedBehavior | LoadFailure
LoadListener = Callable[[LoadEvent], object]
_MAX_ERROR = 4096


class SandboxLike(Protocol):
    def on_task(self, task: dict[str, Any]) -> Any: ...

    def call(self, name: str, *args: Any) -> Any: ...

    @property
    def state(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


SandboxFactory = Callable[..., SandboxLike]


class NoBehaviorLoaded(RuntimeError):
    """A task arrived before any script loaded successfully."""


class BehaviorHost:
    def __init__(
        self,
        *,
        default_limits: Limits | None = None,
        config: Mapping[str, Any] | None = None,
        sandbox_factory: SandboxFactory = Sandbox,
        lua_log: Callable[[str], None] | None = None,
        timeout_retry: Backoff | None = None,
        max_timeout_retries: int = 5,
    ) -> None:
        self._default_limits = default_limits
        self._timeout_retry = timeout_retry or Backoff(base=1.0, cap=30.0)
        self._max_timeout_retries = max_timeout_retries
        self._retry_timer: threading.Timer | None = None
        self._closed = False
        self._config = dict(config) if config is not None else None
        self._factory = sandbox_factory
        self._lua_log = lua_log
        self._lock = threading.Lock()  # guards the sandbox: calls and the swap
        self._load_lock = threading.Lock()  # one load at a time (several sources may feed us)
        self._sandbox: SandboxLike | None = None
        self._bundle: BehaviorBundle | None = None
        self._loaded: LoadedBehavior | None = None
        self._failure: LoadFailure | None = None
        self._failed_identity: object = None
        self._listeners: list[LoadListener] = []
        self.loads = 0
        self.load_failures = 0
        self.calls = 0
        self.calls_failed = 0

    # -- status --------------------------------------------------------------------------

    @property
    def loaded(self) -> LoadedBehavior | None:
        """The behavior running now (None before the first successful load)."""
        return self._loaded

    @property
    def load_failure(self) -> LoadFailure | None:
        """The last refused script, if it came after the running one."""
        return self._failure

    @property
    def bundle(self) -> BehaviorBundle | None:
        return self._bundle

    def subscribe(self, listener: LoadListener) -> None:
        """`listener` is called (from the loading thread) after every load or failure."""
        self._listeners.append(listener)

    # -- loading -------------------------------------------------------------------------

    def load(self, bundle: BehaviorBundle) -> LoadEvent | None:
        """Load `bundle` unless it is what runs now (or what failed last time): returns the
        LoadedBehavior or LoadFailure, or None when nothing changed. The same script and limits
        under a new revision or name only relabel what runs (no reload, same loaded_at)."""
        with self._load_lock:
            event: LoadEvent | None
            if self._bundle is not None and self._bundle.identity == bundle.identity:
                event = self._relabel(bundle)
            elif self._failed_identity == bundle.identity:
                event = None
            else:
                event = self._load(bundle)
        if event is None:
            return None
        self._notify(event)
        return event

    def _notify(self, event: LoadEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("load listener failed")

    def _relabel(self, bundle: BehaviorBundle) -> LoadEvent | None:
        """The same script and limits under another name or revision (e.g. another behavior
        with an identical script was assigned): nothing to reload, but report the new labels.
        `loaded_at` stays: that script has been running since then."""
        current = self._bundle
        assert current is not None
        assert self._loaded is not None
        if (bundle.revision, bundle.name, bundle.namespace) == (
            current.revision,
            current.name,
            current.namespace,
        ):
            return None
        self._bundle = bundle
        self._loaded = self._loaded.model_copy(update={"revision": bundle.revision})
        return self._loaded

    def _schedule_retry(self, bundle: BehaviorBundle, attempt: int) -> None:
        if self._closed or attempt >= self._max_timeout_retries:
            return
        delay = self._timeout_retry.delay(attempt)
        log.info(
            "retrying behavior sha256=%s in %.1fs (timed out while loading)",
            bundle.sha256[:12],
            delay,
        )
        timer = threading.Timer(delay, self._retry, args=(bundle, attempt + 1))
        timer.daemon = True
        self._retry_timer = timer
        timer.start()

    def _retry(self, bundle: BehaviorBundle, attempt: int) -> None:
        with self._load_lock:
            if self._closed or self._failed_identity != bundle.identity:
                return  # something newer arrived meanwhile (loaded or refused)
            event = self._load(bundle, attempt=attempt)
        self._notify(event)

    def _load(self, bundle: BehaviorBundle, *, attempt: int = 0) -> LoadEvent:
        if bundle.meta_error is not None:
            return self._fail(bundle, bundle.meta_error, None)
        if bundle.declared_sha256 and bundle.declared_sha256 != bundle.sha256:
            # The kubelet writes both keys atomically, so this is a controller bug; the
            # script's own hash is the truth we report.
            log.warning(
                "behavior.json sha256 %s does not match the script (%s)",
                bundle.declared_sha256,
                bundle.sha256,
            )
        try:
            limits = self._limits_for(bundle)
        except (TypeError, ValueError) as exc:
            return self._fail(bundle, f"invalid limits: {exc}", None)
        with self._lock:
            old = self._sandbox
            previous_state = self._state_to_carry(old)
            try:
                new = self._factory(
                    bundle.script,
                    limits,
                    chunk_name=bundle.name or "behavior",
                    config=self._config,
                    previous_state=previous_state,
                    log=self._lua_log,
                )
            except LuaError as exc:
                if _timed_out(exc):
                    self._schedule_retry(bundle, attempt)
                return self._fail(bundle, str(exc), _line_of(exc))
            except Exception as exc:
                # Not the script's fault (a host bug, lupa itself): still no reason to drop
                # the running behavior. Logged with its traceback, reported like a refusal.
                log.exception("building the sandbox failed")
                return self._fail(bundle, f"internal error: {type(exc).__name__}: {exc}", None)
            self._sandbox = new
            self._bundle = bundle
            self._failure = None
            self._failed_identity = None
            self._loaded = LoadedBehavior(
                sha256=bundle.sha256, loaded_at=datetime.now(UTC), revision=bundle.revision
            )
            self.loads += 1
            loaded = self._loaded
        if old is not None:
            old.close()
        log.info(
            "loaded behavior sha256=%s revision=%s from %s",
            bundle.sha256[:12],
            bundle.revision,
            bundle.origin,
        )
        return loaded

    @staticmethod
    def _state_to_carry(old: SandboxLike | None) -> dict[str, Any] | None:
        if old is None:
            return None
        try:
            return old.state
        except LuaError as exc:
            # The running script left ctx.state unconvertible (not a table, a function in it,
            # too big). Refusing the new script would leave no way to fix that agent: hand
            # over an empty state instead, and say so.
            log.warning("ctx.state cannot be carried over (%s); the new script starts empty", exc)
            return {}

    def _fail(self, bundle: BehaviorBundle, error: str, line: int | None) -> LoadFailure:
        failure = LoadFailure(
            sha256=bundle.sha256,
            error=error[:_MAX_ERROR] or "load failed",
            line=line,
            failed_at=datetime.now(UTC),
        )
        self._failure = failure
        self._failed_identity = bundle.identity
        self.load_failures += 1
        log.error(
            "refused behavior sha256=%s (keeping %s): %s",
            bundle.sha256[:12],
            self._loaded.sha256[:12] if self._loaded else "nothing",
            failure.error,
        )
        return failure

    def _limits_for(self, bundle: BehaviorBundle) -> Limits:
        if self._default_limits is None:
            return Limits(**bundle.limits)
        return dataclasses.replace(self._default_limits, **bundle.limits)

    # -- calling -------------------------------------------------------------------------

    def on_task(self, task: dict[str, Any]) -> Any:
        """Run the behavior's on_task. Raises NoBehaviorLoaded, or the sandbox's LuaError
        (LuaBehaviorError, LuaLimitExceeded) for a failed task."""
        return self._invoke(lambda sandbox: sandbox.on_task(task))

    def call(self, name: str, *args: Any) -> Any:
        return self._invoke(lambda sandbox: sandbox.call(name, *args))

    @property
    def state(self) -> dict[str, Any]:
        with self._lock:
            if self._sandbox is None:
                return {}
            return self._sandbox.state

    def _invoke(self, fn: Callable[[SandboxLike], Any]) -> Any:
        with self._lock:
            sandbox = self._sandbox
            if sandbox is None:
                raise NoBehaviorLoaded("no behavior loaded yet")
            self.calls += 1
            try:
                return fn(sandbox)
            except Exception:
                self.calls_failed += 1
                raise

    def close(self) -> None:
        self._closed = True
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        with self._lock:
            if self._sandbox is not None:
                self._sandbox.close()
                self._sandbox = None


def _timed_out(exc: LuaError) -> bool:
    """A wall-clock timeout while loading (the sandbox wraps it in LuaValidationError)."""
    cause = exc if isinstance(exc, LuaLimitExceeded) else exc.__cause__
    return isinstance(cause, LuaLimitExceeded) and cause.kind == "timeout"


def _line_of(exc: LuaError) -> int | None:
    return exc.line if isinstance(exc.line, int) else None
