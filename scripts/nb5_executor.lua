-- scripts/nb5_executor.lua — notebook 5 (seed 004), 6.2.2 "Converting blocking code into
-- non-blocking code": a ThreadPoolExecutor(3), executor.submit, loop.run_in_executor,
-- fetch_urls awaiting one run_in_executor after another (3 page times) and the same gathered
-- (1 page time); plus aio.to_thread, asyncio.to_thread's spelling.
--
--   aioshell scripts/nb5_executor.lua [--quick | --full] [--delay MS]
--
-- The seed's first submit finished with NameError (its cell had not imported `time`): a job's
-- error is kept in its future. Here a job that uses a global its worker does not have fails the
-- same way — each worker thread has its own Lua state and globals. The pages come from a local
-- delay server; "requests.get" is a blocking fetch made inside the worker thread.
local aio = require "aio"
local thread = require "aio.thread"
local experiment = require "aio.experiment"
-- autojump: under --virtual-time the clock jumps only after 50 ms without I/O, so the three
-- workers' requests all reach the server before its delays jump (they overlap, as in real time).
local e = experiment.new { name = "nb5_executor", title = "Executors", args = arg, autojump = 0.05,
  options = { delay = false }, positive = { "delay" }, integer = { "delay" }, duration = { delay = "ms" },
  help = { delay = { "MS", "each page's latency in ms (default 100, --full 1000)" } } }
local DELAY = e.options.delay or e:size(100, 1000)  -- ms per page and per wait_and_return

local executor = thread.pool { size = 3, name = "ThreadPoolExecutor" }

-- executor.submit(wait_and_return, "Hello. executor"): the worker has no `time_sleep` global
local broken = executor:submit(function(msg) time_sleep(1) return msg end, "Hello. executor")  -- luacheck: ignore
pcall(broken.await, broken)
local err = broken:exception()
print(string.format("<Future state=finished raised %s>", tostring(err):match("^[^\n]*")))
e:check(err ~= nil and tostring(err):find("time_sleep") ~= nil,
  "a job's error stays in its future (the seed's NameError)")

local function wait_and_return(msg, ms)
  require("aio.thread").sleep(ms / 1000)
  return msg
end
print(executor:submit(wait_and_return, "Hello. executor", DELAY):await())

-- loop.run_in_executor(executor, wait_and_return, "Hello, asyncio executor")
local fut = thread.run_in_executor(executor, wait_and_return, "Hello, asyncio executor", DELAY)
local t_one, msg = e:time(function() return fut:await() end)
print(msg)
e:check(msg == "Hello, asyncio executor", "run_in_executor's future gives the job's result")

-- fetch_urls: requests.get in the executor, one after another, then gathered
local server = loadfile((arg[0]:match("^(.*)/") or ".") .. "/server.lua")("--module").start {
  port = 0, quiet = true }
local urls = {}
for _, name in ipairs { "google", "example", "facebook" } do
  urls[#urls + 1] = server:url(string.format("/add?name=%s&delay=%d", name, DELAY))
end
local function requests_get(url) return require("aio.http").get(url).status end

local t_seq, seq = e:time(function()
  local responses = {}
  for _, url in ipairs(urls) do
    responses[#responses + 1] = thread.run_in_executor(executor, requests_get, url):await()
  end
  return responses
end)
print(string.format("fetch_urls, one run_in_executor after another: %.2f s", t_seq))
local t_gather, gathered = e:time(function()
  local fs = {}
  for i, url in ipairs(urls) do fs[i] = thread.run_in_executor(executor, requests_get, url) end
  return aio.gather(fs)
end)
print(string.format("fetch_urls with gather: %.2f s", t_gather))
local t_to_thread, via = e:time(function()
  local ts = {}
  for i, url in ipairs(urls) do ts[i] = aio.spawn(aio.to_thread, requests_get, url) end
  return aio.gather(ts)
end)
print(string.format("gather of aio.to_thread: %.2f s", t_to_thread))
server:close()
executor:close()

local D = DELAY / 1000
local function all200(r) return r[1] == 200 and r[2] == 200 and r[3] == 200 end
e:check(all200(seq) and all200(gathered) and all200(via), "every fetch answered 200")
e:check(t_seq >= 3 * D * 0.95, "sequential awaits take three page times (%.2f s)", t_seq)
-- Overlap means at least one page time saved on the sequential run: measured against that run,
-- not against a fixed bound, so a loaded machine (slower thread start-up) does not fail it.
e:check(t_gather < t_seq - D, "gathered, the three fetches overlap (%.2f s)", t_gather)
e:check(t_to_thread < t_seq - D, "aio.to_thread overlaps the same way (%.2f s)", t_to_thread)

e:result { key = "run_in_executor", label = "run_in_executor(wait_and_return)", measured = t_one,
  unit = "s", reference = "Hello, asyncio executor", reproduced = msg == "Hello, asyncio executor" }
e:result { key = "sequential", label = "fetch_urls, sequential awaits", measured = t_seq / D, unit = "page-times",
  expected = 3, reference = "3 requests one after another", reproduced = t_seq >= 3 * D * 0.95 }
e:result { key = "gathered", label = "fetch_urls with gather", measured = t_gather / D, unit = "page-times",
  expected = 1, reference = "gather of run_in_executor", reproduced = t_gather < 2 * D }
e:finish()
