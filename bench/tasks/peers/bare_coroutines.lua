-- bench/tasks/peers/bare_coroutines.lua — the floor: the same cases with bare Lua 5.4
-- coroutines and a trivial round-robin driver, no event loop (run with stock lua5.4).
-- `lua5.4 bare_coroutines.lua CASE N [M]`; prints key=value figures like aio_tasks.lua.
-- "sleep(0)" is a coroutine.yield(); a scheduler pass resumes every coroutine once.
-- Only process CPU time is printed: stock Lua has no wall clock finer than a second.
-- `--object` first: every coroutine of the spawn case also gets one 8-slot table, about the
-- weight of the object any task runtime keeps beside each coroutine (aioshell's task userdata
-- takes a 224-byte block): the floor of a runtime that has task objects at all.
-- `--scheduler` first: the spawn case through the least a scheduler does — a task record per
-- coroutine, a FIFO ready queue that spawn appends to and sleep(0) re-queues on, results stored
-- in input order as tasks end — still with no event loop, no timers, no errors.
local with_object = arg[1] == "--object"
local with_scheduler = arg[1] == "--scheduler"
if with_object or with_scheduler then table.remove(arg, 1) end
local case, n, m = arg[1], tonumber(arg[2]), tonumber(arg[3] or 0)
local create, resume, yield = coroutine.create, coroutine.resume, coroutine.yield

local function status_kb(key)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match(key .. ":%s*(%d+)"))
end

local function work(i) yield() return i end
local function sleeper() yield() end
local function switcher(count) for _ = 1, count do yield() end return true end

-- Runs the spawn case through a minimal scheduler; returns the results list.
local function spawn_scheduled(count)
  local queue, head, tail, results = {}, 1, 0, {}
  for i = 1, count do
    tail = tail + 1
    queue[tail] = { co = create(work), arg = i, index = i }
  end
  while head <= tail do
    local t = queue[head]
    queue[head] = nil
    head = head + 1
    local _, v = resume(t.co, t.arg)
    t.arg = nil
    if v ~= nil then
      results[t.index] = v                        -- ended: its result in input order
    else
      tail = tail + 1
      queue[tail] = t                             -- sleep(0): to the back of the queue
    end
  end
  return results
end

if case == "spawn" and with_scheduler then
  local c0 = os.clock()
  local r = spawn_scheduled(n)
  local cpu = os.clock() - c0
  assert(r[n] == n and #r == n)
  print(("cpu=%.6f"):format(cpu))
elseif case == "spawn" then
  local c0 = os.clock()
  local cos, r, objects = {}, {}, {}
  if with_object then
    for i = 1, n do cos[i] = create(work); objects[i] = {i, i, i, i, i, i, i, i} end
  else
    for i = 1, n do cos[i] = create(work) end
  end
  for i = 1, n do resume(cos[i], i) end          -- first turn: each runs to its sleep(0)
  for i = 1, n do local _, v = resume(cos[i]); r[i] = v end  -- second turn: each returns
  local cpu = os.clock() - c0
  assert(r[n] == n and #r == n)
  print(("cpu=%.6f"):format(cpu))
elseif case == "sleepers" then
  collectgarbage() collectgarbage()
  local before = status_kb("VmRSS")
  local cos = {}
  for i = 1, n do cos[i] = create(sleeper); resume(cos[i]) end
  print(("rss0_kb=%d hwm_kb=%d rss_kb=%d"):format(before, status_kb("VmHWM"), status_kb("VmRSS")))
  io.stdout:flush()
  os.exit(0)
elseif case == "switch" then
  local c0 = os.clock()
  local cos, live = {}, n
  for i = 1, n do cos[i] = create(switcher) end
  for i = 1, n do resume(cos[i], m) end
  while live > 0 do
    for i = 1, n do
      local co = cos[i]
      if co then
        local _, finished = resume(co)
        if finished then cos[i] = false; live = live - 1 end
      end
    end
  end
  print(("cpu=%.6f switches=%d"):format(os.clock() - c0, n * m))
else
  error("usage: bare_coroutines.lua spawn|sleepers|switch N [M]")
end
