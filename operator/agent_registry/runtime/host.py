"""BehaviorHost: runs the agent's current Lua behavior(s) and hot-swaps them safely.

A bundle holds one script, or several with weights (a canary, experiment arms): each script
runs in a sandbox of its own (its own `ctx.state`), and every task is drawn to one of them by
weight. The task's result says which script ran it, so its outcome is credited to that one.

One lock serializes everything that touches a sandbox: task calls and the swap. A load takes
the lock, keeps the sandboxes whose script and limits did not change, builds the others (a
fresh Lua runtime each; the constructor runs `init` and `on_reload(previous_state)`) from a
copy of the state of the sandbox they replace, and swaps the set in only once all builds are
done. So a call sees a whole old script or a whole new one, state handed over is exactly the
state after the last call, and a broken script leaves the old one running. Holding the lock
while compiling is deliberate: building a sandbox costs about 0.1 ms for a normal script
(fresh runtime + load), bounded by the script's own timeout for a hostile `init`, and doing
it outside the lock would lose the state written in between.

Which old sandbox a new script replaces (its state donor, and its stand-in if it fails to
load): one running the same behavior (namespace and name), preferring one the new bundle does
not keep, then the same position. The primary also replaces the old primary whatever its
name, as a one-script reload always has (an assignment switch carries `ctx.state`). A script
that fails to load is reported (LoadFailure) and its share of tasks goes to its stand-in, or,
without one, to the other scripts in proportion; when none of the new bundle's scripts can
run, the whole previous set keeps running.

Failing task calls (LuaBehaviorError, LuaLimitExceeded) are the caller's failed tasks; the
sandbox stays in place, so the agent keeps working.

A refused script is not tried again until its source delivers something new, except when the
refusal was a wall-clock timeout: that depends on how busy the machine was, not only on the
script, so the host retries it a few times with backoff (unless something newer arrived).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import math
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from agent_registry.lua import Limits, LuaError, LuaLimitExceeded, Sandbox
from agent_registry.reports import LoadedBehavior, LoadedScript, LoadFailure
from agent_registry.runtime.backoff import Backoff
from agent_registry.runtime.bundle import BehaviorBundle, BundleScript, Identity

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


@dataclass(frozen=True)
class TaskRun:
    """One call into the behavior: which script ran it, and its result or its error."""

    sha256: str
    name: str | None
    revision: int | None
    result: Any = None
    error: LuaError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def value(self) -> Any:
        """The result, or the script's error raised."""
        if self.error is not None:
            raise self.error
        return self.result


class _Running:
    """One built sandbox and the script it runs (labels updated in place on a relabel)."""

    __slots__ = ("loaded_at", "sandbox", "script")

    def __init__(self, script: BundleScript, sandbox: SandboxLike, loaded_at: datetime) -> None:
        self.script = script
        self.sandbox = sandbox
        self.loaded_at = loaded_at


@dataclass(frozen=True)
class _Slot:
    """A script of the applied bundle: its position there, what it asked for, what runs it,
    its share of tasks. A script dropped for want of a stand-in has no slot."""

    index: int
    wanted: BundleScript
    running: _Running
    weight: float


@dataclass(frozen=True)
class _Refusal:
    sha256: str
    error: str
    line: int | None
    timed_out: bool = False
    # False when the cause is not the script (its metadata, the host): worth another try
    # as soon as the script comes again.
    of_script: bool = True

    @property
    def final(self) -> bool:
        """Building the same script again would fail the same way."""
        return self.of_script and not self.timed_out


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
        rng: random.Random | None = None,
    ) -> None:
        self._default_limits = default_limits
        self._timeout_retry = timeout_retry or Backoff(base=1.0, cap=30.0)
        self._max_timeout_retries = max_timeout_retries
        self._retry_timer: threading.Timer | None = None
        self._closed = False
        self._config = dict(config) if config is not None else None
        self._factory = sandbox_factory
        self._lua_log = lua_log
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # guards the slots: calls, draws and the swap
        self._load_lock = threading.Lock()  # one load at a time (several sources may feed us)
        self._slots: tuple[_Slot, ...] = ()
        self._cumulative: tuple[float, ...] = ()
        self._bundle: BehaviorBundle | None = None
        self._loaded: LoadedBehavior | None = None
        self._failure: LoadFailure | None = None
        self._failed_identity: object = None
        # Scripts of the last bundle refused for what they are (not a timeout): not rebuilt
        # while they stay in the bundle, e.g. when only the weights move.
        self._refused: dict[Identity, LoadFailure] = {}
        self._listeners: list[LoadListener] = []
        self.loads = 0  # sandboxes built
        self.load_failures = 0  # scripts refused
        self.calls = 0
        self.calls_failed = 0

    # -- status --------------------------------------------------------------------------

    @property
    def loaded(self) -> LoadedBehavior | None:
        """What runs now (None before the first successful load): the primary's sha256 and
        revision, and for a multi-script bundle every script with its effective weight."""
        return self._loaded

    @property
    def load_failure(self) -> LoadFailure | None:
        """The last refused script, if it came after what runs."""
        return self._failure

    @property
    def bundle(self) -> BehaviorBundle | None:
        """The bundle applied last (some of its scripts may run a stand-in, see `loaded`)."""
        return self._bundle

    def subscribe(self, listener: LoadListener) -> None:
        """`listener` is called (from the loading thread) after every load or failure."""
        self._listeners.append(listener)

    # -- loading -------------------------------------------------------------------------

    def load(self, bundle: BehaviorBundle) -> LoadEvent | None:
        """Load `bundle` unless it is what runs now (or what failed last time). Returns the
        LoadFailure of the last script refused, else the new LoadedBehavior, or None when
        nothing changed; listeners get every event. The same scripts, limits and weights
        under new revisions or names only relabel what runs (no reload, same loaded_at)."""
        with self._load_lock:
            events: list[LoadEvent]
            if self._bundle is not None and self._bundle.identity == bundle.identity:
                events = self._relabel(bundle)
            elif self._failed_identity == bundle.identity:
                events = []
            else:
                events = self._load(bundle)
        for event in events:
            self._notify(event)
        failures = [e for e in events if isinstance(e, LoadFailure)]
        if failures:
            return failures[-1]
        return events[-1] if events else None

    def _notify(self, event: LoadEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("load listener failed")

    def _relabel(self, bundle: BehaviorBundle) -> list[LoadEvent]:
        """The same scripts and limits under other names or revisions (e.g. another behavior
        with an identical script was assigned): nothing to reload, but report the new labels.
        `loaded_at` stays: those scripts have been running since then."""
        current = self._bundle
        assert current is not None
        assert self._loaded is not None
        if [e.labels for e in bundle.entries] == [e.labels for e in current.entries]:
            return []
        with self._lock:
            slots = []
            for slot in self._slots:
                entry = bundle.entries[slot.index]
                if slot.running.script.identity == slot.wanted.identity:
                    slot.running.script = entry  # it runs what it asked for: same labels
                slots.append(dataclasses.replace(slot, wanted=entry))
            self._slots = tuple(slots)
            self._bundle = bundle
            self._loaded = self._describe(bundle, self._slots, self._loaded.loaded_at)
        return [self._loaded]

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
            events = self._load(bundle, attempt=attempt)
        for event in events:
            self._notify(event)

    def _load(self, bundle: BehaviorBundle, *, attempt: int = 0) -> list[LoadEvent]:
        if bundle.meta_error is not None:
            refusal = _Refusal(bundle.sha256, bundle.meta_error, None, of_script=False)
            return self._refuse(bundle, {0: refusal}, {}, attempt)
        if bundle.declared_sha256 and bundle.declared_sha256 != bundle.sha256:
            # The kubelet writes all keys atomically, so this is a controller bug; the
            # script's own hash is the truth we report.
            log.warning(
                "behavior.json sha256 %s does not match the script (%s)",
                bundle.declared_sha256,
                bundle.sha256,
            )
        entries = bundle.entries
        with self._lock:
            old_slots = self._slots
            keep = _match_kept(entries, old_slots)
            kept = {id(running) for running in keep.values()}
            sandboxes: dict[int, SandboxLike] = {}
            refusals: dict[int, _Refusal] = {}
            cached: dict[int, LoadFailure] = {}
            for index, entry in enumerate(entries):
                if index in keep:
                    continue
                known = self._refused.get(entry.identity)
                if known is not None:
                    cached[index] = known
                    continue
                donor = _donor(entry, index, old_slots, kept, any_name=index == 0)
                result = self._build(entry, donor)
                if isinstance(result, _Refusal):
                    refusals[index] = result
                else:
                    sandboxes[index] = result
            built_at = datetime.now(UTC)
            built = {i: _Running(entries[i], sandbox, built_at) for i, sandbox in sandboxes.items()}
            slots = _assemble(entries, keep, built, old_slots, kept, first_load=not old_slots)
            if slots is None or not (keep or built):
                applied = False
            else:
                applied = True
                self._set_slots(slots)
                self._bundle = bundle
                self.loads += len(built)
        if not applied:
            for running in built.values():
                running.sandbox.close()
            return self._refuse(bundle, refusals, cached, attempt)
        in_use = {id(slot.running) for slot in self._slots}
        for running in _unique(slot.running for slot in old_slots):
            if id(running) not in in_use:
                running.sandbox.close()
        events: list[LoadEvent] = []
        previous = self._loaded
        loaded_at = built_at if built or previous is None else previous.loaded_at
        self._loaded = self._describe(bundle, self._slots, loaded_at)
        if self._loaded != previous:
            events.append(self._loaded)
            log.info(
                "loaded behavior sha256=%s revision=%s from %s (%s)",
                self._loaded.sha256[:12],
                self._loaded.revision,
                bundle.origin,
                ", ".join(f"{s.sha256[:12]}={s.weight:.4g}" for s in self._loaded.scripts)
                or "one script",
            )
        if refusals or cached:
            events.extend(self._record_refusals(bundle, refusals, cached, attempt, loaded_at))
        else:
            self._failure = None
            self._failed_identity = None
            self._refused = {}
        return events

    def _refuse(
        self,
        bundle: BehaviorBundle,
        refusals: Mapping[int, _Refusal],
        cached: Mapping[int, LoadFailure],
        attempt: int,
    ) -> list[LoadEvent]:
        """Nothing of `bundle` runs: what ran before keeps running, unchanged."""
        after = self._loaded.loaded_at if self._loaded is not None else None
        return list(self._record_refusals(bundle, refusals, cached, attempt, after))

    def _record_refusals(
        self,
        bundle: BehaviorBundle,
        refusals: Mapping[int, _Refusal],
        cached: Mapping[int, LoadFailure],
        attempt: int,
        after: datetime | None,
    ) -> list[LoadFailure]:
        """Report the new refusals (the latest becomes `load_failure`), remember the scripts
        refused for what they are, retry those that timed out. Returns the failures to
        announce."""
        failures = {i: self._failure_of(refusals[i], after=after) for i in sorted(refusals)}
        latest = max([*failures, *cached])
        if latest in cached and cached[latest] != self._failure:
            # A script refused before, delivered again after something else: said again,
            # dated now, since the registry ignores a failure older than the last it stored.
            failures[latest] = self._failure_of(
                _Refusal(cached[latest].sha256, cached[latest].error, cached[latest].line),
                after=after,
            )
        self._failure = failures.get(latest, cached.get(latest))
        self._failed_identity = bundle.identity
        entries = bundle.entries
        self._refused = {
            entries[i].identity: failures.get(i, failure) for i, failure in cached.items()
        }
        self._refused.update(
            (entries[i].identity, failures[i]) for i in refusals if refusals[i].final
        )
        if any(refusal.timed_out for refusal in refusals.values()):
            self._schedule_retry(bundle, attempt)
        return [failures[i] for i in sorted(failures)]

    def _build(self, entry: BundleScript, donor: _Running | None) -> SandboxLike | _Refusal:
        """A sandbox for `entry` starting from a copy of `donor`'s state (caller holds the
        lock), or why it was refused."""
        try:
            limits = self._limits_for(entry)
        except (TypeError, ValueError) as exc:
            return _Refusal(entry.sha256, f"invalid limits: {exc}", None)
        previous_state = _state_to_carry(donor.sandbox) if donor is not None else None
        try:
            return self._factory(
                entry.script,
                limits,
                chunk_name=entry.name or "behavior",
                config=self._config,
                previous_state=previous_state,
                log=self._lua_log,
            )
        except LuaError as exc:
            return _Refusal(entry.sha256, str(exc), _line_of(exc), timed_out=_timed_out(exc))
        except Exception as exc:
            # Not the script's fault (a host bug, lupa itself): still no reason to drop the
            # running behavior. Logged with its traceback, reported like a refusal.
            log.exception("building the sandbox failed")
            return _Refusal(
                entry.sha256,
                f"internal error: {type(exc).__name__}: {exc}",
                None,
                of_script=False,
            )

    def _failure_of(self, refusal: _Refusal, *, after: datetime | None) -> LoadFailure:
        """The report of a refusal. Its time is after what it is reported beside: the
        registry keeps a failure only if it came after the load it confirms."""
        failed_at = datetime.now(UTC)
        if after is not None and failed_at <= after:
            failed_at = after + timedelta(microseconds=1)
        failure = LoadFailure(
            sha256=refusal.sha256,
            error=refusal.error[:_MAX_ERROR] or "load failed",
            line=refusal.line,
            failed_at=failed_at,
        )
        self.load_failures += 1
        log.error(
            "refused behavior sha256=%s (running %s): %s",
            refusal.sha256[:12],
            self._loaded.sha256[:12] if self._loaded else "nothing",
            failure.error,
        )
        return failure

    def _set_slots(self, slots: Sequence[_Slot]) -> None:
        """Swap in `slots` (caller holds the lock)."""
        self._slots = tuple(slots)
        self._cumulative = tuple(itertools.accumulate(slot.weight for slot in self._slots))

    @staticmethod
    def _describe(
        bundle: BehaviorBundle, slots: Sequence[_Slot], loaded_at: datetime
    ) -> LoadedBehavior:
        first = slots[0].running.script
        scripts: list[LoadedScript] = []
        if bundle.multi:
            # Two slots served by one sandbox (a stand-in) are one script to the registry.
            shares: dict[int, tuple[BundleScript, float]] = {}
            for slot in slots:
                script, weight = shares.get(id(slot.running), (slot.running.script, 0.0))
                shares[id(slot.running)] = (script, weight + slot.weight)
            scripts = [
                LoadedScript(
                    sha256=script.sha256,
                    weight=min(1.0, weight),
                    name=script.name,
                    revision=script.revision,
                )
                for script, weight in shares.values()
            ]
        return LoadedBehavior(
            sha256=first.sha256, loaded_at=loaded_at, revision=first.revision, scripts=scripts
        )

    def _limits_for(self, entry: BundleScript) -> Limits:
        if self._default_limits is None:
            return Limits(**entry.limits)
        return dataclasses.replace(self._default_limits, **entry.limits)

    # -- calling -------------------------------------------------------------------------

    def run_task(self, task: dict[str, Any]) -> TaskRun:
        """Run on_task in a script drawn by weight. The script's own failure (LuaBehaviorError,
        LuaLimitExceeded) is in the TaskRun's `error`; raises NoBehaviorLoaded."""
        return self._invoke(lambda sandbox: sandbox.on_task(task))

    def on_task(self, task: dict[str, Any]) -> Any:
        """Run the behavior's on_task. Raises NoBehaviorLoaded, or the sandbox's LuaError
        (LuaBehaviorError, LuaLimitExceeded) for a failed task. `run_task` also says which
        script ran, which a multi-script bundle's outcomes need."""
        return self.run_task(task).value()

    def call(self, name: str, *args: Any) -> Any:
        """Call a global function of a script drawn by weight, like a task."""
        return self._invoke(lambda sandbox: sandbox.call(name, *args)).value()

    @property
    def state(self) -> dict[str, Any]:
        """`ctx.state` of the primary's sandbox (each script has its own)."""
        with self._lock:
            if not self._slots:
                return {}
            return self._slots[0].running.sandbox.state

    def _draw(self) -> _Slot:
        slots = self._slots
        if len(slots) == 1:
            return slots[0]
        point = self._rng.random() * self._cumulative[-1]
        # bisect_right: a slot of weight 0 ends where its predecessor ends, so it is never drawn.
        return slots[min(bisect.bisect_right(self._cumulative, point), len(slots) - 1)]

    def _invoke(self, fn: Callable[[SandboxLike], Any]) -> TaskRun:
        with self._lock:
            if not self._slots:
                raise NoBehaviorLoaded("no behavior loaded yet")
            running = self._draw().running
            script = running.script
            self.calls += 1
            try:
                result = fn(running.sandbox)
            except LuaError as exc:
                self.calls_failed += 1
                return TaskRun(script.sha256, script.name, script.revision, error=exc)
            except Exception:
                self.calls_failed += 1
                raise
            return TaskRun(script.sha256, script.name, script.revision, result=result)

    def close(self) -> None:
        self._closed = True
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        with self._lock:
            for running in _unique(slot.running for slot in self._slots):
                running.sandbox.close()
            self._set_slots(())


def _unique(runnings: Any) -> list[_Running]:
    seen: dict[int, _Running] = {}
    for running in runnings:
        seen.setdefault(id(running), running)
    return list(seen.values())


def _behavior(script: BundleScript) -> tuple[str | None, str | None]:
    return script.namespace, script.name


def _match_kept(entries: Sequence[BundleScript], old: Sequence[_Slot]) -> dict[int, _Running]:
    """Which new scripts keep a running sandbox (same script and limits): each sandbox is
    kept once, preferring the same behavior, then the same position."""
    free = _unique(slot.running for slot in old)
    positions = {id(slot.running): i for i, slot in reversed(list(enumerate(old)))}
    keep: dict[int, _Running] = {}
    for index, entry in enumerate(entries):
        same = [r for r in free if r.script.identity == entry.identity]
        if not same:
            continue
        same.sort(
            key=lambda r: (
                _behavior(r.script) != _behavior(entry),
                positions.get(id(r)) != index,
            )
        )
        keep[index] = same[0]
        free.remove(same[0])
    return keep


def _donor(
    entry: BundleScript,
    index: int,
    old: Sequence[_Slot],
    kept: set[int],
    *,
    any_name: bool,
) -> _Running | None:
    """The running sandbox a new script replaces: one of the same behavior, preferring one
    the new bundle does not keep, then the same position; for the primary (`any_name`), the
    old primary otherwise."""
    candidates = [
        (id(slot.running) in kept, i != index, i, slot.running)
        for i, slot in enumerate(old)
        if _behavior(slot.running.script) == _behavior(entry)
    ]
    if candidates:
        return min(candidates, key=lambda c: c[:3])[3]
    if any_name and old:
        return old[0].running
    return None


def _assemble(
    entries: Sequence[BundleScript],
    keep: Mapping[int, _Running],
    built: Mapping[int, _Running],
    old: Sequence[_Slot],
    kept: set[int],
    *,
    first_load: bool,
) -> list[_Slot] | None:
    """The new slots: each script's own sandbox, else its stand-in (the old sandbox of the
    same behavior), else dropped with the weights renormalized. None when no task could be
    drawn: the previous set then stays (a first load shares tasks equally instead)."""
    chosen: list[tuple[int, BundleScript, _Running]] = []
    for index, entry in enumerate(entries):
        running = keep.get(index) or built.get(index)
        if running is None:
            running = _donor(entry, index, old, kept, any_name=False)
        if running is not None:
            chosen.append((index, entry, running))
    if not chosen:
        return None
    total = math.fsum(entry.weight for _, entry, _ in chosen)
    if total <= 0:
        if not first_load:
            return None
        return [_Slot(i, entry, running, 1.0 / len(chosen)) for i, entry, running in chosen]
    return [_Slot(i, entry, running, entry.weight / total) for i, entry, running in chosen]


def _state_to_carry(sandbox: SandboxLike) -> dict[str, Any]:
    try:
        return sandbox.state
    except LuaError as exc:
        # The running script left ctx.state unconvertible (not a table, a function in it,
        # too big). Refusing the new script would leave no way to fix that agent: hand over
        # an empty state instead, and say so.
        log.warning("ctx.state cannot be carried over (%s); the new script starts empty", exc)
        return {}


def _timed_out(exc: LuaError) -> bool:
    """A wall-clock timeout while loading (the sandbox wraps it in LuaValidationError)."""
    cause = exc if isinstance(exc, LuaLimitExceeded) else exc.__cause__
    return isinstance(cause, LuaLimitExceeded) and cause.kind == "timeout"


def _line_of(exc: LuaError) -> int | None:
    return exc.line if isinstance(exc.line, int) else None
