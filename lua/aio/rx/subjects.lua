-- aio.rx.subjects — subjects, hot observables that are also observers: rx.subject,
-- rx.replay_subject, rx.behavior_subject. Internal: part of aio.rx, which loads it.
local core = require "aio.rx.core"

local rx, Observable, remove_value = core.rx, core.Observable, core.remove_value

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
