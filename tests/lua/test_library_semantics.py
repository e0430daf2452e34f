"""The bounded replacements (string.rep/find/match/gmatch/gsub, table.insert/remove/move,
coroutine.wrap, load, setmetatable) behave like the standard library for ordinary arguments:
each expression gives the same results in the sandbox as in a bare lua54 state."""

from __future__ import annotations

import random
import re

import pytest
from lupa import lua54

from agent_registry.lua import Limits, LuaBehaviorError, Sandbox

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


# --- pattern calls too long for one C call run as a loop of anchored attempts ----------------

# A limit at which the subjects below (1-2 KB) are over the cost of one C call but not of one
# attempt, so the calls below run as a loop of attempts (the code path of long subjects at the
# default limit), or as one C call once no long run was found (test_pattern_guard).
STEPPED = Limits(max_pattern_cost=60_000)

STEPPED_EXPRESSIONS = [
    'string.find(("a"):rep(1000) .. "b", ".-b")',
    'string.find(("a"):rep(1000), ".-b")',
    'string.find(("x"):rep(900) .. "<tag>" .. ("y"):rep(900), "<(.-)>")',
    'string.find(("<"):rep(1000) .. ">", "<(.-)>")',
    'string.match(("k=v, "):rep(300), "(%w+)=(%w+)$")',
    'string.match(("a"):rep(1500) .. ".b", "%w+%.%w+", 3)',
    'string.find(("ab "):rep(500), "%s+$")',
    'string.find(("ab "):rep(500) .. "c", "%s+$")',
    'string.find(("ab"):rep(800), "b%f[a]", -100)',
    'string.find(("a"):rep(2000), "a.-$", 1500)',
    'string.find(("a"):rep(1000), "b", 5000)',
    'string.gsub(("a b,c "):rep(300), "([^,]*),", "[%1]")',
    'string.gsub(("<x>y</x> "):rep(200), "<(%a+)>(.-)</", "%2%%%0")',
    'string.gsub(("a,b,,c,"):rep(300), "([^,]*),", {a = "A", b = false, c = 1.5})',
    'string.gsub(("one two "):rep(300), "(%a+) (%a+)", function(x, y) return y .. x end)',
    'string.gsub(("one two "):rep(300), "(%a+) (%a+)", function(x) return nil end, 7)',
    'string.gsub(("ab"):rep(800), "()b%s*", "%1")',
    'string.gsub(("xy"):rep(1000), "y%s*", "-", 0)',
    'string.gsub(("a  b "):rep(400), "%s*b%s*", "B")',
    '(function() local t = {} for a, b in ("k=v; "):rep(400):gmatch("(%w+)=(%w+)%s*;")'
    " do t[#t + 1] = a .. b end return #t, t[1], t[#t] end)()",
    '(function() local t = {} for p in ("a b  c"):rep(300):gmatch("%a%s*()", 10)'
    " do t[#t + 1] = p end return #t, t[1], t[#t] end)()",
    '(function() local t = {} for w in ("^a^b"):rep(400):gmatch("^%a%s*")'
    " do t[#t + 1] = w end return #t, t[1] end)()",
]

STEPPED_ERRORS = [
    'string.gsub(("a,"):rep(1000), "([^,]*),", "%2")',
    'string.gsub(("a,"):rep(1000), "([^,]*),", "%x")',
    'string.gsub(("a,"):rep(1000), "([^,]*),", {a = {}})',
    'string.gsub(("a,"):rep(1000), "([^,]*),", "x", 1.5)',
    'string.gsub(("a,"):rep(1000), "([^,]*),", true)',
    'string.find(("a,"):rep(1000), "([^,]*),", 1.5)',
    'string.find(("a,"):rep(1000), "([^,]*),%")',
]


@pytest.fixture(scope="module")
def stepped_sandbox() -> Sandbox:
    return Sandbox(
        "function on_task() end\n"
        "function eval(src) return table.pack(load('return ' .. src)()) end\n"
        "function error_of(src)\n"
        "  local ok, err = pcall(load('return ' .. src))\n"
        "  return not ok and err\n"
        "end\n",
        STEPPED,
    )


@pytest.mark.parametrize("expression", STEPPED_EXPRESSIONS)
def test_stepped_pattern_calls_give_the_same_results(
    stepped_sandbox: Sandbox, expression: str
) -> None:
    native = _bare().execute(f"return table.pack({expression})")
    got = stepped_sandbox.call("eval", expression)
    if isinstance(got, list):
        got = dict(enumerate(got, 1))
    assert got == {k: v for k, v in native.items()}


@pytest.mark.parametrize("expression", STEPPED_ERRORS)
def test_stepped_pattern_calls_raise_the_same_errors(
    stepped_sandbox: Sandbox, expression: str
) -> None:
    native = _bare().execute(f"return select(2, pcall(function() return {expression} end))")
    got = stepped_sandbox.call("error_of", expression)
    assert isinstance(native, str)
    assert isinstance(got, str)
    # Without the position, and without the function's name in argument errors: a C function
    # the wrapper reaches by a tail call has no name Lua can find (as before stepping).
    assert _unnamed(got.split(": ", 1)[-1]) == _unnamed(native.split(": ", 1)[-1])


def _unnamed(message: str) -> str:
    return re.sub(r"to '[^']*'", "to '?'", message)


def test_stepped_gsub_errors_name_the_script_line() -> None:
    sandbox = Sandbox(
        "function on_task()\n"
        "  local s = (('a,'):rep(1000)):gsub('([^,]*),', '%9')\n"
        "  return s\n"
        "end\n",
        STEPPED,
    )
    with pytest.raises(LuaBehaviorError, match=r"^behavior:2: invalid capture index %9"):
        sandbox.on_task({})


def test_stepped_calls_match_the_standard_library_on_random_patterns() -> None:
    """Seeded random patterns and subjects, each call in both states (with a limit that makes
    most long calls stepped): the same results, or the same error."""
    rng = random.Random(15)
    atoms = ["a", "b", " ", ",", ".", "%s", "%w", "[ab]", "[^,]", "<", ">", "%."]
    specials = ["()", "(", ")", "%b<>", "%f[%w]", "%1", "$", "^", "ab", "<a"]
    harness = (
        "function on_task() end\n"
        "function run(fn, s, p, a3)\n"
        "  local ok, r = pcall(function()\n"
        "    if fn == 'gmatch' then\n"
        "      local out = {}\n"
        "      for a, b in string.gmatch(s, p, a3) do\n"
        "        out[#out + 1] = tostring(a) .. tostring(b)\n"
        "      end\n"
        "      return {table.concat(out, ',')}\n"
        "    elseif fn == 'gsub' then return table.pack(string.gsub(s, p, a3))\n"
        "    end\n"
        "    return table.pack(string[fn](s, p, a3))\n"
        "  end)\n"
        "  if not ok then return 'error ' .. tostring(r):gsub('^[^:]*:%d+: ', '') end\n"
        "  local parts = {}\n"
        "  for i = 1, r.n or #r do parts[i] = type(r[i]) .. ':' .. tostring(r[i]) end\n"
        "  return table.concat(parts, ';')\n"
        "end\n"
    )
    bare = _bare()
    bare.execute(harness)
    native_run = bare.globals().run
    sandbox = Sandbox(harness, Limits(max_pattern_cost=5_000))
    compared, looped = 0, 0
    for _ in range(1500):
        pattern = "".join(
            rng.choice(specials)
            if rng.random() < 0.2
            else rng.choice(atoms) + rng.choice(["", "", "*", "+", "-", "?"])
            for _ in range(rng.randint(1, 5))
        )
        unit = "".join(rng.choice("ab ,.<>x") for _ in range(rng.randint(1, 6)))
        subject = (unit * 400)[: rng.choice([0, 3, 50, 300, 900])]
        fn = rng.choice(["find", "match", "gmatch", "gsub"])
        extra = rng.choice(["%0", "-", "%1"]) if fn == "gsub" else rng.choice([None, 2, -40])
        got = sandbox.call("run", fn, subject, pattern, extra)
        if "pattern too costly" in got:
            continue  # refused: one attempt exceeds this small limit
        assert got == native_run(fn, subject, pattern, extra), (fn, pattern, subject, extra)
        compared += 1
        looped += sandbox.pattern_plan(pattern, subject, fn) == "loop"
    assert compared > 1200
    assert looped > 200
