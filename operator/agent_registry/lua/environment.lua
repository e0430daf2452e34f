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

-- Pattern analysis: the number of backtracking items (q), optional items and anchoring. The
-- C matcher is a backtracking one: its worst case grows like m * n^(q+1) for a subject of n
-- bytes and a pattern of m bytes (n^q when anchored), times 2 per optional item.
local function skip_set(p, i)
  -- p[i] == "["; returns the index after the closing "]" (as lstrlib's classEnd does).
  i = i + 1
  if s_byte(p, i) == 94 then
    i = i + 1
  end
  repeat
    local c = s_byte(p, i)
    if c == nil then
      return i
    end
    i = i + 1
    if c == 37 then
      i = i + 1
    end
  until s_byte(p, i) == 93
  return i + 1
end

local pattern_cache, pattern_cache_size = {}, 0

local function analyze(p)
  local cached = pattern_cache[p]
  if cached then
    return cached
  end
  local q, opt, i, m = 0, 0, 1, s_len(p)
  local anchored = s_byte(p, 1) == 94
  if anchored then
    i = 2
  end
  while i <= m do
    local c = s_byte(p, i)
    local single = true
    if c == 37 then -- %
      local d = s_byte(p, i + 1)
      if d == 98 then -- %bxy scans to the end of the subject
        q = q + 1
        i = i + 4
        single = false
      elseif d == 102 then -- %f[set]
        i = skip_set(p, i + 2)
        single = false
      elseif d and d >= 48 and d <= 57 then -- back reference
        q = q + 1
        i = i + 2
        single = false
      else
        i = i + 2
      end
    elseif c == 91 then -- [set]
      i = skip_set(p, i)
    elseif c == 40 or c == 41 then -- captures
      i = i + 1
      single = false
    else
      i = i + 1
    end
    if single then
      local qc = s_byte(p, i)
      if qc == 42 or qc == 43 or qc == 45 then
        q = q + 1
        i = i + 1
      elseif qc == 63 then
        opt = opt + 1
        i = i + 1
      end
    end
  end
  cached = { q, opt, anchored }
  if pattern_cache_size >= 256 then
    pattern_cache, pattern_cache_size = {}, 0
  end
  pattern_cache[p] = cached
  pattern_cache_size = pattern_cache_size + 1
  return cached
end

local function check_pattern(fname, s, p, plain, can_anchor)
  -- Numbers are converted as the C functions convert them ("1e+300" is a pattern with "+").
  if type(s) == "number" then
    s = tostring(s)
  end
  if type(p) == "number" then
    p = tostring(p)
  end
  if type(s) ~= "string" or type(p) ~= "string" then
    return -- the C function raises its own argument error
  end
  local n, m = s_len(s) + 1, s_len(p)
  charge(n)
  local cost
  if plain then
    cost = n * m / 100 -- memchr + memcmp: measured ~100x cheaper per step than matching
  else
    local info = analyze(p)
    local q = info[1]
    if not (can_anchor and info[3]) then
      q = q + 1
    end
    -- Each backtracking item may retry the rest of the pattern (up to m items) at every
    -- position: n^q * m, doubled per optional item.
    cost = (n ^ q) * m * (2 ^ info[2])
  end
  if cost > MAX_PATTERN_COST then
    error(
      "string." .. fname .. ": pattern too costly for a subject of " .. (n - 1)
        .. " bytes (sandbox limit, see docs/sandbox.md)",
      3
    )
  end
end

local function find(s, p, init, plain)
  check_pattern("find", s, p, plain, true)
  return s_find(s, p, init, plain)
end

local function match(s, p, init)
  check_pattern("match", s, p, false, true)
  return s_match(s, p, init)
end

local function gmatch(s, p, init)
  check_pattern("gmatch", s, p, false, false)
  return s_gmatch(s, p, init)
end

local function gsub(s, p, repl, n)
  check_pattern("gsub", s, p, false, true)
  return s_gsub(s, p, repl, n)
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

return host
