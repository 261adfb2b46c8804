-- scripts/nb4_rule_of_thumb.lua — notebook 4 (seed 003), "Rule of Thumb from SO":
--     if io_bound: if io_very_slow: asyncio  else: threads
--     else: multiprocessing
-- backed by a small measured table: three workloads, each run three ways — tasks on the loop,
-- a thread pool, a process pool — with the same number of workers for the pools.
--   slow I/O   — many requests that each wait a long time (an HTTP server answering after
--                --delay): tasks wait together; a pool waits --workers at a time.
--   fast I/O   — a few jobs reading a file from the page cache: blocking calls that are over
--                quickly; on the loop they run one after the other, pools overlap them.
--   CPU        — sum of squares: pure computation.
-- aioshell has no GIL: each pool thread runs its own Lua state, so for CPU work threads are as
-- good as processes here (the seed's rule says processes because of CPython's GIL).
--
--   aioshell scripts/nb4_rule_of_thumb.lua [--quick | --full] [--workers N]
local aio = require "aio"
local http = require "aio.http"
local thread = require "aio.thread"
local process = require "aio.process"
local plot = require "aio.plot"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb4_rule_of_thumb", title = "Rule of thumb, measured", args = arg,
  options = { workers = 2 }, integer = { "workers" }, positive = { "workers" },
  help = { workers = { "N", "workers of the thread pool and of the process pool" } } }
local W = e.options.workers
local N_SLOW, DELAY = e:size(20, 200), e:size(0.05, 0.2)
local N_FAST, FILE_MB = e:size(8, 16), e:size(4, 16)
local N_CPU, CPU_N = e:size(4, 8), e:size(2000000, 5000000)

-- The process pool forks its workers before the thread pool starts any thread: forking a
-- process that has other threads running is unsafe (a lock held by another thread, e.g. in
-- ASan's allocator, stays locked forever in the child).
local ppool = process.pool { size = W, name = "rule-procs" }
ppool:map(function(x) return x end, { 1, 2, 3, 4 }, { chunksize = 1 })
local tpool = thread.pool { size = W, name = "rule-threads" }

-- Runs `jobs` (a list of arguments) through fn three ways; returns seconds and results.
local function three_ways(fn, jobs, on_loop)
  local rows = {}
  local t, res = e:time(function()
    local tasks = {}
    for i, a in ipairs(jobs) do tasks[i] = aio.spawn(on_loop or fn, a) end
    return aio.gather(tasks)
  end)
  rows.tasks = { t = t, res = res }
  t, res = e:time(function() return tpool:map(fn, jobs, { chunksize = 1 }) end)
  rows.threads = { t = t, res = res }
  t, res = e:time(function() return ppool:map(fn, jobs, { chunksize = 1 }) end)
  rows.processes = { t = t, res = res }
  return rows
end

-- The same results all three ways?
local function same(rows)
  local a = table.concat(rows.tasks.res, ",")
  return a == table.concat(rows.threads.res, ",") and a == table.concat(rows.processes.res, ",")
end

-- The way that took least time.
local function fastest(rows)
  local best, bt = nil, math.huge
  for _, k in ipairs { "tasks", "threads", "processes" } do
    if rows[k].t < bt then best, bt = k, rows[k].t end
  end
  return best
end

-- 1. Slow I/O: each request waits DELAY at the server. On the loop the request is an
-- awaitable HTTP call; in a pool worker it is a blocking wait of the same length.
local server = http.serve { port = 0, handler = function(req)
  aio.sleep(tonumber(req.query.d) or 0)
  return 200, "ok"
end }
local url = server:url("/")
local slow_jobs = {}
for i = 1, N_SLOW do slow_jobs[i] = DELAY end
local slow = three_ways(function(d)
  local ok, th = pcall(require, "aio.thread")
  if ok and th.current and th.current() ~= "main" then th.sleep(d) else require("aio").sleep(d) end
  return 1
end, slow_jobs, function(d)
  local r = http.get(url .. "?d=" .. d)
  return r.status == 200 and 1 or 0
end)
server:close()

-- 2. Fast I/O: read a file (from the page cache: each read is over in milliseconds).
local path = os.tmpname()
do
  local f = assert(io.open(path, "wb"))
  local chunk = string.rep("x", 1024 * 1024)
  for _ = 1, FILE_MB do f:write(chunk) end
  f:close()
end
local fast_jobs = {}
for i = 1, N_FAST do fast_jobs[i] = path end
local fast = three_ways(function(p)
  local total = 0
  for _ = 1, 4 do
    local f = assert(io.open(p, "rb"))
    local s = f:read("a")
    total = total + #s
    f:close()
  end
  return total
end, fast_jobs)
os.remove(path)

-- 3. CPU: sum of squares (the notebook-3 workload, smaller).
local cpu_jobs = {}
for i = 1, N_CPU do cpu_jobs[i] = CPU_N end
local cpu = three_ways(function(n)
  local s = 0
  for i = 1, n do s = s + i * i end
  return s
end, cpu_jobs)

tpool:close { wait = true }
ppool:close { wait = true }

-- The table: labels padded by characters, not bytes ("×" is two bytes), to the widest one.
local labels = {
  { string.format("slow I/O: %d × %.2f s waits", N_SLOW, DELAY), slow, "tasks (asyncio)" },
  { string.format("fast I/O: %d × read %d MB ×4", N_FAST, FILE_MB), fast, "threads" },
  { string.format("CPU: %d × sum of squares to %d", N_CPU, CPU_N), cpu, "processes" },
}
local header = "workload (" .. W .. " workers per pool)"
local width = utf8.len(header)
for _, l in ipairs(labels) do width = math.max(width, utf8.len(l[1])) end
local function cell(label) return label .. (" "):rep(width - utf8.len(label)) end
print(string.format("%s %9s %9s %11s", cell(header), "tasks s", "threads s", "processes s"))
for _, l in ipairs(labels) do
  local rows = l[2]
  print(string.format("%s %9.3f %9.3f %11.3f   fastest: %-9s  (rule: %s)", cell(l[1]), rows.tasks.t,
    rows.threads.t, rows.processes.t, fastest(rows), l[3]))
end

e:check(same(slow) and same(fast) and same(cpu), "every way computes the same results")
e:check(fastest(slow) == "tasks" and slow.tasks.t * 3 < math.min(slow.threads.t, slow.processes.t),
  "slow I/O: tasks win by far (%.2f s vs %.2f s threads, %.2f s processes)", slow.tasks.t, slow.threads.t,
  slow.processes.t)
e:check(slow.tasks.t < DELAY * 3 + 0.3, "slow I/O on tasks takes about one wait (%.2f s)", slow.tasks.t)

local cpu_speedup = cpu.tasks.t / math.min(cpu.threads.t, cpu.processes.t)
local fast_speedup = fast.tasks.t / math.min(fast.threads.t, fast.processes.t)
e:result { key = "slow_io", label = "slow I/O, many connections → tasks", measured = fastest(slow),
  reference = "asyncio", reproduced = fastest(slow) == "tasks",
  note = string.format("tasks %.2f s · threads %.2f s · processes %.2f s", slow.tasks.t, slow.threads.t, slow.processes.t) }
e:result { key = "fast_io", label = "fast I/O, few connections → threads", measured = fastest(fast),
  reference = "threads", reproduced = fastest(fast) == "threads" or fast.threads.t <= fast.tasks.t * 1.05,
  note = string.format("tasks %.3f s · threads %.3f s · processes %.3f s (pool speed-up %.1fx)", fast.tasks.t,
    fast.threads.t, fast.processes.t, fast_speedup) }
e:result { key = "cpu", label = "CPU-bound → processes (or threads: no GIL here)", measured = fastest(cpu),
  reference = "multiprocessing", reproduced = fastest(cpu) ~= "tasks",
  note = string.format("tasks %.2f s · threads %.2f s · processes %.2f s (speed-up %.1fx on %d workers)",
    cpu.tasks.t, cpu.threads.t, cpu.processes.t, cpu_speedup, W) }

local function bars(rows, label)
  return { { label = label .. " · tasks", value = rows.tasks.t }, { label = label .. " · threads", value = rows.threads.t },
    { label = label .. " · processes", value = rows.processes.t } }
end
local all = {}
for _, b in ipairs(bars(slow, "slow I/O")) do all[#all + 1] = b end
for _, b in ipairs(bars(fast, "fast I/O")) do all[#all + 1] = b end
for _, b in ipairs(bars(cpu, "CPU")) do all[#all + 1] = b end
e:figure("table", plot.bar_svg { title = "Rule of thumb: seconds per workload and way", unit = " s", bars = all,
  label_width = 170 }, "three workloads, three ways")
e:finish()
