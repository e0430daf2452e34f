"""Hostile scripts, as data: each case is a script and the outcome the sandbox must produce.

Outcomes: "invalid" (refused at load: LuaValidationError), "error" (the call raises
LuaBehaviorError), "instructions" / "memory" / "timeout" (the call raises LuaLimitExceeded of that
kind), "ok" (the call returns `result`: the hostile action had no effect the script can see).

Every script also defines `ping()`, which the test calls after the containment: the same sandbox
must still answer unless the case says `usable_after=False`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent_registry.lua import Limits

PING = 'function ping() return "pong" end\n'


@dataclass(frozen=True)
class Case:
    name: str
    script: str
    expect: str
    result: Any = None
    message: str | None = None  # a substring of the error message
    limits: Limits = field(default_factory=Limits)
    usable_after: bool = True


def on_task(body: str) -> str:
    return PING + "function on_task(task, ctx)\n" + body + "\nend\n"


CORPUS: list[Case] = [
    # --- the host is unreachable ------------------------------------------------------------
    Case(
        "no-host-globals",
        on_task(
            """
            local found = {}
            for _, name in ipairs({"os", "io", "debug", "package", "require", "dofile",
                "loadfile", "python", "loadstring", "print", "module", "setfenv", "getfenv",
                "newproxy", "jit", "ffi", "bit32"}) do
              if _G[name] ~= nil or rawget(_G, name) ~= nil then found[#found + 1] = name end
            end
            return found
            """
        ),
        "ok",
        result={},
    ),
    Case(
        "no-userdata-anywhere-in-env",
        on_task(
            """
            local seen, bad = {}, {}
            local function walk(t, path)
              if seen[t] then return end
              seen[t] = true
              for k, v in next, t do
                local tv = type(v)
                local where = path .. "." .. tostring(k)
                if tv == "userdata" or tv == "thread" then bad[#bad + 1] = where
                elseif tv == "table" then walk(v, where) end
              end
            end
            walk(_G, "_G")
            return bad
            """
        ),
        "ok",
        result={},
    ),
    Case("string-dump-absent", on_task("return string.dump(on_task)"), "error", message="dump"),
    Case(
        "load-bytecode-refused",
        on_task('local f, err = load("\\27Lua\\84\\0", "x", "b")\nreturn {f = type(f), err = err}'),
        "ok",
        result={"f": "nil", "err": "attempt to load a binary chunk (mode is 't')"},
    ),
    Case(
        "load-runs-in-the-sandbox-env",
        on_task('return load("return python, os, debug")() == nil'),
        "ok",
        result=True,
    ),
    Case(
        "load-function-reader-refused",
        on_task("local f, err = load(function() return nil end) return err"),
        "ok",
        result="load: only source strings can be loaded in the sandbox",
    ),
    Case(
        "collectgarbage-control-refused",
        on_task('collectgarbage("collect")'),
        "error",
        message="only collectgarbage('count')",
    ),
    Case(
        "collectgarbage-count-allowed",
        on_task('return type(collectgarbage("count"))'),
        "ok",
        result="number",
    ),
    Case(
        "string-metatable-hidden",
        on_task('return getmetatable("").__index'),
        "error",
        message="attempt to index a boolean value",
    ),
    Case(
        "host-functions-are-lua-closures",
        on_task(
            "return {type(log), type(now), type(json.encode), type(json.decode),"
            " getmetatable(log) == nil}"
        ),
        "ok",
        result=["function", "function", "function", "function", True],
    ),
    Case(
        "host-function-not-convertible",
        on_task("return json.encode(log)"),
        "error",
        message="cannot be converted",
    ),
    # --- tampering stays inside this sandbox (test_containment checks the others) -------------
    Case(
        "rawset-string-library",
        on_task(
            'rawset(string, "rep", function() return "pwned" end)\n'
            'rawset(string, "upper", function() return "pwned" end)\n'
            'return ("x"):upper()'
        ),
        "ok",
        result="pwned",
    ),
    Case(
        "setmetatable-G",
        on_task(
            "setmetatable(_G, {__index = function(t, k) while true do end end})\n"
            "return undefined_global"
        ),
        "instructions",
    ),
    Case(
        "setmetatable-G-newindex",
        on_task("setmetatable(_G, {__newindex = function() error('no globals') end})\nx = 1"),
        "error",
        message="no globals",
    ),
    Case(
        "string-metatable-not-settable",
        on_task('return setmetatable("", {})'),
        "error",
    ),
    # --- busy loops ----------------------------------------------------------------------------
    Case("busy-loop", on_task("while true do end"), "instructions"),
    Case(
        "busy-loop-inside-pcall",
        on_task("local ok, e = pcall(function() while true do end end)\nreturn 'escaped'"),
        "instructions",
    ),
    Case(
        "pcall-swallowing-in-a-loop",
        on_task("while true do pcall(function() while true do end end) end"),
        "instructions",
    ),
    Case(
        "xpcall-handler-loops",
        on_task("return xpcall(function() error('x') end, function() while true do end end)"),
        "instructions",
    ),
    Case(
        "busy-loop-in-coroutine",
        on_task(
            "local co = coroutine.create(function() while true do end end)\n"
            "return coroutine.resume(co)"
        ),
        "instructions",
    ),
    Case(
        "busy-loop-in-wrapped-coroutine-inside-pcall",
        on_task(
            "local f = coroutine.wrap(function() while true do end end)\npcall(f)\nreturn 'escaped'"
        ),
        "instructions",
    ),
    Case(
        "coroutine-resumed-in-a-later-call",
        PING
        + "local co = coroutine.create(function() while true do coroutine.yield() end end)\n"
        + "coroutine.resume(co)\n"
        + "function on_task(task, ctx) for i = 1, 1000 do coroutine.resume(co) end return 1 end\n",
        "ok",
        result=1,
    ),
    Case(
        "timeout",
        on_task("while true do end"),
        "timeout",
        limits=Limits(max_instructions=10**12, timeout_ms=200),
    ),
    # Slow instructions and slow library calls: the timeout still holds (the hook interval
    # adapts to slow instructions, and big library calls check the clock themselves).
    Case(
        "loop-of-big-upper-calls",
        on_task('local s = ("x"):rep(4000000)\nwhile true do local u = s:upper() end'),
        "timeout",
    ),
    Case(
        "loop-of-big-concatenations",
        on_task('local s = ("x"):rep(4000000)\nwhile true do local u = s .. "y" end'),
        "timeout",
    ),
    Case(
        "loop-of-big-comparisons",
        on_task(
            'local a, b = ("x"):rep(4000000), ("x"):rep(3999999) .. "y"\n'
            "while true do local _ = a < b end"
        ),
        "timeout",
    ),
    Case(
        "cheap-then-slow-phases",
        on_task(
            'local s = ("x"):rep(4000000)\nlocal i = 0\n'
            "while true do i = i + 1 if i % 2000 < 1000 then local u = s .. i end end"
        ),
        "timeout",
    ),
    Case(
        "loop-of-big-json",
        on_task('local s = json.encode({("x"):rep(3000000)})\nwhile true do json.decode(s) end'),
        "timeout",
    ),
    Case(
        "gsub-replacement-function-loops",
        on_task('return ("aaa"):gsub("a", function() while true do end end)'),
        "instructions",
    ),
    Case(
        "tostring-metamethod-loops",
        on_task(
            "return tostring(setmetatable({}, {__tostring = function() while true do end end}))"
        ),
        "instructions",
    ),
    Case(
        "close-metamethod-loops",
        on_task(
            "local x <close> = setmetatable({}, {__close = function() while true do end end})\n"
            "return 1"
        ),
        "instructions",
    ),
    Case(
        "sort-comparator-loops",
        on_task("local t = {3, 2, 1}\ntable.sort(t, function() while true do end end)"),
        "instructions",
    ),
    Case(
        "table-insert-hostile-len",
        on_task(
            "local t = setmetatable({}, {__len = function() return math.maxinteger // 2 end})\n"
            "table.insert(t, 1, 'x')"
        ),
        "instructions",
    ),
    Case(
        "table-remove-hostile-len",
        on_task(
            "local t = setmetatable({}, {__len = function() return 1 << 50 end})\n"
            "table.remove(t, 1)"
        ),
        "instructions",
    ),
    Case(
        "table-move-huge-range",
        on_task("return #table.move({}, 1, 1 << 40, 2)"),
        "instructions",
    ),
    Case(
        "top-level-busy-loop",
        PING + "while true do end\nfunction on_task() end\n",
        "invalid",
        message="instruction limit exceeded",
    ),
    Case(
        "init-busy-loop",
        PING + "function init() while true do end end\nfunction on_task() end\n",
        "invalid",
        message="init(config)",
    ),
    # --- error objects ------------------------------------------------------------------------
    Case(
        "error-object-with-looping-tostring",
        on_task("error(setmetatable({}, {__tostring = function() while true do end end}))"),
        "instructions",
    ),
    Case(
        "error-object-with-tostring",
        on_task("error(setmetatable({}, {__tostring = function() return 'custom' end}))"),
        "error",
        message="custom",
    ),
    Case(
        "error-object-table",
        on_task("error({code = 42})"),
        "error",
        message="(error object is a table value)",
    ),
    Case(
        "error-object-huge-string",
        on_task('error(("x"):rep(1000000))'),
        "error",
    ),
    Case(
        "error-message-not-utf8",
        on_task('error("\\255\\254 bad bytes")'),
        "error",
        message="?? bad bytes",
    ),
    Case(
        "error-fakes-limit-message",
        on_task('error("instruction limit exceeded", 0)'),
        "error",
        message="instruction limit exceeded",
    ),
    # --- memory ---------------------------------------------------------------------------------
    Case(
        "table-insert-memory-bomb",
        on_task("local t = {}\nwhile true do table.insert(t, {}) end"),
        "memory",
        limits=Limits(max_instructions=10**10, timeout_ms=30_000),
    ),
    Case(
        "string-doubling-memory-bomb",
        on_task('local s = "x"\nwhile true do s = s .. s end'),
        "memory",
    ),
    Case(
        "memory-bomb-swallowed-by-pcall",
        on_task(
            "local ok = pcall(function() local t = {} while true do t[#t + 1] = {} end end)\n"
            "return ok"
        ),
        "ok",
        result=False,
    ),
    Case(
        "memory-kept-in-state",
        on_task(
            "ctx.state.hoard = ctx.state.hoard or {}\nwhile true do"
            ' ctx.state.hoard[#ctx.state.hoard + 1] = ("x"):rep(1000) .. #ctx.state.hoard end'
        ),
        "memory",
        limits=Limits(max_memory_bytes=4 * 1024 * 1024),
        usable_after=False,  # it kept the memory: any allocation fails now, which is its problem
    ),
    Case(
        "coroutine-bomb",
        on_task("local t = {}\nwhile true do t[#t + 1] = coroutine.create(print or type) end"),
        "memory",
    ),
    Case(
        "deep-recursion",
        on_task("local function f(n) return 1 + f(n + 1) end\nreturn f(1)"),
        "memory",
    ),
    Case(
        "deep-recursion-small-stack-frames",
        on_task("local function f() f() end\nf()"),
        "error",
        message="stack overflow",
        limits=Limits(
            max_memory_bytes=256 * 1024 * 1024, max_instructions=10**9, timeout_ms=20_000
        ),
    ),
    Case(
        "c-stack-recursion-through-metamethods",
        on_task(
            "local t = setmetatable({}, {})\n"
            "getmetatable(t).__index = function(s, k) return tostring(s[k]) end\n"
            "return t.x"
        ),
        "error",
    ),
    Case(
        "c-stack-recursion-through-coroutines",
        on_task("local function f() return coroutine.wrap(f)() end\nreturn f()"),
        "error",
        message="C stack overflow",
    ),
    Case(
        "c-stack-recursion-through-pcall",
        on_task("local function f() return pcall(f) end\nreturn f()"),
        "ok",
        result=True,  # the innermost pcall fails with "C stack overflow", every outer one succeeds
    ),
    Case(
        "c-stack-recursion-through-gsub",
        on_task('local function f() return ("x"):gsub("x", f) end\nreturn f()'),
        "error",
    ),
    # --- long single C calls: bounded by argument checks -----------------------------------------
    Case("string-rep-bomb", on_task('return ("x"):rep(1e9)'), "error", message="string.rep"),
    Case("string-rep-bomb-function", on_task('return string.rep("x", 1e9)'), "error"),
    Case(
        "string-rep-separator-bomb",
        on_task('return string.rep("", 3e6, ("y"):rep(100))'),
        "error",
        message="string.rep",
    ),
    Case(
        "string-rep-empty-forever",
        on_task('return #string.rep("", 1 << 62)'),
        "ok",
        result=0,
    ),
    # Patterns: a single attempt that backtracks polynomially (adjacent or nested quantifiers
    # over the same characters) is refused on a long subject; an unanchored call whose attempts
    # are each bounded runs as a loop of attempts, which the budget stops like any loop.
    Case(
        "pattern-find-backtracking",
        on_task('return string.find(("a"):rep(50000), ".-.-.-b")'),
        "error",
        message="pattern too costly",
    ),
    Case(
        "pattern-adjacent-quantifiers-same-class",
        on_task('return string.find(("a"):rep(100000), "a*a*a*a*b")'),
        "error",
        message="pattern too costly",
    ),
    Case(
        "pattern-nested-lazy-captures",
        on_task('return ("a"):rep(100000):find("(.-)(.-)(.-)x")'),
        "error",
        message="pattern too costly",
    ),
    Case(
        "pattern-match-backtracking-method",
        on_task('local s = ("a"):rep(20000)\nreturn s:match("(.-)%1b")'),
        "error",
        message="pattern too costly",
    ),
    Case(
        "pattern-gmatch-backtracking",
        on_task('for x in ("a"):rep(30000):gmatch("a*a*a*b") do end'),
        "error",
        message="pattern too costly",
    ),
    Case(
        "pattern-gsub-backtracking",
        on_task('return ("a"):rep(30000):gsub("a*a*b", "")'),
        "error",
        message="pattern too costly",
    ),
    Case(
        "pattern-anchored-quadratic-attempt",
        on_task('return ("x" .. (" "):rep(100000) .. "y"):match("^%s*(.-)%s*$")'),
        "error",
        message="pattern too costly",
    ),
    Case(
        # Every start scans to the end for a balance that never comes: quadratic, as a loop.
        "pattern-balance-on-long-subject",
        on_task('return ("("):rep(100000):find("%b()")'),
        "timeout",
        limits=Limits(timeout_ms=200),
    ),
    Case(
        "pattern-stepped-loop-inside-pcall",
        on_task('local ok = pcall(string.gsub, ("("):rep(100000), "%b()", "")\nreturn ok'),
        "timeout",
        limits=Limits(timeout_ms=200),
    ),
    Case(
        "pattern-stepped-loop-in-a-loop",
        on_task('for i = 1, 1e9 do pcall(string.find, ("("):rep(50000), "%b()") end'),
        "timeout",
        limits=Limits(timeout_ms=200),
    ),
    Case(
        "pattern-stepped-replacement-function-loops",
        on_task('return ("ab"):rep(50000):gsub("a.-b", function() while true do end end)'),
        "instructions",
    ),
    Case(
        "plain-find-huge",
        on_task('return ("a"):rep(4000000):find(("a"):rep(100000) .. "b", 1, true)'),
        "error",
        message="pattern too costly",
    ),
    Case(
        "pattern-given-as-a-number",
        # -1e-300 is read as the pattern "-1e-300" (`e-` quantified) on a subject without
        # "-1": a loop of attempts that finds no start.
        on_task('return ("1"):rep(100000):find(-1e-300)'),
        "ok",
        result=None,
    ),
    Case(
        "pattern-lazy-without-end-stops-at-the-first-failure",
        on_task(
            'local n = 0\nfor x in ("<"):rep(100000):gmatch("<(.-)>") do n = n + 1 end\nreturn n'
        ),
        "ok",
        result=0,
    ),
    Case(
        "reasonable-patterns-allowed",
        on_task(
            'local s = ("word "):rep(200)\n'
            'local n = select(2, s:gsub("%w+", "%0"))\n'
            'return {n, s:match("^(%w+)"), ("k=v"):match("^(%w+)=(%w+)$")}'
        ),
        "ok",
        result=[200, "word", "k", "v"],
    ),
    Case(
        "string-format-huge-width",
        on_task('return string.format("%99999d", 1)'),
        "error",
        message="invalid conversion",
    ),
    Case(
        "table-concat-memory",
        on_task(
            'local t = {}\nfor i = 1, 64 do t[i] = ("x"):rep(4000000) end\nreturn #table.concat(t)'
        ),
        "memory",
    ),
    Case(
        "unpack-huge",
        on_task("return select('#', table.unpack({}, 1, 1e8))"),
        "error",
        message="too many results",
    ),
    Case(
        "huge-varargs",
        on_task(
            "local function count(...) return select('#', ...) end\n"
            "return count(table.unpack({}, 1, 200000))"
        ),
        "ok",
        result=200000,
    ),
    Case(
        "string-byte-huge-slice",
        on_task('return select("#", string.byte(("x"):rep(4000000), 1, -1))'),
        "error",
    ),
    Case(
        "load-huge-chunk",
        on_task('return load("return " .. ("1+"):rep(1000000) .. "1")'),
        "ok",
        result=None,  # load returns nil, "chunk larger than ..." (a string result, not converted)
    ),
    Case(
        "load-deeply-nested-chunk",
        on_task(
            'local f, err = load("return " .. ("("):rep(10000) .. "1" .. (")"):rep(10000))\n'
            "return err ~= nil"
        ),
        "ok",
        result=True,
    ),
    # --- finalizers ------------------------------------------------------------------------------
    Case(
        "gc-metamethod-refused",
        on_task("setmetatable({}, {__gc = function() while true do end end})"),
        "error",
        message="__gc",
    ),
    Case(
        "gc-metamethod-added-after-setmetatable",
        on_task(
            "local mt = {}\nlocal t = setmetatable({}, mt)\n"
            "mt.__gc = function() while true do end end\nctx.state.keep = 1\nreturn 'set'"
        ),
        "ok",
        result="set",
    ),
    Case(
        "gc-through-weak-table-and-garbage",
        on_task(
            "local mt = {}\nmt.__gc = function() while true do end end\n"
            "local ok = pcall(setmetatable, {}, mt)\n"
            "for i = 1, 100000 do local _ = {i} end\nreturn ok"
        ),
        "ok",
        result=False,
    ),
    # --- json ------------------------------------------------------------------------------------
    Case(
        "json-decode-deep-nesting",
        on_task('return json.decode(("["):rep(100000) .. ("]"):rep(100000))'),
        "error",
        message="json.decode",
    ),
    Case(
        "json-decode-too-many-items",
        on_task('return json.decode("[" .. ("1,"):rep(200000) .. "1]")'),
        "error",
        message="more than",
    ),
    Case(
        "json-decode-huge-integer",
        on_task('return json.decode(("9"):rep(100000))'),
        "error",
        message="json.decode",
    ),
    Case(
        "json-decode-too-large",
        on_task('local s = ("1"):rep(3000000)\nreturn json.decode(s .. s)'),
        "error",
        message="larger than",
    ),
    Case(
        "json-decode-invalid-utf8",
        on_task('return json.decode("\\"\\255\\"")'),
        "error",
        message="UTF-8",
    ),
    Case(
        "json-encode-cycle",
        on_task("local t = {}\nt.t = t\nreturn json.encode(t)"),
        "error",
        message="cyclic",
    ),
    Case(
        "json-encode-metamethods-ignored",
        on_task(
            "local t = setmetatable({a = 1}, {__index = function() while true do end end,"
            " __pairs = function() while true do end end})\nreturn json.encode(t)"
        ),
        "ok",
        result='{"a": 1}',
    ),
    Case(
        "json-encode-nan",
        on_task("return json.encode({x = 0/0})"),
        "error",
        message="json.encode",
    ),
    # --- results ---------------------------------------------------------------------------------
    Case(
        "result-cycle",
        on_task("local t = {}\nt.self = t\nreturn t"),
        "error",
        message="cyclic",
    ),
    Case(
        "result-too-many-items",
        on_task("local t = {}\nfor i = 1, 100000 do t[i] = i end\nreturn t"),
        "error",
        message="more than",
    ),
    Case(
        "result-function",
        on_task("return {f = function() end}"),
        "error",
        message="cannot be converted",
    ),
    Case(
        "result-metamethods-ignored",
        on_task(
            "return setmetatable({a = 1}, {__index = function() while true do end end,"
            " __pairs = function() while true do end end,"
            " __len = function() while true do end end})"
        ),
        "ok",
        result={"a": 1},
    ),
    Case(
        "result-not-utf8",
        on_task('return "\\255"'),
        "error",
        message="UTF-8",
    ),
    Case(
        "yield-outside-coroutine",
        on_task("coroutine.yield(1)"),
        "error",
        message="outside a coroutine",
    ),
    Case(
        "resume-running-main-thread",
        on_task("local main = coroutine.running()\nreturn {coroutine.resume(main)}"),
        "ok",
        result=[False, "cannot resume non-suspended coroutine"],
    ),
    Case(
        "close-running-main-thread",
        on_task("return coroutine.close(coroutine.running())"),
        "error",
    ),
    Case(
        "state-not-convertible-on-purpose",
        on_task(
            "ctx.state = setmetatable({}, {__index = function() while true do end end})\n"
            "return ctx.state.anything"
        ),
        "instructions",
    ),
    Case(
        "missing-on-task",
        PING + "function on_tusk() end\n",
        "invalid",
        message="on_task",
    ),
    Case(
        "on-task-removed-at-runtime",
        PING + "function on_task(task, ctx) on_task = nil return 1 end\n",
        "ok",
        result=1,
    ),
]


# --- benign scripts: what behaviors really do, which validation and the limits must accept ----


@dataclass(frozen=True)
class Benign:
    name: str
    script: str
    task: dict[str, Any]  # a task as the behavior's agents would get it
    result: Any
    reads_own_fields: bool  # fails on the invented task of the dry call


def _text(kilobytes: int) -> str:
    paragraph = (
        '<p>  The  quick\tbrown fox,  "jumps"  over\n\n the lazy   dog. </p>\n'
        '  Numbers: 3.14,  2.71 and "e"  \t\n'
    )
    body = paragraph * (kilobytes * 1024 // len(paragraph))
    return "<html><title>Report  1</title>\n" + body + "</html>\n"


TEXT = _text(100)
CSV = ",".join(f"field{i}" for i in range(10000))

CLEANUP = """
function on_task(task, ctx)
  local text = task.text
  local clean = text:gsub("%s+", " ")
  clean = clean:gsub("^%s+", ""):gsub("%s+$", "")
  local words = 0
  for _ in clean:gmatch("%S+") do words = words + 1 end
  local fields = {}
  for field in (task.csv .. ","):gmatch("([^,]*),") do fields[#fields + 1] = field end
  local title = text:match("<title>(.-)</title>")
  local _, quoted = text:gsub('"(.-)"', "%1")
  local tags = select(2, text:gsub("</?%a+>", ""))
  return {length = #clean, words = words, fields = #fields, last = fields[#fields],
          title = title, quoted = quoted, tags = tags}
end
"""

SORT = """
local function better(a, b)
  if a.score ~= b.score then return a.score > b.score end
  return a.name < b.name
end

function on_task(task, ctx)
  local candidates = {}
  for i, c in ipairs(task.candidates) do candidates[i] = c end
  table.sort(candidates, better)
  local top = {}
  for i = 1, math.min(3, #candidates) do top[i] = candidates[i].name end
  return {accept = #top > 0, top = top}
end
"""

NESTED = """
function on_task(task, ctx)
  ctx.state.seen = (ctx.state.seen or 0) + 1
  local steps = {}
  for i = 1, 3 do
    steps[i] = {index = i, action = i == 1 and "read" or "write",
                args = {path = "/tmp/" .. i, flags = {"r", "w"}}}
  end
  return {accept = true, effort = 0.5,
          plan = {steps = steps, meta = {seen = ctx.state.seen, kind = task.kind}}}
end
"""

TASK_FIELDS = """
function on_task(task, ctx)
  local after = task.n + 1
  local urgent = task.priority > 3
  local files = #task.files
  return {accept = urgent or files < 10, effort = files / 10, next = after}
end
"""


SCORES = {f"agent-{i:03d}": (i * 37) % 101 for i in range(500)}
CANDIDATES = [{"name": name, "score": score} for name, score in SCORES.items()]
BEST = sorted(SCORES, key=lambda name: (-SCORES[name], name))


def _words(text: str) -> int:
    return len(text.split())


BENIGN: list[Benign] = [
    Benign(
        "string-cleanup-of-100-kb",
        CLEANUP,
        {"id": "t-1", "text": TEXT, "csv": CSV},
        {
            "length": len(" ".join(TEXT.split())),
            "words": _words(TEXT),
            "fields": 10000,
            "last": "field9999",
            "title": "Report  1",
            "quoted": TEXT.count('"') // 2,
            "tags": TEXT.count("<p>") * 2 + 4,  # and html, title
        },
        reads_own_fields=True,
    ),
    Benign(
        "table-sort-with-a-comparator",
        SORT,
        {"id": "t-2", "candidates": CANDIDATES},
        {"accept": True, "top": BEST[:3]},
        reads_own_fields=True,
    ),
    Benign(
        "nested-result-tables",
        NESTED,
        {"id": "t-3", "kind": "simulated", "difficulty": 0.2},
        {
            "accept": True,
            "effort": 0.5,
            "plan": {
                "steps": [
                    {"index": 1, "action": "read", "args": {"path": "/tmp/1", "flags": ["r", "w"]}},
                    {
                        "index": 2,
                        "action": "write",
                        "args": {"path": "/tmp/2", "flags": ["r", "w"]},
                    },
                    {
                        "index": 3,
                        "action": "write",
                        "args": {"path": "/tmp/3", "flags": ["r", "w"]},
                    },
                ],
                "meta": {"seen": 1, "kind": "simulated"},
            },
        },
        reads_own_fields=False,
    ),
    Benign(
        "reading-task-fields",
        TASK_FIELDS,
        {"id": "t-4", "n": 41, "priority": 5, "files": ["a.py", "b.py"]},
        {"accept": True, "effort": 0.2, "next": 42},
        reads_own_fields=True,
    ),
]
