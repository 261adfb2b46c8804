-- aio.rx — reactive streams (observables) on the aio loop's clock.
--
-- The model is RxJS's: an observable is a function that, given a subscriber, starts producing
-- and returns what tears it down. Three rules make it safe on a single loop:
--   1. A subscriber stops at its first terminal event (error or completed) and then runs its
--      teardowns: every upstream subscription is released automatically (RxLua does not do
--      this, so `interval():take(4)` there keeps ticking forever).
--   2. Every user callback runs under pcall; an error becomes an on_error of that chain and
--      never escapes into the loop. A chain with no on_error reports to rx.on_unhandled_error.
--   3. Operators create their upstream subscriber *before* subscribing to the source and add it
--      to the downstream one, so a synchronous source (rx.from of a huge table) sees `closed`
--      as soon as a downstream take() is satisfied and stops its loop.
-- Time (interval, timer, debounce, buffer_with_time, delay) uses the core's aio.call_later /
-- aio.every, so aio.clock.virtual() makes it instant and deterministic; there is no scheduler
-- of our own.
local aio = require "aio"

local rx = {}

local Observable = {}
Observable.__index = Observable
Observable.__name = "aio.rx.observable"

local Subscriber = {}
Subscriber.__index = Subscriber
Subscriber.__name = "aio.rx.subscription"

local unpack = table.unpack
local pack = table.pack

-- Default sink for errors nobody handles: stderr, never a raise.
function rx.on_unhandled_error(err)
  io.stderr:write("aio.rx: unhandled error: ", tostring(err), "\n")
end

-- True if err is the core's cancellation error (it must keep travelling, not become on_error).
local function is_cancel(err)
  return aio.is_cancelled ~= nil and aio.is_cancelled(err)
end

-- What becomes of an error raised by user code run under pcall (rule 2): it goes to
-- target:_fail (target's on_error, or the unhandled sink once target has ended). A
-- cancellation is no error of the chain: it is raised again, after `stop` (when given) is
-- unsubscribed. (The callers keep their own pcall: a vararg wrapper around it costs about a
-- third more per value on the operators' path.)
local function user_error(target, stop, err)
  if is_cancel(err) then
    if stop then stop:unsubscribe() end
    error(err, 0)
  end
  target:_fail(err)
end

-- Removes v from list (its last occurrence), if it is there.
local function remove_value(list, v)
  for i = #list, 1, -1 do
    if list[i] == v then table.remove(list, i) return end
  end
end

---------------------------------------------------------------------------------------------
-- Subscribers (which are also the subscriptions handed back to users)
---------------------------------------------------------------------------------------------

-- Makes a subscriber delivering to the three (optional) callbacks.
local function new_subscriber(on_next, on_error, on_completed)
  return setmetatable({ closed = false, _next = on_next, _error = on_error,
                        _completed = on_completed, _teardowns = {} }, Subscriber)
end

-- Runs one teardown: a function, or anything with :unsubscribe().
local function run_teardown(t)
  local ok, err
  if type(t) == "function" then
    ok, err = pcall(t)
  else
    ok, err = pcall(t.unsubscribe, t)
  end
  if not ok then rx.on_unhandled_error(err) end
end

-- Closes the subscriber and runs its teardowns (newest first), detaching it from its parent.
function Subscriber:_cleanup()
  self.closed = true
  local ts = self._teardowns
  self._teardowns = {}
  for i = #ts, 1, -1 do run_teardown(ts[i]) end
  local parent = self._parent
  if parent then
    self._parent = nil
    remove_value(parent._teardowns, self)
  end
end

-- Delivers a value; an error thrown by the callback becomes this subscriber's on_error.
function Subscriber:next(v)
  if self.closed then return end
  local f = self._next
  if f == nil then return end
  local ok, err = pcall(f, v)
  if not ok then user_error(self, self, err) end
end

-- An error raised by user code on this subscriber's behalf: its on_error, or, once it has
-- ended (the code finished or unsubscribed it, then raised), the unhandled sink.
function Subscriber:_fail(err)
  if self.closed then rx.on_unhandled_error(err) else self:error(err) end
end

-- Delivers the terminal error once, after releasing everything upstream (so an error its
-- callback raises goes to the unhandled sink).
function Subscriber:error(e)
  if self.closed then return end
  local f = self._error
  self:_cleanup()
  if f == nil then rx.on_unhandled_error(e) return end
  local ok, err = pcall(f, e)
  if not ok then user_error(self, nil, err) end
end

-- Delivers completion once, after releasing everything upstream.
function Subscriber:completed()
  if self.closed then return end
  local f = self._completed
  self:_cleanup()
  if f == nil then return end
  local ok, err = pcall(f)
  if not ok then user_error(self, nil, err) end
end

-- Observer-style aliases, so a subscriber can be handed where an observer is expected.
Subscriber.on_next = Subscriber.next
Subscriber.on_error = Subscriber.error
Subscriber.on_completed = Subscriber.completed

-- Adds something to release when this subscriber ends (run at once if it already ended).
function Subscriber:add(t)
  if t == nil then return end
  if self.closed then run_teardown(t) return end
  if getmetatable(t) == Subscriber then
    if t.closed then return end
    t._parent = self
  end
  local ts = self._teardowns
  ts[#ts + 1] = t
end

-- Stops delivery and releases everything upstream; idempotent.
function Subscriber:unsubscribe()
  if self.closed and #self._teardowns == 0 then return end
  self:_cleanup()
end

function Subscriber:__tostring()
  return string.format("aio.rx.subscription (%s)", self.closed and "closed" or "active")
end

rx.Subscriber = Subscriber

---------------------------------------------------------------------------------------------
-- Observables
---------------------------------------------------------------------------------------------

-- rx.create(fn): fn(subscriber) produces values and may return a teardown.
function rx.create(fn)
  if type(fn) ~= "function" then error("rx.create expects a function", 2) end
  return setmetatable({ _fn = fn }, Observable)
end
local create = rx.create

-- The argument checks raise at the operator's call (level 3: the caller of the function that
-- checks), where the mistake is. A bad argument found only when a value arrives would become
-- an on_error far from its cause. `what` names the operator, and the argument when it has
-- several; an `optional` argument may be nil.

-- Raises unless f can be called.
local function check_callable(f, what, optional)
  if optional and f == nil then return end
  local mt = getmetatable(f)
  if type(f) ~= "function" and not (type(mt) == "table" and mt.__call) then
    error(("%s: expected a function, got %s"):format(what, type(f)), 3)
  end
end

-- Raises unless x is a number at least `min` (a count or a duration in seconds).
local function check_number(x, min, what, optional)
  if optional and x == nil then return end
  if type(x) ~= "number" or x ~= x or x < min then
    error(("%s: expected a number >= %g, got %s"):format(what, min, tostring(x)), 3)
  end
end

-- Raises unless x is a number above 0 (a period, or a size that must be non-empty).
local function check_positive(x, what, optional)
  if optional and x == nil then return end
  if type(x) ~= "number" or not (x > 0) then
    error(("%s: expected a number > 0, got %s"):format(what, tostring(x)), 3)
  end
end

-- True if v is an observable (or a subject).
function rx.is_observable(v)
  local mt = getmetatable(v)
  while mt do
    if mt == Observable then return true end
    local parent = getmetatable(mt)
    mt = parent and parent.__index
  end
  return false
end

-- Runs the observable's producer for an existing subscriber; producer errors go to on_error.
function Observable:_subscribe_with(sub)
  local ok, td = pcall(self._fn, sub)
  if ok then sub:add(td) else user_error(sub, sub, td) end
  return sub
end

-- An operator's terminal callback f, run so that an error it raises fails `sub` (as one in
-- its on_next does). Unguarded, the error would go to the unhandled sink (terminal callbacks
-- are the end of the line for a *user's* subscriber) and `sub` would never end.
local function guard_terminal(sub, f)
  return function(...)
    local ok, err = pcall(f, ...)
    if not ok then user_error(sub, nil, err) end
  end
end

-- Subscribes an upstream subscriber created (and attached to `sub`) before the source starts.
function Observable:_chain(sub, on_next, on_error, on_completed)
  local inner = new_subscriber(on_next,
    on_error and guard_terminal(sub, on_error) or function(e) sub:error(e) end,
    on_completed and guard_terminal(sub, on_completed) or function() sub:completed() end)
  sub:add(inner)
  return self:_subscribe_with(inner)
end

-- subscribe(on_next, on_error, on_completed) or subscribe(observer) -> subscription.
-- An observer is a table of plain functions {on_next=, on_error=, on_completed=}, a subject, or
-- a subscriber.
function Observable:subscribe(a, b, c)
  local sub
  if type(a) == "table" then
    local mt = getmetatable(a)
    if mt == Subscriber or rx.is_observable(a) then  -- subjects and subscribers: methods
      local o = a
      sub = new_subscriber(function(v) o:on_next(v) end, function(e) o:on_error(e) end,
                           function() o:on_completed() end)
    else
      a, b, c = a.on_next or a.next or a[1], a.on_error or a.error or a[2], a.on_completed or a.completed or a[3]
    end
  end
  if not sub then
    check_callable(a, "subscribe on_next", true)
    check_callable(b, "subscribe on_error", true)
    check_callable(c, "subscribe on_completed", true)
    sub = new_subscriber(a, b, c)
  end
  return self:_subscribe_with(sub)
end

function Observable:__tostring()
  return "aio.rx.observable"
end

-- Builds an operator: fn(source, sub) subscribes to source for the new downstream sub.
local function operator(source, fn)
  return create(function(sub) return fn(source, sub) end)
end

---------------------------------------------------------------------------------------------
-- Creation
---------------------------------------------------------------------------------------------

-- rx.of(...) emits its arguments in order, then completes.
function rx.of(...)
  local vals = pack(...)
  return create(function(sub)
    for i = 1, vals.n do
      if sub.closed then return end
      sub:next(vals[i])
    end
    sub:completed()
  end)
end

-- rx.empty() completes at once; rx.never() never emits; rx.throw(e) fails at once.
function rx.empty() return create(function(sub) sub:completed() end) end
function rx.never() return create(function() end) end
function rx.throw(e) return create(function(sub) sub:error(e) end) end

-- rx.range(first, last [, step]) like Lua's numeric for (inclusive); rx.range(n) is 1..n.
function rx.range(first, last, step)
  if last == nil then first, last = 1, first end
  step = step or 1
  return create(function(sub)
    for i = first, last, step do
      if sub.closed then return end
      sub:next(i)
    end
    sub:completed()
  end)
end

-- rx.from(x): a table (array part), an iterator function (called until nil), a coroutine,
-- a future/task (its result), or an observable (returned as is).
function rx.from(src)
  if rx.is_observable(src) then return src end
  local t = type(src)
  if t == "table" and aio.is_future ~= nil and aio.is_future(src) then return rx.from_future(src) end
  if t == "table" then
    return create(function(sub)
      for i = 1, #src do
        if sub.closed then return end
        sub:next(src[i])
      end
      sub:completed()
    end)
  elseif t == "function" then
    return create(function(sub)
      while not sub.closed do
        local v = src()
        if v == nil then break end
        sub:next(v)
      end
      sub:completed()
    end)
  elseif t == "thread" then
    return create(function(sub)
      while not sub.closed and coroutine.status(src) == "suspended" do
        local r = pack(coroutine.resume(src))
        if not r[1] then sub:error(r[2]) return end
        if coroutine.status(src) == "dead" and r.n < 2 then break end
        sub:next(r[2])
      end
      sub:completed()
    end)
  elseif t == "userdata" then
    return rx.from_future(src)
  end
  error("rx.from: cannot make an observable from a " .. t, 2)
end
rx.from_iterable = rx.from

-- rx.defer(fn): calls fn() at each subscription and subscribes to the observable it returns.
function rx.defer(fn)
  return create(function(sub)
    return rx.from(fn()):_chain(sub, function(v) sub:next(v) end)
  end)
end

-- rx.interval(seconds): cold; each subscriber gets 0, 1, 2, ... every `seconds`.
function rx.interval(seconds)
  check_positive(seconds, "interval")
  return create(function(sub)
    local i = 0
    local h = aio.every(seconds, function()
      local v = i
      i = i + 1
      sub:next(v)
    end)
    return function() h:cancel() end
  end)
end

-- rx.timer(due [, period]): emits 0 after `due` seconds, then completes, or goes on every
-- `period` seconds (1, 2, ...) when a period is given.
function rx.timer(due, period)
  check_number(due, 0, "timer due")
  check_positive(period, "timer period", true)
  return create(function(sub)
    local h
    h = aio.call_later(due, function()
      sub:next(0)
      if period == nil then
        sub:completed()
      elseif not sub.closed then
        local i = 1
        h = aio.every(period, function()
          local v = i
          i = i + 1
          sub:next(v)
        end)
      end
    end)
    return function() h:cancel() end
  end)
end

-- rx.from_future(f): emits the future's (or task's) first result and completes, or fails.
function rx.from_future(fut)
  return create(function(sub)
    local cancelled = false
    fut:add_done_callback(function(f)
      if cancelled then return end
      local ok, res = pcall(f.result, f)
      if ok then
        sub:next(res)
        sub:completed()
      else
        sub:error(res)
      end
    end)
    return function() cancelled = true end
  end)
end

-- rx.from_queue(q): a task drains q (aio.queue) into the subscriber; completes when q is
-- closed; unsubscribing cancels the task.
function rx.from_queue(q)
  return create(function(sub)
    local task
    task = aio.spawn(function()
      while not sub.closed do
        local ok, v = pcall(q.get, q)
        if not ok then
          if is_cancel(v) then return end
          if q.closed or (type(q.is_closed) == "function" and q:is_closed()) then
            sub:completed()
          else
            sub:error(v)
          end
          return
        end
        if v == nil and (q.closed or (type(q.is_closed) == "function" and q:is_closed())) then
          sub:completed()
          return
        end
        sub:next(v)
      end
    end)
    if task.set_name then task:set_name("rx.from_queue") end
    return function()
      if task ~= aio.current() and not task:done() then task:cancel() end
    end
  end)
end

---------------------------------------------------------------------------------------------
-- Transforming and filtering operators
---------------------------------------------------------------------------------------------

-- map(f): f(value) for each value.
function Observable:map(f)
  check_callable(f, "map")
  return operator(self, function(src, sub)
    src:_chain(sub, function(v) sub:next(f(v)) end)
  end)
end
Observable.select = Observable.map

-- filter(pred): the values for which pred(value) is truthy.
function Observable:filter(pred)
  check_callable(pred, "filter")
  return operator(self, function(src, sub)
    src:_chain(sub, function(v) if pred(v) then sub:next(v) end end)
  end)
end
Observable.where = Observable.filter

-- tap(on_next [, on_error, on_completed]): side effects, values pass through unchanged.
function Observable:tap(on_next, on_error, on_completed)
  check_callable(on_next, "tap on_next", true)
  check_callable(on_error, "tap on_error", true)
  check_callable(on_completed, "tap on_completed", true)
  return operator(self, function(src, sub)
    src:_chain(sub,
      function(v) if on_next then on_next(v) end sub:next(v) end,
      function(e) if on_error then on_error(e) end sub:error(e) end,
      function() if on_completed then on_completed() end sub:completed() end)
  end)
end
Observable["do"] = Observable.tap

-- take(n): the first n values, then completes and unsubscribes upstream.
function Observable:take(n)
  check_number(n, 0, "take")
  return operator(self, function(src, sub)
    if n <= 0 then sub:completed() return end
    local count = 0
    src:_chain(sub, function(v)
      count = count + 1
      sub:next(v)
      if count >= n then sub:completed() end
    end)
  end)
end

-- take_while(pred): values while pred holds; completes at the first that fails it.
function Observable:take_while(pred)
  check_callable(pred, "take_while")
  return operator(self, function(src, sub)
    src:_chain(sub, function(v)
      if pred(v) then sub:next(v) else sub:completed() end
    end)
  end)
end

-- take_until(other): values until `other` emits anything.
function Observable:take_until(other)
  return operator(self, function(src, sub)
    rx.from(other):_chain(sub, function() sub:completed() end, nil, function() end)
    if not sub.closed then src:_chain(sub, function(v) sub:next(v) end) end
  end)
end

-- skip(n): drops the first n values.
function Observable:skip(n)
  check_number(n, 0, "skip")
  return operator(self, function(src, sub)
    local count = 0
    src:_chain(sub, function(v)
      count = count + 1
      if count > n then sub:next(v) end
    end)
  end)
end

-- skip_while(pred): drops values while pred holds.
function Observable:skip_while(pred)
  check_callable(pred, "skip_while")
  return operator(self, function(src, sub)
    local skipping = true
    src:_chain(sub, function(v)
      if skipping and not pred(v) then skipping = false end
      if not skipping then sub:next(v) end
    end)
  end)
end

-- A fold with f, from seed (from the first value when seed is nil), for one subscription:
-- returns add(v) -> the total so far, and total() -> whether there is one, and it.
local function fold(f, seed)
  local acc, has = seed, seed ~= nil
  return function(v)
    if has then acc = f(acc, v) else acc, has = v, true end
    return acc
  end, function() return has, acc end
end

-- scan(f [, seed]): running accumulation, emitting each intermediate value.
function Observable:scan(f, seed)
  check_callable(f, "scan")
  return operator(self, function(src, sub)
    local add = fold(f, seed)
    src:_chain(sub, function(v) sub:next(add(v)) end)
  end)
end

-- reduce(f [, seed]): the final accumulation, emitted at completion.
function Observable:reduce(f, seed)
  check_callable(f, "reduce")
  return operator(self, function(src, sub)
    local add, total = fold(f, seed)
    src:_chain(sub, add, nil, function()
      local has, acc = total()
      if has then sub:next(acc) end
      sub:completed()
    end)
  end)
end

-- count(), sum(), first(), last(), to_table(): common reductions.
function Observable:count() return self:reduce(function(n) return n + 1 end, 0) end
function Observable:sum() return self:reduce(function(a, b) return a + b end, 0) end
function Observable:first() return self:take(1) end
function Observable:last() return self:reduce(function(_, v) return v end) end
-- (to_table is not a reduce with a {} seed: that one table would be every subscription's.)
function Observable:to_table()
  return operator(self, function(src, sub)
    local t = {}
    src:_chain(sub, function(v) t[#t + 1] = v end, nil, function()
      sub:next(t)
      sub:completed()
    end)
  end)
end

-- start_with(...): emits the given values before the source's.
function Observable:start_with(...)
  return rx.concat(rx.of(...), self)
end

-- The values whose key (key(value), or the value) is_new(key) accepts; new_filter() makes a
-- fresh is_new for each subscription.
local function distinct_by(source, key, new_filter)
  return operator(source, function(src, sub)
    local is_new = new_filter()
    src:_chain(sub, function(v)
      local k = v
      if key then k = key(v) end
      if is_new(k) then sub:next(v) end
    end)
  end)
end

-- distinct([key]): values whose key (default: the value) was not seen before.
function Observable:distinct(key)
  check_callable(key, "distinct", true)
  return distinct_by(self, key, function()
    local seen = {}
    return function(k)
      if k == nil then k = seen end  -- a sentinel for a nil key
      if seen[k] then return false end
      seen[k] = true
      return true
    end
  end)
end

-- distinct_until_changed([key]): drops values equal (by key) to the previous one.
function Observable:distinct_until_changed(key)
  check_callable(key, "distinct_until_changed", true)
  return distinct_by(self, key, function()
    local has, prev = false, nil
    return function(k)
      if has and k == prev then return false end
      has, prev = true, k
      return true
    end
  end)
end

-- buffer_with_count(n [, skip]): lists of n values, a new list starting every `skip` values
-- (skip < n overlaps: a sliding window; skip defaults to n). Partial lists are flushed at
-- completion, as in RxJS and RxPY.
function Observable:buffer_with_count(n, skip)
  check_positive(n, "buffer_with_count n")
  check_positive(skip, "buffer_with_count skip", true)
  skip = skip or n
  return operator(self, function(src, sub)
    local buffers, count = {}, 0
    src:_chain(sub, function(v)
      if count % skip == 0 then buffers[#buffers + 1] = {} end
      count = count + 1
      for i = 1, #buffers do
        local b = buffers[i]
        b[#b + 1] = v
      end
      while buffers[1] and #buffers[1] >= n do
        sub:next(table.remove(buffers, 1))
      end
    end, nil, function()
      for i = 1, #buffers do
        if #buffers[i] > 0 then sub:next(buffers[i]) end
      end
      sub:completed()
    end)
  end)
end
Observable.buffer = Observable.buffer_with_count

-- buffer_with_time(span [, shift]): lists of the values seen in each `span` seconds; a new
-- list opens every `shift` seconds (default span: back-to-back windows). Empty lists are
-- emitted too (nothing happened in that window is information).
function Observable:buffer_with_time(span, shift)
  check_positive(span, "buffer_with_time span")  -- (aio.every takes no 0)
  check_positive(shift, "buffer_with_time shift", true)
  return operator(self, function(src, sub)
    local timers = {}
    local windows = {}
    local function cancel_all()
      for i = 1, #timers do timers[i]:cancel() end
      timers = {}
    end
    if shift == nil or shift == span then
      windows[1] = {}
      timers[1] = aio.every(span, function()
        local w = windows[1]
        windows[1] = {}
        sub:next(w)
      end)
    else
      local function open()
        local w = {}
        windows[#windows + 1] = w
        local h
        h = aio.call_later(span, function()
          remove_value(windows, w)
          remove_value(timers, h)
          sub:next(w)
        end)
        timers[#timers + 1] = h
      end
      open()
      timers[#timers + 1] = aio.every(shift, open)
    end
    src:_chain(sub, function(v)
      for i = 1, #windows do
        local w = windows[i]
        w[#w + 1] = v
      end
    end, function(e)
      cancel_all()
      sub:error(e)
    end, function()
      cancel_all()
      for i = 1, #windows do sub:next(windows[i]) end
      windows = {}
      sub:completed()
    end)
    return cancel_all
  end)
end

-- debounce(seconds): a value is emitted only after `seconds` without a newer one; the
-- pending value is flushed at completion.
function Observable:debounce(seconds)
  check_number(seconds, 0, "debounce")
  return operator(self, function(src, sub)
    local handle, has, last = nil, false, nil
    local function cancel()
      if handle then handle:cancel() handle = nil end
    end
    src:_chain(sub, function(v)
      last, has = v, true
      cancel()
      handle = aio.call_later(seconds, function()
        handle = nil
        if has then
          has = false
          local x = last
          last = nil
          sub:next(x)
        end
      end)
    end, function(e)
      cancel()
      sub:error(e)
    end, function()
      cancel()
      if has then
        has = false
        sub:next(last)
      end
      sub:completed()
    end)
    return cancel
  end)
end
Observable.throttle_with_timeout = Observable.debounce

-- delay(seconds): every event (values and completion) shifted later by `seconds`; errors are
-- delivered at once.
function Observable:delay(seconds)
  check_number(seconds, 0, "delay")
  return operator(self, function(src, sub)
    local pending = {}
    local function later(fn)
      local h
      h = aio.call_later(seconds, function()
        pending[h] = nil
        fn()
      end)
      pending[h] = true
    end
    src:_chain(sub, function(v) later(function() sub:next(v) end) end,
      nil, function() later(function() sub:completed() end) end)
    return function()
      for h in pairs(pending) do h:cancel() end
      pending = {}
    end
  end)
end

-- catch_error(handler): on an error, continues with handler(err)'s observable (or table)
-- instead of failing. (An error the handler raises fails the stream: _chain guards it.)
function Observable:catch_error(handler)
  check_callable(handler, "catch_error")
  return operator(self, function(src, sub)
    src:_chain(sub, function(v) sub:next(v) end, function(e)
      rx.from(handler(e)):_chain(sub, function(v) sub:next(v) end)
    end)
  end)
end
Observable.catch = Observable.catch_error

-- retry([n]): on an error, subscribes to the source again, at most n times (forever if nil).
function Observable:retry(n)
  check_number(n, 0, "retry", true)
  return operator(self, function(src, sub)
    local left = n
    local attempt
    attempt = function()
      src:_chain(sub, function(v) sub:next(v) end, function(e)
        if left ~= nil then
          if left <= 0 then sub:error(e) return end
          left = left - 1
        end
        attempt()
      end)
    end
    attempt()
  end)
end

-- timeout(seconds): fails with a timeout error (aio.is_timeout recognises it) when no value
-- arrives within `seconds` of subscribing or of the previous value.
function Observable:timeout(seconds)
  check_number(seconds, 0, "timeout")
  return operator(self, function(src, sub)
    local h
    local function arm()
      if h then h:cancel() end
      h = aio.call_later(seconds, function()
        h = nil
        local err = aio.timeout_error and aio.timeout_error(seconds) or ("timeout after " .. seconds .. " s")
        sub:error(err)
      end)
    end
    arm()
    src:_chain(sub, function(v)
      arm()
      sub:next(v)
    end, function(e)
      if h then h:cancel() h = nil end
      sub:error(e)
    end, function()
      if h then h:cancel() h = nil end
      sub:completed()
    end)
    return function() if h then h:cancel() h = nil end end
  end)
end

---------------------------------------------------------------------------------------------
-- Subjects (hot observables that are also observers)
---------------------------------------------------------------------------------------------

local Subject = setmetatable({}, { __index = Observable })
Subject.__index = Subject
Subject.__name = "aio.rx.subject"

-- Delivers to a snapshot of the observers, so (un)subscribing during delivery is safe.
local function each_observer(s, method, ...)
  local obs = s._observers
  local copy = table.move(obs, 1, #obs, 1, {})
  for i = 1, #copy do copy[i][method](copy[i], ...) end
end

-- rx.subject(): a multicast hub; on_next/on_error/on_completed push to every subscriber.
function rx.subject()
  local s = setmetatable({ _observers = {}, stopped = false }, Subject)
  s._fn = function(sub) return s:_add(sub) end
  return s
end

-- Registers sub (or replays the terminal event) and returns its removal.
function Subject:_add(sub)
  if self.has_error then sub:error(self.err) return end
  if self.stopped then sub:completed() return end
  local obs = self._observers
  obs[#obs + 1] = sub
  return function() remove_value(obs, sub) end
end

function Subject:on_next(v)
  if self.stopped then return end
  each_observer(self, "next", v)
end

function Subject:on_error(e)
  if self.stopped then return end
  self.stopped, self.has_error, self.err = true, true, e
  each_observer(self, "error", e)
  self._observers = {}
end

function Subject:on_completed()
  if self.stopped then return end
  self.stopped = true
  each_observer(self, "completed")
  self._observers = {}
end

Subject.next = Subject.on_next
Subject.error = Subject.on_error
Subject.completed = Subject.on_completed

-- Number of current subscribers.
function Subject:observer_count() return #self._observers end

function Subject:__tostring()
  return string.format("aio.rx.subject (%d observers)", #self._observers)
end

-- rx.replay_subject([n]): a subject that replays its last n values (all when n is nil) to
-- every new subscriber before going live.
function rx.replay_subject(n)
  local s = rx.subject()
  s._buffer = {}
  s._fn = function(sub)
    local buf = s._buffer
    for i = 1, #buf do
      if sub.closed then return end
      sub:next(buf[i])
    end
    return s:_add(sub)
  end
  local base_next = Subject.on_next
  function s:on_next(v)
    if self.stopped then return end
    local buf = self._buffer
    buf[#buf + 1] = v
    if n and #buf > n then table.remove(buf, 1) end
    base_next(self, v)
  end
  s.next = s.on_next
  return s
end

-- rx.behavior_subject(initial): a subject that replays its latest value (initially `initial`).
function rx.behavior_subject(initial)
  local s = rx.replay_subject(1)
  s._buffer[1] = initial
  function s:value() return self._buffer[1] end
  return s
end

---------------------------------------------------------------------------------------------
-- Hot and cold: multicast, publish, replay, share
---------------------------------------------------------------------------------------------

local Connectable = setmetatable({}, { __index = Observable })
Connectable.__index = Connectable
Connectable.__name = "aio.rx.connectable"

-- multicast(factory): a connectable observable; subscribers attach to factory()'s subject and
-- the source runs once, from connect() on. A finished connection is replaced at next connect.
function Observable:multicast(factory)
  local c = setmetatable({ _source = self, _factory = factory }, Connectable)
  c._subject = factory()
  c._fn = function(sub) return c._subject._fn(sub) end
  return c
end

-- connect(): starts the shared subscription (idempotent while it runs); returns it.
function Connectable:connect()
  local conn = self._connection
  if conn and not conn.closed then return conn end
  if self._subject.stopped then self._subject = self._factory() end
  conn = self._source:subscribe(self._subject)
  self._connection = conn
  return conn
end

-- ref_count(): connects at the first subscriber and disconnects after the last leaves.
function Connectable:ref_count()
  local c = self
  local count = 0
  return create(function(sub)
    count = count + 1
    c:_subscribe_with(sub)
    if count == 1 then c:connect() end
    return function()
      count = count - 1
      if count == 0 and c._connection then c._connection:unsubscribe() end
    end
  end)
end

-- publish(): a hot view of the source through a plain subject (values before a subscriber
-- arrives are lost to it).
function Observable:publish() return self:multicast(rx.subject) end

-- replay([n]): like publish, but late subscribers first get the last n values (all if nil).
function Observable:replay(n)
  return self:multicast(function() return rx.replay_subject(n) end)
end

-- share(): publish():ref_count(): one upstream subscription for all current subscribers.
function Observable:share() return self:publish():ref_count() end

---------------------------------------------------------------------------------------------
-- Grouping and higher-order observables
---------------------------------------------------------------------------------------------

-- A group of group_by: an observable with a key.
local Grouped = setmetatable({}, { __index = Observable })
Grouped.__index = Grouped
Grouped.__name = "aio.rx.group"
function Grouped:__tostring() return "aio.rx.group (key " .. tostring(self.key) .. ")" end

-- group_by(key [, element]): emits one group per distinct key — a hot observable with .key —
-- and routes each value to its group. The source stays subscribed while the downstream or any
-- group subscription is alive (so take(1) on the groups still feeds the group taken).
function Observable:group_by(key, element)
  check_callable(key, "group_by key")
  check_callable(element, "group_by element", true)
  return operator(self, function(src, sub)
    local groups, order = {}, {}
    local outer_active, group_subs = true, 0
    local upstream
    local NILKEY = {}
    local function maybe_dispose()
      if not outer_active and group_subs == 0 and upstream then upstream:unsubscribe() end
    end
    local function new_group(k)
      local subject = rx.subject()
      local g = create(function(gs)
        group_subs = group_subs + 1
        local remove = subject:_add(gs)
        return function()
          if remove then remove() end
          group_subs = group_subs - 1
          maybe_dispose()
        end
      end)
      g.key = k
      g._subject = subject
      return setmetatable(g, Grouped)
    end
    upstream = new_subscriber(function(v)
      local k = key(v)
      local slot = k == nil and NILKEY or k
      local g = groups[slot]
      if not g then
        g = new_group(k)
        groups[slot] = g
        order[#order + 1] = g
        if outer_active then sub:next(g) end
      end
      if element then v = element(v) end
      g._subject:on_next(v)
    end, function(e)
      for i = 1, #order do order[i]._subject:on_error(e) end
      sub:error(e)
    end, function()
      for i = 1, #order do order[i]._subject:on_completed() end
      sub:completed()
    end)
    sub:add(function()
      outer_active = false
      maybe_dispose()
    end)
    src:_subscribe_with(upstream)
  end)
end

-- merge_all([max_concurrent]): subscribes to each inner observable as it arrives and emits
-- all their values; completes when the outer and every inner completed.
function Observable:merge_all(max_concurrent)
  check_number(max_concurrent, 1, "merge_all", true)
  return operator(self, function(src, sub)
    local active, outer_done = 0, false
    local waiting, whead = {}, 1
    local subscribe_inner
    local function inner_done()
      active = active - 1
      if whead <= #waiting then
        local nxt = waiting[whead]
        waiting[whead] = nil
        whead = whead + 1
        subscribe_inner(nxt)
      elseif outer_done and active == 0 then
        sub:completed()
      end
    end
    subscribe_inner = function(inner)
      active = active + 1
      rx.from(inner):_chain(sub, function(v) sub:next(v) end, nil, inner_done)
    end
    src:_chain(sub, function(inner)
      if max_concurrent and active >= max_concurrent then
        waiting[#waiting + 1] = inner
      else
        subscribe_inner(inner)
      end
    end, nil, function()
      outer_done = true
      if active == 0 and whead > #waiting then sub:completed() end
    end)
  end)
end
Observable.merge_observable = Observable.merge_all

-- concat_all(): inner observables one after another, in arrival order.
function Observable:concat_all() return self:merge_all(1) end

-- flat_map(f): map each value to an observable (or table) and merge them.
function Observable:flat_map(f)
  check_callable(f, "flat_map")
  return self:map(f):merge_all()
end
Observable.select_many = Observable.flat_map

-- concat_map(f): map each value to an observable and concatenate them.
function Observable:concat_map(f)
  check_callable(f, "concat_map")
  return self:map(f):concat_all()
end

-- rx.merge(...): all values of all the sources, interleaved as they come.
function rx.merge(...)
  return rx.from({ ... }):merge_all()
end
function Observable:merge(...) return rx.merge(self, ...) end

-- rx.concat(...): the sources one after another.
function rx.concat(...)
  return rx.from({ ... }):concat_all()
end
function Observable:concat(...) return rx.concat(self, ...) end

-- Splits (obs..., [fn]) into a list of observables and an optional combiner.
local function sources_and_fn(...)
  local args = pack(...)
  local fn
  if type(args[args.n]) == "function" then
    fn = args[args.n]
    args.n = args.n - 1
  end
  local list = {}
  for i = 1, args.n do list[i] = rx.from(args[i]) end
  return list, fn
end

-- rx.zip(a, b, ... [, fn]): pairs the i-th values of every source, as a list or fn(...).
-- Completes as soon as one source completed and has nothing left to pair.
function rx.zip(...)
  local sources, fn = sources_and_fn(...)
  local n = #sources
  return create(function(sub)
    local queues, done = {}, {}
    for i = 1, n do queues[i] = { head = 1, tail = 0 } end
    local function check_done()
      for i = 1, n do
        local q = queues[i]
        if done[i] and q.head > q.tail then sub:completed() return end
      end
    end
    for i = 1, n do
      if sub.closed then return end
      sources[i]:_chain(sub, function(v)
        local q = queues[i]
        q.tail = q.tail + 1
        q[q.tail] = v
        for j = 1, n do
          if queues[j].head > queues[j].tail then return end
        end
        local row = {}
        for j = 1, n do
          local qj = queues[j]
          row[j] = qj[qj.head]
          qj[qj.head] = nil
          qj.head = qj.head + 1
        end
        if fn then sub:next(fn(unpack(row, 1, n))) else sub:next(row) end
        check_done()
      end, nil, function()
        done[i] = true
        check_done()
      end)
    end
  end)
end
function Observable:zip(...) return rx.zip(self, ...) end

-- rx.combine_latest(a, b, ... [, fn]): whenever any source emits (once all have), the latest
-- value of each, as a list or fn(...). Completes when all sources completed.
function rx.combine_latest(...)
  local sources, fn = sources_and_fn(...)
  local n = #sources
  return create(function(sub)
    local latest, has, nhas, ndone = {}, {}, 0, 0
    for i = 1, n do
      if sub.closed then return end
      sources[i]:_chain(sub, function(v)
        latest[i] = v
        if not has[i] then has[i] = true nhas = nhas + 1 end
        if nhas == n then
          if fn then
            sub:next(fn(unpack(latest, 1, n)))
          else
            sub:next(table.move(latest, 1, n, 1, {}))
          end
        end
      end, nil, function()
        ndone = ndone + 1
        if ndone == n then sub:completed() end
      end)
    end
  end)
end
function Observable:combine_latest(...) return rx.combine_latest(self, ...) end

---------------------------------------------------------------------------------------------
-- Bridges to tasks and futures
---------------------------------------------------------------------------------------------

-- Subscribes collecting every value; returns a future for the list, and the subscription.
local function list_future(obs)
  local fut = aio.future()
  local list = {}
  local s = obs:subscribe(function(v) list[#list + 1] = v end,
    function(e)  -- (a future cannot fail with nil: name it as lua.c does)
      if e == nil then e = "(error object is a nil value)" end
      if not fut:done() then fut:set_error(e) end
    end,
    function() if not fut:done() then fut:set_result(list) end end)
  return fut, s
end

-- to_future(): a future resolved with the list of all values at completion (or failed).
function Observable:to_future()
  return (list_future(self))
end

-- to_list(): awaits completion and returns every value as a list (raises the stream's error).
-- Cancelling the awaiting task unsubscribes.
function Observable:to_list()
  local fut, s = list_future(self)
  local ok, res = pcall(fut.await, fut)
  if not ok then
    s:unsubscribe()
    error(res, 0)
  end
  return res
end

-- each(fn): awaits the stream, calling fn(value) for each value in order; fn may itself await
-- (values wait in a queue meanwhile). Raises the stream's error; returns at completion.
function Observable:each(fn)
  local items, head, tail = {}, 1, 0
  local finished, failed, err = false, false, nil
  local wake
  local function push(item)
    tail = tail + 1
    items[tail] = item
    if wake and not wake:done() then wake:set_result(true) end
  end
  local s = self:subscribe(function(v) push({ v }) end,
    function(e) failed, err = true, e push(false) end,
    function() finished = true push(false) end)
  local ok, e2 = pcall(function()
    while true do
      while head > tail do
        wake = aio.future()
        wake:await()
      end
      local item = items[head]
      items[head] = nil
      head = head + 1
      if item == false then
        if failed then error(err, 0) end
        return
      end
      fn(item[1])
    end
  end)
  s:unsubscribe()
  if not ok then error(e2, 0) end
  return finished
end
Observable.for_each = Observable.each

return rx
