-- scripts/nb4_display_date.lua — notebook 4 (seed 003), "asyncio": display_date(num) prints
-- the time, sleeps a random 0..5 s, and stops after 50 s; two of them run as tasks and the
-- second one stops the loop. Quick mode runs at 1/25 of the seed's time (a 2 s window, sleeps
-- of 0..0.2 s); --full is the seed's 50 s; --virtual-time makes the full run instant.
--
--   aioshell scripts/nb4_display_date.lua [--quick | --full] [--virtual-time] [--seed N]
local aio = require "aio"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb4_display_date", title = "display_date with two tasks",
  args = arg, options = { seed = 42 }, integer = { "seed" },
  help = { seed = { "N", "the random seed of the sleeps" } } }
local S = e:size(0.04, 1.0)
math.randomseed(e.options.seed)

-- datetime.datetime.now() to the microsecond, read from the loop's clock (so that the printed
-- times follow the sleeps under --virtual-time too): the start's wall time plus loop time since.
local wall0, loop0 = require("aio.sys").time(), aio.now()
local function now_text()
  local t = wall0 + (aio.now() - loop0)
  local whole = math.floor(t)
  return string.format("%s.%06d", os.date("%Y-%m-%d %H:%M:%S", whole), math.floor((t - whole) * 1e6))
end
if S ~= 1 then
  print(string.format("quick: the notebook's 50 s window and 0-5 s sleeps at %gx (%g s and 0-%g s); "
    .. "--full for the notebook's own (1:1)", S, 50 * S, 5 * S))
end

local stop = aio.event()  -- loop.stop(): the main chunk waits on it, as run_forever would
local lines = { [1] = 0, [2] = 0 }
local stopped_by

local function my_sleep_func()
  aio.sleep(math.random(0, 5) * S)
end

local function display_date(num)
  local end_time = aio.now() + 50.0 * S
  while true do
    lines[num] = lines[num] + 1
    print(string.format("Loop: %d Time: %s", num, now_text()))
    if aio.now() + 1.0 * S >= end_time then break end
    my_sleep_func()
  end
  if num == 2 then
    stopped_by = num
    stop:set()
  end
end

local t0 = aio.now()
local t1 = aio.spawn(display_date, 1)
local t2 = aio.spawn(display_date, 2)
stop:wait()  -- loop.run_forever()
local elapsed = aio.now() - t0
print(string.format("False  (loop.is_running() after loop.stop(): the loop ran %.2f notebook seconds of the "
  .. "50 s window)", elapsed / S))
if not t1:done() then t1:cancel() end  -- a stopped loop leaves the other task pending

e:check(stopped_by == 2, "display_date(2) stopped the loop")
e:check(lines[1] >= 5 and lines[2] >= 5, "both tasks printed many times (%d and %d lines)", lines[1], lines[2])
e:check(elapsed >= 49 * S - 0.05 and elapsed <= 55 * S + 0.2,
  "the loop ran for about the 50 s window (%.2f notebook seconds)", elapsed / S)
e:check(t2:done(), "task 2 finished")

e:result { key = "display_date", label = "display_date: two tasks, 50 s window", measured = elapsed / S,
  unit = "s", expected = 50, reference = "lines from two loops interleaved for ~50 s",
  reproduced = stopped_by == 2 and lines[1] >= 5 and lines[2] >= 5,
  note = string.format("%d + %d lines", lines[1], lines[2]) }
e:finish()
