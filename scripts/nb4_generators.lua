-- scripts/nb4_generators.lua — notebook 4 (seed 003), "Coroutines": eager vs lazy range,
-- jumping_range with send, generator delegation (Python's `yield from`) and the
-- bottom/middle/top value passing — with plain Lua coroutines, which are exactly Python's
-- generator-based coroutines (resume = next/send, yield = yield, return = StopIteration.value).
--
--   aioshell scripts/nb4_generators.lua
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb4_generators", title = "Generators and coroutines", args = arg }

local out = {}
-- Prints like the notebook and records the line for the checks.
local function say(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  local line = table.concat(parts, " ")
  out[#out + 1] = line
  print(line)
end

-- A Python-style generator object over a Lua function: g:next(), g:send(v), iteration with
-- `for v in g:iter()`, and StopIteration as an error table {stop = true, value = ret}. As in
-- Python 3.7+ (PEP 479), a StopIteration escaping a generator's body becomes a RuntimeError.
local Gen = {}
Gen.__index = Gen
local function generator(fn, ...)
  return setmetatable({ co = coroutine.create(fn), args = table.pack(...), started = false }, Gen)
end
function Gen:send(v)
  local r
  if not self.started then
    assert(v == nil, "can't send non-None value to a just-started generator")
    self.started = true
    r = table.pack(coroutine.resume(self.co, table.unpack(self.args, 1, self.args.n)))
  elseif coroutine.status(self.co) == "dead" then
    error({ stop = true }, 0)
  else
    r = table.pack(coroutine.resume(self.co, v))
  end
  if not r[1] then
    if type(r[2]) == "table" and r[2].stop then error("RuntimeError: generator raised StopIteration", 0) end
    error(r[2], 0)
  end
  if coroutine.status(self.co) == "dead" then error({ stop = true, value = r[2] }, 0) end
  return r[2]
end
function Gen:next() return self:send(nil) end
function Gen:iter()
  return function()
    local ok, v = pcall(self.next, self)
    if ok then return v end
    if type(v) == "table" and v.stop then return nil end
    error(v, 0)
  end
end
local yield = coroutine.yield

-- `yield from sub`: forwards values both ways and returns the sub-generator's return value.
local function yield_from(sub)
  local sent
  while true do
    local ok, v = pcall(sub.send, sub, sent)
    if not ok then
      if type(v) == "table" and v.stop then return v.value end
      error(v, 0)
    end
    sent = yield(v)
  end
end

-- Collects a generator's remaining values into a string "a,b,c".
local function rest(g)
  local t = {}
  for v in g:iter() do t[#t + 1] = tostring(v) end
  return table.concat(t, ",")
end

-- 1. eager_range vs lazy_range --------------------------------------------------------------
local function eager_range(up_to)
  local sequence, index = {}, 0
  while index < up_to do
    sequence[#sequence + 1] = index
    index = index + 1
  end
  return sequence
end

local function lazy_range(up_to)
  local index = 0
  while index < up_to do
    yield(index)
    index = index + 1
  end
end

say("eager_range(5):", table.concat(eager_range(5), ","))
local it = generator(lazy_range, 5)
local a, b = it:next(), it:next()
say(a)
say(b)
local r1 = rest(it)
say("for loop:", r1)
local ok, stop = pcall(it.next, it)
say("next after the end:", (not ok and type(stop) == "table" and stop.stop) and "StopIteration" or "?")
e:check(table.concat(eager_range(5), ",") == "0,1,2,3,4", "eager_range(5) builds the whole list")
e:check(a == 0 and b == 1 and r1 == "2,3,4", "lazy_range yields 0, 1, then 2,3,4 in the loop")
e:check(not ok and stop.stop, "next() on an exhausted generator raises StopIteration")

-- 2. jumping_range: sending a value shifts the sequence ----------------------------------------
local function jumping_range(up_to)
  local index = 0
  while index < up_to do
    local jump = yield(index)
    if jump == nil then jump = 1 end
    index = index + jump
  end
end

local j = generator(jumping_range, 5)
local seq = { j:next(), j:send(2), j:next(), j:send(-1) }
local tail = rest(j)
say("jumping_range:", table.concat(seq, ","), tail)
e:check(table.concat(seq, ",") == "0,2,3,2" and tail == "3,4",
  "jumping_range prints 0 2 3 2 then 3 4 (notebook: 0,2,3,2,3,4)")

-- 3. Delegation: a generator that re-yields a sub-generator (for-loop form and yield-from form)
local function lazy_range_delegating(up_to)
  local index = 0
  local function gratuitous_refactor()
    while index < up_to do
      yield(index)
      index = index + 1
    end
  end
  for n in generator(gratuitous_refactor):iter() do yield(n) end
end
local d = generator(lazy_range_delegating, 5)
local d1, d2 = d:next(), d:next()
local drest = rest(d)
say("delegating lazy_range:", d1, d2, drest)
e:check(d1 == 0 and d2 == 1 and drest == "2,3,4", "delegation with a for loop yields 0..4")

-- The notebook's send-aware for loop ("Is it just syntax sugar for 'for' with send?"): each
-- itr.send(y) advances the sub-generator and its value is dropped, so the caller sees every
-- other value, and the send that finds the sub-generator exhausted raises StopIteration inside
-- the body: a RuntimeError in Python 3.7+. yield_from below is what `yield from` really does.
-- The send-aware gratuitous_refactor: a sent offset moves the index back.
local function offset_inner(up_to)
  local index = 0
  while index < up_to do
    local offset = yield(index)
    if offset == nil then offset = 0 end
    index = index + 1 - offset
  end
end
local function lazy_range_for_send(up_to)
  local itr = generator(offset_inner, up_to)
  for x in itr:iter() do
    local y = yield(x)
    itr:send(y)
  end
end
local fs = generator(lazy_range_for_send, 5)
local seen = { fs:next(), fs:next() }
local okf, ferr = pcall(function() for x in fs:iter() do seen[#seen + 1] = x end end)
say("for loop with send:", table.concat(seen, ","), okf and "" or ("then " .. tostring(ferr)))
e:check(table.concat(seen, ",") == "0,2,4" and not okf and tostring(ferr):find("generator raised StopIteration", 1, true),
  "the notebook's for-loop-with-send yields 0, 2, 4, then RuntimeError: generator raised StopIteration")

-- The send-aware version with yield_from: sent values reach the sub-generator.
local function outer_yield_from(up_to) return yield_from(generator(offset_inner, up_to)) end
local y = generator(outer_yield_from, 5)
local ys = { y:next(), y:send(1), y:next(), y:next() }
say("yield_from with send:", table.concat(ys, ","))
e:check(table.concat(ys, ",") == "0,0,1,2", "yield_from forwards send(1) to the sub-generator (repeat 0)")

-- 4. bottom / middle / top: a value goes up the chain and the answer comes back down ----------
local function bottom() return yield(42) end
local function middle() return yield_from(generator(bottom)) end
local function top() return yield_from(generator(middle)) end
local gen = generator(top)
local value = gen:next()
say(value)
local okv, st = pcall(gen.send, gen, value * 2)
if not okv and type(st) == "table" and st.stop then value = st.value end
say(value)
e:check(value == 84, "bottom/middle/top: 42 goes up, 84 comes back as the return value")

e:result { key = "generators", label = "generator protocol (lazy, send, yield from)",
  measured = e.failures == 0 and "all sequences match" or "mismatch",
  reference = "0,1,2,3,4 · 0,2,3,2,3,4 · 42 → 84", reproduced = e.failures == 0 }
e:finish()
