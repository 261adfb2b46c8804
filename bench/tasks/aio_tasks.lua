-- bench/tasks/aio_tasks.lua — the aioshell side of bench/tasks (run by run.py, one case per
-- process): `aioshell aio_tasks.lua CASE N [M]`. Prints one line of key=value figures.
--   spawn    N tasks, each sleep(0) then return its argument; gather them all
--   sleepers N tasks sleeping concurrently: RSS before, peak RSS once all are asleep
--   switch   N tasks each doing M sleep(0) (N=2: two tasks ping-ponging)
-- Times are process CPU (os.clock: user+sys) and loop wall time (aio.now) of the measured part.
local aio = require "aio"
local case, n, m = arg[1], tonumber(arg[2]), tonumber(arg[3] or 0)

-- Reads a "VmXXX:  1234 kB" line of /proc/self/status, in kB.
local function status_kb(key)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match(key .. ":%s*(%d+)"))
end

local function work(i) aio.sleep(0) return i end
local function sleeper() aio.sleep(3600) end
local function switcher(count) for _ = 1, count do aio.sleep(0) end end

if case == "spawn" then
  local c0, w0 = os.clock(), aio.now()
  local ts = {}
  for i = 1, n do ts[i] = aio.spawn(work, i) end
  local r = aio.gather(ts)
  local cpu, wall = os.clock() - c0, aio.now() - w0
  assert(r[n] == n and #r == n)
  print(("cpu=%.6f wall=%.6f"):format(cpu, wall))
elseif case == "sleepers" then
  collectgarbage() collectgarbage()
  local before = status_kb("VmRSS")
  local ts = {}
  for i = 1, n do ts[i] = aio.spawn(sleeper) end
  -- Every task has run up to its sleep once a task queued after them has run. (Not a timed
  -- top-level sleep: see docs/aio.md "Known problems", a due timer could stall the poll.)
  aio.spawn(aio.sleep, 0):await()
  assert(aio.ntasks() >= n and ts[n].state == "sleeping")
  print(("rss0_kb=%d hwm_kb=%d rss_kb=%d"):format(before, status_kb("VmHWM"), status_kb("VmRSS")))
  io.stdout:flush()
  os.exit(0)  -- skip cancelling 100k tasks: not part of the measurement
elseif case == "switch" then
  local ts = {}
  local c0, w0 = os.clock(), aio.now()
  for i = 1, n do ts[i] = aio.spawn(switcher, m) end
  aio.gather(ts)
  local cpu, wall = os.clock() - c0, aio.now() - w0
  print(("cpu=%.6f wall=%.6f switches=%d"):format(cpu, wall, n * m))
else
  error("usage: aio_tasks.lua spawn|sleepers|switch N [M]")
end
