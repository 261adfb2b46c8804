-- scripts/nb4_executors.lua — notebook 4 (seed 003), concurrent.futures: submit / done /
-- result on a thread pool and on a process pool, the two classic executor deadlocks (shown
-- safely: detected with a timeout, reported, then broken by cancelling the running jobs — which
-- Python cannot do), the default pool sizes, map vs as_completed vs wait, load_url with
-- per-future error handling, and is_prime over PRIMES on a process pool.
--
--   aioshell scripts/nb4_executors.lua [--quick | --full] [--scale S]
--
-- Seconds in the seed are scaled by --scale (quick 0.05, full 1.0): "sleep(5)" sleeps 5 * S.
local aio = require "aio"
local thread = require "aio.thread"
local process = require "aio.process"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb4_executors", title = "concurrent.futures", args = arg,
  real_time = "its pool jobs sleep in real time on worker threads",
  options = { scale = false }, positive = { "scale" },
  help = { scale = { "X", "real seconds per notebook second (default 0.05, --full 1)" } } }
local S = e.options.scale or e:size(0.05, 1.0)
if S ~= 1 then
  print(string.format("the notebook's seconds at %gx: its sleep(5) lasts %g s here (--full for 1:1)", S, 5 * S))
end

-- ---- submit, done, result ------------------------------------------------------------------
local function return_after_5_secs(message, s)
  require("aio.thread").sleep(5 * s)
  return message
end
local pool = thread.pool { size = 3 }
-- Not in the seed: a worker is started and ready before the clock matters (a new OS thread and
-- Lua state take a few ms, more on a loaded machine, which the seed's 1 s margin absorbs and
-- a scaled one may not).
pool:submit(function() end):await()
local future = pool:submit(return_after_5_secs, "hello", S)
local done_before = future:done()
print(done_before)
aio.sleep(6 * S)
local done_after = future:done()
print(done_after)
print("Result: " .. future:await())  -- Python's future.result() waits, as await does
e:check(not done_before and done_after and future:result() == "hello",
  "thread pool: done() False, then True 6 notebook seconds later; Result: hello")

local ppool = process.pool { size = 3 }
local pfuture = ppool:submit(function(message, s)
  require("aio.thread").sleep(5 * s)
  return message
end, "hello", S)
print(pfuture:done())
aio.sleep(5 * S)
print(pfuture:done(), "(the seed printed False here: 5 s is a race with the job's 5 s)")
e:check(pfuture:await() == "hello", "process pool: the same job, from a worker process")

-- ---- deadlock 1: a job waits for a job queued behind it on a single worker ---------------
-- The seed's wait_on_future submits pow(5, 2) to the executor it runs on (max_workers=1) and
-- waits: the inner job can never start. Here the inner job is what the outer one waits for,
-- through a channel; the loop notices that nothing moves and breaks it.
local single = thread.pool { size = 1 }
local ch = thread.channel()
local outer = single:submit(function(c) return c:recv() end, ch)      -- waits for the inner job
local inner = single:submit(function(c) c:send(5 ^ 2) end, ch)        -- queued behind it, forever
local finished = aio.wait({ outer, inner }, { timeout = 20 * S })
local stuck1 = not next(finished)
print(string.format("deadlock 1: %s after %.2f s (outer waits for inner; inner waits for the only worker)",
  stuck1 and "detected" or "not detected", 20 * S))
outer:cancel("deadlock")  -- the hook/poll reaches into the worker: the worker is free again
inner:await()
e:check(stuck1, "deadlock 1 detected by a timeout, not by hanging")
e:check(outer:cancelled() and inner:done(), "cancelling the waiting job lets the queued one run")
print("after cancelling the outer job the inner one ran: " .. tostring(ch:recv()))
single:close()

-- ---- deadlock 2: two jobs wait for each other ----------------------------------------------
local to_a, to_b = thread.channel(), thread.channel()
local pair = thread.pool { size = 2 }
local a = pair:submit(function(mine, theirs) local r = mine:recv(); theirs:send(5); return r end, to_a, to_b)
local b = pair:submit(function(mine, theirs) local r = mine:recv(); theirs:send(6); return r end, to_b, to_a)
local done2, pending2 = aio.wait({ a, b }, { timeout = 20 * S })
local stuck2 = pending2[a] and pending2[b] and not next(done2)
print(string.format("deadlock 2: %s (wait_on_b waits for b, wait_on_a waits for a)",
  stuck2 and "detected" or "not detected"))
a:cancel("deadlock")
b:cancel("deadlock")
pcall(a.await, a)
pcall(b.await, b)
e:check(stuck2 and a:cancelled() and b:cancelled(), "deadlock 2 detected and both jobs cancelled")
pair:close()

-- ---- default pool sizes ----------------------------------------------------------------------
local dt, dp = thread.pool(), process.pool()
print(string.format("thread.pool() has %d workers, process.pool() %d (CPUs: %d)", dt:size(), dp:size(),
  thread.cores()))
print("  (Python 3.8+: ThreadPoolExecutor min(32, cpus + 4), ProcessPoolExecutor cpus: the seed printed 8 and 4)")
e:check(dt:size() == thread.cores() and dp:size() == thread.cores(), "both default to the CPU count")
dt:close()
dp:close()

-- ---- map vs as_completed vs wait --------------------------------------------------------------
local delays = { 3, 1, 4, 2, 5 }  -- the seed's randint(1, 5), fixed so the order can be checked
local function return_after(num, d, s)
  require("aio.thread").sleep(d * s)
  return "Return of " .. num
end
local five = thread.pool { size = 5 }
local jobs = {}
for x = 0, 4 do jobs[#jobs + 1] = { x, delays[x + 1], S } end
-- map: results in the order of the inputs, whatever order the jobs finish in
local mapped = five:map(function(j) return return_after(j[1], j[2], j[3]) end, jobs)
local futures = {}
for x = 0, 4 do futures[#futures + 1] = five:submit(return_after, x, delays[x + 1], S) end
local order = {}
for f in aio.as_completed(futures) do order[#order + 1] = f:result() end
print("map:          " .. table.concat(mapped, ", "))
print("as_completed: " .. table.concat(order, ", "))
e:check(mapped[1] == "Return of 0" and mapped[5] == "Return of 4", "map yields in input order")
e:check(order[1] == "Return of 1" and order[5] == "Return of 4", "as_completed yields by completion time")
local wdone = aio.wait(futures)
local nwdone = 0
for _ in pairs(wdone) do nwdone = nwdone + 1 end
e:check(nwdone == 5, "wait returns all five done")
five:close()

-- ---- load_url: per-future error handling -----------------------------------------------------
local http = require "aio.http"
local server = http.serve { host = "127.0.0.1", port = 0, handler = function(req)
  if req.path == "/wsj" then return 403, "Forbidden" end
  return 200, string.rep("x", #req.path * 1000)
end }
local URLS = { server:url("/foxnews"), server:url("/cnn"), server:url("/wsj"), server:url("/bbc.co.uk"),
  server:url("/dw") }
local function load_url(url, timeout)
  local r = require("aio.http").get(url, { timeout = timeout })
  if r.status >= 400 then error(string.format("HTTP Error %d: %s", r.status, r.body), 0) end
  return r.body
end
local exec5 = thread.pool { size = 5 }
local future_to_url = {}
local list = {}
for _, url in ipairs(URLS) do
  local f = exec5:submit(load_url, url, 60)
  future_to_url[f] = url
  list[#list + 1] = f
end
local errors, pages = 0, 0
for f in aio.as_completed(list) do
  local url = future_to_url[f]
  local ok, data = pcall(f.result, f)
  if not ok then
    errors = errors + 1
    print(string.format("%q generated an exception: %s", url, tostring(data):match("^[^\n]*")))
  else
    pages = pages + 1
    print(string.format("%q page is %d bytes", url, #data))
  end
end
exec5:close()
server:close()
e:check(errors == 1 and pages == 4, "one URL failed (403) and four pages loaded, each handled on its own")

-- ---- is_prime over PRIMES on a process pool ----------------------------------------------------
local PRIMES = { 112272535095293, 112582705942171, 112272535095293, 115280095190773,
  115797848077099, 1099726899285419 }
local function is_prime(n)
  if n % 2 == 0 then return false end
  local sqrt_n = math.floor(math.sqrt(n))
  for i = 3, sqrt_n, 2 do
    if n % i == 0 then return false end
  end
  return true
end
local primes_pool = process.pool()
local t_primes, flags = e:time(function() return primes_pool:map(is_prime, PRIMES, { chunksize = 1 }) end)
primes_pool:close()
for i, n in ipairs(PRIMES) do print(string.format("%d is prime: %s", n, flags[i] and "True" or "False")) end
e:check(flags[1] and flags[2] and flags[3] and flags[4] and flags[5] and not flags[6],
  "five primes and 1099726899285419 is not")
pool:close()
ppool:close()

-- Python's spelling of what was seen, to sit next to the seed's
local function py_bool(b) return b and "True" or "False" end
e:result { key = "submit", label = "submit: done() before / after, result",
  measured = string.format("%s %s 'Result: %s'", py_bool(done_before), py_bool(done_after), future:result()), unit = "",
  reference = "False True 'Result: hello'", reproduced = not done_before and done_after }
e:result { key = "deadlocks", label = "deadlocks detected and broken", measured = (stuck1 and 1 or 0) + (stuck2 and 1 or 0),
  unit = "of 2", reference = "the seed's cells hang", reproduced = stuck1 and stuck2 }
e:result { key = "as_completed", label = "as_completed order", measured = table.concat(order, ", "), unit = "",
  reference = "completion order", reproduced = order[1] == "Return of 1" }
e:result { key = "is_prime", label = "is_prime over PRIMES (process pool)", measured = t_primes, unit = "s",
  reference = "True x5, False", reproduced = flags[5] and not flags[6] }
e:finish()
