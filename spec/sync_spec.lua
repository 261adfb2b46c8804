-- spec/sync_spec.lua — semaphores, locks, events, conditions, queues; FIFO fairness and the
-- cancellation cases that break asyncio's primitives.
local helper = require "spec.helper"
local aio = require "aio"
local async = helper.async

-- Spawns fn and lets it run up to its first await.
local function start(fn, ...)
  local t = aio.spawn(fn, ...)
  aio.sleep(0)
  return t
end

-- Awaits t, swallowing a cancellation.
local function settle(t) pcall(t.await, t) end

describe("semaphore", function()
  after_each(helper.assert_no_tasks)

  it("bounds concurrency", async(function()
    local sem, active, peak = aio.semaphore(3), 0, 0
    local ts = {}
    for i = 1, 20 do
      ts[i] = aio.spawn(function()
        local _ <close> = sem:acquire()
        active = active + 1
        peak = math.max(peak, active)
        aio.sleep(0.005)
        active = active - 1
      end)
    end
    aio.gather(ts)
    assert.equal(3, peak)
    assert.equal(3, sem.value)
  end))

  it("wakes waiters in FIFO order", async(function()
    local sem, order = aio.semaphore(1), {}
    sem:acquire()
    local ts = {}
    for i = 1, 5 do
      ts[i] = start(function() sem:acquire(); order[#order + 1] = i; sem:release() end)
    end
    sem:release()
    aio.gather(ts)
    assert.same({1, 2, 3, 4, 5}, order)
  end))

  it("a cancelled acquire does not lose a permit", async(function()
    local sem = aio.semaphore(1)
    sem:acquire()
    local b = start(function() sem:acquire(); sem:release() end)
    local c = start(function() sem:acquire(); sem:release(); return "c got it" end)
    b:cancel()
    settle(b)
    sem:release()
    assert.equal("c got it", c:await())
    assert.equal(1, sem.value)
  end))

  it("a waiter cancelled right after being handed the permit still releases it", async(function()
    local sem = aio.semaphore(1)
    sem:acquire()
    local b = start(function()
      local _ <close> = sem:acquire()
      aio.sleep(1)  -- the cancel lands here
    end)
    sem:release()   -- b is handed the permit and is ready
    b:cancel()      -- ... and cancelled before it runs
    settle(b)
    assert.is_true(b:cancelled())
    assert.equal(1, sem.value)  -- its <close> gave the permit back
  end))

  it("a waiter woken with the permit, then cancelled before it ran, passes it on and raises", async(function()
    local sem, order = aio.semaphore(1), {}
    sem:acquire()
    local function user(name) return function() sem:acquire(); order[#order + 1] = name; sem:release() end end
    local b = start(user("b"))
    local c = start(user("c"))
    local d = start(user("d"))
    sem:release()   -- b is handed the permit ...
    b:cancel()      -- ... and cancelled before it ran
    settle(b)
    assert.is_true(b:cancelled())
    c:await(); d:await()
    assert.same({"c", "d"}, order)  -- the permit went on to c, and the order held
    assert.equal(1, sem.value)
  end))

  it("<close> releases on error", async(function()
    local sem = aio.semaphore(1)
    pcall(function()
      local _ <close> = sem:acquire()
      error("oops")
    end)
    assert.equal(1, sem.value)
    assert.is_true(sem:try_acquire())
  end))

  it("releasing too many times raises", function()
    local sem = aio.semaphore(1)
    assert.has_error(function() sem:release() end, "semaphore released too many times")
  end)
end)

describe("lock", function()
  after_each(helper.assert_no_tasks)

  it("gives mutual exclusion", async(function()
    local lock, inside, overlap = aio.lock(), false, false
    local ts = {}
    for i = 1, 10 do
      ts[i] = aio.spawn(function()
        local _ <close> = lock:acquire()
        if inside then overlap = true end
        inside = true
        aio.sleep(0)
        inside = false
      end)
    end
    aio.gather(ts)
    assert.is_false(overlap)
    assert.is_false(lock:locked())
  end))

  it("owner is the holding task, whether it took the lock with acquire or try_acquire", async(function()
    local lock, seen = aio.lock(), {}
    local t = aio.spawn(function()
      assert.is_true(lock:try_acquire())
      seen[1] = lock.owner
      lock:release()
      seen[2] = lock.owner
      lock:acquire()
      seen[3] = lock.owner
      lock:release()
    end)
    t:await()
    assert.are.equal(t, seen[1])
    assert.is_nil(seen[2])
    assert.are.equal(t, seen[3])
    assert.is_false(lock:try_acquire() and lock:try_acquire())
    lock:release()
  end))

  it("a waiter handed the lock, then cancelled before it ran, passes the lock on and raises", async(function()
    local lock = aio.lock()
    lock:acquire()
    local b = start(function() lock:acquire(); lock:release() end)
    local owner
    local c = start(function() lock:acquire(); owner = lock.owner; lock:release() end)
    lock:release()
    b:cancel()
    settle(b)
    assert.is_true(b:cancelled())
    c:await()
    assert.are.equal(c, owner)
    assert.is_false(lock:locked())
  end))

  it("releasing an unlocked lock raises", function()
    assert.has_error(function() aio.lock():release() end, "lock is not acquired")
  end)
end)

describe("event", function()
  after_each(helper.assert_no_tasks)

  it("wakes every waiter; a cancelled waiter does not disturb the others", async(function()
    local ev = aio.event()
    local a = start(function() return ev:wait() end)
    local b = start(function() return ev:wait() end)
    local c = start(function() return ev:wait() end)
    b:cancel()
    settle(b)
    assert.is_false(ev:is_set())
    ev:set()
    assert.is_true(a:await())
    assert.is_true(c:await())
    assert.is_true(ev:wait())  -- already set: immediate
    ev:clear()
    assert.is_false(ev:is_set())
  end))
end)

describe("event (give-back)", function()
  after_each(helper.assert_no_tasks)

  it("a waiter woken by set, then cancelled before it ran, raises; the others return", async(function()
    local ev = aio.event()
    local a = start(function() return ev:wait() end)
    local b = start(function() return ev:wait() end)
    ev:set()
    a:cancel()
    settle(a)
    assert.is_true(a:cancelled())
    assert.is_true(b:await())
  end))
end)

describe("condition", function()
  after_each(helper.assert_no_tasks)

  it("notify wakes one waiter, notify_all the rest, each holding the lock", async(function()
    local cond, woken = aio.condition(), {}
    local ts = {}
    for i = 1, 3 do
      ts[i] = start(function()
        local _ <close> = cond:acquire()
        cond:wait()
        assert(cond:locked())
        woken[#woken + 1] = i
      end)
    end
    do local _ <close> = cond:acquire(); cond:notify() end
    aio.sleep(0.01)
    assert.same({1}, woken)
    do local _ <close> = cond:acquire(); cond:notify_all() end
    aio.gather(ts)
    assert.same({1, 2, 3}, woken)
  end))

  it("wait_for waits until the predicate holds", async(function()
    local cond, value = aio.condition(), 0
    local t = start(function()
      local _ <close> = cond:acquire()
      return cond:wait_for(function() return value >= 3 and value end)
    end)
    for _ = 1, 3 do
      local _ <close> = cond:acquire()
      value = value + 1
      cond:notify_all()
    end
    assert.equal(3, t:await())
  end))

  it("a waiter notified then cancelled passes the wake-up on", async(function()
    local cond, ready = aio.condition(), false
    local function waiter() local _ <close> = cond:acquire(); cond:wait_for(function() return ready end); return "woke" end
    local a = start(waiter)
    local b = start(waiter)
    do
      local _ <close> = cond:acquire()
      ready = true
      cond:notify(1)   -- a is notified ...
      a:cancel()       -- ... and cancelled
      aio.sleep(0)     -- a runs while we still hold the lock: its re-acquire gets the cancel
    end
    settle(a)
    assert.is_true(a:cancelled())
    assert.equal("woke", aio.wait_for(b, 1))
  end))

  it("a waiter notified and cancelled before it ran passes the wake-up on, holding the lock", async(function()
    local cond = aio.condition()
    local held
    local a = start(function()
      local _ <close> = cond:acquire()
      local ok, err = pcall(cond.wait, cond)
      held = cond:locked()
      error(err, 0)
    end)
    local b = start(function() local _ <close> = cond:acquire(); cond:wait(); return "woke" end)
    do
      local _ <close> = cond:acquire()
      cond:notify(1)   -- a is notified ...
    end
    a:cancel()         -- ... and cancelled before it ran, the lock free
    settle(a)
    assert.is_true(a:cancelled())
    assert.is_true(held)
    assert.equal("woke", aio.wait_for(b, 1))
    assert.is_false(cond:locked())
  end))

  it("waiting without the lock raises", function()
    assert.has_error(function() aio.condition():wait() end, "cannot wait on an un-acquired condition")
  end)
end)

describe("queue", function()
  after_each(helper.assert_no_tasks)

  it("is FIFO, and put waits while full", async(function()
    local q = aio.queue(2)
    local producer = aio.spawn(function() for i = 1, 5 do q:put(i) end return "produced" end)
    aio.sleep(0.01)
    assert.equal(2, q:size())
    assert.is_true(q:full())
    local got = {}
    for _ = 1, 5 do got[#got + 1] = q:get() end
    assert.same({1, 2, 3, 4, 5}, got)
    assert.equal("produced", producer:await())
  end))

  it("a cancelled get does not lose an item", async(function()
    local q = aio.queue()
    local a = start(function() return q:get() end)
    local b = start(function() return q:get() end)
    a:cancel()
    settle(a)
    q:put("item")
    assert.equal("item", b:await())
  end))

  it("a getter woken for an item, then cancelled before it ran, raises and leaves the item", async(function()
    local q = aio.queue()
    local got
    local a = start(function() got = q:get(); return got end)
    q:put("x")  -- a is woken for "x" ...
    a:cancel()  -- ... and cancelled before it ran
    settle(a)
    assert.is_true(a:cancelled())
    assert.is_nil(got)
    assert.equal(1, q:size())
    assert.equal("x", q:get())
  end))

  -- asyncio's wait_for lost a result the same way until 3.12 (gh-86296): the caller cancelled
  -- after the inner get was handed its item, wait_for raised at once and the item was gone.
  it("aio.wait_for around a get does not lose the item when its caller is cancelled", async(function()
    local q = aio.queue()
    local returned, after
    local a = start(function()
      returned = aio.wait_for(function() return q:get() end, 5)
      aio.sleep(0)                          -- the cancellation comes at the next await
      after = "reached"
    end)
    q:put("x")                              -- handed to wait_for's inner task
    a:cancel()                              -- before that task (or wait_for) ran
    settle(a)
    assert.equal("x", returned)
    assert.is_nil(after)
    assert.is_true(a:cancelled())
    assert.equal(0, q:size())
  end))

  it("aio.wait_for lets its inner task clean up before the caller's cancellation is raised", async(function()
    local cleaned, cleaned_first = false, nil
    local a = start(function()
      local _, err = pcall(aio.wait_for, function()
        local _, e = pcall(aio.sleep, 10)
        aio.sleep(0.01)                     -- a cleanup that awaits
        cleaned = true
        error(e, 0)
      end, 5)
      cleaned_first = cleaned
      error(err, 0)
    end)
    a:cancel()
    settle(a)
    assert.is_true(a:cancelled())
    assert.is_true(cleaned_first)
  end))

  -- The give-back rule's reason: a get woken with an item and cancelled before it ran used to
  -- return the item, and aio.gather, whose caller was cancelled in that same turn, dropped it.
  it("a get inside aio.gather cancelled with its caller leaves the item in the queue", async(function()
    local q = aio.queue()
    local a = start(function() return aio.gather(function() return q:get() end) end)
    aio.sleep(0) -- the inner get waits
    a:cancel()   -- gather's caller is cancelled ...
    q:put("x")   -- ... and in the same turn the inner get is woken for "x"
    settle(a)
    assert.is_true(a:cancelled())
    aio.sleep(0)
    assert.equal(1, q:size())
    assert.equal("x", q:get_nowait())
  end))

  it("items go to the woken getters in order when one of them gives its item back", async(function()
    local q, got = aio.queue(), {}
    local ts = {}
    for i = 1, 3 do ts[i] = start(function() local v = q:get(); got[#got + 1] = i .. ":" .. v end) end
    q:put("x"); q:put("y")  -- getters 1 and 2 are woken
    ts[1]:cancel()          -- 1 gives "x" back: the next waiting getter (3) is woken
    for _, t in ipairs(ts) do settle(t) end
    assert.is_true(ts[1]:cancelled())
    assert.same({"2:x", "3:y"}, got)
  end))

  it("a putter woken for room, then cancelled before it ran, passes the room on and raises", async(function()
    local q = aio.queue(1)
    q:put("a")
    local p1 = start(function() q:put("p1") end)
    local p2 = start(function() q:put("p2") end)
    assert.equal("a", q:get())  -- room: p1 is woken ...
    p1:cancel()                 -- ... and cancelled before it ran
    settle(p1)
    settle(p2)
    assert.is_true(p1:cancelled())
    assert.equal(1, q:size())
    assert.equal("p2", q:get())
  end))

  it("aio.wait_for around a get whose caller is cancelled raises and leaves the item", async(function()
    local q = aio.queue()
    local returned
    local a = start(function() returned = aio.wait_for(function() return q:get() end, 5) end)
    aio.sleep(0)  -- the inner get waits
    a:cancel()    -- the caller is cancelled ...
    q:put("x")    -- ... and in the same turn the inner get is woken for "x"
    settle(a)
    assert.is_true(a:cancelled())
    assert.is_nil(returned)
    assert.equal("x", q:get_nowait())
  end))

  it("getters and putters cancelled at random lose and duplicate nothing", async(function()
    for _, make in ipairs({aio.queue, aio.lifo_queue, aio.priority_queue}) do
      local q, got, seen = make(3), 0, {}
      local tasks, n = {}, 0
      local function spawn(fn) n = n + 1; tasks[n] = aio.spawn(fn) end
      local put = 0
      for round = 1, 200 do
        spawn(function()
          local v = q:get()
          assert.is_nil(seen[v]); seen[v] = true; got = got + 1
        end)
        spawn(function() put = put + 1; local v = put; local ok = pcall(q.put, q, v); if not ok then seen[-v] = true end end)
        if round % 3 == 0 then tasks[n - (round % 5)]:cancel() end
        if round % 7 == 0 then aio.sleep(0) end
      end
      q:close()  -- the getters left drain it, the putters left raise
      for i = 1, n do settle(tasks[i]) end
      while not q:empty() do
        local v = q:get_nowait()
        assert.is_nil(seen[v]); seen[v] = true; got = got + 1
      end
      for v = 1, put do  -- every item put was got exactly once, or its put was cancelled
        assert.is_true(seen[v] == true or seen[-v] == true)
        assert.is_false(seen[v] == true and seen[-v] == true)
      end
    end
  end))

  it("get_nowait and put_nowait raise instead of waiting", function()
    local q = aio.queue(1)
    assert.has_error(function() q:get_nowait() end, "queue is empty")
    q:put_nowait(1)
    assert.has_error(function() q:put_nowait(2) end, "queue is full")
  end)

  it("task_done and join", async(function()
    local q, processed = aio.queue(), 0
    for i = 1, 4 do q:put(i) end
    local workers = {}
    for w = 1, 2 do
      workers[w] = aio.spawn(function()
        while true do
          q:get()
          aio.sleep(0.001)
          processed = processed + 1
          q:task_done()
        end
      end)
    end
    q:join()
    assert.equal(4, processed)
    for _, w in ipairs(workers) do w:cancel(); settle(w) end
    assert.has_error(function() q:task_done() end, "task_done() called too many times")
  end))

  it("close lets consumers drain then stop; put after close raises", async(function()
    local q = aio.queue()
    local consumer = aio.spawn(function()
      local got = {}
      for item in q:iter() do got[#got + 1] = item end
      return got
    end)
    q:put("a"); q:put("b")
    q:close()
    assert.same({"a", "b"}, consumer:await())
    local ok, err = pcall(q.put, q, "c")
    assert.is_false(ok)
    assert.equal(aio.queue_closed, err)
  end))

  it("priority and LIFO variants", function()
    local pq = aio.priority_queue()
    pq:put_nowait("low", 5); pq:put_nowait("high", 1); pq:put_nowait("mid", 3); pq:put_nowait("mid2", 3)
    local out = {}
    for _ = 1, 4 do out[#out + 1] = pq:get_nowait() end
    assert.same({"high", "mid", "mid2", "low"}, out)
    local lq = aio.lifo_queue()
    for i = 1, 3 do lq:put_nowait(i) end
    assert.same({3, 2, 1}, {lq:get_nowait(), lq:get_nowait(), lq:get_nowait()})
  end)

  it("timed-out gets and event waits leave no waiter behind (the lists stay small)", async(function()
    local q, ev = aio.queue(), aio.event()
    for _ = 1, 300 do
      pcall(aio.wait_for, function() return q:get() end, 0)
      pcall(aio.wait_for, function() return ev:wait() end, 0)
    end
    assert.is_true(q.getters.tail - q.getters.head + 1 <= 2)
    assert.is_true(ev.waiters.tail - ev.waiters.head + 1 <= 2)
  end))

  it("cancelled getters are dropped without changing the order of the others", async(function()
    local q, got = aio.queue(), {}
    local ts = {}
    for i = 1, 9 do ts[i] = start(function() local item = q:get(); got[#got + 1] = i .. ":" .. item end) end
    for _, i in ipairs({1, 2, 4, 5, 7, 8}) do ts[i]:cancel() end  -- the dead become the majority
    aio.sleep(0)
    assert.equal(3, q.getters.tail - q.getters.head + 1)
    for _, item in ipairs({"a", "b", "c"}) do q:put_nowait(item) end
    for _, t in ipairs(ts) do settle(t) end
    assert.same({"3:a", "6:b", "9:c"}, got)
  end))

  it("a priority queue gives every item in priority order, equal ones in insertion order", function()
    local pq, expected = aio.priority_queue(), {}
    for i = 1, 300 do
      local p = (i * 7919) % 37
      pq:put_nowait({p, i}, p)
      expected[i] = {p, i}
    end
    table.sort(expected, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
    for i = 1, 300 do assert.same(expected[i], pq:get_nowait()) end
    assert.is_true(pq:empty())
  end)

  it("a priority queue put whose priority cannot be compared raises and changes nothing", function()
    local pq = aio.priority_queue()
    pq:put_nowait("a", 1)
    pq:put_nowait("b", 2)
    assert.has_error(function() pq:put_nowait({}, {}) end)
    assert.has_error(function() pq:put_nowait("s", "x") end)
    assert.equal(2, pq:size())
    assert.equal(2, pq.unfinished)
    assert.same({"a", "b"}, {pq:get_nowait(), pq:get_nowait()})
    assert.is_true(pq:empty())
  end)
end)
