"""kopf's success line for the handlers it runs on every watch event is dropped; the rest of
its log is kept."""

from __future__ import annotations

import logging

from agent_registry.controller.operator import WatchHandlerSuccesses


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


def test_watch_handler_successes_are_dropped_failures_and_others_kept() -> None:
    quiet = WatchHandlerSuccesses()
    assert not quiet.filter(_record("Handler 'rollout' succeeded."))
    assert not quiet.filter(_record("Handler 'grants' succeeded."))
    assert quiet.filter(_record("Handler 'reconcile' succeeded."))
    assert quiet.filter(_record("Handler 'rollout' failed with an exception. Will retry.", 40))
    assert quiet.filter(_record("Creation is processed: 1 succeeded; 0 failed."))
