-- aio.rx.combine — higher-order observables and combining sources: merge_all, concat_all,
-- flat_map, concat_map, merge, concat, zip, combine_latest.
-- Internal: part of aio.rx, which loads it.
local core = require "aio.rx.core"

local rx, Observable, create, operator = core.rx, core.Observable, core.create, core.operator
local check_callable, check_number = core.check_callable, core.check_number
local unpack = table.unpack
local pack = table.pack

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
