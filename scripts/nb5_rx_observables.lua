-- scripts/nb5_rx_observables.lua — notebook 5 (seed 004), §6.3.1–6.3.2 Observables and useful
-- operators: from_iterable + subscribe, pull (iterator) vs push (observable), on_next /
-- on_completed, take(4) of a 100000-element source (which must stop the source), map, group_by
-- (keys, take(1) then subscribe, merge_all) and replay + concat_all.
--
--   aioshell scripts/nb5_rx_observables.lua
local rx = require "aio.rx"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb5_rx_observables", title = "Rx observables and operators",
  args = arg }

-- Subscribes and returns every value (and whether it completed) as a comma list.
local function collect(obs)
  local got, completed = {}, false
  obs:subscribe(function(v) got[#got + 1] = tostring(v) print(v) end, nil,
    function() completed = true end)
  return table.concat(got, ","), completed
end

-- Observable.from_iterable(range(4)).subscribe(print)
print("-- from_iterable(range(4)).subscribe(print)")
local obs = rx.from_iterable({ 0, 1, 2, 3 })
local s, done = collect(obs)
e:check(s == "0,1,2,3" and done, "from_iterable pushes 0,1,2,3 then completes")

-- Pulling from an iterator: next, next, then a for loop takes the rest.
print("-- iterator: pull")
local collection = { 1, 2, 3, 4, 5 }
local i = 0
local function iterator()
  i = i + 1
  return collection[i]
end
print("Next")
local pulled = { iterator(), iterator() }
print(pulled[1]) print(pulled[2])
print("For loop")
for x in iterator do pulled[#pulled + 1] = x print(x) end
e:check(table.concat(pulled, ",") == "1,2,3,4,5", "the iterator is pulled: 1 2 then 3 4 5")

-- subscribe(on_next=..., on_completed=...)
print("-- on_next / on_completed")
local msgs = {}
rx.from_iterable({ 0, 1, 2, 3 }):subscribe {
  on_next = function(x) msgs[#msgs + 1] = "Next item: " .. x print(msgs[#msgs]) end,
  on_completed = function() msgs[#msgs + 1] = "No more data" print(msgs[#msgs]) end,
}
e:check(#msgs == 5 and msgs[5] == "No more data", "observer table: four items then 'No more data'")

-- take(4) of range(100000): the source stops as soon as take is satisfied (auto-unsubscribe).
print("-- from_iterable(range(100000)).take(4)")
local produced = 0
local big = rx.create(function(sub)
  for k = 0, 99999 do
    if sub.closed then return end
    produced = produced + 1
    sub:next(k)
  end
  sub:completed()
end)
s = collect(big:take(4))
e:check(s == "0,1,2,3", "take(4) gives 0,1,2,3")
e:check(produced == 4, "the 100000-element source produced only %d values", produced)

-- map
print("-- map(x**2)")
s = collect(rx.from_iterable({ 0, 1, 2, 3 }):map(function(x) return x * x end))
e:check(s == "0,1,4,9", "map(x**2) gives 0,1,4,9 (got %s)", s)

-- group_by
print("-- group_by(x % 2)")
local groups = rx.range(0, 3):group_by(function(x) return x % 2 end)
local keys = {}
groups:subscribe(function(g) print(g) keys[#keys + 1] = g.key end)
groups:subscribe(function(g) print("group key: ", g.key) end)
e:check(table.concat(keys, ",") == "0,1", "two groups, keys 0 and 1")

print("-- take(1) then subscribe to the group")
local first = {}
groups:take(1):subscribe(function(g) g:subscribe(function(x) first[#first + 1] = x print(x) end) end)
e:check(table.concat(first, ",") == "0,2", "the first group (key 0) gets 0 and 2 after take(1) completed")

print("-- merge_all")
s = collect(groups:merge_all())
e:check(s == "0,1,2,3", "merge_all interleaves the groups: 0,1,2,3")

print("-- map(make_replay).concat_all()")
local function make_replay(a)
  local result = a:replay()
  result:connect()
  return result
end
s = collect(groups:map(make_replay):concat_all())
e:check(s == "0,2,1,3", "replay + concat_all gives group 0 then group 1: 0,2,1,3 (got %s)", s)

-- Errors in a callback flow to on_error; nothing escapes.
local err
rx.range(1, 3):map(function(x) if x == 2 then error("bad value") end return x end)
  :subscribe(function() end, function(e2) err = e2 end)
e:check(err ~= nil and tostring(err):find("bad value", 1, true) ~= nil, "an error in map reaches on_error")

e:result { key = "operators", label = "from/take/map/group_by/merge_all/concat_all",
  measured = e.failures == 0 and "all outputs match" or "mismatch",
  reference = "0 1 2 3 · 0 1 4 9 · 0 2 1 3", reproduced = e.failures == 0 }
e:finish()
