-- scripts/nb5_coroutines.lua — notebook 5 (seed 004), §6.2 The asyncio framework:
--   call_later + stop (run_forever until a callback stops it),
--   generator coroutines: range_generator with next, parrot with send,
--   `async def hello` run until complete, wait_and_print, fetch_square run until complete three
--   times (sequential: 3 s) vs ensure_future three times and run (concurrent: 1 s).
-- In aioshell a top-level await *is* run_until_complete, aio.spawn is ensure_future, and
-- "run_forever until stop" is awaiting an event that a callback sets.
--
--   aioshell scripts/nb5_coroutines.lua [--quick | --full]
local aio = require "aio"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb5_coroutines", title = "asyncio framework and coroutines",
  args = arg }
local D = e:size(0.2, 1.0)

local out = e.lines  -- what e:say printed

-- call_later + stop: the loop runs "forever" until the callback stops it.
local t_stop = e:time(function()
  local stop = aio.event()
  aio.call_later(D, function()
    e:say("Hello, asyncio")
    stop:set()
  end)
  stop:wait()  -- loop.run_forever()
end)
e:check(out[#out] == "Hello, asyncio" and experiment.close_to(t_stop, D),
  "call_later(%.2f) fired and stopped the loop after %.2f s", D, t_stop)

-- range_generator: a generator is a function that can stop (yield) and be resumed.
local function range_generator(n)
  return coroutine.wrap(function()
    local i = 0
    while i < n do
      e:say("Generating value %d", i)
      coroutine.yield(1)
      i = i + 1
    end
  end)
end
local generator = range_generator(3)
print(generator)
local v = generator()
e:say("%d", v)
e:check(out[#out - 1] == "Generating value 0" and v == 1, "next(generator) prints 'Generating value 0' and returns 1")

-- parrot: a generator that receives values (send).
local function parrot()
  return coroutine.wrap(function()
    while true do
      local message = coroutine.yield()
      e:say("Parrot says: %s", message)
    end
  end)
end
local p = parrot()
p(nil)  -- generator.send(None): run to the first yield
p("Hello")
p("World")
e:check(out[#out - 1] == "Parrot says: Hello" and out[#out] == "Parrot says: World", "the parrot repeats what is sent")

-- async def hello + run_until_complete: a task is created, the top-level await runs the loop.
local function hello() e:say("Hello, async!") end
local coro = aio.spawn(hello)
print(coro)
coro:await()
e:check(out[#out] == "Hello, async!", "run_until_complete(hello()) printed 'Hello, async!'")

local function wait_and_print(msg)
  aio.sleep(D)
  e:say("Message:  %s", msg)
end
aio.spawn(wait_and_print, "Hello"):await()
e:check(out[#out] == "Message:  Hello", "run_until_complete(wait_and_print('Hello'))")

local function network_request(number)
  aio.sleep(D)
  return { success = true, result = number * number }
end
local function fetch_square(number)
  local response = network_request(number)
  if response.success then e:say("Result is: %d", response.result) end
end

-- run_until_complete three times: one after the other.
local t_seq = e:time(function()
  aio.spawn(fetch_square, 2):await()
  aio.spawn(fetch_square, 3):await()
  aio.spawn(fetch_square, 4):await()
end)
-- ensure_future three times, then run the loop: concurrent.
local t_conc = e:time(function()
  local tasks = { aio.spawn(fetch_square, 2), aio.spawn(fetch_square, 3), aio.spawn(fetch_square, 4) }
  print(tasks[1])
  aio.gather(tasks)  -- loop.run_forever(), until they are done
end)
print(string.format("run_until_complete x3: %.2f s;  ensure_future x3: %.2f s   (notebook: 3 s and 1 s, at 1 s "
  .. "per request; %g s here)", t_seq, t_conc, D))
e:check(experiment.close_to(t_seq, 3 * D), "run_until_complete x3 takes 3 x %.2f s (%.2f s)", D, t_seq)
e:check(experiment.close_to(t_conc, D), "ensure_future x3 takes 1 x %.2f s (%.2f s)", D, t_conc)

e:result { key = "run_until_complete", label = "fetch_square x3, run_until_complete each",
  measured = t_seq, unit = "s", expected = 3 * D, reference = "3 s (sequential)",
  reproduced = experiment.close_to(t_seq, 3 * D) }
e:result { key = "ensure_future", label = "fetch_square x3, ensure_future + run",
  measured = t_conc, unit = "s", expected = D, reference = "1 s (concurrent)",
  reproduced = experiment.close_to(t_conc, D) }
e:finish()
