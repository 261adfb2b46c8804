-- spec/aio_spec.lua — the core module: tasks, scheduling, combinators, futures, timers.
local helper = require "spec.helper"
local aio = require "aio"
local async = helper.async

-- Runs code in a child aioshell; returns stdout, stderr, status.
local function child(code, opts)
  return helper.run_lua(code, opts)
end

describe("tasks", function()
  after_each(helper.assert_no_tasks)

  it("spawn returns a task whose await gives every result", async(function()
    local t = aio.spawn(function(a, b) return a + b, "x", nil, 4 end, 1, 2)
    local a, b, c, d = t:await()
    assert.same({3, "x", nil, 4}, {a, b, c, d})
    assert.is_true(t:done())
    assert.is_false(t:cancelled())
    assert.same({3, "x", nil, 4}, {t:result()})
  end))

  it("has increasing ids, a default and a settable name, a state and a spawn site", async(function()
    local t1 = aio.spawn(function() aio.sleep(0.01) end)
    local t2 = aio.spawn(function() end)
    assert.is_true(t2.id > t1.id)
    assert.equal("Task-" .. t1.id, t1.name)
    t1:set_name("sleeper")
    assert.equal("sleeper", t1.name)
    assert.equal("new", t1.state)
    aio.sleep(0)
    assert.equal("sleeping", t1.state)
    assert.matches("aio_spec.lua:%d+", t1.site)
    assert.matches("^sleep", t1.waiting_on)
    t1:await()
    assert.equal("done", t1.state)
    assert.matches("aio.task %d+ 'sleeper' %(done%)", tostring(t1))
  end))

  it("names each spawn site by its own chunk and line, however many chunks share a line", async(function()
    -- Sites are cached per call site: chunks of different names (and a chunk reloaded under a
    -- new name) spawning from the same line number must each get their own "file:line".
    -- Names past 40 characters too (long source strings, which the cache compares by content).
    local sites, long = {}, ("x"):rep(44)
    for _, name in ipairs({"=alpha", "=beta", "=alpha", "=gamma", "=" .. long .. "A", "=" .. long .. "B",
                           "=" .. long .. "A"}) do
      local chunk = assert(load("local aio = ...\nreturn aio.spawn(function() end)", name))
      local t = chunk(aio)
      sites[#sites + 1] = t.site
      t:await()
    end
    assert.same({"alpha:2", "beta:2", "alpha:2", "gamma:2", long .. "A:2", long .. "B:2", long .. "A:2"},
                sites)
    local here = aio.spawn(function() end)
    assert.matches("aio_spec.lua:%d+$", here.site)
    here:await()
  end))

  it("the spawn-site cache keeps no copy of a chunk's long source alive", async(function()
    -- A chunk named by a long string (load's default name is its whole code) that spawns once
    -- and is dropped: the cache keeps its site string, never a copy of the name.
    collectgarbage(); collectgarbage()
    local before = collectgarbage("count")
    for i = 1, 16 do
      local name = "=" .. ("n"):rep(1 << 20) .. i
      assert(load("return (...).spawn(function() end)", name))(aio):await()
    end
    collectgarbage(); collectgarbage()
    local kept_kb = collectgarbage("count") - before
    assert.is_true(kept_kb < 1024, ("%.0f KB kept"):format(kept_kb))
  end))

  it("result() raises before the task is done, and re-raises its error after", async(function()
    local t = aio.spawn(function() aio.sleep(0.01); error("bad") end)
    assert.has_error(function() t:result() end, "result is not ready yet (await it first)")
    pcall(t.await, t)
    local ok, err = pcall(t.result, t)
    assert.is_false(ok)
    assert.matches("bad", err.message)
    assert.equal(err, t:exception())
  end))

  it("aio.current() is the running task, nil at top level", async(function()
    local t
    t = aio.spawn(function() return aio.current() end)
    assert.equal(t, t:await())
  end))

  it("aio.current() is nil on the main thread", function()
    assert.is_nil(aio.current())
  end)

  it("sleepers wake in deadline order, equal deadlines in FIFO order", async(function()
    local order = {}
    local ts = {}
    for i, d in ipairs({0.03, 0.01, 0.02, 0.01, 0.01}) do
      ts[i] = aio.spawn(function() aio.sleep(d); order[#order + 1] = i end)
    end
    aio.gather(ts)
    assert.same({2, 4, 5, 3, 1}, order)
  end))

  it("sleep(0) lets the other ready tasks run once (round robin)", async(function()
    local trace = {}
    local function worker(name)
      for i = 1, 3 do trace[#trace + 1] = name .. i; aio.sleep(0) end
    end
    aio.gather(aio.spawn(worker, "a"), aio.spawn(worker, "b"))
    assert.equal("a1 b1 a2 b2 a3 b3", table.concat(trace, " "))
  end))

  it("a timer that falls due while the loop polls does not wait for the next timer", function()
    local out, err, status = child([[
      local aio = require "aio"
      aio.spawn(function() aio.sleep(5) end):set_name("long")
      local t = aio.now(); aio.sleep(0); aio.sleep(0.01)
      local busy = aio.spawn(function()
        local x = os.clock() while os.clock() - x < 0.02 do end
        aio.sleep(0.001)
      end)
      busy:await()
      print(aio.now() - t < 1)
      os.exit(0)
    ]])
    assert.equal("", err)
    assert.equal("true\n", out)
  end)

  it("a task that keeps yielding with sleep(0) starves neither timers nor I/O", function()
    local out, err, status = child([[
      local aio = require "aio"
      local thread = require "aio.thread"
      local spinner = aio.spawn(function() while true do aio.sleep(0) end end)
      local t0 = aio.now()
      aio.sleep(0.05)                                   -- a timer
      local pool = thread.pool(1)
      local v = pool:submit(function() return 42 end):await()  -- I/O: a uv_async wake-up
      print(aio.now() - t0 < 2, v)
      spinner:cancel()
      pool:close()
    ]], {timeout = 10})
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("true\t42\n", out)
  end)

  it("a sleep takes at least its time, measured on the loop clock", async(function()
    local t0 = aio.now()
    aio.sleep(0.05)
    assert.is_true(aio.now() - t0 >= 0.05)
  end))

  it("many tasks run concurrently", async(function()
    local t0 = aio.now()
    local ts = {}
    for i = 1, 1000 do ts[i] = aio.spawn(function() aio.sleep(0.05) return i end) end
    local r = aio.gather(ts)
    assert.equal(1000, #r)
    assert.equal(500500, (function() local s = 0 for _, v in ipairs(r) do s = s + v end return s end)())
    assert.is_true(aio.now() - t0 < 2)  -- concurrent, not 50 s in sequence
  end))
end)

describe("errors", function()
  it("are aio.error objects naming the task, with its own traceback", async(function()
    local function deep_inner() error("kaboom") end
    local t = aio.spawn(function() aio.sleep(0); deep_inner() end)
    t:set_name("worker")
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.matches("kaboom", err.message)
    assert.equal("worker", err.task)
    assert.matches("deep_inner", err.traceback)
    assert.matches("kaboom %(in task worker%)", tostring(err))
    assert.matches("aio_spec.lua", err.site)
  end))

  it("keep non-string error values in .value", async(function()
    local t = aio.spawn(function() error({code = 42}) end)
    local _, err = pcall(t.await, t)
    assert.equal(42, err.value.code)
  end))

  it("keep a number error value a number; its message is the number as text", async(function()
    for _, v in ipairs({42, 1.5}) do
      local t = aio.spawn(function() error(v) end)
      local _, err = pcall(t.await, t)
      assert.equal("number", math.type(err.value) and "number")
      assert.equal(v, err.value)
      assert.equal(tostring(v), err.message)
      assert.equal(v, t:exception().value)
    end
  end))

  it("an error object whose __tostring raises fails its task, and the loop goes on", async(function()
    local bad = setmetatable({}, {__tostring = function() error("__tostring exploded") end})
    local t = aio.spawn(function() error(bad) end)
    local other = aio.spawn(function() aio.sleep(0.01) return "other ok" end)
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.equal(bad, err.value)
    assert.equal("(error object is a table value)", err.message)
    assert.equal("failed", t.state)
    assert.equal("other ok", other:await())
  end))

  it("an error object whose __tostring raises is reported at exit and the loop still drains", function()
    local out, err, status = child([[
      local aio = require "aio"
      local bad = setmetatable({}, {__tostring = function() error("__tostring exploded") end})
      aio.spawn(function() error(bad) end)
      aio.spawn(function() aio.sleep(0.01) print("second task ran") end)
    ]])
    assert.equal("second task ran\n", out)
    assert.equal(1, status)
    assert.matches("nobody observed its error .-\n%(error object is a table value%)\nstack traceback:", err)
  end)

  it("an unobserved failure is reported at exit with exit status 1", function()
    local out, err, status = child([[
      local aio = require "aio"
      local function helper_fn() error("lost error") end
      local t = aio.spawn(function() aio.sleep(0.01); helper_fn() end)
      t:set_name("orphan")
      print("main done")
    ]])
    assert.equal("main done\n", out)
    assert.equal(1, status)
    assert.matches("task orphan failed and nobody observed its error", err)
    assert.matches("lost error", err)
    assert.matches("helper_fn", err)       -- the task's own traceback
    assert.matches("spawned at .-%.lua:3", err)
  end)

  it("many unobserved failures are reported in spawn order, in n log n time", function()
    -- 40,000 failures: about 1 s of CPU time; the quadratic sort this replaced needed 28 s.
    -- The budget is CPU time (ulimit -t), which the load of other processes does not use up.
    local script = helper.tmpfile([[
      local aio = require "aio"
      for i = 1, 40000 do aio.spawn(function() error("f" .. i) end) end
    ]], ".lua")
    local _, err, status = helper.exec({"sh", "-c", 'ulimit -t 15; exec "$0" "$1"', helper.aioshell, script},
      {timeout = 120})
    assert.equal(1, status)
    local last, count = 0, 0
    for id in err:gmatch("task Task%-(%d+) failed and nobody observed its error") do
      id = tonumber(id)
      assert.is_true(id > last)
      last, count = id, count + 1
    end
    assert.equal(40000, count)
  end)

  it("an error raised by a __close handler as the task fails is reported with a real traceback", function()
    local _, err, status = child([[
      local aio = require "aio"
      local function body()
        local _ <close> = setmetatable({}, {__close = function() error("close err") end})
        error("body err")
      end
      aio.spawn(body)
    ]])
    assert.equal(1, status)
    assert.matches("%.lua:3: close err\nstack traceback:\n\t%(raised by a __close handler as the task "
      .. "unwound from: [^\n]*%.lua:4: body err%)\n\t%[C%]: in function 'error'\n\t[^\n]*%.lua:4: in function", err)
  end)

  it("an observed failure is not reported and the exit status is 0", function()
    local out, err, status = child([[
      local aio = require "aio"
      local t = aio.spawn(function() error("seen") end)
      print(pcall(t.await, t))
    ]])
    assert.equal(0, status)
    assert.equal("", err)
    assert.matches("^false", out)
  end)

  it("an error in a done callback is printed and makes the exit status 1", function()
    local _, err, status = child([[
      local aio = require "aio"
      local f = aio.future()
      aio.on_done(f, function() error("callback broke") end)
      f:set_result()
    ]])
    assert.equal(1, status)
    assert.matches("callback broke", err)
  end)

  it("an error raised at top level by an await exits like lua5.4 (status 1, message)", function()
    local _, err, status = child([[
      local aio = require "aio"
      aio.spawn(function() error("top boom") end):await()
    ]])
    assert.equal(1, status)
    assert.matches("top boom", err)
  end)
end)

-- Which combinators observe a failure they were handed (docs/aio.md, "Unobserved errors"): each
-- case is a child aioshell; "reported" means the at-exit report and exit status 1.
describe("unobserved errors and the combinators", function()
  -- Runs code in a child; asserts whether the task named `name` was reported, and the status.
  local function check(code, name, reported)
    local out, err, status = child("local aio = require 'aio'\n" .. code)
    local seen = err:find("task " .. name .. " failed and nobody observed its error", 1, true)
    assert.equal(reported and 1 or 0, status, out .. err)
    assert.equal(reported, seen ~= nil, err)
    return out, err
  end
  local FAILING = [[
    local ok_t = aio.spawn(function() return "fine" end)
    local bad = aio.spawn(function() aio.sleep(0.01); error("lost in wait") end)
    bad:set_name("bad")
  ]]

  it("a failure only passed to wait is reported (all_completed, first_exception)", function()
    check(FAILING .. "local done = aio.wait({ok_t, bad}); assert(done[bad])", "bad", true)
    check(FAILING .. "local done = aio.wait({ok_t, bad}, {return_when = 'first_exception'})\n"
      .. "assert(done[bad])", "bad", true)
  end)

  it("a failure passed to wait and then looked at with result() or exception() is not", function()
    check(FAILING .. "aio.wait({ok_t, bad}); print(pcall(bad.result, bad))", "bad", false)
    check(FAILING .. "aio.wait({ok_t, bad}, {return_when = 'first_exception'}); "
      .. "print(bad:exception())", "bad", false)
  end)

  it("a failure only handed out by as_completed is reported; awaited, it is not", function()
    check(FAILING .. "for t in aio.as_completed({ok_t, bad}) do end", "bad", true)
    check(FAILING .. "for t in aio.as_completed({ok_t, bad}) do print(pcall(t.await, t)) end",
      "bad", false)
  end)

  it("gather, wait_for and group observe the failure they raise or return", function()
    check(FAILING .. "print(pcall(aio.gather, ok_t, bad))", "bad", false)
    check(FAILING .. "print(aio.gather({ok_t, bad}, {return_exceptions = true})[2])", "bad", false)
    check(FAILING .. "print(pcall(aio.wait_for, bad, 5))", "bad", false)
    check([[print(pcall(aio.group, function(g)
      g:spawn(function() aio.sleep(0.01); error("child") end):set_name("bad")
    end))]], "bad", false)
  end)

  it("aio.on_done and add_done_callback count as observing", function()
    check(FAILING .. "aio.on_done(bad, function() end)", "bad", false)
    check(FAILING .. "bad:add_done_callback(function() end)", "bad", false)
  end)

  -- A child whose cleanup, once cancelled for its sibling's failure, raises an error of its own.
  local CLEANUP = [[
    local function first() aio.sleep(0.01); error("first failure") end
    local function second()
      aio.current():set_name("second")
      local ok = pcall(aio.sleep, 10)
      error("cleanup broke too")
    end
  ]]

  it("gather: a sibling failing after the raised failure is reported, the raised one is not", function()
    local out, err = check(CLEANUP .. "print(pcall(aio.gather, first, second))", "second", true)
    assert.matches("first failure", out)
    assert.matches("cleanup broke too", err)
    assert.not_matches("first failure", err)
  end)

  it("group: a sibling failing after the raised failure is reported, the raised one is not", function()
    local out, err = check(CLEANUP .. [[print(pcall(aio.group, function(g)
      g:spawn(first); g:spawn(second)
    end))]], "second", true)
    assert.matches("first failure", out)
    assert.matches("cleanup broke too", err)
    assert.not_matches("first failure", err)
  end)

  it("group: a child's failure it does not raise (the body's own error wins) is reported", function()
    local out, err = check([[print(pcall(aio.group, function(g)
      g:spawn(function() error("child failure") end):set_name("child")
      aio.sleep(0)                       -- the child fails: the group's cancel stays pending...
      error("body failure")              -- ...but raises another error (an await-free path)
    end))]], "child", true)
    assert.matches("body failure", out)
    assert.matches("child failure", err)
  end)
end)

describe("top level", function()
  it("awaits by running the loop, on the main thread, not in a coroutine", function()
    local out, err, status = child([[
      local aio = require "aio"
      local co, main = coroutine.running()
      print(main, coroutine.isyieldable())
      local ticks = 0
      aio.spawn(function() for i = 1, 3 do ticks = ticks + 1; aio.sleep(0.01) end end)
      aio.sleep(0.05)
      print("ticks", ticks)
      print(aio.spawn(function() return "value" end):await())
    ]])
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("true\tfalse\nticks\t3\nvalue\n", out)
  end)

  it("keeps running tasks after the main chunk ends", function()
    local out, _, status = child([[
      local aio = require "aio"
      aio.spawn(function() aio.sleep(0.02); print("late") end)
      aio.call_later(0.01, function() print("timer") end)
      print("main end")
    ]])
    assert.equal(0, status)
    assert.equal("main end\ntimer\nlate\n", out)
  end)

  it("an await that can never complete raises instead of hanging", function()
    local _, err, status = child([[
      local aio = require "aio"
      aio.future():await()
    ]])
    assert.equal(1, status)
    assert.matches("await would block forever", err)
  end)

  it("awaiting inside a __gc finalizer at top level raises a clear error instead of running the loop", function()
    local out, err, status = child([[
      local aio = require "aio"
      local ran = false
      aio.spawn(function() ran = true end)
      setmetatable({}, {__gc = function() print(pcall(aio.sleep, 5)) end})
      collectgarbage()
      print("task ran inside the finalizer:", ran)
    ]])
    assert.equal("", err)
    assert.equal(0, status)
    assert.matches("^false\tcannot await here: inside a __gc finalizer", out)
    assert.matches("task ran inside the finalizer:\tfalse\n$", out)
  end)

  it("a finalizer that runs after the loop's own at exit gets 'the event loop is closed', not a crash", function()
    -- lua_close finalizes in reverse order of registration: an object given its __gc before
    -- aio made its loop is finalized after the loop is closed.
    local out, err, status = child([[
      local aio
      KEEP = setmetatable({}, {__gc = function()
        print("spawn", pcall(aio.spawn, function() end))
        print("sleep", pcall(aio.sleep, 0.5))
        print("future", pcall(aio.future))
      end})
      aio = require "aio"
      aio.sleep(0)
    ]])
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("spawn\tfalse\tthe event loop is closed (the program is ending)\n" ..
                 "sleep\tfalse\tthe event loop is closed (the program is ending)\n" ..
                 "future\tfalse\tthe event loop is closed (the program is ending)\n", out)
  end)

  it("with the collector stopped, a top-level await runs the loop and a finalizer's still raises", function()
    local out, err, status = child([[
      local aio = require "aio"
      collectgarbage("stop")
      local ran = false
      aio.spawn(function() ran = true end)
      aio.sleep(0)
      print("task ran:", ran)
      setmetatable({}, {__gc = function() print(pcall(aio.sleep, 5)) end})
      collectgarbage()
    ]])
    assert.equal("", err)
    assert.equal(0, status)
    assert.matches("^task ran:\ttrue\nfalse\tcannot await here: inside a __gc finalizer", out)
  end)

  it("awaiting inside a done callback (loop running) raises a clear error", async(function()
    local f, seen = aio.future(), nil
    aio.on_done(f, function() seen = select(2, pcall(aio.sleep, 0.01)) end)
    f:set_result(1)
    assert.matches("cannot await here", seen)
  end))

  it("aio.run_loop in a task (or a coroutine inside one) says that a task awaits instead", async(function()
    local f = aio.future()
    local ok, err = pcall(aio.run_loop, f)
    assert.is_false(ok)
    assert.matches("^aio%.run_loop in a task: the loop is already running", err)
    assert.truthy(err:find("fut:await()", 1, true), err)
    local co = coroutine.wrap(function() return select(2, pcall(aio.run_loop)) end)
    assert.matches("^aio%.run_loop in a task", co())
    f:set_result(1)
  end))

  it("Ctrl-C while draining cancels the tasks, runs their cleanup and exits 130", function()
    local script = helper.tmpfile([[
      local aio = require "aio"
      aio.spawn(function()
        local ok, err = pcall(aio.sleep, 30)
        print("cleanup", aio.is_cancelled(err))
        io.stdout:flush()
      end)
      print("ready") io.stdout:flush()
    ]], ".lua")
    local p = io.popen(("sh -c '%s %s & pid=$!; sleep 0.3; kill -INT $pid; wait $pid; echo status=$?'")
      :format(helper.aioshell, script))
    local out = p:read("a")
    p:close()
    assert.matches("ready\ncleanup\ttrue\nstatus=130", out)
  end)
end)

describe("Ctrl-C", function()
  -- Runs script in a child aioshell, sends it SIGINT after each delay in `at` (seconds), kills
  -- it (status 137) if it is still there 5 s later; returns stdout + stderr and the status.
  local function interrupt(script, at)
    local kills = {}
    for i, d in ipairs(at) do kills[i] = ("sleep %s; kill -INT $pid 2>/dev/null;"):format(d) end
    local p = io.popen(("sh -c '%s %s 2>&1 & pid=$!; %s (sleep 5; kill -KILL $pid 2>/dev/null) "
      .. ">/dev/null 2>&1 & wait $pid; echo status=$?'")
      :format(helper.aioshell, helper.tmpfile(script, ".lua"), table.concat(kills, " ")))
    local out = p:read("a")
    p:close()
    return out
  end

  it("stops a busy task during the drain: it gets 'interrupted!', the others are cancelled, status 130", function()
    local out = interrupt([[
      local aio = require "aio"
      aio.spawn(function()
        local ok, err = pcall(aio.sleep, 30)
        print("cleanup", aio.is_cancelled(err)) io.stdout:flush()
      end)
      aio.spawn(function() while true do end end)
      print("ready") io.stdout:flush()
    ]], {0.4})
    assert.matches("^ready\n", out)
    assert.matches("cleanup\ttrue\n", out)
    assert.matches("interrupted!", out)
    assert.matches("status=130\n$", out)
  end)

  it("a busy task alone in the drain: it is reported interrupted and the status is 130", function()
    local out = interrupt([[
      local aio = require "aio"
      aio.spawn(function() while true do end end):set_name("spinner")
    ]], {0.4})
    assert.matches("task spinner failed and nobody observed its error .-\ninterrupted!\n", out)
    assert.matches("status=130\n$", out)
  end)

  it("a second Ctrl-C during the drain kills the process", function()
    local out = interrupt([[
      local aio = require "aio"
      aio.spawn(function()
        print(pcall(function() while true do end end)) io.stdout:flush()
        while true do end               -- caught the interruption, and busy again
      end)
      print("ready") io.stdout:flush()
    ]], {0.4, 0.4})
    assert.matches("ready\nfalse\t.-interrupted!\n", out)
    assert.matches("status=130\n$", out)    -- killed by SIGINT, not by the KILL 5 s later
  end)

  it("stops a busy loop inside a task with 'interrupted!', like lua5.4 in the main chunk", function()
    local script = helper.tmpfile([[
      local aio = require "aio"
      local t = aio.spawn(function() local n = 0 while true do n = n + 1 end end)
      print("ready") io.stdout:flush()
      t:await()
    ]], ".lua")
    local p = io.popen(("sh -c '%s %s 2>&1 & pid=$!; sleep 0.4; kill -INT $pid; wait $pid; echo status=$?'")
      :format(helper.aioshell, script))
    local out = p:read("a")
    p:close()
    assert.matches("ready\n.-interrupted!.-status=1", out)
  end)
end)

describe("cancellation", function()
  after_each(helper.assert_no_tasks)

  it("raises a cancellation error at the current await; cleanup runs", async(function()
    local cleaned, closed = false, false
    local t = aio.spawn(function()
      local _ <close> = setmetatable({}, {__close = function() closed = true end})
      local ok, err = pcall(aio.sleep, 10)
      cleaned = not ok and aio.is_cancelled(err)
      error(err, 0)
    end)
    aio.sleep(0.01)
    assert.is_true(t:cancel("stop now"))
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(aio.is_cancelled(err))
    assert.equal("stop now", err.message)
    assert.is_true(cleaned)
    assert.is_true(closed)
    assert.is_true(t:cancelled())
    assert.is_false(t:cancel())  -- already finished
  end))

  it("a task cancelled before it starts never runs", async(function()
    local ran = false
    local t = aio.spawn(function() ran = true end)
    t:cancel()
    pcall(t.await, t)
    assert.is_false(ran)
    assert.is_true(t:cancelled())
  end))

  it("a task can catch cancellation and go on", async(function()
    local t = aio.spawn(function()
      local ok = pcall(aio.sleep, 10)
      aio.sleep(0.01)  -- awaiting again works after catching
      return ok and "slept" or "caught"
    end)
    aio.sleep(0)
    t:cancel()
    assert.equal("caught", t:await())
  end))

  it("cancelling a task cancels the plain future it awaits, not a task it awaits", async(function()
    local f = aio.future()
    local waiter = aio.spawn(function() return f:await() end)
    aio.sleep(0)
    waiter:cancel()
    pcall(waiter.await, waiter)
    assert.is_true(f:cancelled())

    local inner = aio.spawn(function() aio.sleep(0.02) return "inner" end)
    local outer = aio.spawn(function() return inner:await() end)
    aio.sleep(0)
    outer:cancel()
    pcall(outer.await, outer)
    assert.equal("inner", inner:await())
  end))

  it("a cancel that arrives while the task is ready is delivered at its next await", async(function()
    local f = aio.future()
    local got, second
    local t = aio.spawn(function()
      got = f:await()
      second = select(2, pcall(aio.sleep, 1))
    end)
    aio.sleep(0)
    f:set_result("value")   -- t is now ready with its value
    t:cancel()
    pcall(t.await, t)
    assert.equal("value", got)       -- the value was not lost
    assert.is_true(aio.is_cancelled(second))
  end))

  it("cancelling() counts the requests; uncancel() withdraws one and returns the count", async(function()
    local me = aio.current()
    assert.equal(0, me:cancelling())
    assert.is_true(me:cancel("one"))
    assert.is_true(me:cancel("two"))   -- shares the pending delivery, but counts
    assert.equal(2, me:cancelling())
    assert.equal(1, me:uncancel())
    assert.equal(1, me:cancelling())
    local ok, err = pcall(aio.sleep, 0)  -- one request is left: its cancellation is raised
    assert.is_false(ok)
    assert.equal("one", err.message)
    assert.equal(1, me:cancelling())   -- received (and caught) is not withdrawn
    assert.equal(0, me:uncancel())
    assert.equal(0, me:uncancel())     -- never below 0
    me:cancel()
    assert.equal(0, me:uncancel())     -- withdrawn before it was raised: dropped
    aio.sleep(0)                       -- nothing is raised
    local done = aio.spawn(function() end)
    done:await()
    assert.is_false(done:cancel())     -- a finished task counts nothing
    assert.equal(0, done:cancelling())
  end))

  it("redeliver_cancel raises a received cancellation again at the next await, counting nothing", async(function()
    local me = aio.current()
    me:cancel("stop")
    local ok, err = pcall(aio.sleep, 0)
    assert.is_false(ok)
    assert.equal("stop", err.message)
    aio.sleep(0)                            -- received and caught: nothing pending any more
    assert.is_true(aio.redeliver_cancel(me, "again"))
    assert.equal(1, me:cancelling())        -- no new request counted
    ok, err = pcall(aio.sleep, 0)
    assert.is_false(ok)
    assert.equal("again", err.message)
    assert.equal(0, me:uncancel())
    local done = aio.spawn(function() end)
    done:await()
    assert.is_false(aio.redeliver_cancel(done))  -- a finished task gets nothing
  end))

  it("the count saturates at 65535 and then stays: uncancel() cannot bring it down", async(function()
    local t = aio.spawn(function() aio.sleep(10) end)
    for _ = 1, 65540 do t:cancel() end
    assert.equal(65535, t:cancelling())
    assert.equal(65535, t:uncancel())
    assert.is_false(pcall(t.await, t))
  end))

  it("two parties cancelling with the same message are not confused: each withdraws its own", async(function()
    local gate = aio.future()
    local t = aio.spawn(function()
      pcall(aio.sleep, 10)             -- party A's "stop", caught
      gate:await()
      return select(2, pcall(aio.sleep, 0))
    end)
    aio.sleep(0)
    t:cancel("stop")                   -- party A
    aio.sleep(0)                       -- t caught it and waits on gate
    gate:set_result()                  -- t is ready with its value
    t:cancel("stop")                   -- party B, same text: pending, to raise at t's next await
    assert.equal(1, t:uncancel())      -- A withdraws its own: B's request stays
    local err = t:await()
    assert.is_true(aio.is_cancelled(err))
    assert.equal("stop", err.message)
  end))

  it("a bare coroutine.yield() in a task is a cancellation point, like sleep(0)", async(function()
    local n = 0
    local t = aio.spawn(function() while n < 1000 do n = n + 1; coroutine.yield() end end)
    aio.sleep(0)
    t:cancel("stop")                   -- t is queued after a bare yield
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.equal("stop", err.message)
    assert.is_true(n < 5)
    local self = aio.spawn(function()  -- cancelled while running, then a bare yield
      aio.current():cancel("self")
      local caught = select(2, pcall(function() coroutine.yield() end))
      return caught.message
    end)
    assert.equal("self", self:await())
  end))

  it("sleep(0) is a cancellation point: a cancel while the task is queued after it is raised there", async(function()
    local reached, t = false, nil
    local driver = aio.spawn(function()
      t = aio.spawn(function() aio.sleep(0); reached = true end)
      aio.sleep(0)                     -- t runs to its sleep(0) and is queued behind us
      return t:cancel("stop")
    end)
    assert.is_true(driver:await())
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.equal("stop", err.message)
    assert.is_false(reached)
    assert.is_true(t:cancelled())
    assert.equal(1, t:cancelling())    -- delivered, still counted (asyncio's rule)
  end))

  it("two cancels before the first is delivered give one cancellation; a later one another", async(function()
    local log, cleanup = {}, aio.future()
    local t = aio.spawn(function()
      log[1] = select(2, pcall(aio.sleep, 10)).message
      local ok, err = pcall(cleanup.await, cleanup)        -- a cleanup that awaits
      log[2] = ok and "cleaned up" or err.message
      log[3] = select(2, pcall(aio.sleep, 10)).message
    end)
    aio.sleep(0)
    assert.is_true(t:cancel("one"))
    assert.is_true(t:cancel("two"))   -- merged into "one": the cleanup is not cut
    aio.sleep(0)                       -- t receives "one" and awaits its cleanup
    cleanup:set_result()
    aio.sleep(0)                       -- t is asleep again
    t:cancel("three")                  -- after it caught the first: delivered again
    t:await()
    assert.same({"one", "cleaned up", "three"}, log)
  end))
end)

describe("gather", function()
  after_each(helper.assert_no_tasks)

  it("is built on when_all(_copy) and collect, which work on their own", async(function()
    local ok1 = aio.spawn(function() aio.sleep(0.01) return 1, "extra" end)
    local bad = aio.spawn(function() aio.sleep(0.005) error("boom", 0) end)
    local ok2 = aio.spawn(function() aio.sleep(0.02) return 2 end)
    local list = { ok1, bad, ok2 }
    local all, copy = aio.when_all_copy(list, 3, true)    -- when_all on a copy of the list
    assert.are_not.equal(list, copy)
    assert.same({ ok1, bad, ok2, n = 3 }, copy)
    assert.is_false(all:done())
    assert.are.equal(0, select("#", aio.when_all_copy({ ok1, function() end }, 2, false)))
    local first_failure = aio.when_all(list, 3, false):await()
    assert.are.equal(bad, first_failure)                  -- settled at the failure, in time
    assert.is_false(ok2:done())
    aio.when_all(list, 3, true):await()                   -- all done
    assert.is_true(ok2:done())
    assert.is_true(all:done())
    assert.is_nil(all:result())
    local r = aio.collect(list, 3, true)                  -- first results; the error as a value
    assert.are.equal(1, r[1])
    assert.are.equal("boom", r[2].message)
    assert.are.equal(2, r[3])
    assert.are.equal(3, r.n)
    local ok, err = pcall(aio.collect, list, 3, false)
    assert.is_false(ok)
    assert.are.equal("boom", err.message)
    assert.same({ n = 0 }, aio.collect({}, 0, false))
    assert.same({ ok1, bad, ok2, n = 3 }, copy)           -- collect leaves its list alone...
    local over = aio.collect(copy, 3, true, true)         -- ...but in place (gather's own copy)
    assert.are.equal(copy, over)
    assert.same({ 1, r[2], 2, n = 3 }, copy)
    assert.is_true(aio.when_all({}, 0, false):done())
  end))

  it("leaves no watch behind when its list is not all futures", async(function()
    local log, f, g = {}, aio.future(), aio.future()
    aio.on_done(g, function() log[#log + 1] = "g1" end)
    -- f twice, g (a callback already) once, then a function: the watches made are undone
    assert.are.equal(0, select("#", aio.when_all_copy({ f, g, f, function() end }, 4, false)))
    aio.on_done(g, function() log[#log + 1] = "g2" end)
    local done = aio.future()
    done:set_result(0)
    assert.are.equal(0, select("#", aio.when_all_copy({ done, "x" }, 2, false)))
    local all = aio.when_all({ f }, 1, false)
    f:set_result(1)
    g:set_result(2)
    assert.is_true(all:done())
    assert.same({ "g1", "g2" }, log)
  end))

  it("is not disturbed by a change to its list while it waits", async(function()
    local list = { aio.spawn(function() aio.sleep(0.01) return "a" end),
                   aio.spawn(function() aio.sleep(0.02) return "b" end) }
    aio.spawn(function() aio.sleep(0.005); list[1] = aio.future(); list[2] = nil end)
    assert.same({ "a", "b", n = 2 }, aio.gather(list))
  end))

  it("returns results in input order, as values or as a list", async(function()
    local function after(d, v) return aio.spawn(function() aio.sleep(d) return v end) end
    local a, b, c = aio.gather(after(0.03, "a"), after(0.01, "b"), after(0.02, "c"))
    assert.same({"a", "b", "c"}, {a, b, c})
    local r = aio.gather({after(0.02, 1), function() return 2 end, after(0, 3)})
    assert.same({1, 2, 3, n = 3}, r)
    assert.same({n = 0}, aio.gather({}))
  end))

  it("raises the first failure at once and cancels the others (trio's rule)", async(function()
    local slow = aio.spawn(function() aio.sleep(5) end)
    local t0 = aio.now()
    local ok, err = pcall(aio.gather, slow, aio.spawn(function() aio.sleep(0.01); error("first") end))
    assert.is_false(ok)
    assert.matches("first", err.message)
    assert.is_true(aio.now() - t0 < 1)
    aio.sleep(0)
    assert.is_true(slow:cancelled())
  end))

  it("with return_exceptions gives errors as values", async(function()
    local r = aio.gather({function() return 1 end, function() error("e2") end}, {return_exceptions = true})
    assert.equal(1, r[1])
    assert.matches("e2", r[2].message)
  end))

  it("cancelling the gathering task cancels the children", async(function()
    local child = aio.spawn(function() aio.sleep(5) end)
    local g = aio.spawn(function() return aio.gather(child) end)
    aio.sleep(0.01)
    g:cancel()
    pcall(g.await, g)
    aio.sleep(0)
    assert.is_true(child:cancelled())
  end))
end)

describe("as_completed, wait, wait_for, timeout", function()
  after_each(helper.assert_no_tasks)

  it("as_completed yields the original tasks in completion order", async(function()
    local ts = {}
    for i, d in ipairs({0.03, 0.01, 0.02}) do ts[i] = aio.spawn(function() aio.sleep(d) return i end) end
    local order = {}
    for t in aio.as_completed(ts) do
      order[#order + 1] = t:result()
      assert.is_true(t == ts[t:result()])
    end
    assert.same({2, 3, 1}, order)
  end))

  it("as_completed raises a timeout error when the next one is late", async(function()
    local slow = aio.spawn(function() aio.sleep(1) end)
    local it = aio.as_completed({slow}, {timeout = 0.02})
    local ok, err = pcall(it)
    assert.is_false(ok)
    assert.is_true(aio.is_timeout(err))
    slow:cancel()
    pcall(slow.await, slow)
  end))

  it("cancelling a task inside an as_completed iteration breaks nothing", function()
    local out, err, status = child([[
      local aio = require "aio"
      local a = aio.spawn(function() aio.sleep(0.05) return "a" end)
      local b = aio.spawn(function() aio.sleep(0.10) return "b" end)
      local consumer = aio.spawn(function() for t in aio.as_completed({a, b}) do end end)
      local timed = aio.spawn(function()
        return pcall(aio.timeout, 0.02, function() for t in aio.as_completed({b}, {timeout = 1}) do end end)
      end)
      aio.sleep(0.02)
      consumer:cancel()
      local _, e = timed:await()
      print(a:await(), b:await(), consumer:cancelled(), aio.is_timeout(e))
    ]])
    assert.equal("", err)
    assert.equal("a\tb\ttrue\ttrue\n", out)
    assert.equal(0, status)
  end)

  it("wait supports first_completed, first_exception, all_completed and timeout", async(function()
    local a = aio.spawn(function() aio.sleep(0.01) return "a" end)
    local b = aio.spawn(function() aio.sleep(0.2) return "b" end)
    local done, pending = aio.wait({a, b}, {return_when = "first_completed"})
    assert.is_true(done[a]); assert.is_true(pending[b])
    local c = aio.spawn(function() aio.sleep(0.01); error("c") end)
    done, pending = aio.wait({b, c}, {return_when = "first_exception"})
    assert.is_true(done[c]); assert.is_true(pending[b])
    done, pending = aio.wait({b}, {timeout = 0.01})
    assert.is_nil(done[b]); assert.is_true(pending[b])
    done = aio.wait({a, b})
    assert.is_true(done[a] and done[b])
    pcall(c.result, c)
  end))

  it("wait's first_exception does not count a merely cancelled task as an exception", async(function()
    local k = aio.spawn(function() aio.sleep(1) end)
    local k2 = aio.spawn(function() aio.sleep(0.05) end)
    aio.spawn(function() aio.sleep(0.01) k:cancel() end)
    local done, pending = aio.wait({k, k2}, {return_when = "first_exception"})
    assert.is_true(done[k] and done[k2])   -- it waited for everything (no real failure)
    assert.is_nil(next(pending))
  end))

  it("wait_for returns the value in time, else cancels and raises a timeout", async(function()
    assert.equal(5, aio.wait_for(function() aio.sleep(0.01) return 5 end, 1))
    local cleaned = false
    local t = aio.spawn(function()
      local _ <close> = setmetatable({}, {__close = function() cleaned = true end})
      aio.sleep(10)
    end)
    local ok, err = pcall(aio.wait_for, t, 0.02)
    assert.is_false(ok)
    assert.is_true(aio.is_timeout(err))
    aio.sleep(0)
    assert.is_true(t:cancelled())
    assert.is_true(cleaned)
  end))

  -- Runs fn(aw) under virtual time (restored after). A releaser wakes aw in the same loop turn
  -- as wait_for's deadline: it starts sleeping first, so its timer fires first.
  local function at_the_deadline(hand_over, take)
    aio.clock.virtual()
    finally(aio.clock.real)
    aio.spawn(function() aio.sleep(0.05); hand_over() end)
    aio.sleep(0)
    return aio.wait_for(take, 0.05)
  end

  it("wait_for returns the results of a task that finished as the deadline passed", async(function()
    local f = aio.future()
    local got = at_the_deadline(function() f:set_result("done") end, function() return f:await() end)
    assert.equal("done", got)
  end))

  -- The give-back rule: a primitive's wait woken in the deadline's turn gives back what it was
  -- handed, so wait_for times out and nothing is lost.
  it("a deadline in the turn a permit is handed over times out, and the permit stays", async(function()
    local sem = aio.semaphore(1)
    sem:acquire()
    local ok, err = pcall(at_the_deadline, function() sem:release() end,
                          function() sem:acquire(); return "permit" end)
    assert.is_false(ok)
    assert.is_true(aio.is_timeout(err))
    assert.is_true(sem:try_acquire())
  end))

  it("a deadline in the turn an item is handed over times out, and the item stays", async(function()
    local q = aio.queue()
    local ok, err = pcall(at_the_deadline, function() q:put_nowait("precious") end,
                          function() return q:get() end)
    assert.is_false(ok)
    assert.is_true(aio.is_timeout(err))
    assert.equal("precious", q:get_nowait())
  end))

  it("a timeout whose cancelled child fails otherwise raises the child's error", async(function()
    local ok, err = pcall(aio.timeout, 0.01, function()
      pcall(aio.sleep, 10)
      error("cleanup failed")
    end)
    assert.is_false(ok)
    assert.is_false(aio.is_timeout(err))
    assert.matches("cleanup failed", err.message)
  end))

  it("cancelling the caller of wait_for while the timed-out child cleans up cancels the cleanup too", async(function()
    local cleaning, child = aio.future(), nil
    local outer = aio.spawn(function()
      aio.timeout(0.01, function()
        child = aio.current()
        pcall(aio.sleep, 10)           -- the timeout's cancellation
        cleaning:set_result()
        aio.sleep(3600)                -- a cleanup that awaits something long
      end)
    end)
    cleaning:await()                   -- the deadline passed: outer awaits the child's cleanup
    aio.sleep(0)
    outer:cancel("stop")
    local ok, err = pcall(outer.await, outer)
    assert.is_false(ok)
    assert.is_true(aio.is_cancelled(err))
    assert.is_false(aio.is_timeout(err))
    assert.equal("stop", err.message)
    assert.is_true(outer:cancelled())
    assert.is_true(child:cancelled())  -- its cleanup's await got the cancellation: not left running
  end))

  it("a timed-out child whose cleanup ignores the caller's cancellation is awaited until a second one", async(function()
    local cleaning, child, seen = aio.future(), nil, 0
    local outer = aio.spawn(function()
      aio.timeout(0.01, function()
        child = aio.current()
        pcall(aio.sleep, 10)           -- the timeout's cancellation
        cleaning:set_result()
        while true do                  -- a cleanup that ignores the first cancellation passed on
          local ok, e = pcall(aio.sleep, 10)
          if not ok then seen = seen + 1 end
          if seen == 2 then error(e, 0) end
        end
      end)
    end)
    cleaning:await()
    aio.sleep(0)
    outer:cancel("one")                -- passed on to the child, whose end outer awaits
    aio.sleep(0)
    aio.sleep(0)
    assert.equal(1, seen)
    assert.is_false(outer:done())
    outer:cancel("two")                -- the way out: passed on and raised at once
    local ok, err = pcall(outer.await, outer)
    assert.is_false(ok)
    assert.equal("two", err.message)
    assert.equal(2, seen)
    assert.is_true(child:cancelled())
  end))

  it("a second cancel of wait_for's caller, while it awaits the inner task's end, is passed on and raised", async(function()
    local inner_cancels = 0
    local inner = aio.spawn(function()
      while true do                    -- ignores its first cancellation, ends at the second
        local ok, e = pcall(aio.sleep, 10)
        if not ok then inner_cancels = inner_cancels + 1 end
        if inner_cancels == 2 then error(e, 0) end
      end
    end)
    local caller = aio.spawn(function() return aio.wait_for(inner, 5) end)
    aio.sleep(0)
    caller:cancel("one")               -- wait_for cancels inner and awaits its end
    aio.sleep(0)
    aio.sleep(0)
    assert.is_false(caller:done())
    caller:cancel("two")               -- the way out
    local ok, err = pcall(caller.await, caller)
    assert.is_false(ok)
    assert.equal("two", err.message)
    assert.equal(2, inner_cancels)
    assert.is_true(inner:cancelled())
  end))

  -- Runs wait_for(t, 0.05) in a task, t having been spawned with body; someone else cancels t
  -- with "from outside" at `at` seconds (virtual time; `at` = 0.05: the deadline's loop turn,
  -- before or after it as `first` says). Returns the caller's pcall of its await, and t.
  local function timed_and_cancelled(body, at, first)
    aio.clock.virtual()
    finally(aio.clock.real)
    local t = aio.spawn(body)
    local outside = function() aio.sleep(at); t:cancel("from outside") end
    if first == "outside" then aio.spawn(outside) end
    aio.sleep(0)                       -- (an outside sleep starts first: its timer fires first)
    local caller = aio.spawn(function() return aio.wait_for(t, 0.05) end)
    if first ~= "outside" then aio.spawn(outside) end
    local ok, err = pcall(caller.await, caller)
    aio.sleep(at)                      -- (the outside cancel has come in every case)
    return ok, err, t
  end

  it("a timed-out task also cancelled from outside raises the cancellation, not a timeout", async(function()
    -- A cleanup that awaits past the deadline, or a cancellation shared in the deadline's turn:
    -- either way the task ends cancelled, and the deadline's was not the only request.
    local function cleanup_awaits() pcall(aio.sleep, 10); aio.sleep(10) end
    for _, case in ipairs({
      {"outside before the deadline, cleanup cut by it", 0.01, "outside", cleanup_awaits},
      {"outside after the deadline, during the cleanup", 0.07, "caller", cleanup_awaits},
      {"same turn, outside first", 0.05, "outside", function() aio.sleep(10) end},
      {"same turn, deadline first", 0.05, "caller", function() aio.sleep(10) end},
    }) do
      local ok, err, t = timed_and_cancelled(case[4], case[2], case[3])
      assert.is_false(ok, case[1])
      assert.is_true(aio.is_cancelled(err), case[1] .. ": " .. tostring(err))
      assert.is_false(aio.is_timeout(err), case[1])
      assert.equal(1, t:cancelling(), case[1])  -- the outside request; the deadline's withdrawn
    end
  end))

  it("a timed-out task cancelled only by the deadline still gives the timeout error", async(function()
    local ok, err, t = timed_and_cancelled(function() aio.sleep(10) end, 1, "caller")
    assert.is_false(ok)
    assert.is_true(aio.is_timeout(err))
    assert.equal(0, t:cancelling())    -- the deadline withdrew its request (the outside one
                                       -- came after t had finished: not counted)
  end))

  it("nested timeouts each take only their own", async(function()
    aio.clock.virtual()
    finally(aio.clock.real)
    for _, case in ipairs({{0.01, 1, "inner"}, {1, 0.01, "outer"}, {0.05, 0.05, "outer"}}) do
      local inner_s, outer_s, fires = case[1], case[2], case[3]
      local inner_saw
      local ok, err = pcall(aio.timeout, outer_s, function()
        local ok2, e = pcall(aio.timeout, inner_s, aio.sleep, 10)
        inner_saw = e
        if not ok2 and not aio.is_timeout(e) then error(e, 0) end
        return "outer went on"
      end)
      if fires == "inner" then             -- the outer's code got the inner timeout and went on
        assert.is_true(ok)
        assert.equal("outer went on", err)
        assert.is_true(aio.is_timeout(inner_saw))
      else                                 -- the inner code saw a cancellation, the outer timed out
        assert.is_false(ok)
        assert.is_true(aio.is_timeout(err))
        assert.is_true(aio.is_cancelled(inner_saw) and not aio.is_timeout(inner_saw))
      end
    end
  end))

  it("timeout(s, fn, ...) passes arguments and results", async(function()
    assert.equal(7, aio.timeout(1, function(x) return x + 1 end, 6))
    local ok, err = pcall(aio.timeout, 0.01, aio.sleep, 1)
    assert.is_false(ok)
    assert.is_true(aio.is_timeout(err))
  end))
end)

describe("durations", function()
  after_each(helper.assert_no_tasks)

  it("math.huge and very large ones never end: a sleep waits until cancelled, a timeout never fires", async(function()
    for _, s in ipairs({math.huge, 1e10, 1e300}) do
      local t = aio.spawn(function() aio.sleep(s) end)
      aio.sleep(0.01)
      assert.equal("sleeping", t.state)
      assert.equal("sleep (forever)", t.waiting_on)
      t:cancel()
      assert.is_false(pcall(t.await, t))
    end
    local function soon() aio.sleep(0.01) return "ok" end
    assert.equal("ok", aio.wait_for(soon, math.huge))
    assert.equal("ok", aio.timeout(1e10, soon))
    for t in aio.as_completed({soon}, {timeout = math.huge}) do assert.equal("ok", t:result()) end
    local _, pending = aio.wait({soon}, {timeout = math.huge})
    assert.is_nil(next(pending))
    local h = aio.call_later(math.huge, error)
    assert.is_false(h:active())
  end))

  it("a sleep that can never end at top level raises instead of hanging", function()
    local _, err, status = child([[
      local aio = require "aio"
      aio.sleep(math.huge)
    ]])
    assert.equal(1, status)
    assert.matches("await would block forever", err)
  end)

  it("negative ones count as 0", async(function()
    aio.sleep(-1)
    local ran = false
    aio.call_later(-1, function() ran = true end)
    aio.sleep(0.01)
    assert.is_true(ran)
    local ok, err = pcall(aio.wait_for, function() aio.sleep(1) end, -1)
    assert.is_true(aio.is_timeout(err))
  end))

  it("NaN raises, naming the function, before anything is spawned", async(function()
    local nan = 0 / 0
    local calls = {
      sleep = function() aio.sleep(nan) end,
      call_later = function() aio.call_later(nan, print) end,
      every = function() aio.every(nan, print) end,
      wait_for = function() aio.wait_for(function() end, nan) end,
      timeout = function() aio.timeout(nan, function() end) end,
      wait = function() aio.wait({function() end}, {timeout = nan}) end,
      as_completed = function() aio.as_completed({function() end}, {timeout = nan}) end,
    }
    for name, call in pairs(calls) do
      local ok, err = pcall(call)
      assert.is_false(ok)
      assert.matches("bad argument #%d to '" .. name .. "' %(%a+ is NaN%)", err)
    end
    assert.equal(1, aio.ntasks())       -- this test's own task: nothing else was spawned
  end))
end)

describe("group", function()
  after_each(helper.assert_no_tasks)

  it("returns when every child ended", async(function()
    local done = {}
    aio.group(function(g)
      for i = 1, 3 do g:spawn(function() aio.sleep(0.01 * i); done[#done + 1] = i end) end
    end)
    assert.same({1, 2, 3}, done)
  end))

  it("the first failure cancels the siblings and is raised", async(function()
    local sibling
    local ok, err = pcall(aio.group, function(g)
      sibling = g:spawn(function() aio.sleep(5) end)
      g:spawn(function() aio.sleep(0.01); error("child failed") end)
    end)
    assert.is_false(ok)
    assert.matches("child failed", err.message)
    assert.is_true(sibling:cancelled())
  end))

  it("does not lose a cancel from outside that came while its own cancel of the body was pending", async(function()
    -- The group cancels its body's task when a child fails; a cancel() from outside before the
    -- body received that one is merged into it (one delivery). It used to be taken for the
    -- group's own and dropped: the group raised the child's error and the task ran on.
    local outer, child
    outer = aio.spawn(function()
      local ok, e = pcall(aio.group, function(g)
        child = g:spawn(function() error("child boom") end)  -- fails: the group cancels the body
        aio.spawn(function() outer:cancel("from outside") end)  -- same turn, before it is received
        aio.sleep(1)
      end)
      assert.is_false(ok)
      assert.is_true(aio.is_cancelled(e), tostring(e))
      return "caught"
    end)
    assert.are.equal("caught", outer:await())
    assert.matches("child boom", child:exception())  -- not raised: left to observe
    -- the body returns without awaiting: the merged cancel is not withdrawn with the group's
    local reached
    outer = aio.spawn(function()
      local ok, e = pcall(aio.group, function(g)
        local f = aio.future()
        -- wakes the body with a value, then fails: the group's cancel waits for its next await
        g:spawn(function() f:set_result(1); error("child boom") end)
        aio.spawn(function() outer:cancel("from outside") end)  -- merged into it
        f:await()
      end)
      assert.is_false(ok)
      assert.matches("child boom", tostring(e))
      aio.sleep(0.01)                   -- the cancel from outside arrives here
      reached = true
    end)
    local ok, e = pcall(outer.await, outer)
    assert.is_false(ok)
    assert.is_true(aio.is_cancelled(e))
    assert.is_nil(reached)
  end))

  -- Runs aio.group(body) in a task of its own and checks that it raised a cancellation;
  -- returns that error and the task.
  local function group_cancelled(body)
    local t = aio.spawn(function() return pcall(aio.group, body) end)
    local ok, e = t:await()
    assert.is_false(ok)
    assert.is_true(aio.is_cancelled(e), tostring(e))
    return e, t
  end

  it("raises the cancellation when its parent is cancelled from outside as the group cancels the body", async(function()
    -- Both requests share one delivery, in either order; the group withdraws its own and finds
    -- the other left (the count), so neither the child's error nor a normal end hides it.
    for _, outside_first in ipairs({true, false}) do
      local child
      local e, outer = group_cancelled(function(g)
        local me, f = aio.current(), aio.future()
        local function canceller() f:await(); me:cancel("from outside") end
        if outside_first then aio.spawn(canceller) end
        child = g:spawn(function() f:await(); error("child boom") end)
        if not outside_first then aio.spawn(canceller) end
        aio.sleep(0)                    -- both wait on f, in that order
        f:set_result()                  -- next turn both run before the body, asleep, receives
        aio.sleep(1)
      end)
      -- one delivery, with the first request's message
      assert.equal(outside_first and "from outside" or "a child of the group failed", e.message)
      assert.equal(1, outer:cancelling())  -- the outside request; the group's was withdrawn
      assert.matches("child boom", child:exception())  -- not raised: left to observe
    end
  end))

  it("does not take a cancel from outside with its own message text for its own", async(function()
    -- The body caught the group's cancellation and awaits again; a cancel from outside with
    -- the very same text comes. It used to be recognised by its message and dropped.
    local child
    group_cancelled(function(g)
      local me = aio.current()
      child = g:spawn(function() error("child boom") end)
      pcall(aio.sleep, 1)               -- the group's cancellation, caught
      aio.spawn(function() me:cancel("a child of the group failed") end)
      aio.sleep(1)
    end)
    assert.matches("child boom", child:exception())  -- not raised: left to observe
  end))

  it("never cancels a child twice: a cancelled sibling's awaiting cleanup is not cut", async(function()
    local cleanup, failing
    local outer = aio.spawn(function()
      aio.group(function(g)
        failing = g:spawn(function() aio.sleep(0.01); error("child failed") end)
        g:spawn(function()
          pcall(aio.sleep, 10)                       -- "a sibling failed"
          local ok, err = pcall(aio.sleep, 0.05)     -- a cleanup that awaits
          cleanup = ok and "completed" or err.message
        end)
      end)
    end)
    aio.sleep(0.02)
    outer:cancel()                                   -- while the sibling cleans up
    local ok, err = pcall(outer.await, outer)
    assert.is_false(ok)
    assert.equal("completed", cleanup)
    assert.matches("child failed", failing:exception())  -- not raised: left to observe
  end))

  it("a failing child cancels the body too (running in a task) and its error is raised", async(function()
    local t0, body_saw = aio.now(), nil
    local ok, err = pcall(aio.group, function(g)
      g:spawn(function() aio.sleep(0.01) error("fast failure") end)
      local slept, e = pcall(aio.sleep, 5)
      body_saw = not slept and e.message
      aio.sleep(0)                     -- the body may await again: no second cancellation
    end)
    assert.is_false(ok)
    assert.matches("fast failure", err.message)
    assert.equal("a child of the group failed", body_saw)
    assert.is_true(aio.now() - t0 < 4)
  end))

  it("a cancellation the body never received is withdrawn when the group ends", async(function()
    local f, gate = aio.future(), aio.future()
    local ok, err = pcall(aio.group, function(g)
      g:spawn(function() gate:await() error("child failed") end)
      aio.spawn(function() gate:set_result() f:set_result(1) end)
      return f:await()                 -- woken with a value as the child fails: no await after
    end)
    assert.is_false(ok)
    assert.matches("child failed", err.message)
    aio.sleep(0)                       -- no cancellation left pending for this task
  end))

  it("g:spawn after the group has returned raises 'group is closed'", async(function()
    local saved
    aio.group(function(g) saved = g end)
    assert.has_error(function() saved:spawn(function() end) end, "group is closed")
  end))

  it("g:cancel() stops the group early without an error", async(function()
    local t0 = aio.now()
    aio.group(function(g)
      g:spawn(function() aio.sleep(5) end)
      g:spawn(function() aio.sleep(0.01); g:cancel() end)
    end)
    assert.is_true(aio.now() - t0 < 1)
  end))
end)

describe("futures and callbacks", function()
  after_each(helper.assert_no_tasks)

  it("set_result wakes every waiter with the values", async(function()
    local f = aio.future("answer")
    local ts = {}
    for i = 1, 3 do ts[i] = aio.spawn(function() return f:await() end) end
    aio.sleep(0)
    f:set_result(42, "x")
    for i = 1, 3 do assert.same({42, "x"}, {ts[i]:await()}) end
    assert.has_error(function() f:set_result(1) end, "future is already done")
    assert.matches("answer", tostring(f))
  end))

  it("set_error(nil) is misuse and raises; the future stays pending", function()
    local f = aio.future()
    assert.has_error(function() f:set_error(nil) end,
      "bad argument #1 to 'set_error' (error value expected, got nil)")
    assert.has_error(function() f:set_error() end)
    assert.is_false(f:done())
  end)

  it("set_error raises in the waiters", async(function()
    local f = aio.future()
    aio.call_soon(function() f:set_error("nope") end)
    local ok, err = pcall(f.await, f)
    assert.is_false(ok)
    assert.equal("nope", err)
  end))

  it("add_done_callback runs as a task (it may await), also on tasks", async(function()
    local f, log = aio.future(), {}
    f:add_done_callback(function(fut) aio.sleep(0); log[#log + 1] = fut:result() end)
    local t = aio.spawn(function() return "t" end)
    t:add_done_callback(function(task) log[#log + 1] = task:result() end)
    f:set_result("f")
    aio.sleep(0.01)
    table.sort(log)
    assert.same({"f", "t"}, log)
  end))

  it("a done callback's task shows where add_done_callback was called as its site", async(function()
    local f, sites = aio.future(), {}
    local line = debug.getinfo(1, "l").currentline
    f:add_done_callback(function() sites[1] = aio.current().site end)
    f:set_result()
    f:add_done_callback(function() sites[2] = aio.current().site end)   -- already done
    aio.sleep(0.01)
    assert.same({"aio_spec.lua:" .. (line + 1), "aio_spec.lua:" .. (line + 3)},
      {sites[1]:match("aio_spec%.lua:%d+$"), sites[2]:match("aio_spec%.lua:%d+$")})
  end))

  it("call_later, every and call_soon tasks show where the timer was set as their site", async(function()
    local sites = {}
    local function note(k) sites[k] = aio.current().site:match("aio_spec%.lua:%d+$") end
    local line = debug.getinfo(1, "l").currentline
    aio.call_later(0.01, note, "later")
    local h = aio.every(0.01, note, "every")
    aio.call_soon(note, "soon")
    aio.sleep(0.05)
    h:cancel()
    assert.same({later = "aio_spec.lua:" .. (line + 1), every = "aio_spec.lua:" .. (line + 2),
                 soon = "aio_spec.lua:" .. (line + 3)}, sites)
  end))

  it("a call_later task fired in the drain after the main chunk shows where it was set", function()
    local out, err, status = child([[
      local aio = require "aio"
      aio.call_later(0.01, function() print(aio.current().site) end)
    ]])
    assert.equal("", err)
    assert.equal(0, status)
    assert.matches("%.lua:2\n$", out)
  end)

  it("call_soon and call_later run in order; cancel stops a timer", async(function()
    local log = {}
    aio.call_later(0.02, function() log[#log + 1] = "later" end)
    local h = aio.call_later(0.01, function() log[#log + 1] = "never" end)
    aio.call_soon(function(x) log[#log + 1] = x end, "soon")
    assert.is_true(h:cancel())
    aio.sleep(0.05)
    assert.same({"soon", "later"}, log)
  end))

  it("every repeats until cancelled", async(function()
    local n = 0
    local h = aio.every(0.01, function() n = n + 1 end)
    aio.sleep(0.055)
    h:cancel()
    local seen = n
    aio.sleep(0.03)
    assert.equal(seen, n)
    assert.is_true(n >= 2 and n <= 6)  -- about 5; a loaded machine fires late, never early
  end))
end)

describe("plain coroutines inside tasks", function()
  it("an await inside a generator passes through to the scheduler and back", async(function()
    local gen = coroutine.wrap(function()
      for i = 1, 3 do aio.sleep(0.001); coroutine.yield(i) end
    end)
    local other = aio.spawn(function() return "ran meanwhile" end)
    local sum = 0
    for v in gen do sum = sum + v end
    assert.equal(6, sum)
    assert.equal("ran meanwhile", other:await())
  end))

  it("coroutine.resume keeps the generator protocol (values both ways)", async(function()
    local co = coroutine.create(function(a)
      local b = coroutine.yield(a * 2)
      aio.sleep(0)
      return b + 1
    end)
    assert.same({true, 10}, {coroutine.resume(co, 5)})
    assert.same({true, 8}, {coroutine.resume(co, 7)})
    assert.same({false, "cannot resume dead coroutine"}, {coroutine.resume(co)})
  end))

  it("works at top level too (the main thread runs the loop)", function()
    local gen = coroutine.wrap(function() aio.sleep(0.001); coroutine.yield("x") end)
    assert.equal("x", gen())
  end)

  it("errors in coroutine.wrap get the position, as in lua5.4", function()
    local f = coroutine.wrap(function() error("inside") end)
    local ok, err = pcall(f)
    assert.is_false(ok)
    assert.matches("aio_spec.lua:%d+: inside", err)
  end)

  it("coroutine.resume rejects a non-thread with lua5.4's words", function()
    for _, bad in ipairs({0, {}, "co"}) do
      local ok, err = pcall(coroutine.resume, bad)
      assert.is_false(ok)
      assert.matches("%(thread expected, got " .. type(bad) .. "%)$", err)
    end
    assert.matches("%(thread expected, got no value%)$", select(2, pcall(coroutine.resume)))
  end)

  it("a failed resume of a running or normal coroutine leaves the task able to await",
    async(function()
      -- a task resuming its own coroutine: refused, and the task still sleeps normally
      local me = coroutine.running()
      assert.same({false, "cannot resume non-suspended coroutine"}, {coroutine.resume(me)})
      aio.sleep(0.001)
      -- a generator trying to resume the task that drives it: same refusal, same outcome
      local answer
      local gen = coroutine.wrap(function()
        answer = {coroutine.resume(me)}
        aio.sleep(0.001)          -- the await still passes through the task
        coroutine.yield("after")
      end)
      assert.equal("after", gen())
      assert.same({false, "cannot resume non-suspended coroutine"}, answer)
      aio.sleep(0.001)
      assert.is_not_nil(aio.current())
    end))

  -- The generator could yield, so its await registered the task as a waiter before the pass-up
  -- failed ('attempt to yield across a C-call boundary'): the task was later woken by the
  -- future in the middle of another await, and the process crashed.
  it("an await in a generator resumed from a C function's callback raises, and the task goes on",
    function()
      local out, err, status = child([[
        local aio = require "aio"
        aio.run(function()
          local f = aio.future()
          print(pcall(string.gsub, "a", "a", function()
            return coroutine.wrap(function() return f:await() end)()
          end))
          f:set_result("late")
          print(pcall(aio.sleep, 0.01))
          print(f:await())
        end)
      ]])
      assert.equal("", err)
      assert.equal(0, status)
      assert.matches("^false\t[^\n]*cannot await here[^\n]*\ntrue\nlate\n$", out)
    end)

  it("a generator whose await passes through, or a task's coroutine, is 'normal' to everyone else",
    async(function()
      local gen
      local a = aio.spawn(function()
        gen = coroutine.create(function() aio.sleep(0.02) return "finished" end)
        return coroutine.resume(gen)
      end)
      aio.sleep(0.005)                         -- gen waits in its sleep, through a's resume
      assert.equal("normal", coroutine.status(gen))
      assert.same({false, "cannot resume non-suspended coroutine"}, {coroutine.resume(gen, "stolen")})
      assert.has_error(function() coroutine.close(gen) end, "cannot close a normal coroutine")
      assert.same({true, "finished"}, {a:await()})
      assert.equal("dead", coroutine.status(gen))
      local co
      local b = aio.spawn(function() co = coroutine.running() aio.sleep(0.01) return "b" end)
      aio.sleep(0)
      assert.equal("normal", coroutine.status(co))
      assert.is_false(coroutine.resume(co))
      assert.equal("b", b:await())
      assert.equal("dead", coroutine.status(co))
    end))
end)

describe("introspection", function()
  it("aio.tasks() lists live tasks with their state and what they wait on", async(function()
    local f = aio.future("the signal")
    local t = aio.spawn(function() f:await() end)
    t:set_name("listener")
    aio.sleep(0)
    local found
    local other = aio.spawn(function() f:await() end)
    local list = aio.tasks()
    for i, x in ipairs(list) do
      if x == t then found = x end
      if i > 1 then assert.is_true(list[i - 1].id < x.id) end
    end
    assert.is_not_nil(found)
    assert.equal("waiting", found.state)
    assert.matches("the signal", found.waiting_on)
    local buf = {}
    aio.dump({write = function(_, ...) for _, s in ipairs({...}) do buf[#buf + 1] = s end end})
    assert.matches("^ID +NAME +STATE +AGE +WAITING ON +SPAWNED AT\n.*listener", table.concat(buf))
    f:set_result()
    t:await()
    other:await()
  end))

  it("task:traceback() shows the suspended task's stack", async(function()
    local function parked() aio.sleep(1) end
    local t = aio.spawn(function() parked() end)
    aio.sleep(0)
    assert.matches("parked", t:traceback())
    t:cancel()
    pcall(t.await, t)
  end))
end)

describe("tracing", function()
  it("--trace FILE writes a trace-event span for every task, also those spawned by gather", function()
    local path = helper.tmpfile("", ".json")
    local out, err, status = helper.run({"--trace", path, "-e", [[
      local aio = require "aio"
      local t = aio.spawn(function() aio.sleep(0.01) end)
      t:set_name("named")
      aio.gather(function() aio.sleep(0.01) end, function() end)
    ]]})
    assert.equal("", err)
    assert.equal(0, status)
    local trace = require("cjson").decode(helper.readfile(path))
    local begins, named = 0, false
    for _, e in ipairs(trace.traceEvents) do
      if e.ph == "b" and e.cat == "task" then
        begins = begins + 1
        if e.name == "task named" then named = true end
        assert.matches("command line", e.args.site)
      end
    end
    assert.equal(3, begins)
    assert.is_true(named)
  end)

  it("--trace FILE is written when the script ends with os.exit", function()
    local path = helper.tmpfile("", ".json")
    local _, err, status = helper.run({"--trace", path, "-e", [[
      local aio = require "aio"
      aio.spawn(function() aio.sleep(0.01) end):await()
      os.exit(3)
    ]]})
    assert.equal(3, status, err)
    local trace = require("cjson").decode(helper.readfile(path))
    local begins = 0
    for _, e in ipairs(trace.traceEvents) do if e.ph == "b" then begins = begins + 1 end end
    assert.equal(1, begins)
  end)

  it("--trace with a file that cannot be created fails at once with one line", function()
    local out, err, status = helper.run({"--trace", "/proc/nope/t.json", "-e", "print('ran')"})
    assert.equal(1, status)
    assert.equal("", out)                       -- the script did not run
    assert.matches("aio.trace: cannot create the trace file /proc/nope/t.json: No such file or directory", err)
    assert.not_matches("traceback", err)
    local aio_trace = require "aio.trace"
    local ok, msg = pcall(aio_trace.start, "/proc/nope/t.json")
    assert.is_false(ok)
    assert.matches("cannot create the trace file", msg)
    assert.is_false(aio_trace.active)
  end)

  it("the task hook sees spawn and end of every task", async(function()
    local seen = {}
    aio.set_task_hook(function(event, task) seen[#seen + 1] = event .. ":" .. task.id end)
    local t = aio.spawn(function() end)
    t:await()
    aio.set_task_hook(nil)
    aio.spawn(function() end):await()  -- no hook any more
    assert.same({"spawn:" .. t.id, "end:" .. t.id}, seen)
  end))
end)

describe("virtual time", function()
  it("makes sleeps jump instantly and in order", function()
    local out, err, status = child([[
      local aio = require "aio"
      aio.clock.virtual()
      local t0, w0 = aio.now(), os.time()
      local log = {}
      aio.spawn(function() aio.sleep(3600) log[#log + 1] = "hour" end)
      aio.spawn(function() aio.sleep(60) log[#log + 1] = "minute" end)
      aio.sleep(7200)
      print(table.concat(log, " "), math.floor(aio.now() - t0 + 0.5), os.time() - w0 < 2)
    ]])
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("minute hour\t7200\ttrue\n", out)
  end)

  it("jumps only after the autojump threshold of real idleness (a thread's result comes first)", function()
    local script = [[
      local aio = require "aio"
      aio.clock.virtual(%s)
      local t0, log = aio.now(), {}
      local job = aio.spawn(function()
        local r = aio.to_thread(function() require("aio").sleep(0.03) return "job" end)
        log[#log + 1] = string.format("%%s@%%.0f", r, aio.now() - t0)
      end)
      aio.sleep(1)
      log[#log + 1] = string.format("sleep@%%.0f", aio.now() - t0)
      job:await()
      print(table.concat(log, " "))
    ]]
    local out, err, status = child(script:format("1"))
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("job@0 sleep@1\n", out)    -- the clock stood still while the thread worked
    out = child(script:format(""))           -- no threshold: the sleep jumps at once
    assert.equal("sleep@1 job@1\n", out)
    out, err, status = child("require('aio').clock.virtual(0/0)")
    assert.equal(1, status)
    assert.truthy(err:find("autojump threshold out of range", 1, true), err)
  end)

  -- A listening server sweeps its connections from a repeating real timer (every 25 ms here):
  -- each sweep ended libuv's wait and restarted the threshold, so the clock never jumped.
  it("jumps after the autojump threshold while a real timer of the loop keeps firing", function()
    local out, err, status = child([[
      local aio, http = require "aio", require "aio.http"
      aio.clock.virtual(0.2)
      local server = http.serve{handler = function() return "x" end, header_timeout = 0.1}
      local t0 = aio.now()
      aio.sleep(10)
      print(string.format("slept %.0f", aio.now() - t0))
      server:close()
    ]], { timeout = 5 })
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("slept 10\n", out)
  end)

  -- I/O that wakes no task (a response's body arriving in pieces, buffered by curl) still
  -- holds the jump: here the 5 s timeout around the request must not fire.
  it("does not jump while I/O keeps coming within the autojump threshold", function()
    local out, err, status = child([[
      local aio, http, process = require "aio", require "aio.http", require "aio.process"
      local ready = process.queue()
      local server = process.fork(function()   -- streams 10 pieces 50 ms apart, in real time
        aio.clock.real()
        local srv = http.serve(function(_, res)
          for i = 1, 10 do res:write("piece " .. i .. "\n") aio.sleep(0.05) end
          res:finish()
        end)
        ready:put(srv:url("/"))
        aio.sleep(30)
      end)
      local url = ready:get()
      aio.clock.virtual(0.2)
      local r = aio.wait_for(aio.spawn(function() return http.get(url) end), 5)
      print(select(2, r.body:gsub("piece", "")))
      server:kill(9)
    ]], { timeout = 10 })
    assert.equal("", err)
    assert.equal(0, status)
    assert.equal("10\n", out)
  end)
end)
