-- spec/misuse_spec.lua — misuse raises at the user's call (lauxlib's rule), never inside the
-- library: each message starts with this file's name and the line of the call, whatever
-- helpers (Lua, or a C function a Lua facade wraps) found the mistake.
local helper = require "spec.helper"
local aio = require "aio"
local thread = require "aio.thread"
local process = require "aio.process"
local http = require "aio.http"
local rx = require "aio.rx"
local trace = require "aio.trace"

-- The error that fn raises, checked to be positioned at the line where fn is defined: fn is a
-- one-line function making the call. Returns the message without its position.
local function raised_here(fn)
  local info = debug.getinfo(fn, "S")
  local where = info.short_src .. ":" .. info.linedefined .. ": "
  local ok, err = pcall(fn)
  assert(not ok, "no error raised")
  assert(type(err) == "string" and err:sub(1, #where) == where,
    ("expected an error at %s got: %s"):format(where, tostring(err)))
  return err:sub(#where + 1)
end

describe("misuse raises at the caller's line", function()
  after_each(helper.assert_no_tasks)

  it("aio.semaphore, the queues, wait's return_when, run, timeout, group", function()
    assert.equal("semaphore value must be a non-negative integer", raised_here(function() aio.semaphore(-1) end))
    assert.equal("semaphore value must be a non-negative integer", raised_here(function() aio.semaphore(1.5) end))
    assert.equal("maxsize must be a non-negative integer", raised_here(function() aio.queue(-1) end))
    assert.equal("maxsize must be a non-negative integer", raised_here(function() aio.lifo_queue(-1) end))
    assert.equal("maxsize must be a non-negative integer", raised_here(function() aio.priority_queue("x") end))
    assert.matches("^return_when must be", raised_here(function() aio.wait({}, {return_when = "x"}) end))
    assert.equal("bad argument #1 to 'wait' (table expected, got nil)", raised_here(function() aio.wait() end))
    assert.equal("bad argument #1 to 'as_completed' (table expected, got nil)", raised_here(function() aio.as_completed() end))
    assert.equal("bad argument #1 to 'run' (function expected, got number)", raised_here(function() aio.run(5) end))
    assert.equal("bad argument #2 to 'timeout' (function expected, got nil)", raised_here(function() aio.timeout(1) end))
    assert.equal("bad argument #1 to 'group' (function expected, got nil)", raised_here(function() aio.group() end))
    local g
    aio.group(function(x) g = x end)
    assert.equal("group is closed", raised_here(function() g:spawn(print) end))
    aio.group(function(x) g = x
      assert.equal("bad argument #1 to 'spawn' (function expected, got number)", raised_here(function() g:spawn(5) end))
    end)
  end)

  it("releasing too often, by a call, a <close> or a condition, and waiting on a free condition", function()
    local sem, lock = aio.semaphore(1), aio.lock()
    assert.equal("semaphore released too many times", raised_here(function() sem:release() end))
    assert.equal("semaphore released too many times", raised_here(function() do local _ <close> = sem end end))
    assert.equal("lock is not acquired", raised_here(function() do local _ <close> = lock end end))
    local cond = aio.condition()
    assert.equal("lock is not acquired", raised_here(function() cond:release() end))
    assert.equal("lock is not acquired", raised_here(function() do local _ <close> = cond end end))
    assert.equal("cannot wait on an un-acquired condition", raised_here(function() cond:wait() end))
    assert.equal("cannot wait on an un-acquired condition", raised_here(function() cond:wait_for(function() end) end))
    assert.equal("bad argument #1 to 'with' (function expected, got number)", raised_here(function() sem:with(5) end))
    assert.equal("bad argument #1 to 'with' (function expected, got nil)", raised_here(function() lock:with() end))
    assert.is_false(sem:locked())   -- the permit was not taken
  end)

  it("thread channels: a closed channel, a value that cannot be sent, a timeout that is not a number", function()
    local ch = thread.channel(1)
    assert.matches("^cannot send value %(coroutine%)", raised_here(function() ch:send(coroutine.create(print)) end))
    assert.equal("bad argument #2 to 'send' (number expected, got table)", raised_here(function() ch:send(1, {}) end))
    assert.equal("bad argument #1 to 'recv' (number expected, got table)", raised_here(function() ch:recv({}) end))
    ch:close()
    assert.equal("send on a closed channel", raised_here(function() ch:send(1) end))
    assert.equal("send on a closed channel", raised_here(function() ch:send(1, 0.5) end))  -- bounded, in a task
  end)

  it("thread channels in a task: a closed channel with a timeout", helper.async(function()
    local ch = thread.channel(1)
    ch:close()
    assert.equal("send on a closed channel", raised_here(function() ch:send(1, 0.5) end))
  end))

  it("a thread.mutex locked twice, at top level and in a task; a NaN timeout", function()
    local m = thread.mutex()
    assert.equal("bad argument #1 to 'lock' (timeout is NaN)", raised_here(function() m:lock(0/0) end))
    m:lock()
    assert.equal("deadlock: this thread already holds the mutex", raised_here(function() m:lock() end))
    m:unlock()
    aio.run(function()
      m:lock()
      assert.equal("deadlock: this task already holds the mutex", raised_here(function() m:lock() end))
      m:unlock()
    end)
  end)

  it("thread pools: submit, run, map and imap_unordered on a closed pool, a job that is not a function", function()
    local p = thread.pool(1)
    assert.equal("bad argument #1 to 'submit' (function expected, got number)", raised_here(function() p:submit(5) end))
    assert.equal("bad argument #1 to 'map' (function expected, got number)", raised_here(function() p:map(5, {}) end))
    assert.equal("bad argument #2 to 'map' (table expected, got nil)", raised_here(function() p:map(print) end))
    p:close()
    local closed = "cannot submit to a closed thread pool"
    assert.equal(closed, raised_here(function() p:submit(print) end))
    assert.equal(closed, raised_here(function() p:run(print) end))
    assert.equal(closed, raised_here(function() p:map(print, {1}) end))
    assert.equal(closed, raised_here(function() for _ in p:imap_unordered(print, {1}) do end end))
    assert.equal(closed, raised_here(function() thread.run_in_executor(p, print) end))
    assert.matches("at most 256 workers", raised_here(function() thread.pool(300) end))
    assert.equal("bad argument #1 to 'to_thread' (function expected, got number)", raised_here(function() aio.to_thread(5) end))
  end)

  it("process locks taken twice, fork and spawn without a function, NaN timeouts, closed process pools", function()
    local l = process.lock()
    l:acquire()
    assert.equal("deadlock: this process already holds the lock", raised_here(function() l:acquire() end))
    l:release()
    assert.equal("bad argument #1 to 'acquire' (number expected, got string)", raised_here(function() l:acquire("x") end))
    assert.equal("bad argument #1 to 'acquire' (timeout is NaN)", raised_here(function() l:acquire(0/0) end))
    assert.equal("bad argument #1 to 'fork' (function expected, got number)", raised_here(function() process.fork(5) end))
    assert.equal("bad argument #1 to 'spawn' (target: function expected, got nil)", raised_here(function() process.spawn{} end))
    assert.equal("bad argument #1 to 'spawn' (table expected, got nil)", raised_here(function() process.spawn() end))
    local h = process.fork(function() end)
    assert.equal("bad argument #1 to 'join' (number expected, got table)", raised_here(function() h:join({}) end))
    assert.equal("bad argument #1 to 'join' (timeout is NaN)", raised_here(function() h:join(0/0) end))
    h:join()
    local p = process.pool(1)
    p:close()
    local closed = "cannot submit to a closed process pool"
    assert.equal(closed, raised_here(function() p:submit(print) end))
    assert.equal(closed, raised_here(function() p:apply(print) end))
    assert.equal(closed, raised_here(function() p:map(print, {1}) end))
    assert.matches("at most 256 workers", raised_here(function() process.pool(300) end))
  end)

  it("HTTP client and request options, by every way to make a request", function()
    local url, bad = "http://127.0.0.1:1/", {timeout = "x"}
    assert.matches("^http%.client: bad option 'max_connections'", raised_here(function() http.client{max_connections = "x"} end))
    local c = http.client()
    assert.matches("^http request: bad option 'timeout'", raised_here(function() http.get(url, bad) end))
    assert.matches("^http request: bad option 'timeout'", raised_here(function() http.post(url, "b", bad) end))
    assert.matches("^http request: bad option 'method'", raised_here(function() http.request{url = url, method = "G T"} end))
    assert.matches("^http request: bad option 'timeout'", raised_here(function() c:get(url, bad) end))
    assert.matches("^http request: bad option 'timeout'", raised_here(function() c:request{url = url, timeout = "x"} end))
    assert.matches("^http request: bad option 'timeout'", raised_here(function() c:start{url = url, timeout = "x"} end))
    c:close()
    assert.equal("http.serve: handler required", raised_here(function() http.serve{} end))
    assert.matches("^http%.serve: bad option 'max_body'", raised_here(function() http.serve{handler = print, max_body = "x"} end))
  end)

  it("rx.create and trace.start", function()
    assert.equal("rx.create expects a function", raised_here(function() rx.create(5) end))
    assert.equal("trace.start: file name required", raised_here(function() trace.start() end))
  end)
end)
