-- scripts/hello_tasks.lua — the core in one screen: tasks that sleep concurrently, a gather
-- that collects their results in input order, a timeout, and a task left running when the
-- main chunk ends (aioshell keeps the loop going until it finishes).
--   aioshell scripts/hello_tasks.lua        (or: make demo)
local aio = require "aio"

if arg and arg[1] then  -- no options: --help says so, anything else is a mistake
  local usage = require("aio.flags").usage("hello_tasks", "  (no options: a timeline of tasks)")
  if arg[1] == "-h" or arg[1] == "--help" then io.write(usage) os.exit(0) end
  io.stderr:write("hello_tasks: unknown argument ", arg[1], "\n", usage)
  os.exit(2)
end

local t0 = aio.now()
-- Prints a line stamped with the time since the start, in milliseconds.
local function log(fmt, ...)
  print(("[%6.1f ms] " .. fmt):format((aio.now() - t0) * 1000, ...))
end

-- A worker: sleeps `seconds`, then returns a greeting.
local function worker(name, seconds)
  log("%s starts, sleeps %.2f s", name, seconds)
  aio.sleep(seconds)
  log("%s wakes up", name)
  return "hello from " .. name
end

-- Three workers run concurrently: the whole gather takes as long as the slowest (0.3 s), not
-- the sum (0.6 s). Awaiting at top level runs the loop until the result is ready.
local a = aio.spawn(worker, "a", 0.3)
local b = aio.spawn(worker, "b", 0.1)
local c = aio.spawn(worker, "c", 0.2)
local ra, rb, rc = aio.gather(a, b, c)
log("gather -> %q, %q, %q (input order, not completion order)", ra, rb, rc)

-- A timeout cancels the slow call and raises a recognizable error.
local ok, err = pcall(aio.wait_for, aio.spawn(worker, "slow", 10), 0.05)
log("wait_for(slow, 0.05) -> %s, timeout error: %s", tostring(ok), tostring(aio.is_timeout(err)))

-- A task nobody awaits: the main chunk ends first, the host drains the loop afterwards.
aio.spawn(function()
  aio.sleep(0.05)
  log("a background task finishes after the main chunk")
end)
log("main chunk ends (total should be ~350 ms, not ~650 ms)")
