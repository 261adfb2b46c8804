-- aio.rx.multicast — hot and cold: multicast, publish, replay, share (connectable
-- observables over a subject). Internal: part of aio.rx, which loads it.
local core = require "aio.rx.core"

local rx, Observable, create = core.rx, core.Observable, core.create

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
