-- aio.thread — thread pools of dedicated OS threads, each with its own Lua state, and the
-- objects they share (cells, mutexes, channels). The mechanism is in C (aio.thread_c:
-- src/thread.c, src/shared.c, src/channel.c; values cross with src/codec.c); this facade adds
-- map, close and the default pool behind aio.to_thread. See docs/thread.md.
local c = require "aio.thread_c"
local core = require "aio.core"
local argcheck = require "aio.argcheck"

local M = {
  shared = c.shared,       -- thread.shared(v) -> cell with :get/:set/:add/:cas/:update
  mutex = c.mutex,         -- thread.mutex() -> mutex with :lock([timeout])/:try_lock/:unlock
  channel = c.channel,     -- thread.channel([capacity]) -> channel with :send/:recv/:close
  sleep = c.sleep,         -- thread.sleep(s): blocks this OS thread (cancellable in a job)
  cancelled = c.cancelled, -- thread.cancelled() -> true when the running job was cancelled
  cores = c.cores,         -- thread.cores() -> CPUs available
}

-- thread.current() -> name, index of the worker running this code ("main", 0 on the loop).
M.current = c.current

local methods = c.pool_methods
local unpack, select, type = table.unpack, select, type

-- Misuse raises at the user's call. A C function wrapped here is called under pcall: its error
-- then carries no position (its caller, pcall, is a C function) and the wrapper raises it again
-- with error(e, level) (values that are not strings, cancellations among them, pass as they
-- are). A helper that raises takes `level`: where the error goes, counted as error() counts it
-- in the helper's caller (so a helper passes level + 1 to the helpers it calls).

-- Tracks submitted jobs so the REPL's :tasks (and anyone) can list them with the tasks:
-- returns wrap(methods), which makes methods.submit record each job, and jobs() -> the
-- unfinished ones as records {id, name (the pool's), state, age, waiting_on, site}. Weak keys: a
-- finished job's future is forgotten with it. Shared by thread and process pools.
function M.job_tracker(prefix, where)
  local live, next_id, now = setmetatable({}, {__mode = "k"}), 0, core.now
  local function wrap(pool_methods)
    local c_submit, name = pool_methods.submit, pool_methods.name
    -- pool:_submit_at(level, fn, ...): submit, raising misuse (a closed pool) at `level`.
    local function submit_at(self, level, fn, ...)
      argcheck.type(fn, "function", 1, "submit", level + 1)
      local ok, f = pcall(c_submit, self, fn, ...)
      if not ok then error(f, level + 1) end
      next_id = next_id + 1
      live[f] = {next_id, now(), name(self)}
      return f
    end
    pool_methods._submit_at = submit_at
    pool_methods.submit = function(self, fn, ...) return (submit_at(self, 2, fn, ...)) end
  end
  local function jobs()
    local list, t = {}, now()
    for f, r in pairs(live) do
      if not f:done() then
        list[#list + 1] = {id = prefix .. r[1], seq = r[1], name = r[3], state = "pending",
                           age = t - r[2], waiting_on = where, site = "", future = f}
      end
    end
    table.sort(list, function(a, b) return a.seq < b.seq end)
    return list
  end
  return wrap, jobs
end

do
  local wrap, jobs = M.job_tracker("T", "a worker thread")
  wrap(methods)
  M.jobs = jobs  -- thread.jobs() -> the unfinished jobs of every thread pool
end

-- thread.pool{size=, init=, name=} (or thread.pool(n)) -> pool of `size` workers (default: the
-- core count), each with its own Lua state in which init() runs once.
function M.pool(opts)
  opts = M.pool_options(opts)
  local ok, pool = pcall(c.pool, opts.size, opts.init, opts.name)
  if not ok then error(pool, 2) end
  return pool
end

-- The options of a pool constructor: a table, a size, or nil (shared with process pools).
function M.pool_options(opts)
  if type(opts) == "number" then return {size = opts} end
  return opts or {}
end

-- The worker side of a chunked map: applies fn to each item of a chunk.
local function apply_chunk(fn, chunk)
  local out = {n = chunk.n}
  for i = 1, chunk.n do out[i] = fn(chunk[i]) end
  return out
end

-- Settles the wake-up future of a waiting map/imap, if any and still pending (cancelling the
-- waiter cancels it too, and the jobs' callbacks still come).
local function wake_up(w)
  if w and not w:done() then w:set_result() end
end

-- Checks a map option that counts (chunksize, limit): 0 or less would never finish (no job in
-- flight, or chunks that take nothing from the list), so it raises (at `level`).
local function check_count(v, what, level)
  local n = math.tointeger(v)
  if not n or n < 1 then error(what .. " must be a whole number of at least 1", level + 1) end
  return n
end

-- The bounded map behind pool:map, shared with process pools (it needs :_submit_at and :size):
-- raises misuse at `level`.
local function map(self, level, fn, list, opts)
  argcheck.type(fn, "function", 1, "map", level + 1)
  argcheck.type(list, "table", 2, "map", level + 1)
  opts = opts or {}
  local n = list.n or #list
  local chunksize = check_count(opts.chunksize or 1, "chunksize", level + 1)
  local limit = check_count(opts.limit or self:size() * 2, "limit", level + 1)
  local ordered = opts.ordered ~= false
  local on_progress = opts.on_progress
  local results, rn = {n = n}, 0
  local inflight, ninflight = {}, 0
  local finished, wake = {}, nil
  local nextitem, done = 1, 0
  local function on_finished(f)
    finished[#finished + 1] = f
    local w = wake; wake = nil; wake_up(w)
  end
  local function cancel_rest()
    for f in pairs(inflight) do if not f:done() then f:cancel("map failed") end end
  end
  while done < n do
    while nextitem <= n and ninflight < limit do
      local f, first = nil, nextitem
      if chunksize == 1 then
        f = self:_submit_at(level + 1, fn, list[nextitem])
        nextitem = nextitem + 1
      else
        local last = math.min(n, nextitem + chunksize - 1)
        local chunk = table.move(list, nextitem, last, 1, {n = last - nextitem + 1})
        f = self:_submit_at(level + 1, apply_chunk, fn, chunk)
        nextitem = last + 1
      end
      inflight[f] = first
      ninflight = ninflight + 1
      core._watch(f, on_finished)
    end
    if #finished == 0 then
      wake = core.future("map")
      local ok, err = pcall(wake.await, wake)
      if not ok then wake = nil; cancel_rest(); error(err, 0) end  -- (wake is done: cancelled)
    end
    local batch = finished
    finished = {}
    for _, f in ipairs(batch) do
      local first = inflight[f]
      inflight[f] = nil
      ninflight = ninflight - 1
      local ok, r = pcall(f.result, f)
      if not ok then cancel_rest(); error(r, 0) end
      local count = 1
      if chunksize == 1 then
        if ordered then results[first] = r else rn = rn + 1; results[rn] = r end
      else
        count = r.n
        if ordered then table.move(r, 1, count, first, results)
        else table.move(r, 1, count, rn + 1, results); rn = rn + count end
      end
      done = done + count
      if on_progress then on_progress(done, n) end
    end
  end
  return results
end

-- pool:map(fn, list [, {ordered=true, limit=, chunksize=, on_progress=fn(done, total)}])
-- -> results. At most `limit` jobs are in flight (default 2 per worker); with ordered=false the
-- results come in completion order. The first error cancels the rest and is raised.
function methods:map(fn, list, opts) return (map(self, 2, fn, list, opts)) end

-- pool:imap_unordered(fn, list [, chunksize]) -> an iterator over results as jobs complete
-- (at most 2 jobs per worker in flight; a job's error is raised by the iterator; as with any
-- Lua iterator, a nil result ends the loop early).
function methods:imap_unordered(fn, list, chunksize)
  argcheck.type(fn, "function", 1, "imap_unordered", 2)
  argcheck.type(list, "table", 2, "imap_unordered", 2)
  chunksize = check_count(chunksize or 1, "chunksize", 2)
  local n = list.n or #list
  local limit = self:size() * 2
  local nexti, inflight, ready, wake = 1, 0, {}, nil
  local buf, bi = {n = 0}, 1
  local running = {}  -- futures submitted and not yet taken
  local function on_finished(f)
    ready[#ready + 1] = f
    local w = wake; wake = nil; wake_up(w)
  end
  local function submit_more(level)
    while nexti <= n and inflight < limit do
      local last = math.min(n, nexti + chunksize - 1)
      local chunk = table.move(list, nexti, last, 1, {n = last - nexti + 1})
      local f = self:_submit_at(level + 1, apply_chunk, fn, chunk)
      inflight = inflight + 1
      running[f] = true
      core._watch(f, on_finished)
      nexti = last + 1
    end
  end
  return function()
    while true do
      if bi <= buf.n then
        bi = bi + 1
        return buf[bi - 1]
      end
      submit_more(2)  -- (a closed pool raises at the loop that calls this iterator)
      if #ready == 0 then
        if inflight == 0 then return nil end
        wake = core.future("imap_unordered")
        local ok, err = pcall(wake.await, wake)
        if not ok then  -- cancelled (a timeout, Ctrl-C): stop the jobs; wake is done already
          wake = nil
          for f in pairs(running) do if not f:done() then f:cancel("imap_unordered cancelled") end end
          error(err, 0)
        end
      end
      local f = table.remove(ready, 1)
      running[f] = nil
      inflight = inflight - 1
      buf, bi = f:result(), 1
    end
  end
end

-- pool:close{wait=true, cancel_pending=false, cancel_running=false}: no more submissions;
-- with wait, returns once every worker has finished its last job and left.
function methods:close(opts)
  opts = opts or {}
  local closed = self:_shutdown(opts.cancel_pending, opts.cancel_running)
  if opts.wait ~= false then closed:await() end
end

-- pool:run(fn, ...) -> fn's results: submit and await in one call.
function methods:run(fn, ...)
  return self:_submit_at(2, fn, ...):await()
end

local default_pool

-- thread.default_pool() -> the shared pool behind aio.to_thread (created on first use). Like
-- Python's default executor it has min(32, cores + 4) workers: to_thread is mostly for blocking
-- I/O, where more threads than cores pay off.
function M.default_pool()
  if not default_pool then
    default_pool = M.pool{name = "to_thread", size = math.min(32, c.cores() + 4)}
  end
  return default_pool
end

-- thread.to_thread(fn, ...) -> fn's results, run on the default pool (asyncio.to_thread;
-- aio.to_thread tail-calls it, so level 2 is its caller's too).
function M.to_thread(fn, ...)
  argcheck.type(fn, "function", 1, "to_thread", 2)   -- before the default pool's threads start
  return M.default_pool():_submit_at(2, fn, ...):await()
end

-- thread.run_in_executor(pool, fn, ...) -> a future (loop.run_in_executor; pool nil: default).
function M.run_in_executor(pool, fn, ...)
  return ((pool or M.default_pool()):_submit_at(2, fn, ...))
end

-- Waits on the loop, without stopping it, for try(obj) to succeed: tries, sleeps `pause`
-- seconds, doubling up to 10 ms (as workers poll their cancel flag), until the loop time
-- `deadline` (nil: none). Returns obj, or nil, "timeout"; a try that raises (a process.lock
-- this process holds already) raises at `level`. The locks a task cannot wait for in the OS (a
-- thread.mutex on the loop, process.lock and process.semaphore) all wait so.
function M.poll_acquire(try, obj, deadline, pause, level)
  while true do
    local ok, got = pcall(try, obj)
    if not ok then error(got, level + 1) end
    if got then break end
    local left = deadline and deadline - core.now()
    if left and left <= 0 then return nil, "timeout" end
    core.sleep(left and math.min(pause, left) or pause)
    pause = math.min(pause * 2, 0.01)
  end
  return obj
end

-- m:lock([timeout]) in a task on the loop: a worker or another task on this same thread may
-- hold the mutex, and a pthread wait would stop the loop, and with it whatever would let the
-- holder go on (a deadlock when the holder waits for the loop). The task polls try_lock instead,
-- sleeping 1 to 10 ms between tries.
do
  local mm = debug.getregistry()["aio.thread.mutex"].__index
  local raw_lock, try_lock, held_here = mm.lock, mm.try_lock, mm._held_here
  function mm.lock(m, timeout)
    timeout = argcheck.timeout(timeout, 1, "lock", 2)
    if (c.current()) ~= "main" or not core.current() or not coroutine.isyieldable() then
      -- a worker, the top level, or where a task cannot suspend: the OS wait
      local ok, got, why = pcall(raw_lock, m, timeout)
      if not ok then error(got, 2) end
      return got, why
    end
    if try_lock(m) then return m end
    if held_here(m) then error("deadlock: this task already holds the mutex", 2) end
    local got, why = M.poll_acquire(try_lock, m, timeout and timeout >= 0 and core.now() + timeout, 0.001, 2)
    return got, why
  end
end

-- The bounded map (with its level first) and imap above, shared with process pools (they need
-- :_submit_at and :size).
M.pool_map = map
M.pool_imap_unordered = methods.imap_unordered

return M
