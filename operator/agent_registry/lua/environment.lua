-- Host side of one sandbox. Runs once in a fresh lua54 state, in the real globals, before any
-- script: it captures every library function it needs as a local (so nothing a script later
-- changes can affect the host), builds the whitelisted environment the script runs in, and
-- returns the host functions Python calls. Nothing returned here is reachable from the script:
-- the script only ever sees `env`, and `debug`, `python` and the real globals stay outside it.
local py, L = ...

local type, error, pcall, xpcall, select, next = type, error, pcall, xpcall, select, next
local rawget, rawset, rawequal, rawlen = rawget, rawset, rawequal, rawlen
local setmetatable, getmetatable, tostring, tonumber = setmetatable, getmetatable, tostring, tonumber
local load, collectgarbage = load, collectgarbage
local sethook, gethook = debug.sethook, debug.gethook
local getinfo, raw_getmetatable = debug.getinfo, debug.getmetatable
local co_create, co_resume, co_status, co_close = coroutine.create, coroutine.resume,
  coroutine.status, coroutine.close
local s_find, s_match, s_gmatch, s_gsub = string.find, string.match, string.gmatch, string.gsub
local s_rep, s_sub, s_byte, s_len, s_format = string.rep, string.sub, string.byte, string.len,
  string.format
local s_char = string.char
local t_concat, t_pack, t_unpack = table.concat, table.pack, table.unpack
local m_tointeger, m_maxinteger, m_floor = math.tointeger, math.maxinteger, math.floor
local utf8_len = utf8.len

local py_clock, py_log, py_now = py.clock, py.log, py.now
local py_json_encode, py_json_decode = py.json_encode, py.json_decode

local HOOK_N = L.hook_interval -- the longest interval between two runs of the hook
local HOOK_START = HOOK_N -- the first interval of every call (lowered when intervals are slow)
local HOOK_TARGET = 0.001 -- seconds an interval should take
local MAX_INSTRUCTIONS = L.max_instructions
local TIMEOUT = L.timeout_s
local WORK_STEP = 1024 * 1024 -- bytes a library call may process between two clock checks
local MAX_STRING = L.max_string_bytes
local MAX_PATTERN_COST = L.max_pattern_cost
local MAX_SOURCE = L.max_source_bytes
local CHUNK_SOURCE = "=" .. L.chunk_name
local MAX_MESSAGE = 4096
local MAX_LOG_LINES = L.max_log_lines

-- Per-call budget state, reset by `run` / `run_task`.
local deadline, counted, stopped, log_lines = 0.0, 0, nil, 0
local interval, last_check, work, changes = HOOK_START, 0.0, 0, 0
local err_msg, err_line = nil, nil
local run, run_task, handler -- host frames the hook must never stop (defined below)
local hook -- the count hook (defined below)

local STOP_MESSAGES = {
  instructions = "instruction limit exceeded",
  timeout = "timeout exceeded",
}

-- Whether the code the hook interrupted is one of the host's own frames (`run`, `run_task`, the
-- message handler), which must never be stopped: that is how control gets back to Python.
-- getinfo allocates (so it is only asked when a stop is due), and near the memory ceiling it
-- may fail: then the answer is "no" (an error escaping `run` reaches Python as an error).
local function in_host()
  local ok, info = pcall(getinfo, 4, "f") -- 0 getinfo, 1 pcall, 2 in_host, 3 hook, 4 the code
  if ok and info then
    local fn = info.func
    return fn == run or fn == run_task or fn == handler
  end
  return false
end

-- Whether the error being handled was raised inside the hook (a stop, or a stack overflow / C
-- stack overflow while calling it): Lua has hooks off then until the error reaches a pcall, so
-- no script code may run from a message handler (it would run unhooked, and could loop
-- forever). The hook's frame is near the top of the stack when that happens. When this cannot
-- be told (getinfo allocates; memory may be exhausted) the answer is yes.
local function raised_in_hook()
  for level = 3, 16 do -- 0 getinfo, 1 pcall, 2 this function, 3 the handler, 4... the error
    local ok, info = pcall(getinfo, level, "nf")
    if not ok then
      return true
    end
    if not info then
      return false
    end
    if info.namewhat == "hook" or info.func == hook then
      return true
    end
  end
  return false
end

-- Set this thread's hook count, only if it differs: lua_sethook walks the whole call stack
-- (settraps), so calling it on every run of the hook is quadratic in a deep recursion.
local function arm(count)
  local _, _, current = gethook()
  if current ~= count then
    sethook(hook, "", count)
  end
end

-- The count hook. Once a call is over budget it re-arms itself with count=1, so every further
-- instruction of the script raises again: a script's own pcall cannot swallow the stop.
hook = function()
  if not stopped then
    counted = counted + interval
    local now = py_clock()
    if counted >= MAX_INSTRUCTIONS then
      stopped = "instructions"
    elseif now > deadline then
      stopped = "timeout"
    else
      -- Adapt the interval so that one takes about HOOK_TARGET: some instructions are slow (a
      -- concatenation or comparison of megabyte strings) and the clock is only read here.
      -- Changes by less than 2x are ignored and a call gets at most 8 (each change costs a walk
      -- of the call stack, and GC pauses in a deep recursion would make it oscillate).
      local dt = now - last_check
      last_check = now
      local wanted = HOOK_N
      if dt > 0 then
        wanted = m_floor(interval * HOOK_TARGET / dt)
        if wanted > HOOK_N then
          wanted = HOOK_N
        elseif wanted < 16 then
          wanted = 16
        end
      end
      if changes < 8 and (wanted >= 2 * interval or 2 * wanted <= interval) then
        interval = wanted
        changes = changes + 1
      end
      -- (Also re-arms a coroutine that still carries count=1 from an earlier call's stop.)
      arm(interval)
      return
    end
  end
  arm(1)
  if in_host() then
    return
  end
  error(STOP_MESSAGES[stopped], 0)
end

-- Library calls that process many bytes in one C call are charged for them, and check the
-- clock every WORK_STEP bytes: a loop of such calls (("x"):rep(4e6):upper() takes ~4 ms) would
-- otherwise run thousands of them between two runs of the hook.
local function charge(bytes)
  work = work + bytes
  if work < WORK_STEP then
    return
  end
  work = 0
  if stopped or py_clock() > deadline then
    stopped = stopped or "timeout"
    sethook(hook, "", 1)
    error(STOP_MESSAGES[stopped], 0)
  end
end

-- Make a string safe to hand to Python: bounded and valid UTF-8.
local function clean(s, max)
  if s_len(s) > max then
    s = s_sub(s, 1, max) .. "..."
  end
  if not utf8_len(s) then
    s = s_gsub(s, "[\128-\255]", "?")
  end
  return s
end

-- Message handler of every call: turns any error object into a bounded string and finds the
-- script line, without ever calling the script's code outside the budget (a hostile __tostring
-- runs under the same hook, inside a pcall, so it can only fail, not hang the host).
handler = function(e)
  local msg
  local te = type(e)
  if te == "string" then
    msg = e
  elseif te == "number" then
    msg = s_format("%.14g", e)
  elseif te == "table" and not stopped and not raised_in_hook() then
    -- As lua.c's handler: the object's __tostring if it has one (run under the budget).
    local mt = raw_getmetatable(e)
    local ok, s = false, nil
    if mt and rawget(mt, "__tostring") ~= nil then
      ok, s = pcall(tostring, e)
    end
    if ok and type(s) == "string" then
      msg = s
    else
      msg = "(error object is a table value)"
    end
  else
    msg = "(error object is a " .. te .. " value)"
  end
  if stopped then
    msg = STOP_MESSAGES[stopped]
  end
  -- Errors raised in the host's own (stripped) code carry no useful position.
  err_msg = s_gsub(clean(msg, MAX_MESSAGE), "^%?:%-?%d+: ", "")
  err_line = nil
  for level = 2, 64 do
    local info = getinfo(level, "Sl")
    if not info then
      break
    end
    if info.source == CHUNK_SOURCE and info.currentline and info.currentline > 0 then
      err_line = info.currentline
      break
    end
  end
  return e
end

-- Run fn (a function, or the name of a global function of the script) under the budget.
-- Returns "ok", results... | "limit", kind | "error", message, line | "missing", name.
local env -- the script's environment, created below
run = function(dl, fn, ...)
  if type(fn) == "string" then
    local found = rawget(env, fn)
    if type(found) ~= "function" then
      return "missing", fn
    end
    fn = found
  end
  deadline, counted, stopped, err_msg, err_line, log_lines = dl, 0, nil, nil, nil, 0
  interval, last_check, work, changes = HOOK_START, dl - TIMEOUT, 0, 0
  sethook(hook, "", HOOK_START)
  local r = t_pack(xpcall(fn, handler, ...))
  sethook()
  local reason = stopped
  stopped = nil
  if reason then
    return "limit", reason
  end
  if r[1] then
    return "ok", t_unpack(r, 2, r.n)
  end
  local e = r[2]
  if err_msg == nil then
    -- The message handler did not run: memory errors skip it, and an error inside it is
    -- reported as "error in error handling".
    if e == "not enough memory" then
      return "limit", "memory"
    end
    return "error", type(e) == "string" and clean(e, MAX_MESSAGE) or "error", nil
  end
  return "error", err_msg, err_line
end

-- The hot path: on_task(task, ctx) with one result. A flat result table (string/number keys,
-- string/number/boolean values: the usual {accept=..., effort=...}) comes back as
-- "flat", k1, v1, k2, v2, ... in the same call, which is far cheaper than reading the table
-- from Python one lupa iteration step at a time. Runs after the hook is off, with raw next and
-- a bound on the number of entries, so the script's metamethods never run here.
local MAX_FLAT = L.max_items // 2
local flat_buffer = {} -- reused: allocating a table per call costs more than the whole flatten

local function flatten(t)
  local n = 0
  local k, v = next(t)
  while k ~= nil do
    local tk, tv = type(k), type(v)
    if
      n >= MAX_FLAT
      or (tk ~= "string" and tk ~= "number")
      or (tv ~= "string" and tv ~= "number" and tv ~= "boolean")
    then
      return "ok", t
    end
    flat_buffer[n + 1], flat_buffer[n + 2] = k, v
    n = n + 2
    k, v = next(t, k)
  end
  return "flat", t_unpack(flat_buffer, 1, n)
end

run_task = function(dl, task, context)
  local fn = rawget(env, "on_task")
  if type(fn) ~= "function" then
    return "missing", "on_task"
  end
  deadline, counted, stopped, err_msg, err_line, log_lines = dl, 0, nil, nil, nil, 0
  interval, last_check, work, changes = HOOK_START, dl - TIMEOUT, 0, 0
  sethook(hook, "", HOOK_START)
  local ok, result = xpcall(fn, handler, task, context)
  sethook()
  local reason = stopped
  stopped = nil
  if reason then
    return "limit", reason
  end
  if ok then
    if type(result) == "table" then
      return flatten(result)
    end
    return "ok", result
  end
  if err_msg == nil then
    if result == "not enough memory" then
      return "limit", "memory"
    end
    return "error", type(result) == "string" and clean(result, MAX_MESSAGE) or "error", nil
  end
  return "error", err_msg, err_line
end

---------------------------------------------------------------------------------------------
-- Bounded replacements for the library functions a single C call could otherwise hang in.
---------------------------------------------------------------------------------------------

local function toint(x, arg, fname)
  local n = tonumber(x)
  local i = n and m_tointeger(n)
  if not i then
    local got = n and "number has no integer representation" or ("number expected, got " .. type(x))
    error("bad argument #" .. arg .. " to '" .. fname .. "' (" .. got .. ")", 3)
  end
  return i
end

local function rep(s, n, sep)
  local l = s_len(s) + (sep ~= nil and s_len(sep) or 0)
  n = toint(n, 2, "rep")
  if n <= 0 then
    return ""
  end
  if l == 0 then
    -- C's string.rep would loop n times copying nothing: ("").rep("", 2^62) never returns.
    return ""
  end
  if l > MAX_STRING // n then
    error("string.rep: result larger than " .. MAX_STRING .. " bytes (sandbox limit)", 2)
  end
  charge(l * n)
  return s_rep(s, n, sep)
end

---------------------------------------------------------------------------------------------
-- Pattern calls (string.find/match/gmatch/gsub). Lua's matcher backtracks and no hook fires
-- inside one C call, so a call is bounded before it is made, from the pattern (analysed once,
-- cached) and the subject's length n, in matcher steps (a character test, or a retry of the
-- rest of the pattern: at most about 3 ns each here, see docs/benchmarks.md):
--   A(n), the worst case of one attempt (the pattern tried at one position): a polynomial in
--   n. A quantified item multiplies the cost of the rest of the pattern only when the rest
--   can start with a character of the item's class: otherwise every retry but one fails at
--   its first character (`%s+x`, `[^,]*,`, `%w+=`), and the costs add up.
--   The call: A(n) when anchored; n times a constant when every attempt fails within its
--   unquantified first items or succeeds (only the last item is quantified: `%s+`, `[^,]*`,
--   `%d%d`, literals), since a success consumes what it scanned; n * A(n) otherwise.
-- Within max_pattern_cost the call is one C call. An unanchored call over it runs stepped
-- when one attempt fits: one anchored C call per start position, in a Lua loop that the hook
-- interrupts like any other loop, which skips the positions where no match can start or
-- which an earlier failure already decided. Only a call whose single attempt exceeds the
-- limit is refused (`a*a*a*b`, `(.-)(.-)(.-)x`, `^%s*(.-)%s*$` on long subjects).
---------------------------------------------------------------------------------------------

local SINGLE, BALANCE, FRONTIER, BACKREF, CAPTURE, END_ANCHOR, BROKEN = 1, 2, 3, 4, 5, 6, 7
local STAR, PLUS, LAZY, OPTIONAL = 42, 43, 45, 63 -- the quantifier characters
local SPECIALS = "[%^%$%*%+%?%.%(%[%%%-]" -- lstrlib's: without them, find is a plain search
local MAX_ANALYSED = 4096 -- longer patterns get a cruder estimate (the analysis allocates)
local MAX_FIRST = 8 -- classes kept in a `first` list before it becomes "any character"
local GSUB_STEPS = 6 -- what gsub adds at each position of the subject, in matcher steps
local FITS_PER_POSITION = GSUB_STEPS + 32 -- covered by the cached length check (`fits`)

local BYTE_STRINGS, ALL = {}, {}
for b = 0, 255 do
  BYTE_STRINGS[b] = s_char(b)
  ALL[b] = true
end

-- The index after the single-character class at p[i] (lstrlib's classEnd); nil if malformed.
local function class_end(p, i, m)
  local c = s_byte(p, i)
  if c == 37 then -- %x
    if i >= m then
      return nil
    end
    return i + 2
  elseif c == 91 then -- [set]: its first character (after ^) is never the closing ]
    i = i + 1
    if s_byte(p, i) == 94 then
      i = i + 1
    end
    repeat
      if i > m then
        return nil
      end
      local d = s_byte(p, i)
      i = i + 1
      if d == 37 and i <= m then
        i = i + 1
      end
    until s_byte(p, i) == 93
    return i + 1
  end
  return i + 1
end

local function is_alnum(b)
  return (b >= 48 and b <= 57) or (b >= 65 and b <= 90) or (b >= 97 and b <= 122)
end

local set_cache, set_cache_size = {}, 0

-- The bytes a single-character class matches, as {[byte] = true} (ALL for "."), asked of the
-- C matcher itself so that %a, ranges and negations mean exactly what they mean there.
local function class_set(text)
  local len, c = s_len(text), s_byte(text, 1)
  if len == 1 then
    return c == 46 and ALL or { [c] = true }
  elseif len == 2 and c == 37 and not is_alnum(s_byte(text, 2)) then
    return { [s_byte(text, 2)] = true }
  end
  local set = set_cache[text]
  if set == nil then
    set = {}
    local probe = "^" .. text .. "()"
    for b = 0, 255 do
      if s_find(BYTE_STRINGS[b], probe) then
        set[b] = true
      end
    end
    if set_cache_size >= 256 then
      set_cache, set_cache_size = {}, 0
    end
    set_cache[text] = set
    set_cache_size = set_cache_size + 1
  end
  return set
end

local function literal_of(text)
  local len, c = s_len(text), s_byte(text, 1)
  if len == 1 and c ~= 46 then
    return c
  elseif len == 2 and c == 37 and not is_alnum(s_byte(text, 2)) then
    return s_byte(text, 2)
  end
  return nil
end

-- `first` lists: the classes a match of the rest of a pattern can start with.
local function union(set, list)
  if set == ALL or #list >= MAX_FIRST then
    return { ALL }
  end
  local r = { set }
  for k = 1, #list do
    r[k + 1] = list[k]
  end
  return r
end

local function disjoint(set, list)
  for k = 1, #list do
    local other = list[k]
    if set == ALL or other == ALL then
      return false
    end
    for b in next, set do
      if other[b] then
        return false
      end
    end
  end
  return true
end

-- Polynomials in n, {c0, c1, ...}: p + a + b*n, p * (a + b*n), p(n). In floats: integers
-- would wrap around (n^5 for n = 10^5), and a wrapped cost could pass the check.
local function p_add(p, a, b)
  local r = {}
  for k = 1, #p do
    r[k] = p[k]
  end
  r[1] = r[1] + a
  r[2] = (r[2] or 0) + b
  return r
end

local function p_mul(p, a, b)
  local r = {}
  for k = 1, #p + 1 do
    r[k] = a * (p[k] or 0) + b * (p[k - 1] or 0)
  end
  return r
end

local function p_eval(p, n)
  local v = 0.0
  for k = #p, 1, -1 do
    v = v * n + p[k]
  end
  return v
end

-- The pattern's items, as lstrlib's match() reads them.
local function parse(p, i, m)
  local items, depth, unbalanced = {}, 0, false
  while i <= m do
    local c, d = s_byte(p, i), s_byte(p, i + 1)
    local item
    if c == 40 then -- "(" or the position capture "()"
      item = { kind = CAPTURE }
      if d == 41 then
        i = i + 2
      else
        depth = depth + 1
        i = i + 1
      end
    elseif c == 41 then
      item = { kind = CAPTURE }
      depth = depth - 1
      unbalanced = unbalanced or depth < 0
      i = i + 1
    elseif c == 36 and i == m then -- "$" only anchors at the very end
      item = { kind = END_ANCHOR }
      i = i + 1
    elseif c == 37 and d == 98 then -- %bxy
      if i + 3 > m then
        item, i = { kind = BROKEN }, m + 1
      else
        item = { kind = BALANCE, set = { [s_byte(p, i + 2)] = true }, byte = s_byte(p, i + 2) }
        i = i + 4
      end
    elseif c == 37 and d == 102 then -- %f[set]
      local j = s_byte(p, i + 2) == 91 and class_end(p, i + 2, m)
      if j then
        item = { kind = FRONTIER, set = class_set(s_sub(p, i + 2, j - 1)), weight = j - i - 2 }
        i = j
      else
        item, i = { kind = BROKEN }, m + 1
      end
    elseif c == 37 and d and d >= 48 and d <= 57 then -- back reference
      item = { kind = BACKREF }
      i = i + 2
    else
      local j = class_end(p, i, m)
      if j then
        local text, q = s_sub(p, i, j - 1), s_byte(p, j)
        if q == STAR or q == PLUS or q == LAZY or q == OPTIONAL then
          j = j + 1
        else
          q = nil
        end
        item = {
          kind = SINGLE,
          text = text,
          set = class_set(text),
          quant = q,
          literal = q == nil and literal_of(text) or nil,
          -- A set is tested item by item (matchbracketclass); %a and the like call into the
          -- C library (measured twice a literal's cost).
          weight = c == 91 and s_len(text) - 2 or (c == 37 and is_alnum(d) and 2 or 1),
        }
        i = j
      else
        item, i = { kind = BROKEN }, m + 1 -- the matcher raises when it gets there
      end
    end
    items[#items + 1] = item
  end
  return items, unbalanced or depth ~= 0
end

-- One attempt's cost, from the last item back. For the rest of the pattern after each item:
-- `poly` its cost, `first` the classes it can start with (at any other character it fails
-- within `fail` steps), `succeeds` whether it matches from any position, `at_end` whether it
-- can match the empty string at the end of the subject.
local function attempt_cost(items)
  local poly, first, fail, succeeds, at_end = { 1.0 }, {}, 1, true, true
  for k = #items, 1, -1 do
    local it = items[k]
    local kind, w = it.kind, it.weight
    if kind == SINGLE then
      local set, q = it.set, it.quant
      local apart = not succeeds and disjoint(set, first)
      -- For the run rules of the first item (see analyze).
      it.rest_fails_apart, it.rest_poly, it.rest_fail = apart, poly, fail
      if q == nil then
        poly = p_add(poly, w, 0)
        first, fail, succeeds, at_end = { set }, w, false, false
      elseif q == STAR or q == PLUS then
        -- Count the run ((n+1) tests), then retry the rest from its end backwards (a retry is
        -- a call of the matcher: one step, and then the rest's).
        if succeeds then
          poly = p_add(poly, w, w)
        elseif apart then
          poly = p_add(poly, w, w + 1 + fail)
        else
          poly = p_add(p_mul(poly, 1, 1), w + 1, w + 1)
        end
        if q == PLUS then
          first, fail, succeeds, at_end = { set }, w, false, false
        else
          succeeds = succeeds or (set == ALL and at_end)
          first, fail = union(set, first), w + fail
        end
      elseif q == LAZY then
        -- Try the rest, then one more character, and again.
        if succeeds then
          poly = p_add(poly, 1, 0)
        elseif apart then
          poly = p_add(poly, w + 1 + fail, w + 1 + fail)
        else
          poly = p_add(p_mul(poly, 1, 1), w + 1, w + 1)
        end
        succeeds = succeeds or (set == ALL and at_end)
        first, fail = union(set, first), w + fail
      else -- OPTIONAL: with the character, then without
        if succeeds then
          poly = p_add(poly, w, 0)
        elseif apart then
          poly = p_add(poly, w + fail, 0)
        else
          poly = p_add(p_mul(poly, 2, 0), w, 0)
        end
        first, fail = union(set, first), w + fail
      end
    elseif kind == CAPTURE then
      poly, fail = p_add(poly, 1, 0), fail + 1
    elseif kind == FRONTIER then
      poly = p_add(poly, w, 0)
      first, fail, succeeds, at_end = union(it.set, first), w + fail, false, false
    elseif kind == BALANCE then -- scans to the balancing character, no retries
      poly = p_add(poly, 1, 1)
      first, fail, succeeds, at_end = { it.set }, 1, false, false
    elseif kind == BACKREF then -- compares up to n bytes; may match the empty string
      poly = p_add(poly, 1, 1)
      first, fail, succeeds, at_end = { ALL }, 1 + fail, false, false
    elseif kind == END_ANCHOR then
      poly, first, fail, succeeds, at_end = { 1.0 }, {}, 1, false, true
    else -- BROKEN: reaching it raises, which ends the call
      poly, first, fail, succeeds, at_end = { 1.0 }, { ALL }, 1, false, false
    end
  end
  return poly
end

-- The cost of one C call on a subject of n - 1 bytes, and of one attempt.
local function one_call_cost(info, n, per_position)
  local attempt = p_eval(info.poly, n)
  if info.anchored then
    return attempt, attempt
  elseif info.linear then
    return n * (info.linear + per_position), attempt
  end
  return n * (attempt + per_position), attempt
end

local pattern_cache, pattern_cache_size = { {}, {} }, 0

-- What a pattern call needs to know, cached per pattern (and per anchoring: gmatch reads a
-- leading "^" as a character).
local function analyze(p, can_anchor)
  local cache = pattern_cache[can_anchor and 1 or 2]
  local info = cache[p]
  if info then
    return info
  end
  local m = s_len(p)
  info = { nospecials = not s_find(p, SPECIALS), anchored = can_anchor and s_byte(p, 1) == 94 }
  local start = info.anchored and 2 or 1
  if m > MAX_ANALYSED then
    -- Every quantifier-like character counts as a backtracking item: A(n) = m * n^q.
    local q = select(2, s_gsub(p, "[%*%+%-%?]", "")) + select(2, s_gsub(p, "%%[b1-9]", ""))
    local poly = { 0.0 }
    for k = 2, q do
      poly[k] = 0.0
    end
    poly[q + 1] = m + 0.0
    info.poly, info.unbalanced = poly, true -- never stepped
  else
    local items, unbalanced = parse(p, start, m)
    info.poly, info.unbalanced = attempt_cost(items), unbalanced
    local backref, shape_ok, linear, lastq = false, true, 1, nil
    local first_item -- the first item that is not a capture
    for k = 1, #items do
      local it = items[k]
      local kind = it.kind
      backref = backref or kind == BACKREF
      if kind ~= CAPTURE then
        first_item = first_item or it
        -- The "fail fast or succeed" shape: unquantified items, then at most one
        -- quantified single as the last item.
        if lastq or not (kind == SINGLE or kind == FRONTIER) then
          shape_ok = false
        elseif it.quant then
          lastq = it
        end
      end
      linear = linear + (it.weight or 1)
    end
    if shape_ok then
      info.linear = linear + (lastq and 2 * lastq.weight or 0)
    end
    -- Where a match can start: at an occurrence of the literal prefix, of the balance's
    -- opening character, or of the first item's class.
    local prefix, k = {}, 1
    while items[k] and (items[k].kind == CAPTURE or items[k].literal) do
      if items[k].literal then
        prefix[#prefix + 1] = BYTE_STRINGS[items[k].literal]
      end
      k = k + 1
    end
    local after = items[k] -- the first item after the prefix that is not a capture
    if #prefix > 0 then
      info.skip, info.skip_plain = t_concat(prefix), true
      info.skip_cost = #prefix / 100
    elseif first_item and first_item.kind == BALANCE then
      info.skip, info.skip_plain, info.skip_cost = BYTE_STRINGS[first_item.byte], true, 0.01
    elseif
      first_item
      and first_item.kind == SINGLE
      and (first_item.quant == nil or first_item.quant == PLUS)
      and first_item.set ~= ALL
    then
      info.skip, info.skip_plain, info.skip_cost = first_item.text, false, first_item.weight
    end
    if not backref and after and after.kind == SINGLE and after.set == ALL then
      -- `.-` or `.*` right after the prefix tries the rest at every later position: when
      -- that failed, no later start can match.
      info.stop = after.quant == STAR or after.quant == LAZY
    end
    if
      not backref
      and #prefix == 0
      and after
      and after.kind == SINGLE
      and after.quant
      and after.quant ~= OPTIONAL
      and after.set ~= ALL
      and after.rest_fails_apart
    then
      -- A quantified first item whose rest cannot start inside its run: an attempt failed
      -- for every start in the same run, so the next start is after the run.
      info.run = "^" .. after.text .. "*()"
      local constant = true
      for k = 2, #after.rest_poly do
        constant = constant and after.rest_poly[k] == 0
      end
      if constant then
        -- And when the rest costs a constant, an attempt costs its run's length (times
        -- `run_unit`) plus that constant: a subject without long runs is cheap (see plan).
        local text = after.text
        info.run_class, info.run_unit = text, after.weight + 1 + after.rest_fail
        info.run_rest = after.rest_poly[1]
        -- The class as a set, for %f: where its runs start.
        if s_byte(text, 1) == 91 then
          info.run_set = text
        elseif s_len(text) == 1 and not is_alnum(s_byte(text, 1)) then
          info.run_set = "[%" .. text .. "]"
        else
          info.run_set = "[" .. text .. "]"
        end
      end
    end
  end
  info.ap = "^" .. p
  -- The longest subject (plus one) a single C call may take, so that most calls need no
  -- evaluation: the cost grows with n.
  local lo, hi = 0, MAX_PATTERN_COST + 1
  while lo < hi do
    local mid = (lo + hi + 1) // 2
    if one_call_cost(info, mid, FITS_PER_POSITION) <= MAX_PATTERN_COST then
      lo = mid
    else
      hi = mid - 1
    end
  end
  info.fits = lo
  if pattern_cache_size >= 256 then
    pattern_cache, pattern_cache_size = { {}, {} }, 0
    cache = pattern_cache[can_anchor and 1 or 2]
  end
  cache[p] = info
  pattern_cache_size = pattern_cache_size + 1
  return info
end

-- Raised from plan/plain_check, called by a wrapper the script called: level 4 is the script.
local function too_costly(fname, len)
  error(
    "string." .. fname .. ": pattern too costly for a subject of " .. len
      .. " bytes (sandbox limit, see docs/sandbox.md)",
    4
  )
end

-- Subject and pattern as the C functions read them (numbers become strings); nil when the C
-- function will raise its own argument error.
local function strings(s, p)
  if type(s) == "number" then
    s = tostring(s)
  end
  if type(p) == "number" then
    p = tostring(p)
  end
  if type(s) == "string" and type(p) == "string" then
    return s, p
  end
end

-- How string.<fname>(s, p) runs: "call" (one C call), "loop" (stepped) or "refused", and the
-- cost of one attempt. `per_position`: what the function itself adds at each position of the
-- subject (gsub copies a character or a replacement there).
local function decide(s, info, per_position)
  local n = s_len(s) + 1
  if n <= info.fits and per_position <= FITS_PER_POSITION then
    return "call"
  end
  local total, attempt = one_call_cost(info, n, per_position)
  if total <= MAX_PATTERN_COST then
    return "call"
  end
  if info.run_unit then
    -- With no run of the first item's class as long as k, one C call costs at most
    -- n * (k * run_unit + run_rest + per_position). Two linear C calls look for such a run: at
    -- the start, and where a run starts (%f: each character is tested once or twice).
    local k = m_tointeger((MAX_PATTERN_COST / n - info.run_rest - per_position) // info.run_unit)
    if k and k >= 8 then
      local run = s_rep(info.run_class, k)
      if not s_find(s, "^" .. run) and not s_find(s, "%f" .. info.run_set .. run) then
        return "call"
      end
    end
  end
  if info.anchored or info.unbalanced or attempt > MAX_PATTERN_COST then
    return "refused"
  end
  return "loop", attempt
end

-- nil when one C call is within the limit; else the cost of one attempt, for a stepped call.
-- Raises when neither fits.
local function plan(fname, s, info, per_position)
  charge(s_len(s) + 1)
  local how, attempt = decide(s, info, per_position)
  if how == "refused" then
    too_costly(fname, s_len(s))
  end
  return attempt
end

local function plain_check(fname, s, p)
  local n = s_len(s) + 1
  charge(n)
  -- memchr + memcmp: measured ~100x cheaper per byte than the matcher's steps.
  if n * s_len(p) / 100 > MAX_PATTERN_COST then
    too_costly(fname, n - 1)
  end
end

-- An integer argument as luaL_optinteger reads it; false when the C function would raise.
local function integer_arg(x, default)
  if x == nil then
    return default
  end
  local v = tonumber(x)
  return v and m_tointeger(v) or false
end

-- lstrlib's posrelatI: a start position in 1..len + 1, or nil past the end.
local function start_at(init, len)
  if init == 0 or init < -len then
    init = 1
  elseif init < 0 then
    init = len + init + 1
  end
  if init > len + 1 then
    return nil
  end
  return init
end

-- The first match at or after `pos` whose end differs from `last` (gmatch and gsub do not take
-- an empty match where the previous one ended), as find's results packed; nil if none.
local function search(s, info, attempt, pos, last)
  local len, ap = s_len(s), info.ap
  local skip, run, stop = info.skip, info.run, info.stop
  local plain = info.skip_plain
  if skip and (len + 1) * info.skip_cost > MAX_PATTERN_COST then
    skip = nil
  end
  while pos <= len + 1 do
    if skip then
      pos = s_find(s, skip, pos, plain)
      if pos == nil then
        return nil
      end
    end
    charge(attempt) -- so that the clock is read every few milliseconds of attempts
    local r = t_pack(s_find(s, ap, pos))
    if r[1] then
      if r[2] + 1 ~= last then
        return r
      end
      pos = pos + 1
    elseif stop then
      return nil
    elseif run then
      pos = s_match(s, run, pos) + 1
    else
      pos = pos + 1
    end
  end
  return nil
end

local function stepped_find(s, info, attempt, init, want_match)
  local pos = start_at(init, s_len(s))
  local r = pos and search(s, info, attempt, pos, nil)
  if not r then
    return nil
  end
  if not want_match then
    return t_unpack(r, 1, r.n)
  elseif r.n == 2 then
    return s_sub(s, r[1], r[2])
  end
  return t_unpack(r, 3, r.n)
end

local function stepped_gmatch(s, info, attempt, init)
  local len = s_len(s)
  local pos, last = start_at(init, len) or len + 2, nil
  return function()
    local r = pos <= len + 1 and search(s, info, attempt, pos, last)
    if not r then
      pos = len + 2
      return
    end
    pos = r[2] + 1
    last = pos
    if r.n == 2 then
      return s_sub(s, r[1], r[2])
    end
    return t_unpack(r, 3, r.n)
  end
end

-- gsub's replacement string (lstrlib's add_s): %0 the match, %1-%9 captures, %% a percent.
-- Errors are raised at the script's call (level 4: add_s, replacement, stepped_gsub, script).
local function add_s(rs, whole, r)
  if not s_find(rs, "%", 1, true) then
    return rs
  end
  local parts, np, from = {}, 0, 1
  while true do
    local k = s_find(rs, "%", from, true)
    if not k then
      break
    end
    parts[np + 1] = s_sub(rs, from, k - 1)
    np = np + 1
    local d = s_byte(rs, k + 1)
    local piece
    if d == 37 then
      piece = "%"
    elseif d == 48 then
      piece = whole
    elseif d and d >= 49 and d <= 57 then
      local index, captures = d - 48, r.n - 2
      if index <= captures then
        piece = tostring(r[index + 2])
      elseif index == 1 and captures == 0 then
        piece = whole
      else
        error("invalid capture index %" .. index, 4)
      end
    else
      error("invalid use of '%' in replacement string", 4)
    end
    parts[np + 1] = piece
    np = np + 1
    from = k + 2
  end
  parts[np + 1] = s_sub(rs, from)
  return t_concat(parts)
end

-- lstrlib's add_value: the text that replaces one match.
local function replacement(s, r, repl, tr)
  local whole = s_sub(s, r[1], r[2])
  if tr == "string" then
    local text = add_s(repl, whole, r) -- not a tail call: add_s counts this frame
    return text
  end
  local v
  if tr == "table" then
    v = repl[r.n > 2 and r[3] or whole]
  elseif r.n > 2 then
    v = repl(t_unpack(r, 3, r.n))
  else
    v = repl(whole)
  end
  if not v then
    return whole
  end
  local tv = type(v)
  if tv == "string" then
    return v
  elseif tv == "number" then
    return tostring(v)
  end
  error("invalid replacement value (a " .. tv .. ")", 3)
end

local GSUB_PIECES = 512 -- pieces joined into one chunk of the result at a time

local function stepped_gsub(s, info, attempt, repl, max_n)
  local len, tr = s_len(s), type(repl)
  if tr == "number" then
    repl, tr = tostring(repl), "string"
  end
  -- Pieces are joined into chunks as they come, so the pieces never outnumber the result's
  -- bytes by much (a table entry per match would take more memory than the result).
  local chunks, nc, pieces, np = {}, 0, {}, 0
  local pos, copied, last, count = 1, 1, nil, 0
  while count < max_n do
    local r = search(s, info, attempt, pos, last)
    if not r then
      break
    end
    if r[1] > copied then
      pieces[np + 1] = s_sub(s, copied, r[1] - 1)
      np = np + 1
    end
    pieces[np + 1] = replacement(s, r, repl, tr)
    np = np + 1
    if np >= GSUB_PIECES then
      chunks[nc + 1] = t_concat(pieces, "", 1, np)
      nc, np = nc + 1, 0
    end
    count = count + 1
    pos = r[2] + 1
    copied, last = pos, pos
  end
  if copied <= len then
    pieces[np + 1] = s_sub(s, copied, len)
    np = np + 1
  end
  chunks[nc + 1] = t_concat(pieces, "", 1, np)
  return t_concat(chunks, "", 1, nc + 1), count
end

local function find(s, p, init, plain)
  local ss, pp = s, p
  if type(s) ~= "string" or type(p) ~= "string" then
    ss, pp = strings(s, p)
    if ss == nil then
      return s_find(s, p, init, plain)
    end
  end
  local info = not plain and analyze(pp, true)
  if not info or info.nospecials then
    plain_check("find", ss, pp)
    return s_find(s, p, init, plain)
  end
  local attempt = plan("find", ss, info, 0)
  local start = integer_arg(init, 1)
  if attempt == nil or not start then
    return s_find(s, p, init, plain) -- (an invalid init raises before any matching)
  end
  return stepped_find(ss, info, attempt, start, false)
end

local function match(s, p, init)
  local ss, pp = s, p
  if type(s) ~= "string" or type(p) ~= "string" then
    ss, pp = strings(s, p)
    if ss == nil then
      return s_match(s, p, init)
    end
  end
  local info = analyze(pp, true)
  local attempt = plan("match", ss, info, 0)
  local start = integer_arg(init, 1)
  if attempt == nil or not start then
    return s_match(s, p, init)
  end
  return stepped_find(ss, info, attempt, start, true)
end

local function gmatch(s, p, init)
  local ss, pp = s, p
  if type(s) ~= "string" or type(p) ~= "string" then
    ss, pp = strings(s, p)
    if ss == nil then
      return s_gmatch(s, p, init)
    end
  end
  local info = analyze(pp, false)
  local attempt = plan("gmatch", ss, info, 0)
  local start = integer_arg(init, 1)
  if attempt == nil or not start then
    return s_gmatch(s, p, init)
  end
  return stepped_gmatch(ss, info, attempt, start)
end

local function gsub(s, p, repl, n)
  local ss, pp = s, p
  if type(s) ~= "string" or type(p) ~= "string" then
    ss, pp = strings(s, p)
    if ss == nil then
      return s_gsub(s, p, repl, n)
    end
  end
  local info = analyze(pp, true)
  -- Measured 15-25 ns a position (a character or a replacement copied), plus the expansion
  -- of a replacement string.
  local expansion = type(repl) == "string" and s_len(repl) or 0
  local attempt = plan("gsub", ss, info, GSUB_STEPS + expansion)
  local max_n = integer_arg(n, s_len(ss) + 1)
  local tr = type(repl)
  if
    attempt == nil
    or not max_n
    or not (tr == "string" or tr == "number" or tr == "table" or tr == "function")
  then
    return s_gsub(s, p, repl, n) -- (invalid arguments raise before any matching)
  end
  return stepped_gsub(ss, info, attempt, repl, max_n)
end

-- One pass over the string in C: charged by its length before the call.
local function charged_by_length(fn)
  return function(s)
    if type(s) == "string" then
      charge(s_len(s))
    end
    return fn(s)
  end
end

local upper = charged_by_length(string.upper)
local lower = charged_by_length(string.lower)
local reverse = charged_by_length(string.reverse)

local function sub(s, i, j)
  local r = s_sub(s, i, j)
  charge(s_len(r))
  return r
end

local function format(...)
  local r = s_format(...)
  charge(s_len(r))
  return r
end

local function concat(t, sep, i, j)
  local r = t_concat(t, sep, i, j)
  charge(s_len(r))
  return r
end

local function u_len(s, ...)
  if type(s) == "string" then
    charge(s_len(s))
  end
  return utf8_len(s, ...)
end

-- table.insert/remove/move shift elements in a C loop whose length a __len metamethod (or
-- plain arguments, for move) controls: reimplemented in Lua, they run under the hook.
local function check_table(t, fname)
  if type(t) ~= "table" then
    error("bad argument #1 to '" .. fname .. "' (table expected, got " .. type(t) .. ")", 3)
  end
end

local function insert(t, ...)
  check_table(t, "insert")
  local nargs = select("#", ...)
  local e = #t + 1
  if nargs == 1 then
    t[e] = ...
    return
  elseif nargs ~= 2 then
    error("wrong number of arguments to 'insert'", 2)
  end
  local pos, v = ...
  pos = toint(pos, 2, "insert")
  if pos < 1 or pos > e then
    error("bad argument #2 to 'insert' (position out of bounds)", 2)
  end
  for i = e, pos + 1, -1 do
    t[i] = t[i - 1]
  end
  t[pos] = v
end

local function remove(t, pos)
  check_table(t, "remove")
  local size = #t
  if pos == nil then
    pos = size
  else
    pos = toint(pos, 2, "remove")
  end
  if pos ~= size and (pos < 1 or pos > size + 1) then
    error("bad argument #2 to 'remove' (position out of bounds)", 2)
  end
  local v = t[pos]
  while pos < size do
    t[pos] = t[pos + 1]
    pos = pos + 1
  end
  t[pos] = nil
  return v
end

local function move(a1, f, e, t, a2)
  check_table(a1, "move")
  if a2 == nil then
    a2 = a1
  end
  check_table(a2, "move")
  f, e, t = toint(f, 2, "move"), toint(e, 3, "move"), toint(t, 4, "move")
  if e >= f then
    if not (f > 0 or e < m_maxinteger + f) then
      error("bad argument #3 to 'move' (too many elements to move)", 2)
    end
    if t > m_maxinteger - (e - f) then
      error("bad argument #4 to 'move' (destination wrap around)", 2)
    end
    if t > e or t <= f or not rawequal(a1, a2) then
      for i = 0, e - f do
        a2[t + i] = a1[f + i]
      end
    else
      for i = e - f, 0, -1 do
        a2[t + i] = a1[f + i]
      end
    end
  end
  return a2
end

-- __gc metamethods run with hooks disabled (and at lua_close, inside Python's dealloc): a
-- looping finalizer would hang the host, so no table may be marked for finalization. Lua only
-- marks an object when its metatable has __gc at setmetatable time, so this check suffices.
local function safe_setmetatable(t, mt)
  -- The checks of lbaselib's setmetatable, made here so its errors name the script's line.
  if type(t) ~= "table" then
    error("bad argument #1 to 'setmetatable' (table expected, got " .. type(t) .. ")", 2)
  end
  if mt ~= nil and type(mt) ~= "table" then
    error("bad argument #2 to 'setmetatable' (nil or table expected)", 2)
  end
  local current = raw_getmetatable(t)
  if current ~= nil and rawget(current, "__metatable") ~= nil then
    error("cannot change a protected metatable", 2)
  end
  if mt ~= nil and rawget(mt, "__gc") ~= nil then
    error("setmetatable: __gc metamethods are not allowed in the sandbox", 2)
  end
  return setmetatable(t, mt)
end

local function safe_collectgarbage(opt)
  if opt == "count" then
    return collectgarbage("count")
  end
  error("collectgarbage: only collectgarbage('count') is allowed in the sandbox", 2)
end

local function safe_load(chunk, name, _mode, chunk_env)
  if type(chunk) ~= "string" then
    return nil, "load: only source strings can be loaded in the sandbox"
  end
  if s_len(chunk) > MAX_SOURCE then
    return nil, "load: chunk larger than " .. MAX_SOURCE .. " bytes"
  end
  local chunk_name = "=(load)"
  if type(name) == "string" then
    chunk_name = "=load:" .. s_sub(name, 1, 60)
  end
  if chunk_env == nil then
    chunk_env = env
  end
  -- Mode "t" whatever was asked: binary chunks can break the VM's invariants.
  return load(chunk, chunk_name, "t", chunk_env)
end

-- Coroutines do not inherit the hook: every coroutine the script creates gets it.
local function safe_create(f)
  local co = co_create(f)
  sethook(co, hook, "", stopped and 1 or interval)
  return co
end

-- An error raised in a hook (the budget's stop, or a memory error) leaves that thread with hooks
-- disabled: Lua turns them back on only at a pcall boundary of the same thread, and a coroutine
-- that died of the error has none left. Closing it would run its pending __close metamethods
-- unhooked, so dead coroutines are never closed (one that returned normally has nothing left
-- to close anyway). Suspended coroutines close normally, under the hook.
local function safe_close(co)
  if co_status(co) == "dead" then
    return true
  end
  return co_close(co)
end

local function wrap_result(ok, ...)
  if ok then
    return ...
  end
  error((...), 0)
end

local function safe_wrap(f)
  local co = safe_create(f)
  return function(...)
    return wrap_result(co_resume(co, ...))
  end
end

-- An error raised by the hook leaves hooks disabled until the enclosing pcall returns, and a
-- message handler runs before that: once the call is stopped, or when the error was raised in
-- the hook, the script's handler is skipped (it would run unhooked and could loop forever).
local function safe_xpcall(f, msgh, ...)
  if type(msgh) ~= "function" then
    error("bad argument #2 to 'xpcall' (function expected, got " .. type(msgh) .. ")", 2)
  end
  return xpcall(f, function(e)
    if stopped or raised_in_hook() then
      return e
    end
    return msgh(e)
  end, ...)
end

-- Host functions.
local function log(...)
  log_lines = log_lines + 1
  if log_lines > MAX_LOG_LINES then
    if log_lines == MAX_LOG_LINES + 1 then
      py_log("(further log lines of this call dropped: more than " .. MAX_LOG_LINES .. ")")
    end
    return
  end
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do
    parts[i] = tostring((select(i, ...)))
  end
  py_log(clean(t_concat(parts, " "), MAX_MESSAGE))
end

local function json_encode(v)
  if type(v) == "string" and not utf8_len(v) then
    error("json.encode: string is not valid UTF-8", 2)
  end
  local s, err = py_json_encode(v)
  if err then
    error("json.encode: " .. err, 2)
  end
  charge(s_len(s))
  return s
end

local function json_decode(s)
  if type(s) ~= "string" then
    error("json.decode: string expected, got " .. type(s), 2)
  end
  if s_len(s) > MAX_STRING then
    error("json.decode: input larger than " .. MAX_STRING .. " bytes", 2)
  end
  if not utf8_len(s) then
    error("json.decode: input is not valid UTF-8", 2)
  end
  charge(s_len(s))
  local v, err = py_json_decode(s)
  if err then
    error("json.decode: " .. err, 2)
  end
  return v
end

local function copy(t)
  local c = {}
  for k, v in next, t do
    c[k] = v
  end
  return c
end

env = {
  assert = assert,
  error = error,
  ipairs = ipairs,
  next = next,
  pairs = pairs,
  pcall = pcall,
  xpcall = safe_xpcall,
  select = select,
  tonumber = tonumber,
  tostring = tostring,
  type = type,
  rawequal = rawequal,
  rawget = rawget,
  rawlen = rawlen,
  rawset = rawset,
  getmetatable = getmetatable,
  setmetatable = safe_setmetatable,
  collectgarbage = safe_collectgarbage,
  load = safe_load,
  _VERSION = _VERSION,
  string = {
    byte = s_byte,
    char = string.char,
    find = find,
    format = format,
    gmatch = gmatch,
    gsub = gsub,
    len = s_len,
    lower = lower,
    match = match,
    rep = rep,
    reverse = reverse,
    sub = sub,
    upper = upper,
  },
  table = {
    concat = concat,
    insert = insert,
    move = move,
    pack = t_pack,
    remove = remove,
    sort = table.sort,
    unpack = t_unpack,
  },
  math = copy(math),
  utf8 = copy(utf8),
  coroutine = {
    create = safe_create,
    wrap = safe_wrap,
    resume = co_resume,
    yield = coroutine.yield,
    status = co_status,
    isyieldable = coroutine.isyieldable,
    running = coroutine.running,
    close = safe_close,
  },
  json = { encode = json_encode, decode = json_decode },
  log = log,
  now = function()
    return py_now()
  end,
}
env._G = env
env.utf8.len = u_len

-- The string metatable is the one object every string shares: point its __index at the
-- sandbox's string table (so ("x"):rep(n) is the bounded rep) and hide it from getmetatable.
local string_mt = getmetatable("")
string_mt.__index = env.string
string_mt.__metatable = false

local ctx = { state = {} }

local host = {}

-- The very function object the hook exempts (a wrapper would be stopped like script code).
host.run = run
host.run_task = run_task

function host.compile(source)
  if s_len(source) > MAX_SOURCE then
    return nil, "script larger than " .. MAX_SOURCE .. " bytes"
  end
  local fn, err = load(source, CHUNK_SOURCE, "t", env)
  if not fn then
    return nil, clean(err, MAX_MESSAGE)
  end
  return fn
end

function host.defines(name)
  return type(rawget(env, name)) == "function"
end

function host.ctx()
  return ctx
end

function host.get_state()
  return rawget(ctx, "state")
end

function host.set_state(state)
  rawset(ctx, "state", state)
end

function host.ident(t)
  return s_format("%p", t)
end

-- The guard's estimates for string.<fname>(s, p) on a subject of `len` bytes (one C call, one
-- attempt), and what it decides for a subject (Python only: diagnostics and benchmarks).
function host.pattern_cost(fname, p, len)
  local info = analyze(p, fname ~= "gmatch")
  return one_call_cost(info, len + 1, fname == "gsub" and GSUB_STEPS or 0)
end

function host.pattern_plan(fname, p, s)
  return (decide(s, analyze(p, fname ~= "gmatch"), fname == "gsub" and GSUB_STEPS or 0))
end

return host
