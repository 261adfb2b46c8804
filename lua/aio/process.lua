-- aio.process — forked processes, process pools, pipes, queues, shared memory and external
-- programs. The mechanism is in C (aio.process_c: src/process.c, src/shm.c, src/exec.c; values
-- cross with src/codec.c); this facade adds join, map/imap_unordered, close and the waiting
-- loops of the shared-memory locks. See docs/process.md.
local c = require "aio.process_c"
local core = require "aio.core"
local aio = require "aio"
local thread = require "aio.thread"
local argcheck = require "aio.argcheck"

local pack, unpack, type = table.pack, table.unpack, type
local reg = debug.getregistry()

local M = {
  pipe = c.pipe,           -- process.pipe() -> a, b: duplex ends with :send(v) / :recv()
  queue = c.queue,         -- process.queue() -> many producers / many consumers
  value = c.value,         -- process.value(init [, "float"]) -> shared number (:get/:set/:add/:cas, .value)
  array = c.array,         -- process.array(n | list [, "int"|"float"]) -> shared numbers
  dict = c.dict,           -- process.dict{slots=, slot_size=} -> shared dictionary
  getpid = c.getpid,
}

-- process.current() -> {name=, pid=, ppid=} of the running process.
function M.current()
  local name, pid, ppid = c.current()
  return {name = name, pid = pid, ppid = ppid}
end

-- process.fork(fn, ...) -> handle: fn(...) runs in a forked child (which inherits this state
-- copy-on-write) as a task on a fresh loop. handle.pid, .name, .exitcode, :join(), :kill().
function M.fork(fn, ...)
  argcheck.type(fn, "function", 1, "fork", 2)
  return c.fork(nil, fn, ...)
end

-- process.spawn{target=fn, args={...}, name=} -> handle (multiprocessing.Process, started).
function M.spawn(opts)
  argcheck.type(opts, "table", 1, "spawn", 2)
  local args = opts.args or {}
  local target = opts.target or opts[1]
  if type(target) ~= "function" then argcheck.typeerror(target, "target: function", 1, "spawn", 2) end
  return c.fork(opts.name, opts.target or opts[1], unpack(args, 1, args.n or #args))
end

local hm = c.handle_methods

-- handle:join([timeout]) -> fn's results; raises fn's error (with the child's traceback);
-- nil, why if the child died without a result (e.g. killed); nil, "timeout" on timeout.
function hm:join(timeout)
  local done = self.done
  timeout = argcheck.timeout(timeout, 1, "join", 2)
  if timeout then
    local finished = aio.wait({done}, {timeout = timeout})
    if not finished[done] then return nil, "timeout" end
  else
    done:await()
  end
  local r = pack(self:_outcome())
  if r[1] == true then return unpack(r, 2, r.n) end
  if r[1] == false then error(r[2], 0) end
  return nil, r[2]
end

-- handle:terminate() sends SIGTERM (handle:kill(sig) any signal).
function hm:terminate() return self:kill("TERM") end

-- ---- pools --------------------------------------------------------------------------------

local pm = c.pool_methods
do
  local wrap, jobs = thread.job_tracker("P", "a worker process")
  wrap(pm)
  M.jobs = jobs  -- process.jobs() -> the unfinished jobs of every process pool
end

-- process.pool{size=, maxtasksperchild=, init=, name=, prefetch=2} (or process.pool(n)) -> pool
-- of forked workers, each with a fresh Lua state (init runs once in each). `prefetch` jobs are
-- sent to a worker at a time: 2 hides the round trip of small jobs; 1 keeps a quick job from
-- waiting behind a slow one.
function M.pool(opts)
  opts = thread.pool_options(opts)
  local ok, pool = pcall(c.pool, opts.size, opts.maxtasksperchild, opts.init, opts.name, opts.prefetch)
  if not ok then error(pool, 2) end
  return pool
end

-- pool:map(fn, list [, {chunksize=, ordered=, limit=, on_progress=}]) -> results in order.
-- The default chunksize is multiprocessing's: about four chunks per worker.
local thread_map = thread.pool_map
function pm:map(fn, list, opts)
  opts = opts or {}
  if not opts.chunksize and type(list) == "table" then  -- (thread_map checks list)
    local n = list.n or #list
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    copy.chunksize = math.max(1, math.ceil(n / (4 * self:size())))
    opts = copy
  end
  return (thread_map(self, 2, fn, list, opts))
end

-- pool:imap_unordered(fn, list [, chunksize]) -> iterator over results as they complete
-- (streamed: at most 2 jobs per worker in flight).
pm.imap_unordered = thread.pool_imap_unordered

-- pool:apply(fn, ...) -> fn's results (submit and await).
function pm:apply(fn, ...) return self:_submit_at(2, fn, ...):await() end
pm.run = pm.apply

-- pool:close{wait=true, cancel_pending=false}: no more jobs; with wait, returns once every
-- queued job ran and every worker has exited.
function pm:close(opts)
  opts = opts or {}
  local closed = self:_shutdown(opts.cancel_pending, false)
  if opts.wait ~= false then closed:await() end
end

-- pool:terminate(): cancels queued and running jobs and kills the workers now.
function pm:terminate()
  self:_shutdown(true, true):await()
end

-- ---- locks and semaphores in shared memory --------------------------------------------------

-- lock:acquire([timeout]) / semaphore:acquire([timeout]): polls try_acquire, sleeping 0.5 to
-- 10 ms between tries, so the loop keeps running.
local poll_acquire = thread.poll_acquire
local function acquire(self, timeout)
  timeout = argcheck.timeout(timeout, 1, "acquire", 2)
  local got, why = poll_acquire(self.try_acquire, self, timeout and core.now() + timeout, 0.0005, 2)
  return got, why
end

-- process.lock() -> lock: :acquire([timeout]) -> lock (usable as `local _ <close> =
-- l:acquire()`) or nil, "timeout"; :release(); a holder that dies loses the lock.
function M.lock()
  return c.lock()
end
reg["aio.process.lock"].__index.acquire = acquire

-- process.semaphore(n) -> semaphore with :acquire([timeout]) / :release() / :value().
function M.semaphore(n)
  return c.semaphore(n)
end
reg["aio.process.semaphore"].__index.acquire = acquire

-- ---- external programs ----------------------------------------------------------------------

-- process.exec{cmd, arg1, ..., args=, stdin=, cwd=, env={K=V}, shell=, on_stdout=, on_stderr=}
-- -> {status=, signal=, ok=, stdout=, stderr=} once the program ended (nil, err if it could
-- not start). Without on_stdout/on_stderr the output is collected; with them it streams.
function M.exec(opts)
  if type(opts) == "string" then opts = {opts} end
  local cmd = opts.cmd or opts[1]
  local args = opts.args
  if not args then
    args = {}
    for i = 2, #opts do args[#args + 1] = tostring(opts[i]) end
  end
  if opts.shell then
    args = {"-c", cmd}
    cmd = "/bin/sh"
  end
  local env
  if opts.env then
    env = {}
    for k, v in pairs(opts.env) do
      if type(k) == "number" then env[#env + 1] = v else env[#env + 1] = k .. "=" .. tostring(v) end
    end
  end
  local fut, pid = c.exec(cmd, args, {stdin = opts.stdin, cwd = opts.cwd, env = env,
                                      on_stdout = opts.on_stdout, on_stderr = opts.on_stderr})
  if not fut then return nil, pid end
  local r = fut:await()
  r.pid = pid
  return r
end

return M
