-- aio.rx.create — the creation functions: rx.of, rx.range, rx.from, rx.interval, rx.timer ...
-- Internal: part of aio.rx, which loads it.
local aio = require "aio"
local core = require "aio.rx.core"

local rx, create, is_cancel = core.rx, core.create, core.is_cancel
local check_number, check_positive = core.check_number, core.check_positive
local pack = table.pack

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
