-- scripts/nb3_race.lua — notebook 3 (seed 002), "Race condition": 5000 jobs each add 1 to a
-- shared counter 100 times on a thread pool. The seed's `counter += 1` is a read, an add and a
-- write; when two threads interleave between the read and the write, an update is lost.
--
--   aioshell scripts/nb3_race.lua [--quick | --full] [--jobs 5000] [--threads 8]
--
-- aioshell's threads run truly in parallel (no GIL), so the unsynchronised version
-- `c:set(c:get() + 1)` loses updates readily; `thread.mutex()` around the read-modify-write and
-- the atomic `c:add(1)` do not. The same three versions run on forked processes with
-- process.value. Both counts are printed. The seed printed nothing (its cell only ran).
local aio = require "aio"
local thread = require "aio.thread"
local process = require "aio.process"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb3_race", title = "A race on a shared counter", args = arg,
  options = { jobs = false, threads = 8, increments = 100 },
  integer = { "jobs", "threads", "increments" }, positive = { "jobs", "threads", "increments" },
  help = { jobs = { "N", "jobs, each adding to the shared counter (default 1000, --full 5000)" },
    threads = { "N", "threads of the pool that runs the jobs" },
    increments = { "N", "increments per job" } } }

local JOBS = e.options.jobs or e:size(1000, 5000)
local INC = e.options.increments
local expected = JOBS * INC
local pool = thread.pool { size = e.options.threads, name = "race" }

-- The seed's increment_counter, three ways.
local function racy(c, n) for _ = 1, n do c:set(c:get() + 1) end end
local function locked(c, n, m)
  for _ = 1, n do
    local _ <close> = m:lock()
    c:set(c:get() + 1)
  end
end
local function atomic(c, n) for _ = 1, n do c:add(1) end end
-- The race made as likely as it gets: the thread gives up the CPU between read and write.
local function widened(c, n)
  local sleep = require("aio.thread").sleep
  for _ = 1, n do
    local v = c:get()
    sleep(0)
    c:set(v + 1)
  end
end

local function run(fn, extra)
  local c = thread.shared(0)
  local fs = {}
  local t = e:time(function()
    for i = 1, JOBS do fs[i] = pool:submit(fn, c, INC, extra) end
    aio.gather(fs)
  end)
  return c:get(), t
end

print(string.format("%d jobs x %d increments on %d threads (expected %d)%s", JOBS, INC,
  e.options.threads, expected, e.options.jobs and "" or (e.full and "" or "; quick: --full for 5000 jobs")))
print("  (the notebook: 5000 jobs on ThreadPoolExecutor(max_workers=5000); it printed no count)")
local n_racy, t_racy = run(racy)
print(string.format("unsynchronised  c:set(c:get() + 1): %d (%d lost) in %.3f s", n_racy,
  expected - n_racy, t_racy))
local n_wide = run(widened)
print(string.format("with a yield between read and write: %d (%d lost)", n_wide, expected - n_wide))
local n_locked, t_locked = run(locked, thread.mutex())
print(string.format("with a mutex:     %d in %.3f s", n_locked, t_locked))
local n_atomic, t_atomic = run(atomic)
print(string.format("atomic c:add(1):  %d in %.3f s", n_atomic, t_atomic))
pool:close()

e:check(n_racy <= expected, "the unsynchronised count never exceeds %d (%d)", expected, n_racy)
e:check(n_wide < expected, "the widened race loses updates (%d of %d)", n_wide, expected)
e:check(n_locked == expected, "the mutex makes it exact (%d)", n_locked)
e:check(n_atomic == expected, "the atomic add is exact (%d)", n_atomic)

-- The same lesson across processes: process.value in shared memory.
local PROCS, PINC = 4, e:size(50000, 200000)
local function count_in_processes(body)
  local v, l, ready = process.value(0), process.lock(), process.value(0)
  local hs = {}
  for i = 1, PROCS do
    hs[i] = process.fork(function(...)
      ready:add(1)
      while ready:get() < PROCS do end  -- start together, so the loops overlap
      return body(...)
    end, v, l, PINC)
  end
  for _, h in ipairs(hs) do h:join() end
  return v:get()
end
local p_racy = count_in_processes(function(v, _, n) for _ = 1, n do v.value = v.value + 1 end end)
local p_atomic = count_in_processes(function(v, _, n) for _ = 1, n do v:add(1) end end)
local p_locked = count_in_processes(function(v, l, n)
  for _ = 1, n // 10 do  -- a lock round trip per increment is slow; hold it for ten
    local _ <close> = l:acquire()
    for _ = 1, 10 do v.value = v.value + 1 end
  end
end)
print(string.format("%d processes x %d: unsynchronised %d, atomic %d, locked %d (expected %d)",
  PROCS, PINC, p_racy, p_atomic, p_locked, PROCS * PINC))
e:check(p_atomic == PROCS * PINC, "process.value:add is exact across processes")
e:check(p_locked == PROCS * PINC, "process.lock makes the read-modify-write exact")
e:check(p_racy <= PROCS * PINC, "the unsynchronised process count never exceeds the total")

e:result { key = "racy", label = "unsynchronised counter (threads)", measured = n_racy, unit = "",
  expected = expected, reference = "lost updates without a lock", reproduced = n_racy < expected,
  note = string.format("%d of %d updates lost", expected - n_racy, expected) }
e:result { key = "locked", label = "with thread.mutex", measured = n_locked, unit = "",
  expected = expected, reference = "exact", reproduced = n_locked == expected }
e:result { key = "atomic", label = "atomic add", measured = n_atomic, unit = "", expected = expected,
  reference = "exact", reproduced = n_atomic == expected }
e:result { key = "processes", label = "unsynchronised counter (processes)", measured = p_racy,
  unit = "", expected = PROCS * PINC, reference = "lost updates without a lock",
  reproduced = p_racy < PROCS * PINC }
e:finish()
