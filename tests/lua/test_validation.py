"""validate_script: compiles, defines on_task, init runs, survives a dry call; error and line."""

from __future__ import annotations

import pytest

from agent_registry.lua import Limits, ValidationResult, validate_script

pytestmark = pytest.mark.timeout(30, method="thread")


def test_valid_script() -> None:
    script = """
    local seen = 0
    function init(config) seen = 0 end
    function on_task(task, ctx)
      seen = seen + 1
      return {accept = task.difficulty < 0.9, effort = task.difficulty}
    end
    """
    assert validate_script(script) == ValidationResult(ok=True, error=None, line=None)


def test_missing_on_task() -> None:
    result = validate_script("function on_tsak(task, ctx) end")
    assert not result.ok
    assert "on_task" in (result.error or "")
    assert result.line is None


def test_on_task_not_a_function() -> None:
    result = validate_script("on_task = 42")
    assert not result.ok
    assert "on_task" in (result.error or "")


def test_syntax_error_with_line() -> None:
    result = validate_script("function on_task(task, ctx)\n  local y = 1\n\n  local x = = 2\nend\n")
    assert not result.ok
    assert result.line == 4
    assert "unexpected symbol" in (result.error or "")


def test_top_level_error_with_line() -> None:
    result = validate_script("function on_task() end\n\nlocal t = nil\nprint(t.x)\n")
    assert not result.ok
    assert result.line == 4
    assert "top level" in (result.error or "")


def test_init_error_with_line() -> None:
    script = (
        "function init(config)\n  error('bad config: ' .. tostring(config.x))\nend\n"
        "function on_task() end\n"
    )
    result = validate_script(script)
    assert not result.ok
    assert result.line == 2
    assert "init(config)" in (result.error or "")
    assert "bad config: nil" in (result.error or "")


def test_dry_call_error_with_line() -> None:
    script = "function on_task(task, ctx)\n  local x = task.missing.field\nend\n"
    result = validate_script(script)
    assert not result.ok
    assert result.line == 2
    assert (result.error or "").startswith("dry call on_task:")


def test_dry_call_error_raised_in_a_nested_function_reports_the_script_line() -> None:
    script = (
        "local function helper(t)\n  return t.a.b\nend\n"
        "function on_task(task, ctx)\n  return helper(task)\nend\n"
    )
    assert validate_script(script).line == 2


def test_error_object_without_position_still_gets_a_line() -> None:
    script = "function on_task(task, ctx)\n\n  error({code = 1})\nend\n"
    result = validate_script(script)
    assert not result.ok
    assert result.line == 3


def test_dry_call_over_the_limits() -> None:
    result = validate_script(
        "function on_task() while true do end end", Limits(max_instructions=100_000)
    )
    assert not result.ok
    assert "instruction limit exceeded" in (result.error or "")


def test_dry_call_result_must_convert() -> None:
    result = validate_script("function on_task() return {f = function() end} end")
    assert not result.ok
    assert "cannot be converted" in (result.error or "")


def test_bytecode_refused() -> None:
    result = validate_script("\x1bLua\x54\x00")
    assert not result.ok


def test_too_large_script() -> None:
    result = validate_script(
        "-- " + "x" * 2000 + "\nfunction on_task() end", Limits(max_source_bytes=1000)
    )
    assert not result.ok
    assert "larger than 1000 bytes" in (result.error or "")


def test_validation_output_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert validate_script('log("noise")\nfunction on_task() log("more") end').ok
    assert "noise" not in caplog.text
