-- aio.rx.transform — the transforming and filtering operators (map, filter, take, scan,
-- distinct, buffer_with_count ...), methods of every observable.
-- Internal: part of aio.rx, which loads it.
local core = require "aio.rx.core"

local rx, Observable, operator = core.rx, core.Observable, core.operator
local check_callable, check_number, check_positive = core.check_callable, core.check_number, core.check_positive

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
