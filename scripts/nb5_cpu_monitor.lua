-- scripts/nb5_cpu_monitor.lua — notebook 5 (seed 004), §6.3.4 Building a CPU monitor:
--   cpu_data = interval(100 ms).map(cpu_percent).publish(); connect()
--   cpu_data.take(4).subscribe(print)
--   a sliding window (buffer_with_count(npoints, 1)) drawn live — redrawn in place on a
--   terminal, one line per reading otherwise — and
--   high_cpu = buffer_with_count(4, 1).map(all readings > 20 %): a "high" / "normal" label.
-- To show the alert, a worker thread loads one core for --load seconds from --load-at on.
-- Bounded by --duration. Writes the readings with the alert threshold as an SVG figure.
--
--   aioshell scripts/nb5_cpu_monitor.lua [--quick | --full] [--duration S] [--load S]
--            [--load-at S] [--points N] [--no-load]
local aio = require "aio"
local rx = require "aio.rx"
local sys = require "aio.sys"
local plot = require "aio.plot"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb5_cpu_monitor", title = "CPU monitor with Rx", args = arg,
  options = { duration = false, load = false, load_at = false, points = false, no_load = false },
  positive = { "duration", "load", "points" }, nonnegative = { "load_at" }, integer = { "points" },
  bare = { "no_load" }, duration = { duration = "s", load = "s", load_at = "s" },
  help = { duration = { "S", "monitoring time in seconds (default 3, --full 10)" },
    load = { "S", "how long one core is loaded, in seconds (default 1.4, --full 4)" },
    load_at = { "S", "when the load starts, in seconds (default 0.8, --full 3)" },
    points = { "N", "readings in the sliding window (default 8, --full 40)" },
    no_load = "load no core (the alert stays normal)" } }
local DURATION = e.options.duration or e:size(3.0, 10.0)
local LOAD_AT = e.options.load_at or e:size(0.8, 3.0)
local LOAD = e.options.load or e:size(1.4, 4.0)
local NPOINTS = e.options.points or e:size(8, 40)
local ALERTPOINTS, THRESHOLD, PERIOD = 4, 20, 0.1
-- The run first waits for take(4)'s readings, and loads a core only before it ends.
if DURATION <= 4 * PERIOD then
  e:reject("--duration needs a number > %g (take(4) waits for 4 readings), not '%g'", 4 * PERIOD, DURATION)
end
if not e.options.no_load and LOAD_AT >= DURATION then
  e:reject("--load-at (%g s) needs to come before the end of --duration (%g s)", LOAD_AT, DURATION)
end

-- Loads one core for `seconds` on a worker thread (or a child process if threads are missing);
-- returns something to await.
local function load_a_core(seconds)
  local busy = function(s)
    local t = os.clock()
    local x = 0
    while os.clock() - t < s do x = x + 1 end
    return x
  end
  local ok, thread = pcall(require, "aio.thread")
  if ok and thread.pool then
    local pool = thread.pool { size = 1, name = "cpu-load" }
    local f = pool:submit(busy, seconds)
    return function()
      f:await()
      pool:close { wait = true }
    end
  end
  local p = io.popen(string.format("%s -e 'local t=os.clock() while os.clock()-t<%g do end'",
    experiment.interpreter(), seconds))
  return function() p:close() end
end

local start = aio.now()
sys.cpu_percent()  -- the first reading compares with this moment

-- cpu_data: a hot stream of readings every 100 ms.
local cpu_data = rx.interval(PERIOD):map(function() return sys.cpu_percent() end):publish()
local conn = cpu_data:connect()  -- start producing data

-- cpu_data.take(4).subscribe(print)
local first4 = cpu_data:take(4):to_list()
for _, v in ipairs(first4) do print(string.format("%.1f", v)) end
e:check(#first4 == 4, "take(4) of the published stream gives 4 readings")

-- All readings, with their time, for the figure and the checks.
local readings = {}
local all_sub = cpu_data:subscribe(function(v) readings[#readings + 1] = { aio.now() - start, v } end)

-- The high-CPU alert: four consecutive readings above the threshold.
local status = "normal"
local transitions = {}
local high_cpu = cpu_data:buffer_with_count(ALERTPOINTS, 1):map(function(rs)
  for i = 1, #rs do if rs[i] <= THRESHOLD then return false end end
  return #rs == ALERTPOINTS
end)
local alert_sub = high_cpu:distinct_until_changed():subscribe(function(is_high)
  status = is_high and "high" or "normal"
  transitions[#transitions + 1] = { aio.now() - start, status }
end)

-- The live window.
local live = plot.live { title = "cpu", min = 0, max = 100, unit = "%", width = NPOINTS, height = 8 }
local window_sub = cpu_data:buffer_with_count(NPOINTS, 1):subscribe(function(w) live:update(w, status) end)

-- Load a core from LOAD_AT for LOAD seconds, then stop at DURATION.
local finish_load
local load_started
if not e.options.no_load then
  aio.sleep(LOAD_AT - (aio.now() - start))
  load_started = aio.now() - start
  finish_load = load_a_core(LOAD)
end
aio.sleep(DURATION - (aio.now() - start))
conn:unsubscribe()  -- disconnect: the interval stops; subscribers simply hear nothing more
live:close()
if finish_load then finish_load() end
local n_at_stop = #readings
aio.sleep(3 * PERIOD)
local quiet_after_disconnect = #readings == n_at_stop
all_sub:unsubscribe()
alert_sub:unsubscribe()
window_sub:unsubscribe()

for _, t in ipairs(transitions) do print(string.format("%.1f s: %s", t[1], t[2])) end

local n = #readings
local expected = (DURATION - 0.4) / PERIOD  -- minus the four readings taken before
local sane = n > 0
for _, r in ipairs(readings) do if r[2] < 0 or r[2] > 100 then sane = false end end
e:check(n >= expected * 0.6 and n <= expected * 1.2, "%d readings at 100 ms over %.1f s", n, DURATION)
e:check(sane, "every reading is a percentage in [0, 100]")
e:check(quiet_after_disconnect, "after disconnect() no reading arrives any more")
-- The alert's label at time t (from its transitions).
local function status_at(t)
  local st = "normal"
  for _, tr in ipairs(transitions) do
    if tr[1] <= t then st = tr[2] end
  end
  return st
end
local high_during_load, busy_before = false, false
if load_started then
  busy_before = status_at(load_started) == "high"
  high_during_load = busy_before
  for _, t in ipairs(transitions) do
    if t[2] == "high" and t[1] >= load_started - 1.0 and t[1] <= load_started + LOAD + 0.6 then
      high_during_load = true
    end
  end
  -- A core fully busy on a 2-core machine is >= 50 % total: 4 readings > 20 % must follow.
  e:check(high_during_load, "the alert was 'high' while a core was loaded")
end

local peak = 0
for _, r in ipairs(readings) do peak = math.max(peak, r[2]) end
e:result { key = "alert", label = "high-CPU alert (4 readings > 20 %) under load",
  measured = high_during_load and "high" or status, reference = "label switches normal → high",
  reproduced = high_during_load, note = string.format("%d readings, peak %.0f %%%s", n, peak,
    busy_before and "; already high before the load (the machine was busy)" or "") }

local pts = {}
for i, r in ipairs(readings) do pts[i] = { r[1], r[2] } end
local marks = { { y = THRESHOLD, label = "alert threshold 20 %" } }
e:figure("cpu", plot.series_svg { title = "cpu_percent every 100 ms (a core loaded from " ..
  string.format("%.1f to %.1f s)", load_started or 0, (load_started or 0) + LOAD),
  series = { { name = "cpu %", points = pts } }, ymin = 0, ymax = 100, yunit = "%", xunit = "s",
  marks = marks, xlabel = "seconds" }, "CPU monitor readings and alert threshold")
e:finish()
