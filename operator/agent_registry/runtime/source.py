"""What a behavior source is: something that delivers BehaviorBundles as they change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from agent_registry.runtime.bundle import BehaviorBundle

BundleCallback = Callable[[BehaviorBundle], object]


class BehaviorSource(Protocol):
    """`start` delivers the current bundle (if any) before it returns, then every change
    from a background thread; `stop` ends the thread. Callbacks run one at a time."""

    def start(self, on_bundle: BundleCallback) -> None: ...

    def stop(self) -> None: ...
