-- aio.rx.group — group_by: one hot observable per key, each value routed to its group.
-- Internal: part of aio.rx, which loads it.
local core = require "aio.rx.core"

local rx, Observable, create, operator = core.rx, core.Observable, core.create, core.operator
local new_subscriber, check_callable = core.new_subscriber, core.check_callable

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
