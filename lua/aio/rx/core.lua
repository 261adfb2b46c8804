-- aio.rx.core — subscribers and observables: the three rules of aio.rx (see lua/aio/rx.lua),
-- rx.create, subscribe, and what the operators are built from (the upstream chaining, the
-- argument checks). Internal: the other parts of aio.rx take these through the table it returns.
local aio = require "aio"

local rx = {}

local Observable = {}
Observable.__index = Observable
Observable.__name = "aio.rx.observable"

local Subscriber = {}
Subscriber.__index = Subscriber
Subscriber.__name = "aio.rx.subscription"

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

-- What the other parts of aio.rx build on.
return {
  rx = rx, Observable = Observable, Subscriber = Subscriber, create = create,
  new_subscriber = new_subscriber, operator = operator,
  is_cancel = is_cancel, remove_value = remove_value,
  check_callable = check_callable, check_number = check_number, check_positive = check_positive,
}
