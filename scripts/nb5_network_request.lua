-- scripts/nb5_network_request.lua — notebook 5 (seed 004), §6.1.2–6.1.4 and §6.2.1: the same
-- three "network requests" (square a number after a one-second wait) done four ways, timed:
--   blocking    — fetch_square(2); fetch_square(3); fetch_square(4), each waiting in turn (3 s)
--   callbacks   — network_request_async(n, on_done): the Hollywood principle (1 s)
--   futures     — network_request_async(n) returns a future; add_done_callback (1 s)
--   coroutines  — tasks that await network_request, gathered (1 s)
-- plus wait_and_print, synchronous vs asynchronous ("After submission" comes first).
--
--   aioshell scripts/nb5_network_request.lua [--quick | --full] [--delay S]
local aio = require "aio"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb5_network_request", title = "network_request four ways",
  args = arg, options = { delay = false }, positive = { "delay" }, duration = { delay = "s" },
  help = { delay = { "S", "each request's wait in seconds (default 0.2, --full 1)" } } }
local D = e.options.delay or e:size(0.2, 1.0)  -- the seed's one second, scaled in quick mode

local lines = e.lines  -- what e:say printed, so the checks can look at the order of the output

-- Blocking: the caller waits for the response (top-level await blocks, like time.sleep).
local function network_request(number)
  aio.sleep(D)
  return { success = true, result = number * number }
end
local function fetch_square(number)
  local response = network_request(number)
  if response.success then e:say("Result is: %d", response.result) end
end

e:say("-- blocking")
local t_blocking = e:time(function()
  fetch_square(2)
  fetch_square(3)
  fetch_square(4)
end)
e:say("blocking: %.2f s", t_blocking)

-- Callbacks: don't call us, we'll call you.
local function network_request_async(number, on_done)
  aio.call_later(D, function() on_done({ success = true, result = number * number }) end)
end

e:say("-- callbacks")
local t_callbacks = e:time(function()
  local all = aio.future()
  local pending = 3
  local function on_done(response)
    e:say("Result is: %d", response.result)
    pending = pending - 1
    if pending == 0 then all:set_result(true) end
  end
  network_request_async(2, on_done)
  network_request_async(3, on_done)
  network_request_async(4, on_done)
  e:say("After submission")
  all:await()
end)
e:say("callbacks: %.2f s", t_callbacks)
local after_first = lines[#lines - 4] == "After submission"

-- Futures: the request returns a future the caller can watch, cancel or await.
local function network_request_future(number)
  local future = aio.future()
  aio.call_later(D, function() future:set_result({ success = true, result = number * number }) end)
  return future
end

e:say("-- futures")
local t_futures = e:time(function()
  -- The done-callbacks run as tasks after their futures complete: wait for the callbacks (each
  -- resolves `printed` once it has printed), not just the futures, so that the results come
  -- before the timing line, as in the notebook.
  local printed = {}
  for _, n in ipairs({ 2, 3, 4 }) do
    local fut = network_request_future(n)
    local done = aio.future()
    fut:add_done_callback(function(f)
      local response = f:result()
      if response.success then e:say("Result is: %d", response.result) end
      done:set_result(true)
    end)
    printed[#printed + 1] = done
  end
  aio.gather(printed)
end)
e:say("futures: %.2f s", t_futures)
local futures_in_order = table.concat(lines, "\n", #lines - 3) == "Result is: 4\nResult is: 9\nResult is: 16\nfutures: " ..
  string.format("%.2f s", t_futures)

-- Coroutines: straight-line code that awaits; three tasks run concurrently.
e:say("-- coroutines")
local t_coroutines = e:time(function()
  local tasks = {}
  for _, n in ipairs({ 2, 3, 4 }) do tasks[#tasks + 1] = aio.spawn(fetch_square, n) end
  aio.gather(tasks)
end)
e:say("coroutines: %.2f s", t_coroutines)

-- wait_and_print, synchronous vs asynchronous.
e:say("-- wait_and_print")
local function wait_and_print(msg)
  aio.sleep(D)
  e:say(msg)
end
local function wait_and_print_async(msg)
  return aio.call_later(D, function() e:say(msg) end)
end
local t_sync = e:time(function()
  wait_and_print("First call")
  wait_and_print("Second call")
  e:say("After call")
end)
local mark = #lines
local t_async = e:time(function()
  wait_and_print_async("First call async")
  wait_and_print_async("Second call async")
  e:say("After submission")
  aio.sleep(D * 1.5)
end)

e:check(experiment.close_to(t_blocking, 3 * D), "blocking takes 3 x %.2f s (measured %.2f s)", D, t_blocking)
e:check(experiment.close_to(t_callbacks, D), "callbacks take 1 x %.2f s (measured %.2f s)", D, t_callbacks)
e:check(after_first, "'After submission' is printed before any callback result")
e:check(experiment.close_to(t_futures, D), "futures take 1 x %.2f s (measured %.2f s)", D, t_futures)
e:check(futures_in_order, "futures: the three results are printed before the timing line")
e:check(experiment.close_to(t_coroutines, D), "coroutines take 1 x %.2f s (measured %.2f s)", D, t_coroutines)
e:check(experiment.close_to(t_sync, 2 * D), "synchronous wait_and_print takes 2 x %.2f s", D)
e:check(lines[mark + 1] == "After submission" and lines[mark + 2] == "First call async",
  "asynchronous wait_and_print: 'After submission' first, then the two messages")
e:check(t_async < 2 * D, "asynchronous wait_and_print returns at once (both fire after %.2f s)", D)
print(string.format("in notebook seconds (a request takes %g s here%s): blocking %.2f (notebook: 3 s), callbacks "
  .. "%.2f, futures %.2f, coroutines %.2f (notebook: about 1 s each)", D, D == 1 and "" or ", 1 s in the notebook",
  t_blocking / D, t_callbacks / D, t_futures / D, t_coroutines / D))

local ref = "blocking 3 s · callbacks/futures/coroutines ≈ 1 s"
e:result { key = "blocking", label = "network_request x3, blocking", measured = t_blocking,
  unit = "s", expected = 3 * D, reference = ref, reproduced = experiment.close_to(t_blocking, 3 * D) }
e:result { key = "callbacks", label = "network_request x3, callbacks", measured = t_callbacks,
  unit = "s", expected = D, reference = ref, reproduced = experiment.close_to(t_callbacks, D) }
e:result { key = "futures", label = "network_request x3, futures", measured = t_futures,
  unit = "s", expected = D, reference = ref, reproduced = experiment.close_to(t_futures, D) }
e:result { key = "coroutines", label = "network_request x3, coroutines", measured = t_coroutines,
  unit = "s", expected = D, reference = ref, reproduced = experiment.close_to(t_coroutines, D) }

local plot = require "aio.plot"
e:figure("ways", plot.bar_svg { title = string.format("network_request x3 (%.1f s each)", D),
  unit = " s", bars = {
    { label = "blocking", value = t_blocking },
    { label = "callbacks", value = t_callbacks },
    { label = "futures", value = t_futures },
    { label = "coroutines", value = t_coroutines } } }, "three requests, four ways")
e:finish()
