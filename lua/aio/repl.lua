-- aio.repl: the read-eval-print loop of aioshell, a console for the event loop.
--
-- The terminal side (libedit on the loop, piped input, Ctrl-C, output above the prompt) is
-- the C module aio.repl_c (src/repl.c). This file is the logic: lua.c's REPL rules (prompts
-- from _PROMPT/_PROMPT2, `return <line>` first, incomplete chunks continue), each line run
-- as a task, readable values, console commands (:tasks :where :cancel :time :help), tab
-- completion candidates and the exit on Ctrl-D.
local aio = require "aio"
local console = require "aio.console"
local c = require "aio.repl_c"

local M = {}
local tostring = tostring  -- the original, as print uses it even if a line replaces the global

local GRACE = 1.0          -- seconds background tasks get to finish after Ctrl-D
local MAX_DEPTH = 3        -- nesting shown by M.show before "{...}"
local MAX_ITEMS = 40       -- entries shown per table before "..."

---------------------------------------------------------------------------------------------
-- Showing values
---------------------------------------------------------------------------------------------

local keywords = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do keywords[w] = true end

-- True if s can be written as a bare field name.
local function is_name(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil and not keywords[s]
end

-- The metatable's __name of a value, if it has one (userdata of aio: "aio.task", ...).
local function type_name(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__name") or nil
end

-- A task or future as text: its own __tostring when it has one (state included).
local function show_awaitable(v, kind)
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" and not s:match("^aio%.%a+: 0x") then return s end
  local state = "pending"
  local okd, done = pcall(function() return v:done() end)
  if okd and done then
    local okr = pcall(v.result, v)
    state = okr and "done" or "failed"
    if kind == "task" and pcall(v.cancelled, v) and v:cancelled() then state = "cancelled" end
  end
  if kind == "task" then
    return ("<task %s %q %s>"):format(tostring(v.id), tostring(v.name), state)
  end
  return ("<future %s>"):format(state)
end

local show

-- A table as a Lua literal, limited in depth and length, cycles marked.
local function show_table(t, depth, seen)
  if seen[t] then return "<cycle>" end
  local mt = getmetatable(t)
  if type(mt) == "table" and rawget(mt, "__tostring") then return tostring(t) end
  if depth > MAX_DEPTH then return "{...}" end
  seen[t] = true
  local parts, n = {}, 0
  local len = rawlen(t)
  for i = 1, len do
    n = n + 1
    if n > MAX_ITEMS then break end
    parts[n] = show(rawget(t, i), depth + 1, seen)
  end
  local keys = {}
  for k in next, t do
    if not (math.type(k) == "integer" and k >= 1 and k <= len) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "string" or ta == "number" then return a < b end
    return tostring(a) < tostring(b)
  end)
  for _, k in ipairs(keys) do
    n = n + 1
    if n > MAX_ITEMS then break end
    local ks = is_name(k) and k or "[" .. show(k, depth + 1, seen) .. "]"
    parts[n] = ks .. " = " .. show(rawget(t, k), depth + 1, seen)
  end
  seen[t] = nil
  if n > MAX_ITEMS then
    parts[MAX_ITEMS + 1] = ("... (%d more)"):format(len + #keys - MAX_ITEMS)
    for i = #parts, MAX_ITEMS + 2, -1 do parts[i] = nil end
  end
  if #parts == 0 then return "{}" end
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- Any value as text; nested strings are quoted, tables are literals.
function show(v, depth, seen)
  local tv = type(v)
  if tv == "string" then
    return (("%q"):format(v):gsub("\\\n", "\\n"))
  elseif tv == "table" then
    return show_table(v, depth or 1, seen or {})
  elseif tv == "userdata" then
    local name = type_name(v)
    if name == "aio.task" then return show_awaitable(v, "task") end
    if name == "aio.future" then return show_awaitable(v, "future") end
  end
  return tostring(v)
end

-- A value as the REPL prints it: top-level strings raw (as print does), the rest via show.
function M.show(v)
  if type(v) == "string" then return v end
  return show(v, 1, {})
end

-- The line print of several values, tab-separated (like print).
local function show_values(t, first, last)
  local out = {}
  for i = first, last do out[#out + 1] = M.show(t[i]) end
  return table.concat(out, "\t")
end

---------------------------------------------------------------------------------------------
-- Output: background output above the prompt
---------------------------------------------------------------------------------------------

local stdout = io.stdout
local saved = nil          -- while the REPL's wrappers are installed: how to remove them

-- Routes console output through c.write while the REPL runs (aio.console), so output of
-- background tasks appears above the line being edited instead of in its middle; os.exit from
-- a line gives the terminal back and saves the history first.
local function install_output()
  local remove, wrapped_print = console.install(c.write, c.std_print)
  local exit = os.exit
  local wrapped_exit = function(...)
    c.close()
    return exit(...)
  end
  os.exit = wrapped_exit
  saved = { print = wrapped_print, remove = function()
    remove()
    if os.exit == wrapped_exit then os.exit = exit end
  end }
end

-- Puts back the originals (unless the user replaced them meanwhile).
local function remove_output()
  if not saved then return end
  saved.remove()
  saved = nil
end

-- Writes text the REPL itself prints (results, messages).
local function out(s) c.write(s) end

-- Writes an error report to stderr (the prompt is never shown while the REPL reports).
local function err(s)
  io.stderr:write(s, "\n")
  io.stderr:flush()
end

---------------------------------------------------------------------------------------------
-- Tab completion
---------------------------------------------------------------------------------------------

-- Adds the string keys of t that are names to set (with their values' types).
local function add_keys(set, t, only_functions)
  if type(t) ~= "table" then return end
  for k, v in next, t do
    if is_name(k) and (not only_functions or type(v) == "function") then set[k] = true end
  end
end

-- The fields visible on v: its own (if a table) and its metatable's __index table, following
-- __index chains a few levels (classes).
local function fields_of(v, only_functions)
  local set = {}
  local seen = 0
  while v ~= nil and seen < 5 do
    seen = seen + 1
    if type(v) == "table" then add_keys(set, v, only_functions) end
    local mt = getmetatable(v)
    if type(mt) ~= "table" then break end
    local idx = rawget(mt, "__index")
    if type(idx) == "function" then
      -- a C __index closure over its methods table (aio's tasks and futures)
      local _, up = debug.getupvalue(idx, 1)
      idx = up
    end
    if type(idx) ~= "table" then break end
    v = idx
  end
  return set
end

-- Resolves a dotted path like "aio" or "string.format" from the globals, or nil.
local function resolve(path)
  local v = _G
  for name in path:gmatch("[^.:]+") do
    if not is_name(name) then return nil end
    local ok, nv = pcall(function() return v[name] end)
    if not ok or nv == nil then return nil end
    v = nv
  end
  return v
end

-- Completion candidates for the word `text` (globals, `t.` fields, `t:` methods), sorted.
function M.complete(text)
  local base, sep, partial = text:match("^([%a_][%w_.:]*)([.:])([%w_]*)$")
  local set
  if base then
    if base:find(":") then return {} end
    local v = resolve(base)
    if v == nil then return {} end
    set = fields_of(v, sep == ":")
  else
    partial = text:match("^[%a_][%w_]*$") or (text == "" and "")
    if not partial then return {} end
    base, sep = "", ""
    set = fields_of(_G)
    for k in pairs(keywords) do set[k] = true end
  end
  local cands = {}
  for k in pairs(set) do
    if k:sub(1, #partial) == partial then cands[#cands + 1] = base .. sep .. k end
  end
  table.sort(cands)
  return cands
end

---------------------------------------------------------------------------------------------
-- Running lines
---------------------------------------------------------------------------------------------

local current = nil        -- the task running the current line
local repl_task = nil      -- the REPL's own task
local host_task = nil      -- the task that called run(), if it was called from one
local line_no = 0
local interrupted = false  -- Ctrl-C hit the running line (the tty echoed "^C" after its text)

-- True for the errors a person stops on purpose: cancellation and Ctrl-C in busy code.
local function is_interruption(e)
  if aio.is_cancelled(e) then return true end
  return type(e) == "string" and e:match("interrupted!$") ~= nil
end

-- Message handler of a line: lua.c's msghandler, with the traceback cut at the line's chunk.
local function msghandler(e)
  if is_interruption(e) then return e end
  local msg = e
  if math.type(msg) then msg = tostring(msg) end  -- lua_tostring converts numbers, as in lua.c
  if type(msg) ~= "string" then
    local mt = getmetatable(msg)
    if mt and mt.__tostring then
      local ok, s = pcall(tostring, msg)
      if ok and type(s) == "string" then return s end
    end
    msg = ("(error object is a %s value)"):format(type(e))
  end
  local tb = debug.traceback(msg, 2)
  local cut = tb:find("\n\t%[C%]: in function 'xpcall'")
  if cut then tb = tb:sub(1, cut - 1) .. "\n\t[C]: in ?" end
  return tb
end

-- Runs fn as the line's task; returns true, results (packed) or false, error.
local function run_line(fn)
  line_no = line_no + 1
  local t = aio._own(aio.spawn(function()
    c.set_line(coroutine.running())
    local r = table.pack(xpcall(fn, msghandler))
    c.set_line(nil)
    return r
  end))
  if t.set_name then t:set_name("repl:line" .. line_no) end
  current, interrupted = t, false
  local ok, r = pcall(t.await, t)
  current = nil
  c.set_line(nil)
  if not ok then return false, r end     -- cancelled before it could start
  if not r[1] then return false, r[2] end
  return true, r
end

-- An error value as lua.c prints it (lua_tostring): a string or a number as text, anything
-- else "(null)".
local function error_text(e)
  return (type(e) == "string" or type(e) == "number") and tostring(e) or "(null)"
end

-- Prints a line's values as lua.c does, with the global print; while print is the standard
-- one (or the REPL's wrapper of it), the REPL's own printer stands in for it.
local function print_values(r)
  local p = print
  if p == c.std_print or (saved and p == saved.print) then
    return out(show_values(r, 2, r.n) .. "\n")
  end
  local ok, e = pcall(p, table.unpack(r, 2, r.n))
  if not ok then
    err(("error calling 'print' (%s)"):format(error_text(e)))
  end
end

-- Prints the outcome of a line: its values, or the error (one line for an interruption).
local function report(ok, r)
  if ok then
    if r.n > 1 then print_values(r) end
  elseif is_interruption(r) then
    -- after Ctrl-C the terminal echoed "^C" behind the line's own output
    if interrupted or type(r) == "string" then out("\n") end
    err(tostring(r):match("[^\n]*"))
  else
    err(tostring(r))
  end
end

-- The prompt as lua.c makes it: the global _PROMPT or _PROMPT2, read like any global (an
-- __index on _G counts, as with lua_getglobal), through tostring; the default when nil.
local function prompt_text(first)
  local p
  if first then p = _PROMPT else p = _PROMPT2 end
  if p == nil then return first and "> " or ">> " end
  return tostring(p)
end

-- The prompt, or nil and lua.c's message when making it fails (which ends the REPL).
local function get_prompt(first)
  local ok, p = pcall(prompt_text, first)
  if ok then return p end
  return nil, error_text(p)
end

-- True if a load error says the chunk just needs more lines.
local function incomplete(msg)
  return type(msg) == "string" and msg:sub(-5) == "<eof>"
end

-- Reads a chunk the way lua.c's loadline does. Returns fn | nil, errmsg | "eof" | "reset",
-- "command", name, argument for a console command, or "fatal", message when a prompt could
-- not be made.
local function read_chunk()
  local prompt, failure = get_prompt(true)
  if not prompt then return "fatal", failure end
  local line = c.readline(prompt)
  if line == nil then return "eof" end
  if line == false then return "reset" end
  local cmd, arg = line:match("^%s*:(%a+)%s*(.-)%s*$")
  if cmd and not line:match("^%s*::") then
    c.add_history(line)
    return "command", cmd, arg
  end
  if line:sub(1, 1) == "=" then line = "return " .. line:sub(2) end
  local fn = load("return " .. line .. ";", "=stdin", "t")
  if fn then
    c.add_history(line)
    return fn
  end
  local buf = line
  while true do
    local f, msg = load(buf, "=stdin", "t")
    if f or not incomplete(msg) then
      c.add_history(buf)
      return f, msg
    end
    prompt, failure = get_prompt(false)
    if not prompt then return "fatal", failure end
    local more = c.readline(prompt)
    if more == false then return "reset" end
    if more == nil then
      c.add_history(buf)
      return nil, msg
    end
    buf = buf .. "\n" .. more
  end
end

---------------------------------------------------------------------------------------------
-- Console commands
---------------------------------------------------------------------------------------------

-- The live tasks that are not the REPL's own (aio.tasks() leaves those out: aio._own) nor the
-- task that called run(), which waits for the REPL.
local function user_tasks()
  local list = {}
  for _, t in ipairs(aio.tasks()) do
    if t ~= host_task then list[#list + 1] = t end
  end
  return list
end

-- Modules whose jobs :tasks lists too, when they are loaded and export jobs() -> list of
-- records (or objects) with the fields of a task: id, name, state, age, waiting_on, site.
M.job_sources = { "aio.thread", "aio.process" }

-- Jobs of the loaded job sources (thread and process pools), each tagged with its kind.
local function user_jobs()
  local list = {}
  for _, modname in ipairs(M.job_sources) do
    local mod = package.loaded[modname]
    local jobs = type(mod) == "table" and rawget(mod, "jobs")
    if type(jobs) == "function" then
      local ok, js = pcall(jobs)
      if ok and type(js) == "table" then
        for _, j in ipairs(js) do list[#list + 1] = { kind = modname:match("[^.]+$"), job = j } end
      end
    end
  end
  return list
end

-- Finds a live task by id.
local function find_task(id)
  id = tonumber(id)
  if not id then return nil end
  for _, t in ipairs(aio.tasks()) do
    if t.id == id then return t end
  end
  return nil
end

local commands = {}

commands.help = { "show this help", function()
  local names = {}
  for k in pairs(commands) do names[#names + 1] = k end
  table.sort(names)
  local lines = { "Each line runs as a task: awaiting (aio.sleep, t:await(), ...) works here.",
    "Ctrl-C cancels the running line, Ctrl-D exits. Commands:" }
  for _, k in ipairs(names) do
    lines[#lines + 1] = ("  :%-16s %s"):format(k .. (commands[k].arg and " " .. commands[k].arg or ""),
                                               commands[k][1])
  end
  out(table.concat(lines, "\n") .. "\n")
end }

commands.tasks = { "list live tasks (and pool jobs): id, name, state, age, waiting on, spawn site",
function()
  local list = user_tasks()
  for _, j in ipairs(user_jobs()) do  -- a job's name is its pool's; its id (T7, P3) tells the kind
    local ok, name = pcall(function() return j.job.name end)
    list[#list + 1] = setmetatable({ name = tostring(ok and name or "?") },
                                   { __index = function(_, k) return j.job[k] end })
  end
  if #list == 0 then out("no tasks\n") return end
  aio.dump({ write = function(_, s) out(s) end }, list)  -- the one task table (aio.dump's)
end }

commands.where = { "show where task ID is suspended (its traceback)", function(arg)
  local t = find_task(arg)
  if not t then err("no live task with id " .. tostring(arg)) return end
  local tb
  if type(t) == "userdata" or type(t) == "table" then
    if t.traceback then
      local ok, s = pcall(t.traceback, t)
      if ok then tb = s end
    end
    if not tb then
      local ok, co = pcall(function() return t.coroutine end)
      if ok and type(co) == "function" then co = co(t) end
      if ok and type(co) == "thread" then tb = debug.traceback(co) end
    end
  end
  out((tb or "(this task's stack is not available)") .. "\n")
end, arg = "ID" }

commands.cancel = { "cancel task ID", function(arg)
  local t = find_task(arg)
  if not t then err("no live task with id " .. tostring(arg)) return end
  t:cancel("cancelled from the REPL")
  out(("cancelled task %s\n"):format(arg))
end, arg = "ID" }

commands.time = { "run a line, then print its wall and CPU time", function(arg)
  local fn, msg = load("return " .. arg .. ";", "=stdin", "t")
  if not fn then fn, msg = load(arg, "=stdin", "t") end
  if not fn then err(msg) return end
  local w0, c0 = c.hrtime(), os.clock()
  local ok, r = run_line(fn)
  local w1, c1 = c.hrtime(), os.clock()
  report(ok, r)
  out(("wall %.3f s, cpu %.3f s\n"):format(w1 - w0, c1 - c0))
end, arg = "<expr>" }

---------------------------------------------------------------------------------------------
-- The loop
---------------------------------------------------------------------------------------------

local exiting = nil        -- the tasks given a grace after Ctrl-D

-- Ctrl-C while a line runs: cancel that line only (during the exit grace: the tasks left).
local function on_interrupt()
  if exiting then             -- Ctrl-C during the grace: do not wait any longer
    for _, t in ipairs(exiting) do
      if not t:done() then t:cancel("the REPL exited") end
    end
  elseif current and not current:done() then
    interrupted = true
    current:cancel("cancelled by Ctrl-C")
  end
end

-- After Ctrl-D: tell which tasks and pool jobs still run, give them GRACE seconds, then cancel
-- them; report the failures among them (as before a prompt: the exit status stays 0; aio.wait
-- does not observe them). A job counts as a task does: the session's end would otherwise end
-- the program under it.
local function finish_tasks()
  local list, names = user_tasks(), {}
  local ntasks = #list
  for _, t in ipairs(list) do names[#names + 1] = ("#%s %s"):format(tostring(t.id), tostring(t.name)) end
  for _, j in ipairs(user_jobs()) do
    local f = rawget(j.job, "future")
    if f then
      list[#list + 1] = f
      names[#names + 1] = ("%s %s"):format(tostring(j.job.id), tostring(j.job.name))
    end
  end
  if #list == 0 then return end
  if #names > 8 then names = { table.unpack(names, 1, 8) }; names[9] = "..." end
  local njobs, what = #list - ntasks, ("%d task(s)"):format(ntasks)
  if njobs > 0 then
    what = ntasks > 0 and ("%s and %d pool job(s)"):format(what, njobs) or ("%d pool job(s)"):format(njobs)
  end
  err(("aioshell: %s still running (%s); cancelling them in %gs"):format(
    what, table.concat(names, ", "), GRACE))
  exiting = list
  pcall(aio.wait, list, { timeout = GRACE })
  for _, t in ipairs(list) do
    if not t:done() then t:cancel("the REPL exited") end
  end
  pcall(aio.wait, list, { timeout = GRACE })
  exiting = nil
  aio.report_unobserved()
end

-- The REPL's task: read, evaluate as a task, print, until end of input. Returns the message
-- of the error that ended it early (a prompt that could not be made), or nil.
local function loop()
  while true do
    -- let tasks the last line made ready run, then show failures nobody will see otherwise
    aio.sleep(0)
    if aio.report_unobserved then aio.report_unobserved() end
    local fn, a, b = read_chunk()
    if fn == "eof" then break
    elseif fn == "fatal" then return a
    elseif fn == "reset" then -- Ctrl-C at the prompt: start over
    elseif fn == "command" then
      local cmd = commands[a]
      if not cmd then err(("unknown command :%s (try :help)"):format(a))
      elseif cmd.arg and b == "" then err(("usage: :%s %s"):format(a, cmd.arg))
      else cmd[2](b) end
    elseif fn == nil then
      err(a)
    else
      report(run_line(fn))
    end
  end
end

-- Makes aio a global of the REPL (`python -m asyncio` imports asyncio the same way) unless the
-- name has a value already: set by a script run with -i, by `-l aio`, or through _G's own
-- __index (a strict-mode __index that raises on the read leaves it alone too). Scripts, -e and
-- LUA_INIT run before this, so they see the globals lua5.4 gives them.
local function preload_aio()
  if rawget(_G, "aio") ~= nil then return end
  local ok, v = pcall(function() return _G.aio end)
  if ok and v == nil then rawset(_G, "aio", aio) end
end

-- Runs the REPL until end of input (called by aio_repl on the main thread). Returns true, or
-- false and lua.c's message when a prompt could not be made: in lua.c that error leaves the
-- REPL and ends the interpreter (status 1, background tasks get no grace).
function M.run(opts)
  opts = opts or {}
  local history = opts.history or os.getenv("AIOSHELL_HISTORY")
  if history == nil then
    local home = os.getenv("HOME")
    history = home and home .. "/.aioshell_history" or nil
  end
  local editing = c.open {
    editing = opts.editing,
    history = history,
    history_size = tonumber(os.getenv("AIOSHELL_HISTORY_SIZE")) or 1000,
    completer = M.complete,
    interrupt = on_interrupt,
  }
  if editing then install_output() end
  preload_aio()
  host_task = aio.current()
  local failure
  local ok, e = pcall(function()
    repl_task = aio._own(aio.spawn(function()
      local f = loop()
      if f == nil then finish_tasks() end
      return f
    end))
    if repl_task.set_name then repl_task:set_name("repl") end
    failure = repl_task:await()
  end)
  remove_output()
  c.close()
  if not editing and failure == nil then stdout:write("\n") stdout:flush() end
  repl_task, host_task = nil, nil
  if not ok then error(e, 0) end
  if failure ~= nil then return false, failure end
  return true
end

M.commands = commands
return M
