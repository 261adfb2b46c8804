-- scripts/nb4_latency_throughput.lua — notebook 4 (seed 003), "Latency and Throughput are
-- independent": a system of 8 service stations that take 1 unit of time each, simulated with
-- tasks and queues.
--   - a pipeline: every job goes through all 8 stations -> latency 8 units, throughput 1 job/unit
--   - a farm: any one station serves a job            -> latency 1 unit, throughput 8 jobs/unit
--
--   aioshell scripts/nb4_latency_throughput.lua [--quick | --full] [--jobs 64] [--unit S] [--real]
--
-- It is a simulation, so it runs on the loop's virtual clock (instant and exact) unless --real
-- asks for wall-clock sleeps.
--
-- Each station is a task; stations are connected by aio.queue()s. Latency is measured per job
-- (time from entering the system to leaving it), throughput as jobs finished per unit once the
-- system is full (the steady state: the pipeline's first job needs 8 units to come out), counted
-- from the start of the unit whose work the first job out finished.
local aio = require "aio"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb4_latency_throughput", title = "Latency vs throughput",
  args = arg, options = { jobs = 64, unit = false, stations = 8, real = false },
  positive = { "jobs", "unit", "stations" }, integer = { "jobs", "stations" }, bare = { "real" },
  duration = { unit = "s" },
  help = { jobs = { "N", "jobs through the pipeline and the farm" },
    unit = { "S", "one unit of time in seconds (default 0.01, --full 0.1)" },
    stations = { "N", "pipeline stations, and farm workers" },
    real = "wait in real time (default: virtual time, so the run is instant)" } }
if not e.options.real and not e.virtual and aio.clock and aio.clock.virtual then aio.clock.virtual() end
local U = e.options.unit or e:size(0.01, 0.1)   -- seconds per unit of time
local JOBS, K = e.options.jobs, e.options.stations

-- A station: takes a job, works 1 unit, hands it on (until it is cancelled).
local function station(inbox, outbox)
  while true do
    local job = inbox:get()
    aio.sleep(U)
    outbox:put(job)
  end
end

-- Feeds JOBS jobs in at once (all waiting at the door) and collects them at the exit.
local function run(system)
  local t0 = aio.now()
  local entry, exit, stations = system()
  for i = 1, JOBS do entry:put({ id = i, t_in = aio.now() }) end
  local latencies, finish = {}, {}
  for _ = 1, JOBS do
    local job = exit:get()
    latencies[#latencies + 1] = (aio.now() - job.t_in) / U
    finish[#finish + 1] = (aio.now() - t0) / U
  end
  local total = (aio.now() - t0) / U
  for _, t in ipairs(stations) do t:cancel() end
  return latencies, finish, total
end

-- 8 stations in a row.
local function pipeline()
  local queues, tasks = {}, {}
  for i = 1, K + 1 do queues[i] = aio.queue() end
  for i = 1, K do tasks[i] = aio.spawn(station, queues[i], queues[i + 1]) end
  return queues[1], queues[K + 1], tasks
end

-- 8 stations side by side, sharing one waiting line.
local function farm()
  local entry, exit, tasks = aio.queue(), aio.queue(), {}
  for i = 1, K do tasks[i] = aio.spawn(station, entry, exit) end
  return entry, exit, tasks
end

local function stats(latencies, finish, total)
  local sum = 0
  for _, l in ipairs(latencies) do sum = sum + l end
  -- Steady-state throughput: jobs out per unit from one unit before the first exit (the unit
  -- of work that job finished) to the last exit. Counting from the first exit itself would be
  -- a fencepost error: the farm's jobs leave 8 at a time, and 63 jobs over the 7 units between
  -- its first and last batch would read as 9 jobs per unit.
  local steady = JOBS / (finish[JOBS] - finish[1] + 1)
  return latencies[1], sum / #latencies, steady, total
end

local p_first, p_mean, p_tput, p_total = stats(run(pipeline))
print(string.format("pipeline: first job's latency %.2f units, mean %.2f, throughput %.2f jobs/unit, "
  .. "%d jobs in %.2f units (notebook: latency 8, 1 job per unit)", p_first, p_mean, p_tput, JOBS, p_total))
local f_first, f_mean, f_tput, f_total = stats(run(farm))
print(string.format("farm:     first job's latency %.2f units, mean %.2f, throughput %.2f jobs/unit, "
  .. "%d jobs in %.2f units (notebook: latency 1, 8 jobs per unit)", f_first, f_mean, f_tput, JOBS, f_total))

local close = experiment.close_to
e:check(close(p_first, K, 0.1, 0.5), "pipeline: a job's latency is %d units (%.2f)", K, p_first)
e:check(close(p_tput, 1, 0.15, 0.1), "pipeline: throughput 1 job per unit (%.2f)", p_tput)
e:check(close(f_first, 1, 0.2, 0.3), "farm: a job's latency is 1 unit (%.2f)", f_first)
-- The farm's jobs leave in batches of K: a last batch that is not full lowers the average.
local batches = math.ceil(JOBS / K)
e:check(close(f_tput, JOBS / batches, 0.15, 0.1), "farm: throughput %.2f jobs per unit (%.2f; %d jobs leave in %d "
  .. "batches of up to %d)", JOBS / batches, f_tput, JOBS, batches, K)
e:check(close(f_total, batches, 0.2, 0.5), "farm: %d jobs take %d units (%.2f)", JOBS, batches, f_total)

e:result { key = "pipeline_latency", label = "pipeline: latency of a job", measured = p_first,
  unit = "units", expected = K, reference = "8", reproduced = close(p_first, K, 0.1, 0.5) }
e:result { key = "pipeline_throughput", label = "pipeline: throughput", measured = p_tput,
  unit = "jobs/unit", expected = 1, reference = "1", reproduced = close(p_tput, 1, 0.15, 0.1) }
e:result { key = "farm_latency", label = "farm: latency of a job", measured = f_first, unit = "units",
  expected = 1, reference = "1", reproduced = close(f_first, 1, 0.2, 0.3) }
e:result { key = "farm_throughput", label = "farm: throughput", measured = f_tput,
  unit = "jobs/unit", expected = JOBS / batches, reference = "8", reproduced = close(f_tput, JOBS / batches, 0.15, 0.1) }
e:finish()
