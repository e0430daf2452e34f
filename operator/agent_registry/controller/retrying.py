"""Turn outages into kopf's retries: a handler that meets a down database or apiserver is
retried soon (TemporaryError with a short delay) instead of kopf's default one-minute backoff."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import kopf

from agent_registry.controller.kubeapi import KubeUnavailable
from agent_registry.registry import RegistryUnavailable

P = ParamSpec("P")
R = TypeVar("R")

RETRY_DELAY_SECONDS = 5.0


def retry_on_outage(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (RegistryUnavailable, KubeUnavailable) as exc:
            raise kopf.TemporaryError(f"{exc}; retrying", delay=RETRY_DELAY_SECONDS) from exc

    return wrapper


__all__ = ["RETRY_DELAY_SECONDS", "retry_on_outage"]
