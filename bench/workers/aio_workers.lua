-- bench/workers/aio_workers.lua — one case of the workers benchmark, run by run.py in a fresh
-- aioshell: `aioshell aio_workers.lua CASE [N]`; prints `key=value` figures on one line.
--   sumsq_serial | sumsq_threads | sumsq_procs   20 sums of squares of 0..n-1, n = 5M .. 5M+19
--   tiny_threads | tiny_procs | tiny_procs_map   N tiny jobs (return x * 2)
local aio = require "aio"
local thread = require "aio.thread"
local process = require "aio.process"

local case, N = arg[1], tonumber(arg[2])
local cores = thread.cores()

local function cpu_bound(number)
  local s = 0
  for i = 0, number - 1 do s = s + i * i end
  return s
end
local numbers = {}
for x = 0, 19 do numbers[#numbers + 1] = (N or 5000000) + x end

local function now() return aio.now() end
local t0, extra = now(), ""
if case == "sumsq_serial" then
  for _, n in ipairs(numbers) do cpu_bound(n) end
elseif case == "sumsq_threads" then
  local p = thread.pool { size = cores }
  p:map(cpu_bound, numbers)
  p:close()
elseif case == "sumsq_procs" then
  local p = process.pool { size = cores }
  p:map(cpu_bound, numbers, { chunksize = 1 })
  p:close()
elseif case:match("^tiny_") then
  N = N or 10000
  local function double(x) return x * 2 end
  local p = case == "tiny_threads" and thread.pool { size = cores } or process.pool { size = cores }
  p:submit(double, 1):await()  -- warm: workers started
  t0 = now()
  if case == "tiny_procs_map" then
    local list = {}
    for i = 1, N do list[i] = i end
    local r = p:map(double, list)
    assert(r[N] == 2 * N)
  else
    local fs = {}
    for i = 1, N do fs[i] = p:submit(double, i) end
    aio.gather(fs)
    assert(fs[N]:result() == 2 * N)
  end
  local dt = now() - t0
  extra = string.format(" us_per_job=%.3f", dt / N * 1e6)
  p:close()
  io.write(string.format("seconds=%.4f%s\n", dt, extra))
  return
else
  error("unknown case " .. tostring(case))
end
io.write(string.format("seconds=%.4f%s\n", now() - t0, extra))
