-- scripts/nb5_futures.lua — notebook 5 (seed 004), §6.1.4 Futures: a future is pending, then
-- set_result makes result() return the value; done callbacks run once it is set (also when
-- added afterwards); network_request_async returns a future that a timer resolves, and
-- fetch_square reacts to it through a done callback.
--
--   aioshell scripts/nb5_futures.lua [--quick | --full]
local aio = require "aio"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb5_futures", title = "Futures", args = arg }
local D = e:size(0.1, 1.0)

-- In [36]-[38]: a pending future, then set_result / result.
local fut = aio.future()
print(fut)
e:check(not fut:done(), "a new future is pending")
fut:set_result("Hello")
print(fut:result())
e:check(fut:done() and fut:result() == "Hello", "set_result('Hello') then result() == 'Hello'")

-- In [40]: a done callback prints the result when it is set.
local seen = {}
fut = aio.future()
fut:add_done_callback(function(f) seen[#seen + 1] = f:result() print(f:result()) end)
e:check(#seen == 0, "the callback has not run before set_result")
fut:set_result("Hello")
aio.sleep(0)  -- callbacks are scheduled by the loop, never run inside set_result
e:check(seen[1] == "Hello", "the done callback saw 'Hello'")

-- A callback added to an already finished future runs too.
local late
fut:add_done_callback(function(f) late = f:result() end)
aio.sleep(0)
e:check(late == "Hello", "a callback added after completion still runs")

-- In [41]-[42]: network_request_async returns a future; fetch_square watches it.
local function network_request_async(number)
  local future = aio.future()
  local result = { success = true, result = number * number }
  aio.call_later(D, function() future:set_result(result) end)
  return future
end

local printed = {}
local function fetch_square(number)
  local f = network_request_async(number)
  local function on_done_future(future)
    local response = future:result()
    if response.success then
      local line = string.format("Result is: %d", response.result)
      printed[#printed + 1] = line
      print(line)
    end
  end
  f:add_done_callback(on_done_future)
  return f
end

local t = e:time(function()
  local fs = { fetch_square(2), fetch_square(3), fetch_square(4) }
  aio.gather(fs)
  aio.sleep(0)
end)
e:check(#printed == 3 and printed[1] == "Result is: 4" and printed[3] == "Result is: 16",
  "three done callbacks print 4, 9, 16")
e:check(experiment.close_to(t, D), "the three futures resolve together after %.2f s (%.2f s)", D, t)

-- Errors travel through futures too: set_error, then result() raises it.
local ferr = aio.future()
ferr:set_error("no network")
local ok, err = pcall(ferr.result, ferr)
e:check(not ok and tostring(err):find("no network", 1, true) ~= nil, "set_error makes result() raise")

e:result { key = "futures", label = "future set_result / done callbacks", measured = t, unit = "s",
  expected = D, reference = "Hello · Result is: 4", reproduced = e.failures == 0 }
e:finish()
