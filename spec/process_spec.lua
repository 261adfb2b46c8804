-- spec/process_spec.lua — process.fork, process pools (a worker killed mid-job fails only its
-- job), pipes with large payloads both ways at once, queues, shared memory under contention,
-- process.exec. Every child is joined or killed before its test ends.
local helper = require "spec.helper"
local aio = require "aio"
local process = require "aio.process"
local thread = require "aio.thread"
local async = helper.async

-- A pool shared by the tests that do not kill or retire its workers.
local pool = process.pool{size = 2}

describe("process.fork", function()
  it("runs a closure in a child that inherits the state (no serialization)", async(function()
    local big = {}
    for i = 1, 10000 do big[i] = i end
    local out = io.stdout  -- an open file: it could not cross the codec, but fork inherits it
    local h = process.fork(function(a)
      aio.sleep(0.001)  -- a fresh loop runs in the child
      return a + #big, io.type(out), process.current().name, process.getpid()
    end, 5)
    assert.is_number(h.pid)
    assert.matches("^Process%-%d+$", h.name)
    local sum, ftype, name, pid = h:join()
    assert.equal(10005, sum)
    assert.equal("file", ftype)
    assert.equal(h.name, name)
    assert.equal(h.pid, pid)
    assert.equal(0, h.exitcode)
    assert.is_false(h:is_alive())
  end))

  it("names processes (spawn) and reports the child's error with its traceback", async(function()
    local h = process.spawn{target = function(x) error("bad " .. x) end, args = {7}, name = "Test"}
    assert.equal("Test", h.name)
    local ok, err = pcall(h.join, h)
    assert.is_false(ok)
    assert.matches("bad 7", err)
    assert.matches("stack traceback %(Test pid %d+%)", err)
    assert.equal(1, h.exitcode)
  end))

  it("reports a killed child without hanging", async(function()
    local h = process.fork(function() while true do end end)
    aio.sleep(0.02)
    assert.is_true(h:kill("KILL"))
    local r, why = h:join()
    assert.is_nil(r)
    assert.matches("killed by signal 9", why)
    assert.equal(-9, h.exitcode)
  end))

  it("a child killed while writing its result ended without one", async(function()
    local started = process.value(0)
    local h = process.fork(function() local s = string.rep("y", 10e6) started:set(1) return s end)
    for _ = 1, 500 do if started:get() == 1 then break end os.execute("sleep 0.01") end
    os.execute("sleep 0.2")  -- the loop is held: the child's write fills the socket and blocks
    h:kill("KILL")
    local v, why = h:join()  -- (raised "aio codec: malformed message": half a result)
    assert.is_nil(v)
    assert.matches("ended without a result: killed by signal 9", why)
  end))

  it("a child's death is seen while a child it forked still runs", async(function()
    local release = process.value(0)
    local h = process.fork(function()
      process.fork(function()  -- waits until the parent has seen its parent die
        local t = require("aio.thread")
        for _ = 1, 1000 do if release:get() == 1 then break end t.sleep(0.01) end
      end)
      os.exit(3)
    end)
    local v, why = h:join(5)
    release:set(1)
    assert.is_nil(v)
    assert.matches("ended without a result: exit status 3", why)  -- (was "timeout")
  end))

  it("a script that fails leaves no child running", function()
    local out, _, status = helper.run_lua([[
      local aio, process = require "aio", require "aio.process"
      local h = process.fork(function() aio.sleep(10) end)
      print(h.pid)
      io.stdout:flush()
      error("the script fails")
    ]], {timeout = 20})
    assert.equal(1, status)
    local pid = assert(tonumber(out:match("%d+")))
    local alive = os.execute("kill -0 " .. pid .. " 2>/dev/null")
    if alive then os.execute("kill -9 " .. pid) end
    assert.is_falsy(alive)  -- (it ran on, orphaned, for 10 s)
  end)

  it("keeps the parent's and the child's timers apart", async(function()
    -- Both loops' timer heaps sit behind a kernel timer: a child that inherited (and re-armed)
    -- the parent's would make the parent wake at the child's deadline instead of its own.
    local t0 = aio.now()
    local nap = aio.spawn(aio.sleep, 0.05)
    aio.sleep(0)                   -- the parent's timer is armed for t0 + 0.05 before the fork
    local h = process.fork(function() aio.sleep(0.6) return "child" end)
    nap:await()
    local parent_slept = aio.now() - t0
    assert.is_true(parent_slept >= 0.05 and parent_slept < 0.4, "parent slept " .. parent_slept)
    assert.equal("child", h:join())
    assert.is_true(aio.now() - t0 >= 0.55)
  end))

  it("join with a timeout", async(function()
    local h = process.fork(function() aio.sleep(5) end)
    local r, why = h:join(0.05)
    assert.is_nil(r)
    assert.equal("timeout", why)
    h:kill()
    h:join()
    assert.equal(-15, h.exitcode)
  end))

  it("refuses to fork from a worker thread", async(function()
    local tp = thread.pool { size = 1 }
    local ok, err = pcall(tp.run, tp, function()
      return require("aio.process").fork(function() end)
    end)
    tp:close()
    assert.is_false(ok)
    assert.matches("fork only from the loop's thread", err)
  end))

  it("a thread pool of the parent says it cannot be used in the child", async(function()
    local tp = thread.pool { size = 1 }
    local h = process.fork(function()
      local ok, err = pcall(tp.submit, tp, function() end)
      return ok, err
    end)
    local ok, err = h:join()
    tp:close()
    assert.is_false(ok)
    assert.matches("belongs to the parent process", err)
  end))

  it("a process pool of the parent cannot be used or closed from the child", async(function()
    local h = process.fork(function()
      local sok, serr = pcall(pool.submit, pool, function() return 1 end)
      local ok, err = pcall(pool.close, pool)  -- the spec file's shared pool
      return ok, err, sok, serr
    end)
    local ok, err, sok, serr = h:join()
    assert.equal(0, h.exitcode)  -- (-6: libuv aborted closing a handle the child had closed)
    assert.is_false(ok)
    assert.matches("belongs to the parent process", err)
    assert.is_false(sok)
    assert.matches("belongs to the parent process", serr)
    assert.equal(2, pool:apply(function() return 2 end))
  end))

  -- A channel remembered the inbox of the loop that first waited on it: in a forked child the
  -- workers' notifications went to the parent's inbox (a copy nobody reads), and a wait on the
  -- loop never woke.
  it("a channel the parent waited on wakes the child's waits", async(function()
    local ch, tpool = thread.channel(), thread.pool(1)
    tpool:submit(function(ch) require("aio.thread").sleep(0.02); ch:send("parent") end, ch)
    assert.equal("parent", aio.wait_for(function() return ch:recv() end, 2))
    local h = process.fork(function()
      local p = require("aio.thread").pool(1)
      p:submit(function(ch) require("aio.thread").sleep(0.02); ch:send("child") end, ch)
      local ok, v = pcall(aio.wait_for, function() return ch:recv() end, 2)
      p:close()
      return ok and v or tostring(v)
    end)
    assert.equal("child", h:join())
    tpool:close()
  end))

  -- The child's copy of the channel held the parent's parked waiters: the child's send served
  -- one, handing its message to the parent's task and running that task in the child.
  it("a channel's waiters parked by the parent are not served in the child", async(function()
    local ch, ran = thread.channel(), process.value(0)
    local waiting = aio.spawn(function()
      local v = ch:recv()
      ran:add(1)
      return v
    end)
    aio.sleep(0)
    local h = process.fork(function()
      ch:send("child's")
      return ch:recv(0)
    end)
    assert.equal("child's", h:join())
    assert.equal(0, ran:get())
    ch:send("parent's")
    assert.equal("parent's", waiting:await())
    assert.equal(1, ran:get())
  end))

  it("the child does not run the parent's tasks", async(function()
    local ran = process.value(0)
    local t = aio.spawn(function() aio.sleep(0.05); ran:add(1) end)
    local h = process.fork(function() aio.sleep(0.1) return "done" end)
    assert.equal("done", h:join())
    t:await()
    assert.equal(1, ran:get())  -- only the parent's copy of the task ran
  end))
end)

describe("process pool", function()
  it("runs jobs in worker processes and maps in order", async(function()
    local x, name, pid = pool:submit(function(v)
      local p = require "aio.process"
      return v * 2, p.current().name, p.getpid()
    end, 21):await()
    assert.equal(42, x)
    assert.matches("^ForkPoolWorker%-%d+$", name)
    assert.equal("ForkPoolWorker", pool:name())  -- the default name, as its workers show
    assert.are_not.equal(process.getpid(), pid)
    local list = {}
    for i = 1, 100 do list[i] = i end
    local r = pool:map(function(v) return v * v end, list)
    for i = 1, 100 do assert.equal(i * i, r[i]) end
    local seen = {}
    for v in pool:imap_unordered(function(v) return -v end, {1, 2, 3}) do seen[#seen + 1] = v end
    table.sort(seen)
    assert.same({-3, -2, -1}, seen)
    -- streamed: a quick result comes before the slow one is done
    local order = {}
    for v in pool:imap_unordered(function(d) require("aio.thread").sleep(d) return d end,
                                 {0.3, 0.01, 0.02, 0.03}) do
      order[#order + 1] = v
    end
    assert.are_not.equal(0.3, order[1])  -- (a job sent behind the slow one waits for it)
    assert.equal(4, #order)
    -- with prefetch = 1 nothing waits behind the slow job
    local p1 = process.pool { size = 2, prefetch = 1 }
    order = {}
    for v in p1:imap_unordered(function(d) require("aio.thread").sleep(d) return d end,
                               {0.3, 0.01, 0.02, 0.03}) do
      order[#order + 1] = v
    end
    p1:close()
    assert.equal(0.3, order[4])
  end))

  it("a worker killed mid-job fails only that job and is replaced", async(function()
    local p = process.pool{size = 2}
    local victim_pid = process.value(0)
    local victim = p:submit(function(v)
      v:set(require("aio.process").getpid())
      while true do end
    end, victim_pid)
    while victim_pid:get() == 0 do aio.sleep(0.005) end
    local others = {}
    for i = 1, 6 do others[i] = p:submit(function(i) return i end, i) end
    os.execute("kill -9 " .. victim_pid:get())
    local ok, err = pcall(victim.await, victim)
    assert.is_false(ok)
    assert.matches("died while running this job: killed by signal 9", err)
    for i = 1, 6 do assert.equal(i, others[i]:await()) end
    assert.equal("still works", p:submit(function() return "still works" end):await())
    local now = p:pids()
    assert.equal(2, #now)
    for _, pid in ipairs(now) do assert.are_not.equal(victim_pid:get(), pid) end
    p:close()
  end))

  it("replaces workers after maxtasksperchild jobs", async(function()
    local p = process.pool{size = 1, maxtasksperchild = 2}
    local pids = {}
    for i = 1, 6 do
      pids[i] = p:submit(function() return require("aio.process").getpid() end):await()
    end
    assert.equal(pids[1], pids[2])
    assert.are_not.equal(pids[2], pids[3])
    assert.equal(pids[3], pids[4])
    assert.are_not.equal(pids[4], pids[5])
    p:close()
  end))

  it("cancels queued and running jobs", async(function()
    local p = process.pool{size = 1}
    local running = p:submit(function() while true do end end)
    local queued = p:submit(function() return "never" end)
    aio.sleep(0.02)
    assert.is_true(queued:cancel())
    assert.is_true(running:cancel())
    assert.is_true(running:cancelled())
    assert.equal("next", p:submit(function() return "next" end):await())
    p:close()
  end))

  it("returns errors with the worker's traceback", async(function()
    local ok, err = pcall(pool.apply, pool, function() error("worker failed") end)
    assert.is_false(ok)
    assert.matches("worker failed", err)
    assert.matches("stack traceback %(ForkPoolWorker%-%d+ pid %d+%)", err)
  end))

  it("refuses thread-only objects and names them", function()
    local ok, err = pcall(pool.submit, pool, function() end, {cell = thread.shared(1)})
    assert.is_false(ok)
    assert.matches("^cannot send args%[1%]%.cell %(userdata: aio.thread.shared%)", err)
  end)

  it("says why a pipe made after the pool cannot reach its workers", async(function()
    local a = process.pipe()
    local ok, err = pcall(pool.apply, pool, function(e) return e end, a)
    assert.is_false(ok)
    assert.matches("make pipes before forking", err)
  end))

  it("closes after the queued jobs ran; terminate kills", async(function()
    local p = process.pool{size = 1}
    local f = p:submit(function() require("aio.thread").sleep(0.05) return 1 end)
    local g = p:submit(function() return 2 end)
    p:close()
    assert.equal(1, f:result())
    assert.equal(2, g:result())
    local q = process.pool{size = 1}
    local h = q:submit(function() while true do end end)
    q:terminate()
    assert.is_true(h:cancelled())
  end))
end)

-- Only while the REPL edits lines (spec/repl_spec.lua) does a worker's print travel to the
-- parent; in a plain script each process writes its own output, as it always did.
describe("console output of workers in a plain script", function()
  it("is written by the workers themselves: the same bytes, in the same order around the parent's", function()
    local out, err, status = helper.run_lua([[
      local process = require "aio.process"
      local pool = process.pool(1)
      print("parent before")
      print(pool:submit(function()
        print("job print", 1)
        io.write("job write ", 2, "\n")
        io.stdout:write("job stdout:write\n")
        io.stderr:write("job stderr\n")
        print("job print", 3)
        return "result"
      end):await())
      print("parent between")
      local h = process.fork(function() print("child print") io.stderr:write("child stderr\n") return 1 end)
      print(h:join())
      io.write("parent after\n")
      pool:close()
    ]])
    assert.equal(0, status)
    assert.equal("parent before\njob print\t1\njob write 2\njob stdout:write\njob print\t3\nresult\n"
      .. "parent between\nchild print\n1\nparent after\n", out)
    assert.equal("job stderr\nchild stderr\n", err)
  end)
end)

describe("process pool: crashes, cancels, close and collection", function()
  -- The socket inodes open in process pid ({["socket:[123]"] = true, ...}).
  local function sockets(pid)
    local set, n = {}, 0
    local ls = io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null")
    for l in ls:lines() do
      local s = l:match("(socket:%[%d+%])")
      if s then set[s] = true; n = n + 1 end
    end
    ls:close()
    return set, n
  end

  it("close runs the queued jobs even when the last worker crashes", async(function()
    local p = process.pool{size = 1}
    local crash = p:submit(function() os.exit(3) end)
    local after = p:submit(function() return "two" end)
    local closer = aio.spawn(function() p:close() return "closed" end)
    local done = aio.wait({closer}, {timeout = 10})
    if not done[closer] then p:terminate() end
    assert.is_truthy(done[closer])  -- (hung: a closing pool did not replace the worker)
    local ok, err = pcall(crash.await, crash)
    assert.is_false(ok)
    assert.matches("died while running this job: exit status 3", err)
    assert.equal("two", after:await())
  end))

  it("a job sent to a worker that just died idle runs on its replacement", async(function()
    local p = process.pool{size = 1}
    local getpid = function() return require("aio.process").getpid() end
    local victim = p:apply(getpid)  -- a worker past its init (one dying in init fails the job)
    for _ = 1, 3 do
      os.execute("kill -9 " .. victim)  -- the parent has not noticed yet when the job is sent
      local pid = p:apply(getpid)  -- (failed: "died while running this job")
      assert.are_not.equal(victim, pid)
      victim = pid
    end
    p:close()
  end))

  it("a worker that dies in init fails the job instead of being replaced forever", async(function()
    local p = process.pool{size = 1, init = function() os.exit(5) end}
    local ok, err = pcall(p.apply, p, function() return 1 end)
    assert.is_false(ok)
    assert.matches("died while running this job: exit status 5", err)
    p:terminate()
  end))

  it("cancelling a job already answered does not fail the next one", async(function()
    local p = process.pool{size = 1}
    local started, go = process.value(0), process.value(0)
    local first = p:submit(function() return 1 end)
    local second = p:submit(function(started, go)
      started:add(1)
      local t = require("aio.thread")
      for _ = 1, 2000 do if go:get() == 1 then break end t.sleep(0.005) end
      return "two"
    end, started, go)
    -- The loop is held (no aio call), so the first answer stays unread while the second runs.
    for _ = 1, 500 do if started:get() > 0 then break end os.execute("sleep 0.01") end
    assert.equal(1, started:get())
    assert.is_true(first:cancel())  -- kills the worker, which is running the second job
    go:set(1)
    assert.equal("two", second:await())  -- run again on the replacement, not failed
    p:close()
  end))

  it("a cancelled job sent to a busy worker never runs; the worker stays", async(function()
    local p = process.pool{size = 1, prefetch = 2}
    local go, ran = process.value(0), process.value(0)
    local first = p:submit(function(go)
      local t = require("aio.thread")
      for _ = 1, 2000 do if go:get() == 1 then break end t.sleep(0.005) end
      return require("aio.process").getpid()
    end, go)
    local second = p:submit(function(ran) ran:add(1) end, ran)  -- waits in the worker's pipe
    assert.equal(2, p:stats().sent)  -- both are in the worker's hands
    assert.is_true(second:cancel())
    go:set(1)
    local pid = first:await()
    assert.equal(pid, p:apply(function() return require("aio.process").getpid() end))
    assert.equal(0, ran:get())  -- (it ran after all: the cancel reached only the parent)
    p:close()
  end))

  it("a replacement worker holds no pipe made after its pool", async(function()
    local p = process.pool{size = 1}
    local a, b = process.pipe()
    local h = process.fork(function() a:close() return b:recv() end)
    b:close()
    local victim = p:pids()[1]
    os.execute("kill -9 " .. victim)  -- the replacement is forked after the pipe was made
    for _ = 1, 1000 do if p:pids()[1] ~= victim then break end aio.sleep(0.01) end
    assert.equal(1, p:apply(function() return 1 end))
    local ok, err = pcall(p.apply, p, function(e) return e end, a)
    assert.is_false(ok)  -- refused like the first worker would, not half-usable
    assert.matches("make pipes before forking", err)
    a:close()
    local v, why = h:join(5)
    if h:is_alive() then h:kill("KILL"); h:join() end
    assert.is_nil(v)
    assert.equal("closed", why)  -- (was "timeout": the replacement held a copy of `a`)
    p:close()
  end))

  -- Runs a script in which a task iterating `call` (map or imap_unordered over four half-second
  -- jobs) is cancelled once two jobs started; it must end quietly with no job finished.
  local function cancel_in_iteration(call)
    local out, err, status = helper.run_lua([[
      local aio, process = require "aio", require "aio.process"
      aio.run(function()
        local p = process.pool{size = 2}
        local started, finished = process.value(0), process.value(0)
        local items = {}
        for i = 1, 4 do items[i] = {started, finished} end
        local function job(item)
          item[1]:add(1)
          require("aio.thread").sleep(0.5)
          item[2]:add(1)
          return true
        end
        local t = aio.spawn(function() ]] .. call .. [[ end)
        for _ = 1, 500 do if started:get() >= 2 then break end aio.sleep(0.01) end
        t:cancel()
        print(pcall(t.await, t))
        p:close()  -- waits for whatever still runs
        print("finished", finished:get())
      end)
    ]], {timeout = 20})
    assert.equal(0, status, err)
    assert.equal("false\tcancelled\nfinished\t0\n", out)  -- (the jobs ran on)
    assert.equal("", err)  -- (printed "future is already done" from the cleanup)
  end

  it("cancelling a task in pool:map stops its jobs quietly", function()
    cancel_in_iteration("return p:map(job, items, {chunksize = 1})")
  end)

  it("cancelling a task in imap_unordered stops its jobs quietly", function()
    cancel_in_iteration("for _ in p:imap_unordered(job, items) do end")
  end)

  it("a worker's crash is seen while a child it forked still runs", async(function()
    local p = process.pool{size = 1}
    local release = process.value(0)
    local f = p:submit(function(release)
      require("aio.process").fork(function()  -- waits until the parent has seen the crash
        local t = require("aio.thread")
        for _ = 1, 1000 do if release:get() == 1 then break end t.sleep(0.01) end
      end)
      os.exit(7)
    end, release)
    local done = aio.wait({f}, {timeout = 5})
    release:set(1)
    assert.is_truthy(done[f])  -- (the child's copy of the worker's stream hid the crash)
    local ok, err = pcall(f.await, f)
    assert.is_false(ok)
    assert.matches("died while running this job: exit status 7", err)
    p:close()
  end))

  it("a worker does not hold another pool's streams open", async(function()
    local before = sockets(process.getpid())
    local a = process.pool{size = 1}
    local now = sockets(process.getpid())
    local a_end
    for s in pairs(now) do if not before[s] then a_end = s end end
    assert.is_string(a_end)  -- the parent's end of a's worker stream
    local b = process.pool{size = 1}
    local inherited = b:apply(function(s)
      local ls = io.popen("ls -l /proc/" .. require("aio.process").getpid() .. "/fd")
      local found = ls:read("a"):find(s, 1, true) ~= nil
      ls:close()
      return found
    end, a_end)
    assert.is_false(inherited)  -- (a copy here kept a's worker alive after a:close())
    a:close()
    b:close()
  end))

  it("a worker does not keep the parent's server socket open", async(function()
    local http = require "aio.http"
    local srv = http.serve{host = "127.0.0.1", port = 0, handler = function() return "a" end}
    local port = srv:port()
    local p = process.pool{size = 1}
    assert.equal(1, p:apply(function() return 1 end))
    srv:close()
    local ok, again = pcall(http.serve, {host = "127.0.0.1", port = port,
                                         handler = function() return "b" end})
    p:close()
    assert.is_true(ok, again)  -- (address already in use: the worker held the listening socket)
    again:close()
  end))

  it("a collected pool closes its workers' streams", async(function()
    local _, before = sockets(process.getpid())
    for _ = 1, 4 do
      local p = process.pool{size = 2}
      p:apply(function() return 1 end)
      p = nil  -- luacheck: ignore
      collectgarbage()
      collectgarbage()
      aio.sleep(0.01)  -- the close callbacks
    end
    local _, after = sockets(process.getpid())
    assert.is_true(after - before <= 2, ("%d sockets left open"):format(after - before))
  end))
end)

describe("process.pipe", function()
  it("moves large payloads both ways at once without deadlock", async(function()
    local a, b = process.pipe()
    local payload = string.rep("x", 4 * 1024 * 1024)
    local h = process.fork(function()
      b:send({from = "child", data = payload})  -- sends before it receives
      local got = b:recv()
      return #got.data, got.from
    end)
    a:send({from = "parent", data = payload})    -- so does the parent
    local got = a:recv()
    assert.equal("child", got.from)
    assert.equal(#payload, #got.data)
    local n, from = h:join()
    assert.equal(#payload, n)
    assert.equal("parent", from)
  end))

  it("a message sent just before close is still delivered", async(function()
    local a, b = process.pipe()
    local h = process.fork(function()
      a:close()
      local v, why = b:recv()
      return v and #v or why
    end)
    b:close()
    a:send(string.rep("z", 4e6))  -- more than the socket takes at once: the rest is queued
    a:close()
    local n = h:join(20)
    if h:is_alive() then h:kill("KILL"); h:join() end
    assert.equal(4e6, n)  -- (was "closed": close cancelled the queued rest)
  end))

  it("a pool job's large send is delivered after the job returns", async(function()
    local a, b = process.pipe()
    local p = process.pool{size = 1}
    local f = p:submit(function(e) e:send(string.rep("w", 4e6)) return "sent" end, b)
    assert.equal("sent", f:await())  -- the parent reads the pipe only after the answer
    local r = aio.spawn(function() return a:recv() end)
    local done = aio.wait({r}, {timeout = 10})
    if not done[r] then r:cancel() end
    p:terminate()
    assert.is_truthy(done[r])  -- (the queued rest was never written: the worker ran no loop)
    assert.equal(4e6, #r:await())
  end))

  it("a receive cancelled by a timeout does not keep the program alive", function()
    local out, err, status = helper.run_lua([[
      local aio, process = require "aio", require "aio.process"
      aio.run(function()
        local a, b = process.pipe()
        local q = process.queue()
        local r = aio.spawn(function() return a:recv() end)
        local g = aio.spawn(function() return q:get() end)
        aio.wait({r, g}, {timeout = 0.05})
        r:cancel()
        g:cancel()
        b:send("later")
        q:put("later")
        aio.sleep(0.05)
        print(a:recv(), q:get())  -- nothing was consumed for the cancelled waiters
        r = aio.spawn(function() return a:recv() end)
        g = aio.spawn(function() return q:get() end)
        aio.sleep(0.01)
        r:cancel()  -- the last word: nothing else would stop the reading and the polling
        g:cancel()
      end)
      print("end")
    ]], {timeout = 10})
    assert.equal(0, status, err)  -- (124: the cancelled waiters kept the loop alive)
    assert.equal("later\tlater\nend\n", out)
  end)

  -- A recv (or a queue's get) that cannot wait, across a C-call boundary, raised but left its
  -- waiter registered: the orphan took the next message, and kept the program from ending.
  it("a receive that cannot wait leaves no waiter behind", function()
    local out, err, status = helper.run_lua([[
      local aio, process = require "aio", require "aio.process"
      aio.run(function()
        local a, b = process.pipe()
        local q = process.queue()
        print(pcall(string.gsub, "a", "a", function() return a:recv() end))
        print(pcall(string.gsub, "a", "a", function() return q:get() end))
        b:send("kept")
        q:put("kept")
        print(aio.wait_for(function() return a:recv() end, 1),
              aio.wait_for(function() return q:get() end, 1))
      end)
      print("end")
    ]], {timeout = 10})
    assert.equal(0, status, err)
    assert.matches("^false\t.-cannot await here.-\nfalse\t.-cannot await here.-\nkept\tkept\nend\n$", out)
  end)

  it("keeps message boundaries and reports a closed peer", async(function()
    local a, b = process.pipe()
    local h = process.fork(function()
      for i = 1, 100 do b:send(i) end
      b:close()
    end)
    b:close()  -- the parent's copy of the child's end, or the peer never looks closed
    local sum = 0
    while true do
      local v, why = a:recv()
      if v == nil then assert.equal("closed", why) break end
      sum = sum + v
    end
    assert.equal(5050, sum)
    h:join()
  end))
  -- Two frames arrive in one read and serve two receivers; the first, when it runs, cancels the
  -- second, which was served but has not run: the give-back rule.
  it("a recv served then cancelled before it ran gives its frame back, to the next receiver", async(function()
    local a, b = process.pipe()
    local r2, r3
    local r1 = aio.spawn(function() local v = b:recv(); r2:cancel(); return v end)
    r2 = aio.spawn(function() return b:recv() end)
    r3 = aio.spawn(function() return b:recv() end)
    aio.sleep(0)
    a:send("m1"); a:send("m2")
    assert.equal("m1", r1:await())
    local ok, err = pcall(r2.await, r2)
    assert.is_false(ok)
    assert.is_true(aio.is_cancelled(err))
    assert.equal("m2", aio.wait_for(r3, 5))   -- the frame went on to r3
    a:send("m3")
    assert.equal("m3", aio.wait_for(function() return b:recv() end, 5))
  end))

  -- Each give-back used to put its frame in front of all the others: m3 came out before m2.
  it("frames given back by several receivers keep the order they were sent in", async(function()
    local a, b = process.pipe()
    local rs = {}
    rs[1] = aio.spawn(function() local v = b:recv(); rs[3]:cancel(); rs[2]:cancel(); return v end)
    for i = 2, 3 do rs[i] = aio.spawn(function() return b:recv() end) end
    aio.sleep(0)
    a:send("m1"); a:send("m2"); a:send("m3"); a:send("m4")
    assert.equal("m1", rs[1]:await())
    for i = 2, 3 do assert.is_false(pcall(rs[i].await, rs[i])) end
    local got = {}
    for i = 1, 3 do got[i] = aio.wait_for(function() return b:recv() end, 5) end
    assert.same({"m2", "m3", "m4"}, got)
  end))

  -- The end of input was handed to a receiver while an earlier one still held the last frame;
  -- that one, cancelled before it ran, gave the frame back behind a "closed" already handed out.
  it("a receiver waits for a frame held by a cancelled receiver before it is told 'closed'", async(function()
    local a, b = process.pipe()
    local rs = {}
    rs[1] = aio.spawn(function() local v = b:recv(); rs[2]:cancel(); return v end)
    rs[2] = aio.spawn(function() return b:recv() end)
    rs[3] = aio.spawn(function() return b:recv() end)
    aio.sleep(0)
    a:send("m1"); a:send("last"); a:close()   -- frames and the end of input in one read
    assert.equal("m1", rs[1]:await())
    assert.is_false(pcall(rs[2].await, rs[2]))
    assert.equal("last", aio.wait_for(rs[3], 5))
    assert.same({nil, "closed"}, {aio.wait_for(function() return b:recv() end, 5)})
  end))

  it("a frame given back with nobody waiting is the next recv's, ahead of later ones", async(function()
    local a, b = process.pipe()
    local r2
    local r1 = aio.spawn(function() local v = b:recv(); r2:cancel(); return v end)
    r2 = aio.spawn(function() return b:recv() end)
    aio.sleep(0)
    a:send("m1"); a:send("m2"); a:send("m3")
    assert.equal("m1", r1:await())
    assert.is_false(pcall(r2.await, r2))
    assert.equal("m2", aio.wait_for(function() return b:recv() end, 5))
    assert.equal("m3", aio.wait_for(function() return b:recv() end, 5))
  end))

  it("receivers cancelled at random while a child sends lose and duplicate nothing", async(function()
    local a, b = process.pipe()
    local n = 300
    local h = process.fork(function()
      for i = 1, n do b:send(i) end
      b:close()
    end)
    b:close()
    local seen, got, closed, round = {}, 0, false, 0
    while not closed do
      round = round + 1
      local rs = {}
      for i = 1, 3 do
        rs[i] = aio.spawn(function()
          local v = a:recv()
          if v ~= nil then assert.is_nil(seen[v]); seen[v] = true; got = got + 1 end
          if i == 1 and rs[3] then rs[3]:cancel() end  -- r3 may have been served already
          return v
        end)
      end
      aio.sleep(0)
      if round % 2 == 0 then rs[2]:cancel() end
      for i = 1, 3 do
        local ok, v = pcall(aio.wait_for, rs[i], 10)
        if ok and v == nil then closed = true end
      end
    end
    h:join()
    assert.equal(n, got)
  end))

end)

describe("process.queue", function()
  -- A message read from the shared socket cannot go back to its front (another process may
  -- read next): a get served then cancelled before it ran keeps the rule from before the
  -- give-back rule, returning its message, with the cancellation at its next await.
  it("a get served then cancelled before it ran returns its message, cancelled at its next await", async(function()
    local q = process.queue()
    local g2
    local g1 = aio.spawn(function() local v = q:get(); g2:cancel(); return v end)
    g2 = aio.spawn(function() local v = q:get(); return v, select(2, pcall(aio.sleep, 0)) end)
    aio.sleep(0)
    q:put("m1"); q:put("m2")
    assert.equal("m1", g1:await())
    local v, err = g2:await()
    assert.equal("m2", v)
    assert.is_true(aio.is_cancelled(err))
  end))

  it("many producers and consumers, with a sentinel each", async(function()
    local q, results = process.queue(), process.queue()
    local producers, consumers = {}, {}
    for c = 1, 2 do
      consumers[c] = process.fork(function()
        local sum = 0
        while true do
          local v = q:get()
          if v == -1 then break end
          sum = sum + v
        end
        results:put(sum)
      end)
    end
    for p = 1, 3 do
      producers[p] = process.fork(function() for i = 1, 100 do q:put(i) end end)
    end
    for _, h in ipairs(producers) do h:join() end
    q:put(-1)
    q:put(-1)
    local total = results:get() + results:get()
    for _, h in ipairs(consumers) do h:join() end
    assert.equal(3 * 5050, total)
    assert.is_nil((q:get_nowait()))
  end))

  it("refuses messages too large for one datagram", function()
    local q = process.queue()
    local ok, err = pcall(q.put, q, string.rep("z", 8 * 1024 * 1024))
    assert.is_false(ok)
    assert.matches("message too large", err)
  end)
end)

describe("shared memory", function()
  it("value:add is exact under contention; get/set races", async(function()
    local atomic, racy = process.value(0), process.value(0)
    local hs = {}
    for i = 1, 4 do
      hs[i] = process.fork(function()
        for _ = 1, 20000 do
          atomic:add(1)
          racy.value = racy.value + 1
        end
      end)
    end
    for _, h in ipairs(hs) do h:join() end
    assert.equal(80000, atomic:get())
    assert.is_true(racy:get() <= 80000)
  end))

  it("arrays, floats and cas", function()
    local a = process.array({1.5, 2.5})
    assert.equal(4.0, a:add(2, 1.5))
    a[1] = 3
    assert.same({3.0, 4.0}, a:totable())
    assert.equal(2, #a)
    local v = process.value(1)
    assert.is_false(v:cas(2, 3))
    assert.is_true(v:cas(1, 3))
    assert.equal(3, v.value)
  end)

  it("a lock makes read-modify-write exact; a dead holder's lock is taken over", async(function()
    local l, v = process.lock(), process.value(0)
    local hs = {}
    for i = 1, 3 do
      hs[i] = process.fork(function()
        for _ = 1, 300 do
          local _ <close> = l:acquire()
          v.value = v.value + 1
        end
      end)
    end
    for _, h in ipairs(hs) do h:join() end
    assert.equal(900, v:get())
    local h = process.fork(function() l:acquire(); while true do end end)
    aio.sleep(0.05)
    assert.equal(h.pid, l:owner())
    assert.is_nil((l:acquire(0.02)))
    h:kill("KILL")
    h:join()
    assert.equal(l, l:acquire(1))
    l:release()
  end))

  it("semaphore bounds concurrency across processes", async(function()
    local sem, inside, peak = process.semaphore(2), process.value(0), process.value(0)
    local hs = {}
    for i = 1, 4 do
      hs[i] = process.fork(function()
        local _ <close> = sem:acquire()
        local n = inside:add(1)
        local p = peak:get()
        while n > p and not peak:cas(p, n) do p = peak:get() end
        aio.sleep(0.02)
        inside:add(-1)
      end)
    end
    for _, h in ipairs(hs) do h:join() end
    assert.is_true(peak:get() <= 2)
    assert.equal(2, sem:value())
  end))

  it("dict is shared without a manager process", async(function()
    local d = process.dict{slots = 64, slot_size = 128}
    local hs = {}
    for i = 1, 3 do
      hs[i] = process.fork(function()
        d:set("k" .. i, {i = i})
        for _ = 1, 100 do d:incr("hits", 1, 0) end
      end)
    end
    for _, h in ipairs(hs) do h:join() end
    assert.equal(300, d:get("hits"))
    assert.equal(2, d:get("k2").i)
    assert.equal(4, #d)
    assert.is_false((d:add("k1", 0)))
    d:delete("k1")
    assert.is_nil(d:get("k1"))
    local ok, err = pcall(d.set, d, "big", string.rep("b", 500))
    assert.is_false(ok)
    assert.matches("larger slot_size", err)
    local keys = d:keys()
    table.sort(keys)
    assert.same({"hits", "k2", "k3"}, keys)
  end))
end)

describe("process.exec", function()
  it("collects output and the exit status", async(function()
    local r = process.exec{"sh", "-c", "cat; echo oops >&2; exit 3", stdin = "in\n"}
    assert.equal(3, r.status)
    assert.is_false(r.ok)
    assert.equal("in\n", r.stdout)
    assert.equal("oops\n", r.stderr)
  end))

  it("streams output and reports programs that cannot start", async(function()
    local chunks = {}
    local r = process.exec{"printf", "a\\nb\\n", on_stdout = function(s) chunks[#chunks + 1] = s end}
    assert.is_true(r.ok)
    assert.equal("a\nb\n", table.concat(chunks))
    local none, err = process.exec{"no-such-program-here"}
    assert.is_nil(none)
    assert.matches("no such file", err)
  end))

  it("passes cwd and env", async(function()
    local r = process.exec { "sh", "-c", "pwd; echo $GREETING", cwd = "/tmp", env = { GREETING = "hi" } }
    assert.equal("/tmp\nhi\n", r.stdout)
  end))

  it("does not block the loop", async(function()
    local ticks = 0
    local t = aio.spawn(function() for _ = 1, 5 do aio.sleep(0.01); ticks = ticks + 1 end end)
    local r = process.exec{"sleep", "0.1"}
    assert.is_true(r.ok)
    t:await()
    assert.equal(5, ticks)
  end))
end)

describe("process pool: failures nobody observed", function()
  it("reports a failed job (an error, a worker that died) whose error nobody observed", function()
    local _, err, status = helper.run_lua([[
      local aio = require "aio"
      local process = require "aio.process"
      local pool = process.pool { size = 1 }
      pool:submit(function() error("nobody awaits me") end)
      pool:submit(function() os.exit(4) end)
      aio.sleep(0.3)
      pool:close()
    ]], { timeout = 30 })
    assert.are.equal(1, status, err)  -- as for a failed task nobody observed
    assert.matches("a process pool job failed and nobody observed its error\n[^\n]*nobody awaits me", err)
    assert.matches("a process pool job failed and nobody observed its error\n[^\n]*died while running this job: exit status 4", err)
  end)
end)
