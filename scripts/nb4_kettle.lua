-- scripts/nb4_kettle.lua — notebook 4 (seed 003), "minitask 7": boil the kettle (3 s) and
-- clean the cups (2 s) — sequentially (5 s), as two concurrent tasks (3 s, the cups finish
-- first), and in a task group (asyncio.TaskGroup; 3 s, the await is implicit at its end).
--
--   aioshell scripts/nb4_kettle.lua [--quick | --full] [--scale S]
local aio = require "aio"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb4_kettle", title = "Kettle minitask", args = arg,
  options = { scale = false }, positive = { "scale" },
  help = { scale = { "X", "real seconds per notebook second (default 0.1, --full 1)" } } }
local S = e.options.scale or e:size(0.1, 1.0)  -- seconds per notebook second

-- The notebook's last line, in notebook seconds, with its figure and (scaled) what was measured.
local function executed(t, seed)
  local scaled = S ~= 1 and string.format("; measured %.2f s at %gx time", t, S) or ""
  print(string.format("Executed in %.2f seconds.   (notebook: %s%s)", t / S, seed, scaled))
end
if S ~= 1 then
  print(string.format("quick: one notebook second lasts %g s here; times are shown in notebook seconds "
    .. "(--full runs them at 1:1)", S))
end

local out = {}
local function perform_task(duration, task_name)
  aio.sleep(duration * S)
  out[#out + 1] = task_name .. " is done"
  print(task_name .. " is done")  -- Python's print(a, b) joins with a space
end

-- Sequential: await one, then the other.
local t_seq = e:time(function()
  perform_task(3, "boiling kettle")
  perform_task(2, "cleaning cups")
end)
executed(t_seq, "5.00 s")
local seq_order = table.concat(out, ";")

-- Concurrent: create both tasks, then await them.
out = {}
local t_conc = e:time(function()
  local task1 = aio.spawn(perform_task, 3, "boiling kettle")
  local task2 = aio.spawn(perform_task, 2, "cleaning cups")
  task1:await()
  task2:await()
end)
executed(t_conc, "3.00 s")
local conc_order = table.concat(out, ";")

-- Task group: children are awaited when the group's body returns.
out = {}
local t_group = e:time(function()
  aio.group(function(tg)
    tg:spawn(perform_task, 3, "boiling kettle")
    tg:spawn(perform_task, 2, "cleaning cups")
  end)
end)
executed(t_group, "3.00 s")
local group_order = table.concat(out, ";")

e:check(seq_order == "boiling kettle is done;cleaning cups is done", "sequential: kettle, then cups")
e:check(conc_order == "cleaning cups is done;boiling kettle is done", "concurrent: cups finish first")
e:check(group_order == conc_order, "task group: same order as the concurrent version")
e:check(experiment.close_to(t_seq, 5 * S), "sequential takes 5 units (%.2f s)", t_seq)
e:check(experiment.close_to(t_conc, 3 * S), "concurrent takes 3 units (%.2f s)", t_conc)
e:check(experiment.close_to(t_group, 3 * S), "task group takes 3 units (%.2f s)", t_group)

e:result { key = "sequential", label = "kettle + cups, sequential", measured = t_seq / S, unit = "s",
  expected = 5, reference = "5.00 s", reproduced = experiment.close_to(t_seq, 5 * S),
  note = S ~= 1 and string.format("run at %.2fx time, shown in notebook seconds", S) or nil }
e:result { key = "concurrent", label = "kettle + cups, concurrent tasks", measured = t_conc / S,
  unit = "s", expected = 3, reference = "3.00 s", reproduced = experiment.close_to(t_conc, 3 * S) }
e:result { key = "task_group", label = "kettle + cups, task group", measured = t_group / S,
  unit = "s", expected = 3, reference = "3.00 s", reproduced = experiment.close_to(t_group, 3 * S) }

local plot = require "aio.plot"
e:figure("times", plot.bar_svg { title = "Kettle minitask (notebook seconds)", unit = " s", bars = {
  { label = "sequential", value = t_seq / S, note = "seed 5.00" },
  { label = "concurrent tasks", value = t_conc / S, note = "seed 3.00" },
  { label = "task group", value = t_group / S, note = "seed 3.00" } } }, "kettle minitask")
e:finish()
