-- aio.trace — Chrome/Perfetto trace-event JSON of task spans and HTTP requests.
--
--   local trace = require "aio.trace"
--   trace.start("run.json")   -- or: aioshell --trace run.json script.lua
--   ...                       -- tasks spawned from Lua and HTTP requests are recorded
--   trace.stop()              -- writes the file (also done at exit if still active, os.exit included)
--
-- Without touching a script: AIO_TRACE=run.json aioshell -l aio.trace script.lua (loading the
-- module with AIO_TRACE set starts the trace; it is written at exit).
--
-- Spans are async events ("b"/"e" pairs with ids), because concurrent tasks overlap without
-- nesting; Perfetto (ui.perfetto.dev) and chrome://tracing show each as its own track.
local aio = require "aio"

local trace = { active = false }

local events, path, t0, next_id = nil, nil, 0, 0
local live                 -- task -> start time, until its span is recorded
local pid = 1
local cjson, exit_guard    -- loaded, and made, by the first start (see there)
local stop_at_exit

-- Microseconds since trace.start on the loop clock.
local function us(t) return math.floor((t - t0) * 1e6 + 0.5) end

-- Records a finished span [start, stop] (loop-clock seconds) named name in category cat.
function trace.complete(name, cat, start, stop, args)
  if not trace.active then return end
  next_id = next_id + 1
  local n = #events
  events[n + 1] = { name = name, cat = cat, ph = "b", id = next_id, pid = pid, tid = 1, ts = us(start), args = args }
  events[n + 2] = { name = name, cat = cat, ph = "e", id = next_id, pid = pid, tid = 1, ts = us(stop) }
end

-- Records an instant event now.
function trace.instant(name, cat, args)
  if not trace.active then return end
  events[#events + 1] = { name = name, cat = cat or "mark", ph = "i", s = "g", pid = pid, tid = 1,
                          ts = us(aio.now()), args = args }
end

-- Runs fn(...) and records it as a span; returns fn's results.
function trace.span(name, fn, ...)
  local s = aio.now()
  local r = table.pack(pcall(fn, ...))
  trace.complete(name, "span", s, aio.now())
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

-- Creates (truncates) file p now, so a path that cannot be written fails at the start rather
-- than silently at exit; returns true or fail, message.
local function creatable(p)
  local f, err = io.open(p, "w")
  if not f then return nil, "aio.trace: cannot create the trace file " .. err end
  f:close()
  return true
end

-- Starts recording to file p (checked to be creatable): every task becomes a span, through
-- the core's task lifecycle hook.
local function start(p)
  if trace.active then trace.stop() end
  path, events, next_id = p, {}, 0
  t0 = aio.now()
  trace.active = true
  events[1] = { name = "process_name", ph = "M", pid = pid, tid = 1, args = { name = "aioshell" } }
  live = setmetatable({}, { __mode = "k" })
  -- cjson is loaded now, and the object whose finalizer writes the trace at lua_close (a normal
  -- end, an error, os.exit(code, true)) is made after it: Lua finalizes in reverse order of
  -- creation, so cjson is still whole when the trace is written. (Loaded in that finalizer
  -- instead, it would leak its buffers: a closing state registers no more finalizers.)
  if not exit_guard then
    cjson = require "cjson"
    exit_guard = setmetatable({}, { __gc = function() stop_at_exit() end })
  end
  aio.set_task_hook(function(event, task)
    if event == "spawn" then
      live[task] = aio.now()
    elseif live and live[task] then
      local start = live[task]
      live[task] = nil
      trace.complete("task " .. tostring(task.name), "task", start, aio.now(),
        { id = task.id, state = task.state, site = task.site })
    end
  end)
  return trace
end

-- Starts recording to file p: every task (spawned from Lua or C: server handlers, callbacks,
-- combinators) becomes a span. Raises when p cannot be created.
function trace.start(p)
  if not p then error("trace.start: file name required", 2) end
  local ok, err = creatable(p)
  if not ok then error(err, 2) end
  return start(p)
end

-- Stops recording and writes the JSON file; returns the number of events written.
function trace.stop()
  if not trace.active then return 0 end
  -- Tasks whose done-callbacks have not run yet (they run as tasks, later) or that still run:
  -- their spans end now.
  local now = aio.now()
  for task, start in pairs(live) do
    local state = not task:done() and "running" or (task:cancelled() and "cancelled" or "done")
    trace.complete("task " .. tostring(task.name or task.id), "task", start, now, { id = task.id, state = state })
  end
  live = nil
  trace.active = false
  aio.set_task_hook(nil)
  local f = assert(io.open(path, "w"))
  f:write('{"displayTimeUnit":"ms","traceEvents":[\n')
  for i, e in ipairs(events) do
    if i > 1 then f:write(",\n") end
    f:write(cjson.encode(e))
  end
  f:write("\n]}\n")
  f:close()
  local n = #events
  events = nil
  return n
end

-- Writes the file at exit if the script forgot to stop; a failure is reported on stderr.
function stop_at_exit()
  if not trace.active then return end
  local ok, err = pcall(trace.stop)
  if not ok then io.stderr:write("aio.trace: the trace was not written: ", tostring(err), "\n") end
end

-- A plain os.exit(code) ends the process without closing the state, so no finalizer runs:
-- write the trace first.
do
  local exit = os.exit
  os.exit = function(...)  -- luacheck: ignore 122
    stop_at_exit()
    return exit(...)
  end
end

-- AIO_TRACE (aioshell --trace FILE) starts the trace; a file that cannot be created stops the
-- program with a one-line message (an error object with __tostring: no traceback).
do
  local auto = os.getenv("AIO_TRACE")
  if auto and auto ~= "" then
    local ok, err = creatable(auto)
    if not ok then error(setmetatable({}, { __tostring = function() return err end })) end
    start(auto)
  end
end

return trace
