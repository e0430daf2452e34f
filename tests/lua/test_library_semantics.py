"""The bounded replacements (string.rep/find/match/gmatch/gsub, table.insert/remove/move,
coroutine.wrap, load, setmetatable) behave like the standard library for ordinary arguments:
each expression gives the same results in the sandbox as in a bare lua54 state."""

from __future__ import annotations

import pytest
from lupa import lua54

from agent_registry.lua import LuaBehaviorError, Sandbox

pytestmark = pytest.mark.timeout(30, method="thread")

EXPRESSIONS = [
    'string.rep("ab", 3)',
    'string.rep("ab", 3, ",")',
    'string.rep("ab", 0)',
    'string.rep("ab", -2)',
    'string.rep("", 5, "")',
    "string.rep(12, 2)",
    '("x"):rep(4)',
    'string.find("hello world", "o w")',
    'string.find("hello world", "o", 6)',
    'string.find("hello world", "l+")',
    'string.find("a.b", ".", 1, true)',
    'string.find("hello", "")',
    'string.find("hello", "l", -2)',
    'string.find("hello", "(h)(e)")',
    'string.match("key = value", "^(%w+)%s*=%s*(%w+)$")',
    'string.match("  x", "^%s*()")',
    'string.match("f(a(b)c)", "%b()")',
    'string.match("THE (quick) fox", "%f[%a]%a+")',
    'string.match("2024-01-02", "(%d+)-(%d+)-(%d+)")',
    'string.match("abc", "b", 3)',
    'string.gsub("hello world", "o", "0")',
    'string.gsub("hello world", "o", "0", 1)',
    'string.gsub("hello", "", "-")',
    'string.gsub("abc", "%w", "%0%0")',
    'string.gsub("$name is $age", "%$(%w+)", {name = "bob", age = 3})',
    'string.gsub("abc", "b", function(c) return c:upper() end)',
    'string.gsub("abc", "b", function() return false end)',
    '("a,b,,c"):gsub(",", ";")',
    "(function() local t = {} for w in string.gmatch('one two  three', '%a+') do"
    " t[#t + 1] = w end return table.concat(t, '|') end)()",
    "(function() local t = {} for k, v in ('a=1, b=2'):gmatch('(%w+)=(%w+)') do"
    " t[#t + 1] = k .. v end return table.concat(t, '|') end)()",
    "(function() local t = {} for p in ('abc'):gmatch('()') do t[#t + 1] = p end"
    " return table.concat(t, ',') end)()",
    "(function() local t = {1, 2, 3} table.insert(t, 4) return table.concat(t, ',') end)()",
    "(function() local t = {1, 2, 3} table.insert(t, 1, 0) return table.concat(t, ',') end)()",
    "(function() local t = {1, 2, 3} table.insert(t, 4, 9) return table.concat(t, ',') end)()",
    "(function() local t = {} table.insert(t, 'a') table.insert(t, 1, 'b')"
    " return table.concat(t, ',') end)()",
    "(function() local t = {1, 2, 3} local v = table.remove(t) return v, #t end)()",
    "(function() local t = {1, 2, 3} local v = table.remove(t, 1)"
    " return v, table.concat(t, ',') end)()",
    "(function() local t = {} return table.remove(t), #t end)()",
    "(function() local t = {1, 2, 3} return table.remove(t, 4), #t end)()",
    "(function() local t = {1, 2, 3} return table.remove(t, #t + 1) end)()",
    "(function() local t = {1, 2, 3, 4, 5} table.move(t, 2, 4, 1)"
    " return table.concat(t, ',') end)()",
    "(function() local t = {1, 2, 3, 4, 5} table.move(t, 1, 3, 3)"
    " return table.concat(t, ',') end)()",
    "(function() local a, b = {1, 2, 3}, {} table.move(a, 1, 3, 2, b)"
    " return b[1], b[2], b[4] end)()",
    "(function() local t = {1, 2} return table.move(t, 1, 0, 5) == t end)()",
    "(function() local f = coroutine.wrap(function(a) local b = coroutine.yield(a + 1)"
    " return b * 2 end) return f(1), f(10) end)()",
    "(function() local co = coroutine.create(function() coroutine.yield(1) end)"
    " local r = {coroutine.resume(co)} return r[1], r[2], coroutine.status(co) end)()",
    "select(2, pcall(coroutine.wrap(function() error('in co', 0) end)))",
    "select(2, pcall(coroutine.wrap(function() error({}) end))) ~= nil",
    "load('return 1 + ...')(41)",
    "select('#', load('syntax error here'))",
    "(function() local t = setmetatable({}, {__index = function(_, k) return k .. '!' end})"
    " return t.x end)()",
    "getmetatable(setmetatable({}, {__metatable = 'locked'}))",
    "select(2, pcall(setmetatable, setmetatable({}, {__metatable = 'locked'}), {}))",
    "xpcall(function() error('boom', 0) end, function(e) return 'handled ' .. e end)",
    "select(2, xpcall(function() return 1, 2 end, tostring))",
]

ERRORS = [
    'string.rep("x", 1.5)',
    'string.rep("x", "a")',
    "string.find()",
    'string.find("x", "[a")',
    'string.find("x", "%")',
    'string.gsub("x", "x", 1 < 2)',
    "table.insert({}, 1, 2, 3)",
    "table.insert({}, 5, 'x')",
    "table.insert({}, 1.5, 'x')",
    "table.remove({1, 2}, 7)",
    "table.move({}, 1, 2)",
    "setmetatable(1, {})",
    "setmetatable({}, 1)",
    "xpcall(print, nil)",
    "table.insert(nil, 1)",
    "table.remove('x')",
    "table.move(nil, 1, 2, 3)",
]


@pytest.mark.parametrize(
    "expression",
    [
        "setmetatable(1, {})",
        "setmetatable({}, 1)",
        "setmetatable(setmetatable({}, {__metatable = 1}), {})",
        "xpcall(tostring, nil)",
        "table.insert(nil, 1)",
        "table.remove('x')",
        "table.move(nil, 1, 2, 3)",
        'string.rep("x", 1.5)',
        "table.insert({}, 5, 'x')",
    ],
)
def test_argument_errors_name_the_script_line(expression: str) -> None:
    """Errors raised in the host's wrappers point at the script, never at the host's chunk."""
    sandbox = Sandbox(f"function on_task()\n  local x = {expression}\n  return x\nend\n")
    with pytest.raises(LuaBehaviorError) as info:
        sandbox.on_task({})
    assert str(info.value).startswith("behavior:2:"), str(info.value)
    assert "sandbox-host" not in str(info.value)


def _bare() -> lua54.LuaRuntime:
    return lua54.LuaRuntime(register_eval=False, register_builtins=False)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(
        "function on_task() end\n"
        "function eval(src) return table.pack(load('return ' .. src)()) end\n"
        "function fails(src)\n"
        "  local ok, err = pcall(load('return ' .. src))\n"
        "  return not ok and type(err) == 'string'\n"
        "end\n"
    )


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_same_results_as_the_standard_library(sandbox: Sandbox, expression: str) -> None:
    native = _bare().execute(f"return table.pack({expression})")
    expected = {k: v for k, v in native.items()}
    got = sandbox.call("eval", expression)
    if isinstance(got, list):  # table.pack's n key makes it a dict unless empty
        got = dict(enumerate(got, 1))
    assert got == expected


@pytest.mark.parametrize("expression", ERRORS)
def test_same_argument_errors(sandbox: Sandbox, expression: str) -> None:
    assert _bare().execute(f"return not pcall(function() return {expression} end)")
    assert sandbox.call("fails", expression) is True
