-- aio.sys — system and process metrics (facade over the C module aio.sys_c).
--
-- cpu_percent follows psutil: with an interval it measures over that interval (awaiting, so
-- other tasks run meanwhile); without one it compares with the previous call (the first call
-- compares with the moment the module was loaded).
local c = require "aio.sys_c"

local sys = {}
for k, v in pairs(c) do sys[k] = v end

-- Busy and total seconds of one cpu_times entry (idle and iowait count as not busy).
local function busy_total(t)
  local total = (t.user or 0) + (t.nice or 0) + (t.system or 0) + (t.idle or 0) +
    (t.iowait or 0) + (t.irq or 0) + (t.softirq or 0) + (t.steal or 0)
  local idle = (t.idle or 0) + (t.iowait or 0)
  return total - idle, total
end

-- Percent busy between two cpu_times entries; nil when no time passed between them.
local function percent(a, b)
  local ba, ta = busy_total(a)
  local bb, tb = busy_total(b)
  local dt = tb - ta
  if dt <= 0 then return nil end
  local p = 100 * (bb - ba) / dt
  if p < 0 then p = 0 elseif p > 100 then p = 100 end
  return p
end

local last_times = c.cpu_times()
local last_total, last_per = 0.0, {}

-- Percentages (aggregate, per cpu) between two snapshots, reusing `prev` values for an
-- interval too short to measure (the kernel counts in 10 ms ticks).
local function compare(a, b, prev_total, prev_per)
  local total = percent(a, b) or prev_total
  local per = {}
  for i = 1, #b do
    per[i] = (a[i] and percent(a[i], b[i])) or prev_per[i] or 0.0
  end
  return total, per
end

-- cpu_percent([interval] [, {percpu=true}]) -> percent busy of all CPUs (0..100), or a list
-- with one percent per CPU. An interval > 0 awaits that many seconds.
function sys.cpu_percent(interval, opts)
  if type(interval) == "table" then interval, opts = nil, interval end
  local percpu = opts and opts.percpu
  local total, per
  if interval and interval > 0 then
    local aio = require "aio"
    local a = c.cpu_times()
    aio.sleep(interval)
    local b = c.cpu_times()
    total, per = compare(a, b, last_total, last_per)
    last_times = b
  else
    local b = c.cpu_times()
    total, per = compare(last_times, b, last_total, last_per)
    last_times = b
  end
  last_total, last_per = total, per
  if percpu then return per end
  return total
end

-- measure(fn, ...) -> {wall=, cpu=, percent=} (percent of one CPU this process used while fn ran)
-- then fn's results. Used to show what a busy-wait loop burns next to a real loop.
function sys.measure(fn, ...)
  local w0, c0 = c.clock(), c.process_time()
  local res = table.pack(fn(...))
  local wall, cpu = c.clock() - w0, c.process_time() - c0
  return { wall = wall, cpu = cpu, percent = wall > 0 and 100 * cpu / wall or 0 },
    table.unpack(res, 1, res.n)
end

-- Formats a byte count as a short human string (1.5 MiB).
function sys.human_bytes(n)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i = 1
  while n >= 1024 and i < #units do
    n = n / 1024
    i = i + 1
  end
  return i == 1 and string.format("%d %s", n, units[i]) or string.format("%.1f %s", n, units[i])
end

return sys
