-- aio — the core module: tasks, combinators, structured concurrency, timers and (from
-- aio.sync) the synchronization primitives. The mechanism lives in C (aio.core: futures, tasks,
-- the scheduler, the timer heap); this file is the thin facade with the combinators that are
-- clearer in Lua. See docs/aio.md.
local core = require "aio.core"
local sync = require "aio.sync"
local argcheck = require "aio.argcheck"

local aio = {}
for k, v in pairs(core) do aio[k] = v end
for k, v in pairs(sync) do aio[k] = v end

local future, spawn, when_all = core.future, core.spawn, core.when_all
-- watch: on_done that does not observe the future's error; failed: a failure test that does not
-- either. The combinators that hand tasks back (wait, as_completed) or only need a wake-up use
-- them, so that a failure the caller never looks at is still reported (docs/aio.md).
local watch, failed = core._watch, core._failed
local when_all_copy, collect = core.when_all_copy, core.collect
local error_mt = debug.getregistry()["aio.error"]
local pack, unpack, select, type = table.pack, table.unpack, select, type

-- Is v a task or a future?
local function is_awaitable(v)
  local mt = getmetatable(v)
  return mt ~= nil and (mt.__name == "aio.task" or mt.__name == "aio.future")
end
aio.is_awaitable = is_awaitable

-- Is v a task (which, unlike a plain future, counts the cancel() requests made of it)?
local function is_task(v)
  local mt = getmetatable(v)
  return mt ~= nil and mt.__name == "aio.task"
end

-- Turns a task, future or function into something awaitable (functions are spawned).
local function awaitable(v, i)
  if is_awaitable(v) then return v end
  if type(v) == "function" then return spawn(v) end
  argcheck.typeerror(v, "task, future or function", i, nil, 3)
end

-- A timeout error value, recognised by aio.is_timeout.
local function timeout_error(seconds)
  return setmetatable({message = ("timeout after %gs"):format(seconds), timeout = true}, error_mt)
end
aio.timeout_error = timeout_error

-- aio.is_timeout(err) -> true if err is a timeout error.
function aio.is_timeout(err)
  return getmetatable(err) == error_mt and err.timeout == true
end

-- Cancels every unfinished task or future of a list.
local function cancel_all(list, msg)
  for i = 1, list.n or #list do
    local a = list[i]
    if not a:done() then a:cancel(msg) end
  end
end

-- aio.gather(a, b, ...) -> ra, rb, ... | aio.gather(list [, {return_exceptions=true}]) -> {r1, ...}
-- Results come in input order. Without return_exceptions the first failure (in time) is raised
-- at once and the other awaitables are cancelled (trio's rule, not asyncio's).
function aio.gather(...)
  local first = ...
  local list, opts, as_list
  if type(first) == "table" and not is_awaitable(first) then
    list, opts, as_list = first, select(2, ...) or {}, true
  else
    list, opts, as_list = pack(...), {}, false
  end
  local n = list.n or #list
  local return_exceptions = opts.return_exceptions
  -- aws is a copy: the caller may change its list while gather waits.
  local all, aws = when_all_copy(list, n, return_exceptions)
  if not all then           -- not all awaitable: functions are spawned, in order
    aws = {n = n}
    for i = 1, n do aws[i] = awaitable(list[i], i) end
    all = when_all(aws, n, return_exceptions)
  end
  local ok, err = pcall(all.await, all)
  if not ok then cancel_all(aws, "gather was cancelled"); error(err, 0) end
  local failed = all:result()
  if failed ~= nil then
    cancel_all(aws, "a sibling failed")
    error(failed:exception(), 0)
  end
  local results = collect(aws, n, return_exceptions, true)  -- over aws: it is gather's own
  if as_list then return results end
  return unpack(results, 1, n)
end

-- aio.as_completed(list [, {timeout=}]) -> iterator over the original awaitables in the order
-- they finish. Raises a timeout error if the next one does not finish in time.
function aio.as_completed(list, opts)
  argcheck.type(list, "table", 1, "as_completed", 2)
  local timeout = argcheck.timeout(opts and opts.timeout, 2, "as_completed", 2, "timeout")
  local n = list.n or #list
  local deadline = timeout and core.now() + timeout
  local finished, head, waiter = {}, 1, nil
  for i = 1, n do
    watch(awaitable(list[i], i), function(f)
      finished[#finished + 1] = f
      -- The waiter is cancelled if the iterating task was (its await is over): skip it.
      if waiter then local w = waiter; waiter = nil; if not w:done() then w:set_result() end end
    end)
  end
  return function()
    if head > n then return nil end
    while finished[head] == nil do
      waiter = future("as_completed")
      if deadline then
        local left = deadline - core.now()
        if left <= 0 or not aio.wait_for(waiter, left, true) then
          error(timeout_error(timeout), 2)
        end
      else
        waiter:await()
      end
    end
    head = head + 1
    return finished[head - 1]
  end
end

-- Waits until the future w is done or `seconds` pass; true if it finished in time.
local function wait_until_done_or(w, seconds)
  local t = core.timer_future(seconds)
  local either = future("wait")
  local function wake() if not either:done() then either:set_result() end end
  watch(w, wake)
  watch(t, wake)
  local ok, err = pcall(either.await, either)
  t:cancel()
  if not ok then error(err, 0) end
  return w:done()
end

-- aio.wait(list, {return_when="all_completed"|"first_completed"|"first_exception", timeout=})
-- -> done, pending: two sets (tables keyed by the awaitables). Nothing is cancelled on timeout.
function aio.wait(list, opts)
  argcheck.type(list, "table", 1, "wait", 2)
  opts = opts or {}
  local when = opts.return_when or "all_completed"
  if when ~= "all_completed" and when ~= "first_completed" and when ~= "first_exception" then
    error("return_when must be all_completed, first_completed or first_exception", 2)
  end
  local timeout = argcheck.timeout(opts.timeout, 2, "wait", 2, "timeout")
  local n = list.n or #list
  local aws = {}
  for i = 1, n do aws[i] = awaitable(list[i], i) end
  local signal, remaining = future("wait"), n
  for i = 1, n do
    watch(aws[i], function(f)
      remaining = remaining - 1
      if signal:done() then return end
      if remaining == 0 or when == "first_completed" or (when == "first_exception" and failed(f)) then
        signal:set_result()
      end
    end)
  end
  if n > 0 and not signal:done() then
    if timeout then wait_until_done_or(signal, timeout) else signal:await() end
  end
  local done, pending = {}, {}
  for i = 1, n do
    if aws[i]:done() then done[aws[i]] = true else pending[aws[i]] = true end
  end
  return done, pending
end

-- Waits until aw has ended. A further cancellation of the caller meanwhile is the way out (aw
-- may ignore cancellation): it is passed on to aw and raised at once, aw ending unobserved.
local function await_end(aw)
  if aw:done() then return end
  local ended = future("wait")
  watch(aw, function() if not ended:done() then ended:set_result() end end)
  local ok, err = pcall(ended.await, ended)
  if ok then return end
  aw:cancel(type(err) == "table" and err.message or nil)
  error(err, 0)
end

-- wait_for's caller got err while waiting for aw: aw is cancelled, and when err is the caller's
-- cancellation wait_for waits for aw's end (asyncio 3.12's rule: its cleanup runs first). A
-- primitive's wait inside aw that was handed something gives it back and raises (the give-back
-- rule); if aw ended with a result anyway — it had already returned — the result is returned
-- and the caller's cancellation raised at its next await: nothing is lost. Otherwise err is
-- raised.
local function cancelled_while_waiting(aw, err)
  aw:cancel("wait_for was cancelled")
  local caller = core.current()
  if not (caller and aio.is_cancelled(err)) then error(err, 0) end
  await_end(aw)
  if aw:cancelled() or failed(aw) then error(err, 0) end  -- (aw's own error stays unobserved)
  core.redeliver_cancel(caller, type(err) == "table" and err.message or nil)
  return aw:result()
end

-- Withdraws the deadline's request to cancel aw, which has finished: true if no other request
-- made since wait_for began is left (aw's count back at base, asyncio's timeouts.py), so a
-- cancellation aw ended with was the deadline's alone. A plain future has no count, and once
-- the deadline cancelled it nobody else can: it is done.
local function deadline_alone(aw, base)
  return not is_task(aw) or aw:uncancel() <= base
end

-- wait_for's deadline passed: cancels aw and awaits its end (its cleanup, as asyncio does). A
-- permit or item handed to aw in the deadline's turn is given back by the primitive (the
-- give-back rule); aw may still finish normally (it had already returned, or it was woken by
-- something else), and then its results are returned (asyncio 3.12's rule). Only an aw
-- cancelled by the deadline alone gives the timeout error; one someone else cancelled too
-- raises its cancellation, another failure of aw is raised as it is. A cancellation of the caller during
-- that await is passed on to aw, whose cleanup may itself await something long, and handled
-- as one before the deadline (cancelled_while_waiting): asyncio's task passes every cancel()
-- on to the task it awaits, and trio's cleanup in a cancelled scope cannot block either.
local function finish_timed_out(aw, seconds, base)
  aw:cancel("timeout")
  local res = pack(pcall(aw.await, aw))
  if not aw:done() then return cancelled_while_waiting(aw, res[2]) end  -- the caller was cancelled
  local alone = deadline_alone(aw, base)
  if res[1] then return unpack(res, 2, res.n) end
  local err = res[2]
  if alone and rawequal(aw:exception(), err) and aio.is_cancelled(err) then
    error(timeout_error(seconds), 0)
  end
  error(err, 0)
end

-- aio.wait_for(awaitable_or_fn, seconds) -> its results; on timeout the awaitable is cancelled
-- and a timeout error is raised (aio.is_timeout). Cancelling the caller cancels it too.
function aio.wait_for(aw, seconds, quiet)
  seconds = argcheck.timeout(seconds, 2, "wait_for", 2, "seconds")
  aw = awaitable(aw, 1)
  if seconds == nil then return aw:await() end
  local base = is_task(aw) and aw:cancelling()
  local ok, finished = pcall(wait_until_done_or, aw, seconds)
  if not ok then return cancelled_while_waiting(aw, finished) end
  if quiet then return finished end
  if not finished then return finish_timed_out(aw, seconds, base) end
  return aw:await()
end

-- aio.timeout(seconds, fn, ...) -> fn's results, or raises a timeout error if fn takes longer
-- (fn then gets a cancellation error at its current await, so its cleanup runs).
function aio.timeout(seconds, fn, ...)
  argcheck.timeout(seconds, 1, "timeout", 2, "seconds")
  argcheck.type(fn, "function", 2, "timeout", 2)
  return aio.wait_for(spawn(fn, ...), seconds)
end

-- aio.to_thread(fn, ...) -> fn's results, run on a worker thread of aio.thread's default pool
-- (asyncio.to_thread); fn and its arguments cross by the codec (docs/thread.md).
function aio.to_thread(...)
  return require("aio.thread").to_thread(...)
end

-- aio.call_soon(fn, ...) -> task: fn(...) runs as a task on the next turn of the loop.
aio.call_soon = spawn

-- aio.group(function(g) g:spawn(fn, ...) end) -> the body's results once every child ended.
-- The first failing child cancels its siblings and the body (asyncio's TaskGroup, when the
-- body runs in a task) and its error is raised; g:cancel() stops the group early without an
-- error; if the body fails or the caller is cancelled, children are cancelled and awaited
-- before the error propagates. Once the group has returned, g:spawn raises.
local CHILD_FAILED = "a child of the group failed"
function aio.group(body, ...)
  argcheck.type(body, "function", 1, "group", 2)
  local children, live, failure, idle = {}, 0, nil, nil  -- failure: the first child that failed
  local cancelled = {}  -- the children the group cancelled: a cleanup must not be cut twice
  local parent, in_body, closed = core.current(), true, false
  local base = parent and parent:cancelling()  -- requests to cancel the body's task so far
  local requested = false  -- the group asked to cancel the body's task and has not withdrawn it
  local g = {}
  -- Withdraws the group's own request to cancel the body's task (asyncio's TaskGroup): true if
  -- no other request came since the group began, so what the task got was the group's alone.
  local function withdraw()
    requested = false
    return parent:uncancel() <= base
  end
  -- Is e the cancellation the group asked for, and nobody else? (The group takes it once.)
  local function ours(e)
    return requested and aio.is_cancelled(e) and withdraw()
  end
  local function child_done(t)
    live = live - 1
    if failure == nil and failed(t) then
      failure = t
      g:cancel("a sibling failed")
      if in_body and parent then requested = parent:cancel(CHILD_FAILED) end
    end
    -- (idle is cancelled when the caller was: its loop below makes a new one)
    if live == 0 and idle then local w = idle; idle = nil; if not w:done() then w:set_result() end end
  end
  function g.spawn(_, fn, ...)
    if closed then error("group is closed", 2) end
    argcheck.type(fn, "function", 1, "spawn", 2)
    local t = spawn(fn, ...)
    children[#children + 1] = t
    live = live + 1
    watch(t, child_done)
    return t
  end
  function g.cancel(_, msg)
    for i = 1, #children do
      local c = children[i]
      if not c:done() and not cancelled[c] then
        cancelled[c] = true
        c:cancel(msg or "group cancelled")
      end
    end
  end
  function g.tasks() return children end
  local results = pack(pcall(body, g, ...))
  in_body = false
  local err = not results[1] and results[2] or nil
  if err ~= nil and ours(err) then err = nil end
  if err ~= nil then g:cancel("the group's body failed") end
  while live > 0 do
    idle = future("group")
    local ok, e = pcall(idle.await, idle)
    if not ok and not ours(e) then
      err = err or e
      g:cancel("the group was cancelled")
    end
  end
  closed = true
  -- The body's task caught the group's cancellation itself, or never received it (it was
  -- queued with a value, then returned without awaiting): withdraw the request, which drops
  -- a cancellation still pending unless someone else asked too.
  if requested then withdraw() end
  if err ~= nil then error(err, 0) end
  if failure ~= nil then error(failure:exception(), 0) end
  return unpack(results, 2, results.n)
end

-- aio.run(fn, ...) -> fn's results: runs fn as a task and the loop until that task ends
-- (asyncio.run_until_complete). Other tasks keep their state: in aioshell the end-of-script
-- drain finishes them; a stock lua5.4 that loaded the aio C module can call aio.run_loop() to
-- run the loop until nothing is left.
function aio.run(fn, ...)
  argcheck.type(fn, "function", 1, "run", 2)
  local t = spawn(fn, ...)
  return t:await()
end

-- The runtime's own tasks (the REPL's prompt and its lines), weak keys: aio.tasks() leaves
-- them out, and so do aio.dump and the REPL's :tasks, which list what it returns.
local own_tasks = setmetatable({}, {__mode = "k"})

-- aio._own(task) -> task: marks a task as the runtime's own (internal: the REPL's tasks).
function aio._own(t)
  own_tasks[t] = true
  return t
end

-- aio.tasks() -> the live tasks (but the runtime's own), in id (spawn) order.
function aio.tasks()
  local all, list = core.tasks(), {}
  for i = 1, all.n do
    if not own_tasks[all[i]] then list[#list + 1] = all[i] end
  end
  table.sort(list, function(a, b) return a.id < b.id end)
  list.n = #list
  return list
end

-- The task table's columns: heading, width cap (a longer cell is cut with "~"; nil: never).
local COLUMNS = {{"ID"}, {"NAME", 24}, {"STATE"}, {"AGE"}, {"WAITING ON", 40}, {"SPAWNED AT"}}

-- Formats seconds for the task table: "12ms" under a second, else "3.4s".
local function fmt_age(s)
  if type(s) ~= "number" then return "" end
  if s < 1 then return ("%dms"):format(math.floor(s * 1000)) end
  return ("%.1fs"):format(s)
end

-- The cells of a task's row (a task, or a record with the same fields: a pool job).
local function task_row(t)
  local waiting = tostring(t.waiting_on or ""):gsub("(%d+%.%d)%d+", "%1")  -- 59.98977 -> 59.9
  return {tostring(t.id), tostring(t.name or ""), tostring(t.state or ""), fmt_age(t.age),
          waiting, tostring(t.site or "")}
end

-- The task table of list as text: a heading line, then a row per entry; each column is as
-- wide as its widest cell, up to its cap.
local function task_table(list)
  local rows, widths = {{}}, {}
  for i, c in ipairs(COLUMNS) do rows[1][i], widths[i] = c[1], #c[1] end
  for _, t in ipairs(list) do
    local r = task_row(t)
    for i, c in ipairs(COLUMNS) do
      if c[2] and #r[i] > c[2] then r[i] = r[i]:sub(1, c[2] - 1) .. "~" end
      widths[i] = math.max(widths[i], #r[i])
    end
    rows[#rows + 1] = r
  end
  local lines = {}
  for j, r in ipairs(rows) do
    for i = 1, #r - 1 do r[i] = r[i] .. (" "):rep(widths[i] - #r[i]) end
    lines[j] = table.concat(r, "  "):gsub("%s+$", "")
  end
  return table.concat(lines, "\n") .. "\n"
end

-- aio.dump([out [, list]]) prints the tasks of list (default: aio.tasks()) as a table — id,
-- name, state, age, waiting on, spawn site — to out (an object with :write, default
-- io.stdout); returns how many. The REPL's :tasks prints its list (tasks and pool jobs) so.
function aio.dump(out, list)
  out = out or io.stdout
  list = list or aio.tasks()
  out:write(task_table(list))
  return #list
end

return aio
