-- spec/thread_spec.lua — thread pools (ordering, errors, cancellation of queued and running
-- jobs, map, close), shared cells under contention, mutexes and channels.
local helper = require "spec.helper"
local aio = require "aio"
local thread = require "aio.thread"
local async = helper.async

-- One pool for the whole file: starting threads is cheap, but not free.
local pool = thread.pool{size = 2, name = "spec"}

describe("thread pool", function()
  after_each(helper.assert_no_tasks)

  it("runs a job in another Lua state and returns all its results", async(function()
    local f = pool:submit(function(a, b) return a + b, math.type(a), nil, "last" end, 1, 2)
    assert.equal("aio.future", getmetatable(f).__name)
    local a, b, c, d = f:await()
    assert.same({3, "integer", nil, "last"}, {a, b, c, d})
    assert.is_true(f:done())
    local name = pool:run(function() return (require "aio.thread").current() end)
    assert.matches("^spec%-%d$", name)
    assert.equal("main", (thread.current()))
  end))

  it("does not share globals with the caller", async(function()
    leaked_global = 1  -- luacheck: ignore
    assert.is_nil(pool:run(function() return leaked_global end))  -- luacheck: ignore
    leaked_global = nil  -- luacheck: ignore
  end))

  it("runs init once per worker", async(function()
    local p = thread.pool{size = 2, init = function() counter_in_worker = 100 end}  -- luacheck: ignore
    local r = p:map(function(x) counter_in_worker = counter_in_worker + x; return counter_in_worker end,  -- luacheck: ignore
                    {1, 1, 1, 1})
    for _, v in ipairs(r) do assert.is_true(v > 100 and v <= 104) end
    p:close()
  end))

  it("really runs in parallel", async(function()
    -- Each job counts itself in while it runs and records how many ran at once: with 2
    -- workers, two (a count, not a duration: a loaded machine cannot fail it).
    local now, most = thread.shared(0), thread.shared(0)
    local fs = {}
    for i = 1, 4 do
      fs[i] = pool:submit(function(now, most)
        local th = require "aio.thread"
        local n = now:add(1)
        most:update(function(m) return math.max(m, n) end)
        th.sleep(0.1)
        now:add(-1)
        return true
      end, now, most)
    end
    aio.gather(fs)
    assert.equal(2, most:get())
    assert.equal(0, now:get())
  end))

  it("works with gather, wait and as_completed", async(function()
    local fs = {}
    for i = 1, 3 do
      fs[i] = pool:submit(function(i) require("aio.thread").sleep(0.01 * (4 - i)); return i end, i)
    end
    local order = {}
    for f in aio.as_completed(fs) do order[#order + 1] = f:result() end
    table.sort(order)
    assert.same({1, 2, 3}, order)
    local done, pending = aio.wait(fs)
    assert.is_nil(next(pending))
    assert.is_true(done[fs[1]])
    local r = aio.gather(fs)
    assert.same({1, 2, 3}, {r[1], r[2], r[3]})
  end))

  it("returns a job's error with the worker's traceback", async(function()
    local ok, err = pcall(function()
      return pool:run(function() local function inner() error("boom") end inner() end)
    end)
    assert.is_false(ok)
    assert.matches("boom", err)
    assert.matches("stack traceback %(spec%-%d%)", err)
    assert.matches("in %a* ?'inner'", err)
  end))

  it("keeps aio errors as aio errors (a timeout inside a job is still a timeout)", async(function()
    local ok, err = pcall(pool.run, pool, function()
      local aio = require "aio"
      return aio.wait_for(function() aio.sleep(1) end, 0.01)
    end)
    assert.is_false(ok)
    assert.is_true(aio.is_timeout(err))
    assert.matches("timeout", tostring(err))
  end))

  it("keeps table errors as tables", async(function()
    local ok, err = pcall(pool.run, pool, function() error({code = 42}) end)
    assert.is_false(ok)
    assert.equal(42, err.code)
    assert.is_string(err.traceback)
  end))

  -- An error value that could not cross was replaced by a fixed message: what went wrong was
  -- lost. Its string form (its __tostring if any) and the path that failed now come back.
  it("an error value that cannot cross still says what it was", async(function()
    local ok, err = pcall(pool.run, pool, function()
      error(setmetatable({file = io.stdout}, {__tostring = function() return "disk full on /var" end}))
    end)
    assert.is_false(ok)
    assert.matches("disk full on /var", err)
    assert.matches("cannot send error.file %(userdata: FILE%*%)", err)
    ok, err = pcall(pool.run, pool, function()
      error(setmetatable({file = io.stdout}, {__tostring = function() error("no") end}))
    end)
    assert.is_false(ok)
    assert.matches("could not be sent back", err)
    assert.equal(3, pool:run(function() return 3 end))
  end))

  -- os.exit in a job called exit() from the worker thread: the whole program ended at once,
  -- without the main state's finalizers. It now fails the job.
  it("os.exit in a job fails the job, not the process", async(function()
    local ok, err = pcall(pool.run, pool, function() os.exit(3) end)
    assert.is_false(ok)
    assert.matches("os.exit cannot be called in a worker thread", err)
    assert.equal(4, pool:run(function() return 4 end))
  end))

  -- A job future that failed was a plain future: if nobody awaited it its error vanished
  -- without a word (a failed task's is reported). It is reported as a failed task is: at exit
  -- (after the tasks), and the exit status is 1; observing it late, before the end, is enough.
  it("reports a failed job whose error nobody observed, and exits with status 1", function()
    local _, err, status = helper.run_lua([[
      local aio, thread = require "aio", require "aio.thread"
      aio.run(function()
        local p = thread.pool(1)
        p:submit(function() error("nobody awaits me") end)
        local seen = p:submit(function() error("this one is awaited") end)
        pcall(seen.await, seen)
        local late = p:submit(function() error("observed late") end)
        aio.sleep(0.2)
        assert(late:done())
        pcall(late.result, late)
        p:close()
      end)
    ]])
    assert.equal(1, status, err)
    assert.matches("a thread job failed and nobody observed its error\n[^\n]*nobody awaits me", err)
    assert.not_matches("this one is awaited", err)
    assert.not_matches("observed late", err)
  end)

  it("reports unobserved job failures after the tasks'", function()
    local _, err, status = helper.run_lua([[
      local aio, thread = require "aio", require "aio.thread"
      local p = thread.pool(1)
      p:submit(function() error("job nobody awaits") end)
      aio.sleep(0.2)
      aio.spawn(function() error("task nobody awaits") end)
    ]])
    assert.equal(1, status, err)
    assert.matches("task Task%-%d+ failed and nobody observed its error.-task nobody awaits.-"
      .. "a thread job failed and nobody observed its error\n[^\n]*job nobody awaits", err)
  end)

  it("exits with status 0 when a failed job's error is observed after it failed", function()
    local _, err, status = helper.run_lua([[
      local aio, thread = require "aio", require "aio.thread"
      local p = thread.pool(1)
      local f = p:submit(function() error("boom") end)
      aio.sleep(0.2)
      assert(f:done())
      assert(not pcall(f.result, f))
      p:close()
    ]])
    assert.equal(0, status, err)
    assert.equal("", err)
  end)

  it("refuses arguments that cannot cross, naming them", async(function()
    local ok, err = pcall(pool.submit, pool, function() end, 1, {conn = io.stdout})
    assert.is_false(ok)
    assert.matches("^cannot send args%[2%]%.conn %(userdata: FILE%*%)", err)
    -- globals are the worker's own: the job itself may use files
    assert.equal("file", pool:submit(function() return io.type(io.stdout) end):await())
  end))

  it("reports results that cannot come back", async(function()
    local ok, err = pcall(pool.run, pool, function() return coroutine.create(print) end)
    assert.is_false(ok)
    assert.matches("cannot send result%[1%] %(coroutine%)", err)
    assert.is_nil(err:find("stack traceback", 1, true))  -- no Lua frame to show: none ("[C]: in ?")
    ok, err = pcall(pool.run, pool, function() error("boom") end)
    assert.is_false(ok)
    assert.truthy(err:find("stack traceback (", 1, true), err)  -- a job's own error keeps its frames
  end))

  it("cancels a running job through the instruction hook", async(function()
    local f = pool:submit(function() local x = 0 while true do x = x + 1 end end)
    aio.sleep(0.02)
    assert.is_true(f:cancel())
    local ok, err = pcall(f.await, f)
    assert.is_false(ok)
    assert.is_true(aio.is_cancelled(err))
    -- the worker is free again
    assert.equal(7, pool:run(function() return 7 end))
  end))

  it("cancels a job blocked in thread.sleep", async(function()
    local f = pool:submit(function() require("aio.thread").sleep(30) end)
    aio.sleep(0.02)
    local t0 = aio.now()
    f:cancel()
    assert.equal(1, pool:run(function() return 1 end))
    assert.is_true(aio.now() - t0 < 5)  -- not the job's 30 s (a loose bound: ASan, load)
  end))

  it("cancels a job awaiting on its worker's own loop", async(function()
    local f = pool:submit(function()
      local aio = require "aio"
      aio.sleep(30)  -- a top-level await in the worker: its own loop runs
      return "woke"
    end)
    aio.sleep(0.02)
    local t0 = aio.now()
    f:cancel()
    local _, two = aio.gather(pool:submit(function() return 1 end), pool:submit(function() return 2 end))
    assert.equal(2, two)
    assert.is_true(aio.now() - t0 < 5)  -- not the job's 30 s (a loose bound: ASan, load)
    -- both workers are free again soon: the sleeping job really stopped
    local deadline = aio.now() + 1
    while pool:stats().running > 0 and aio.now() < deadline do aio.sleep(0.005) end
    assert.equal(0, pool:stats().running)
  end))

  it("cancels queued jobs without running them", async(function()
    local p = thread.pool{size = 1}
    local ran = thread.shared(0)
    local blocker = p:submit(function() require("aio.thread").sleep(0.05) end)
    local queued = p:submit(function(c) c:add(1) end, ran)
    assert.is_true(queued:cancel())
    blocker:await()
    p:close()
    assert.equal(0, ran:get())
    assert.is_true(queued:cancelled())
  end))

  it("times out with wait_for and cancels the job", async(function()
    local f = pool:submit(function() local x = 0 while true do x = x + 1 end end)
    local ok, err = pcall(aio.wait_for, f, 0.02)
    assert.is_false(ok)
    assert.is_true(aio.is_timeout(err))
    assert.is_true(f:cancelled())
  end))

  it("maps in order, chunked, bounded, with progress", async(function()
    local list = {}
    for i = 1, 50 do list[i] = i end
    local calls = 0
    local r = pool:map(function(x) return x * x end, list,
      {chunksize = 7, limit = 2, on_progress = function(done, total)
        calls = calls + 1
        assert.equal(50, total)
      end})
    for i = 1, 50 do assert.equal(i * i, r[i]) end
    assert.is_true(calls >= 8)
    local un = pool:map(function(x) return x end, {1, 2, 3}, {ordered = false})
    table.sort(un)
    assert.same({1, 2, 3}, {un[1], un[2], un[3]})
  end))

  -- limit = 0 never put a job in flight and waited for ever; chunksize = 0 submitted empty
  -- chunks without end.
  it("map and imap_unordered refuse counts below 1", async(function()
    local id = function(x) return x end
    assert.has_error(function() pool:map(id, {1}, {limit = 0}) end, "limit must be a whole number of at least 1")
    assert.has_error(function() pool:map(id, {1}, {chunksize = 0}) end, "chunksize must be a whole number of at least 1")
    assert.has_error(function() pool:imap_unordered(id, {1}, 0.5) end, "chunksize must be a whole number of at least 1")
    assert.same({1, 2, n = 2}, pool:map(id, {1, 2}, {limit = 1, chunksize = 2.0}))
  end))

  -- Cancelling a waiting map (a timeout) cancelled its wake-up future; the jobs' callbacks then
  -- settled it again and each raised "future is already done" on stderr.
  it("map and imap_unordered can be cancelled while they wait", function()
    local _, err, code = helper.run_lua([[
      local aio, thread = require "aio", require "aio.thread"
      aio.run(function()
        local p = thread.pool(2)
        local slow = function(x) require("aio.thread").sleep(0.05) return x end
        assert(not pcall(aio.wait_for, function() return p:map(slow, {1, 2, 3, 4}) end, 0.01))
        local it = p:imap_unordered(slow, {1, 2, 3, 4})
        assert(not pcall(aio.wait_for, function() return it() end, 0.01))
        aio.sleep(0.2)
        p:close()
      end)
    ]])
    assert.equal("", err)
    assert.equal(0, code)
  end)

  it("map raises the first error", async(function()
    local ok, err = pcall(pool.map, pool, function(x) if x == 3 then error("three") end return x end,
                          {1, 2, 3, 4})
    assert.is_false(ok)
    assert.matches("three", err)
  end))

  it("closes: waits for running jobs, refuses new ones", async(function()
    local p = thread.pool{size = 2}
    local f = p:submit(function() require("aio.thread").sleep(0.05); return "finished" end)
    aio.sleep(0.01)
    p:close()
    assert.equal("finished", f:result())
    local ok, err = pcall(p.submit, p, function() end)
    assert.is_false(ok)
    assert.matches("closed", err)
  end))

  it("closes with cancel_pending", async(function()
    local p = thread.pool{size = 1}
    local a = p:submit(function() require("aio.thread").sleep(0.05) end)
    local b = p:submit(function() end)
    aio.sleep(0.01)  -- let the worker pick up a
    p:close{cancel_pending = true}
    assert.is_true(a:done() and not a:cancelled())
    assert.is_true(b:cancelled())
  end))

  it("aio.to_thread runs on the default pool", async(function()
    assert.equal(6, thread.to_thread(function(a, b) return a * b end, 2, 3))
    local f = thread.run_in_executor(nil, function() return "x" end)
    assert.equal("x", f:await())
  end))

  it("nests: a job may run its own pool", async(function()
    local r = pool:run(function()
      local inner = require("aio.thread").pool(2)
      local out = inner:map(function(x) return x + 1 end, {1, 2, 3})
      inner:close()
      return table.concat(out, ",")
    end)
    assert.equal("2,3,4", r)
  end))

  it("works from the top level (no task)", function()
    assert.equal(5, pool:submit(function() return 5 end):await())
  end)
end)

describe("jobs()", function()
  it("lists the unfinished jobs of every pool, and forgets finished ones", helper.async(function()
    local pool = thread.pool(1)
    local slow = pool:submit(function() require("aio.thread").sleep(0.2) end)
    local queued = pool:submit(function() return 1 end)
    local ids = {}
    for _, j in ipairs(thread.jobs()) do
      ids[#ids + 1] = j.id
      assert.equal("pending", j.state)
      assert.equal("a worker thread", j.waiting_on)
      assert.is_true(j.age >= 0)
    end
    assert.equal(2, #ids)
    assert.matches("^T%d+$", ids[1])
    aio.gather(slow, queued)
    assert.equal(0, #thread.jobs())
    pool:close()
  end))
end)

describe("shared state", function()
  it("an unsynchronised read-modify-write loses updates; add does not", async(function()
    local racy, atomic, ready = thread.shared(0), thread.shared(0), thread.shared(0)
    local function work(r, a, ready, n)
      ready:add(1)
      while ready:get() < 2 do end  -- start together, so the loops really overlap
      local sleep = require("aio.thread").sleep
      for _ = 1, n do
        local v = r:get()
        sleep(0)  -- give the other thread the chance it gets anyway on a busy machine
        r:set(v + 1)
        a:add(1)
      end
    end
    local n = 5000
    aio.gather(pool:submit(work, racy, atomic, ready, n), pool:submit(work, racy, atomic, ready, n))
    assert.equal(2 * n, atomic:get())
    assert.is_true(racy:get() <= 2 * n)
    -- with two threads hammering the same cell, lost updates are all but certain
    assert.is_true(racy:get() < 2 * n, "expected lost updates, got " .. racy:get())
  end))

  it("a mutex makes the read-modify-write exact", async(function()
    local cell, m = thread.shared(0), thread.mutex()
    local function work(c, m, n)
      for _ = 1, n do
        local _ <close> = m:lock()
        c:set(c:get() + 1)
      end
    end
    aio.gather(pool:submit(work, cell, m, 5000), pool:submit(work, cell, m, 5000))
    assert.equal(10000, cell:get())
  end))

  it("cas and update", function()
    local c = thread.shared(5)
    assert.is_false(c:cas(4, 10))
    assert.is_true(c:cas(5, 10))
    assert.equal(10, c:get())
    assert.equal(11, c:update(function(v) return v + 1 end))
    c:set({list = {1, 2}})
    assert.same({list = {1, 2}}, c:get())
    c:set("s")
    assert.is_true(c:cas("s", 1.5))
    assert.equal(2.5, c:add(1))
  end)

  -- update runs fn with the cell locked: fn touching the cell relocked a plain mutex from the
  -- same thread and hung it for good (no cancel reaches a thread blocked in the lock).
  it("using a cell inside its own update raises instead of hanging", async(function()
    local p = thread.pool{size = 1}
    local f = p:submit(function(c)
      local ok, err = pcall(c.update, c, function(v) return c:get() + v end)
      return ok, err, c:get()
    end, thread.shared(1))
    local ok, err, v = aio.wait_for(f, 2)
    assert.is_false(ok)
    assert.matches("deadlock: this cell is locked by its own update function", err)
    assert.equal(1, v)
    p:close()
  end))

  -- Two jobs whose update functions use each other's cells deadlock (their mistake); the
  -- threads waited in pthread_mutex_lock, where no cancellation reached them, for good.
  it("cancels jobs deadlocked on each other's cells", async(function()
    local p = thread.pool{size = 2}
    local a, b, ina, inb = thread.shared(0), thread.shared(0), thread.shared(false), thread.shared(false)
    local function cross(mine, other, me, peer)
      mine:update(function(v) me:set(true); while not peer:get() do end; return v + other:get() end)
    end
    local f = p:submit(cross, a, b, ina, inb)
    local g = p:submit(cross, b, a, inb, ina)
    aio.wait_for(function() while not (ina:get() and inb:get()) do aio.sleep(0.001) end end, 2)
    aio.sleep(0.02)
    f:cancel()
    g:cancel()
    assert.equal(0, aio.wait_for(p:submit(function() return 0 end), 2))
    assert.equal(0, aio.wait_for(p:submit(function(a) return a:get() end, a), 2))
    p:close()
  end))

  -- A NaN timeout made one wait of AIO_FOREVER_S seconds, which never looked at the cancel flag.
  it("a job waiting in mutex:lock(NaN) is cancelled as one waiting for ever", async(function()
    local p, m = thread.pool(1), thread.mutex()
    m:lock()
    local f = p:submit(function(m) return m:lock(0 / 0) end, m)
    aio.sleep(0.05)
    f:cancel()
    local ok, err = pcall(aio.wait_for, function() return p:close() end, 1)
    m:unlock()
    assert.is_true(ok, tostring(err))
  end))

  -- A worker thread outlives its jobs: a lock left by a job that errored or was cancelled (no
  -- <close>) stayed held by the worker for good; others waited for ever and the worker's own
  -- next job saw a "deadlock".
  it("a mutex a job leaves locked is released when the job ends", async(function()
    local p = thread.pool{size = 1}
    local m = thread.mutex()
    local spinning = thread.shared(false)
    local f = p:submit(function(m, s) m:lock(); s:set(true); while true do end end, m, spinning)
    aio.wait_for(function() while not spinning:get() do aio.sleep(0.001) end end, 2)
    f:cancel()
    assert.is_true(aio.wait_for(p:submit(function(m) local g = m:lock(1); g:unlock(); return g ~= nil end, m), 2))
    assert.has_error(function() p:run(function(m) m:lock(); error("boom") end, m) end)
    p:run(function(m) m:lock() end, m)
    local got = m:lock(1)
    assert.equal(m, got)
    m:unlock()
    p:close()
  end))

  -- Each thread lists the mutexes it holds (to release what a job leaves locked). unlock took
  -- the mutex out of that list after unlocking it: a thread that took it in between had
  -- linked it into its own list, which got spliced into the first thread's. A worker then
  -- kept a mutex its job had left locked ("deadlock" for the next job), or released one it
  -- did not hold (heap corruption). Handing a mutex back and forth hits that window.
  it("a mutex handed between threads keeps each thread's list of held locks", async(function()
    local y = thread.mutex()
    local function job(y, a, n)
      a:lock()  -- left locked: the worker releases it when the job ends
      for _ = 1, n do
        while not y:try_lock() do end
        y:unlock()
      end
    end
    local function free(a) local g = a:lock(0.5); if g then g:unlock() end; return g ~= nil end
    local stuck = 0
    for _ = 1, 80 do
      local a1, a2 = thread.mutex(), thread.mutex()
      aio.gather(pool:submit(job, y, a1, 20000), pool:submit(job, y, a2, 20000))
      for _, a in ipairs{a1, a2} do
        local ok, freed = pcall(pool.run, pool, free, a)
        if not (ok and freed) then stuck = stuck + 1 end
      end
    end
    assert.equal(0, stuck)
  end))

  -- A task's lock waited in pthread_mutex_lock on the loop thread: the whole loop stopped, so a
  -- worker holding the mutex until the loop answered it never got its answer (a hang), and a
  -- second task on the loop got "deadlock" for a mutex another task held.
  it("a task waiting for a mutex does not stop the loop", async(function()
    local m, go, holding = thread.mutex(), thread.channel(), thread.shared(false)
    local f = pool:submit(function(m, go, h) m:lock(); h:set(true); go:recv(); m:unlock() end,
                          m, go, holding)
    aio.wait_for(function() while not holding:get() do aio.sleep(0.001) end end, 2)
    local waiter = aio.spawn(function() local g = m:lock(); g:unlock(); return g end)
    aio.sleep(0.01)
    go:send(true)
    assert.equal(m, aio.wait_for(waiter, 2))
    aio.wait_for(f, 2)
    local first = aio.spawn(function() local _ <close> = m:lock(); aio.sleep(0.02) end)
    aio.sleep(0)
    assert.equal(m, m:lock(1))
    m:unlock()
    first:await()
    first = aio.spawn(function() local _ <close> = m:lock(); aio.sleep(0.2) end)
    aio.sleep(0)
    local got, why = m:lock(0.02)
    assert.is_nil(got)
    assert.equal("timeout", why)
    assert.has_error(function() m:unlock() end, "unlock of a mutex this task does not hold")
    -- where a task cannot suspend (a metamethod) the wait blocks, as it always did
    local t = setmetatable({}, {__index = function() return select(2, m:lock(0.02)) end})
    assert.equal("timeout", t.x)
    first:await()
  end))

  -- The holder on the loop is the task, also inside a plain coroutine it resumes: a relock
  -- from there waited for itself until its timeout (or forever) instead of raising.
  it("a task holds a mutex also inside its own coroutines: relock raises, unlock works", async(function()
    local m = thread.mutex()
    m:lock()
    local relock = coroutine.wrap(function() return m:lock(0.5) end)
    local ok, err = pcall(relock)
    assert.is_false(ok)
    assert.matches("deadlock: this task already holds the mutex", err)
    coroutine.wrap(function() m:unlock() end)()
    assert.equal(m, m:try_lock())
    m:unlock()
  end))

  it("pool:name() is the name option, or pool1, pool2, ... in creation order", function()
    local named, plain = thread.pool { size = 1, name = "fetchers" }, thread.pool(1)
    assert.equal("fetchers", named:name())
    assert.matches("^pool%d+$", plain:name())
    named:close(); plain:close()
  end)

  it("mutex reports a self-deadlock and supports timeouts", async(function()
    local m = thread.mutex()
    m:lock()
    local ok, err = pcall(m.lock, m)
    assert.is_false(ok)
    assert.matches("deadlock", err)
    local got, why = pool:run(function(m) return m:lock(0.05) end, m)
    assert.is_nil(got)
    assert.equal("timeout", why)
    m:unlock()
    assert.is_true(pool:run(function(m) local g = m:lock(1); g:unlock(); return g ~= nil end, m))
  end))
end)

describe("channels", function()
  after_each(helper.assert_no_tasks)

  it("carries values from workers to the loop in order", async(function()
    local ch = thread.channel()
    local f = pool:submit(function(ch) for i = 1, 100 do ch:send({i = i}) end ch:close() end, ch)
    local got = {}
    while true do
      local v, why = ch:recv()
      if v == nil then assert.equal("closed", why) break end
      got[#got + 1] = v.i
    end
    f:await()
    assert.equal(100, #got)
    for i = 1, 100 do assert.equal(i, got[i]) end
  end))

  -- A worker's job: sums what it receives until the channel is closed.
  local function sum_received(ch)
    local sum = 0
    while true do
      local v = ch:recv()
      if v == nil then return sum end
      sum = sum + v
    end
  end

  it("carries values from the loop to workers with back-pressure", async(function()
    local ch = thread.channel(2)
    local f = pool:submit(sum_received, ch)
    for i = 1, 50 do ch:send(i) end
    ch:close()
    assert.equal(1275, f:await())
  end))

  -- The loop side checked "full"/"empty", let go of the lock, then parked: a worker that
  -- drained (or filled) the channel in between and then blocked was never answered. Many short
  -- hand-overs both ways make that window likely; a hang is caught by the time limit.
  it("never loses a wake-up between the loop checking the channel and parking", async(function()
    for _ = 1, 1000 do
      local ch = thread.channel(1)
      local f = pool:submit(sum_received, ch)
      for i = 1, 5 do assert.is_true(ch:send(i)) end
      ch:close()
      assert.equal(15, aio.wait_for(f, 5))
      local back = thread.channel(1)
      local g = pool:submit(function(ch) for i = 1, 5 do ch:send(i) end ch:close() end, back)
      local sum = 0
      while true do
        local v = aio.wait_for(function() return back:recv() end, 5)
        if v == nil then break end
        sum = sum + v
      end
      g:await()
      assert.equal(15, sum)
    end
  end))

  -- A worker's deadline was the timeout converted to time_t: math.huge or 1e300 overflowed
  -- into a deadline in the past, and the wait "timed out" at once.
  it("a huge timeout in a worker waits", async(function()
    for _, t in ipairs{math.huge, 1e300} do
      local ch = thread.channel(1)
      local f = pool:submit(function(ch, t) return ch:recv(t) end, ch, t)
      aio.sleep(0.02)
      ch:send("late")
      assert.equal("late", aio.wait_for(f, 2))
    end
  end))

  it("times out on the loop without losing later messages", async(function()
    local ch = thread.channel(1)
    local t0 = aio.now()
    local v, why = ch:recv(0.05)
    assert.is_nil(v)
    assert.equal("timeout", why)
    assert.is_true(aio.now() - t0 >= 0.04)
    assert.is_true(ch:send("one"))
    local ok, why2 = ch:send("two", 0.05)  -- full: times out
    assert.is_nil(ok)
    assert.equal("timeout", why2)
    assert.equal("one", ch:recv(1))
    assert.equal(0, #ch)
  end))

  -- Parked loop-side waiters were served as one FIFO: a sender parked on a full channel ahead
  -- of a receiver blocked that receiver, and so itself, for ever.
  it("a parked sender does not block a later receiver on the loop", async(function()
    local ch = thread.channel(1)
    ch:send(1)
    local sender = aio.spawn(function() return ch:send(2) end)
    aio.sleep(0)
    assert.equal(1, aio.wait_for(function() return ch:recv() end, 1))
    assert.is_true(aio.wait_for(sender, 1))
    assert.equal(2, aio.wait_for(function() return ch:recv() end, 1))
  end))

  it("send with timeout 0 on the loop polls a full channel", async(function()
    local ch = thread.channel(1)
    assert.is_true(ch:send(1, 0))
    local ok, why = aio.wait_for(function() return ch:send(2, 0) end, 1)
    assert.is_nil(ok)
    assert.equal("timeout", why)
    assert.equal(1, #ch)
  end))

  it("serves parked receivers, and parked senders, in FIFO order; a cancelled one is skipped",
     async(function()
    local ch = thread.channel(1)
    local got, recvs = {}, {}
    for i = 1, 4 do
      recvs[i] = aio.spawn(function() local v = ch:recv(); got[#got + 1] = i .. ":" .. v end)
    end
    aio.sleep(0)
    recvs[2]:cancel()
    pool:run(function(ch) for v = 1, 3 do ch:send(v) end end, ch)
    for _, i in ipairs{1, 3, 4} do aio.wait_for(recvs[i], 2) end
    assert.same({"1:1", "3:2", "4:3"}, got)
    ch:send("x")
    local sends = {}
    for i = 1, 4 do sends[i] = aio.spawn(function() return ch:send(i) end) end
    aio.sleep(0)
    sends[2]:cancel()
    local r = pool:run(function(ch) local t = {} for k = 1, 4 do t[k] = ch:recv() end return t end, ch)
    assert.same({"x", 1, 3, 4}, r)
    for _, i in ipairs{1, 3, 4} do assert.is_true(aio.wait_for(sends[i], 2)) end
    assert.equal(0, #ch)
  end))

  -- A recv or send that cannot wait (across a C-call boundary, or in a task whose cancellation
  -- is pending) raised but left its waiter parked: the orphan then took the next message (or
  -- later added its own), and kept the program from ending.
  it("a recv or send that cannot wait leaves no waiter behind", async(function()
    local ch = thread.channel(1)
    local ok, err = pcall(string.gsub, "a", "a", function() return ch:recv() end)
    assert.is_false(ok)
    assert.matches("cannot await here", err)
    local t
    t = aio.spawn(function() t:cancel(); return ch:recv() end)
    assert.is_true(aio.is_cancelled(select(2, pcall(t.await, t))))
    ch:send("kept")
    assert.equal("kept", ch:recv(0))
    ch:send(1)
    ok, err = pcall(string.gsub, "a", "a", function() return ch:send(2) end)
    assert.is_false(ok)
    assert.matches("cannot await here", err)
    assert.equal(1, ch:recv(0))
    aio.sleep(0)
    assert.equal(0, #ch)
  end))

  it("recv with timeout 0 polls; a cancelled recv loses nothing", async(function()
    local ch = thread.channel()
    local v, why = ch:recv(0)
    assert.is_nil(v)
    assert.equal("timeout", why)
    local t = aio.spawn(function() return ch:recv() end)
    aio.sleep(0)
    t:cancel()
    pcall(t.await, t)
    ch:send("kept")
    assert.equal("kept", ch:recv())
  end))

  -- A timed wait on the loop ran in a task of its own under aio.wait_for: cancelling the caller
  -- once the waiter had been served left what it was handed in that task, where nobody read it
  -- (the message was lost; the sender's message went in while its caller got the error).
  -- Now a served recv gives its message back and raises; a served send's message is in the
  -- channel already, so the send returns true and the cancellation comes at the next await.
  it("a recv served, then cancelled before it ran, gives its message to the next receiver", async(function()
    local ch = thread.channel()
    local got = {}
    local rs = {}
    for i = 1, 3 do
      rs[i] = aio.spawn(function() local v = ch:recv(); got[#got + 1] = i .. ":" .. v end)
    end
    aio.sleep(0)
    ch:send("a"); ch:send("b")  -- served to receivers 1 and 2
    rs[1]:cancel()              -- 1 gives "a" back: receiver 3 is served with it
    for i = 1, 3 do pcall(aio.wait_for, rs[i], 1) end
    assert.is_true(rs[1]:cancelled())
    assert.same({"2:b", "3:a"}, got)
    assert.equal(0, #ch)
  end))

  -- Each give-back used to put its message at the very front: receivers served m1, m2, m3 and
  -- cancelled before they ran (in that order) left the channel as m3, m2, m1.
  it("messages given back by several receivers keep the order they were sent in", async(function()
    local ch = thread.channel()
    local rs = {}
    for i = 1, 3 do rs[i] = aio.spawn(function() return ch:recv() end) end
    aio.sleep(0)
    ch:send("m1"); ch:send("m2"); ch:send("m3"); ch:send("m4")  -- m1..m3 served
    rs[2]:cancel(); rs[1]:cancel(); rs[3]:cancel()
    for i = 1, 3 do assert.is_false(pcall(rs[i].await, rs[i])) end
    assert.same({"m1", "m2", "m3", "m4"}, {ch:recv(0), ch:recv(0), ch:recv(0), ch:recv(0)})
  end))

  -- A receiver served "closed" while another still held the last message: when that one was
  -- cancelled before it ran, its message went back into a channel whose receivers had all been
  -- told it was closed (a loop `until v == nil` left it unread).
  it("a receiver waits for a message held by a cancelled receiver before it is told 'closed'", async(function()
    local ch = thread.channel()
    local r1 = aio.spawn(function() return ch:recv() end)
    local r2 = aio.spawn(function() return ch:recv() end)
    aio.sleep(0)
    ch:send("last")   -- served to r1, which has not run
    ch:close()
    r1:cancel()       -- r1 gives "last" back
    assert.is_false(pcall(r1.await, r1))
    assert.equal("last", aio.wait_for(r2, 5))
    assert.same({nil, "closed"}, {ch:recv(0)})
  end))

  it("a message given back goes to the front, even past a bounded channel's capacity", async(function()
    local ch = thread.channel(1)
    local r = aio.spawn(function() return ch:recv() end)
    aio.sleep(0)
    ch:send("first")            -- served to r
    ch:send("second")           -- the channel is full
    r:cancel()
    assert.is_false(pcall(r.await, r))
    assert.equal(2, #ch)        -- over capacity until a receiver takes one
    local s = aio.spawn(function() return ch:send("third") end)
    aio.sleep(0)
    assert.is_false(s:done())   -- senders wait until it is below capacity again
    assert.equal("first", ch:recv(0))
    assert.equal("second", ch:recv())
    assert.is_true(s:await())
    assert.equal("third", ch:recv(0))
  end))

  it("a recv inside aio.gather cancelled with its caller leaves the message in the channel", async(function()
    local ch = thread.channel()
    local a = aio.spawn(function() return aio.gather(function() return ch:recv() end) end)
    aio.sleep(0); aio.sleep(0)  -- the inner recv waits
    a:cancel()                  -- gather's caller is cancelled ...
    ch:send("x")                -- ... and in the same turn the inner recv is served
    assert.is_false(pcall(a.await, a))
    aio.sleep(0)
    assert.equal("x", ch:recv(0))
  end))

  it("aio.wait_for around a recv whose caller is cancelled raises and leaves the message", async(function()
    local ch = thread.channel()
    local returned
    local a = aio.spawn(function() returned = aio.wait_for(function() return ch:recv() end, 5) end)
    aio.sleep(0); aio.sleep(0)
    a:cancel()
    ch:send("x")
    assert.is_false(pcall(a.await, a))
    assert.is_true(a:cancelled())
    assert.is_nil(returned)
    assert.equal("x", ch:recv(0))
  end))

  it("receivers cancelled at random while a worker sends lose and duplicate nothing", async(function()
    local ch = thread.channel(4)
    local n = 400
    local f = pool:submit(function(c, count)
      for i = 1, count do c:send(i) end
      c:close()
    end, ch, n)
    local seen, got = {}, 0
    local function take(v)
      assert.is_nil(seen[v]); seen[v] = true; got = got + 1
    end
    local round = 0
    while true do
      round = round + 1
      local rs = {}
      for i = 1, 3 do rs[i] = aio.spawn(function() local v = ch:recv(); if v ~= nil then take(v) end; return v end) end
      aio.sleep(0)
      rs[1 + round % 3]:cancel()
      local closed = false
      for i = 1, 3 do
        local ok, v = pcall(rs[i].await, rs[i])
        if ok and v == nil then closed = true end
      end
      if closed then break end
    end
    f:await()
    while true do local v = ch:recv(0); if v == nil then break end; take(v) end
    assert.equal(n, got)
  end))

  it("a timed recv served, then cancelled before it ran, gives the message back; a send returns true",
     async(function()
    local ch = thread.channel(1)
    local got
    local r = aio.spawn(function() got = ch:recv(5) end)
    aio.sleep(0)
    ch:send("msg")  -- served at once
    r:cancel()      -- before r runs
    local ok, err = pcall(r.await, r)
    assert.is_false(ok)
    assert.is_true(aio.is_cancelled(err))
    assert.is_nil(got)
    assert.equal("msg", ch:recv(0))
    ch:send("full")
    local s = aio.spawn(function()
      local ok = ch:send("second", 5)
      return ok, select(2, pcall(aio.sleep, 0))
    end)
    aio.sleep(0)
    assert.equal("full", ch:recv(0))  -- room: s's message goes in
    s:cancel()
    local ok, err2 = s:await()
    assert.is_true(ok)
    assert.is_true(aio.is_cancelled(err2))
    assert.equal("second", ch:recv(0))
  end))
end)
