-- spec/rx_spec.lua — aio.rx: every operator as a marble expectation on virtual time, hot vs cold,
-- automatic unsubscription, error flow, and the bridges to tasks.
--
-- A marble here is the list of events "t:value" (t in seconds since subscription, virtual),
-- "t:|" for completion and "t:#msg" for an error. Virtual time makes every timer jump, so the
-- whole file runs in milliseconds and the timings are exact.
local aio = require "aio"
local rx = require "aio.rx"
local helper = require "spec.helper"

-- Formats a value for a marble: lists as {a,b}, the rest with tostring.
local function fmt(v)
  if type(v) == "table" and not rx.is_observable(v) then
    local parts = {}
    for i = 1, #v do parts[i] = fmt(v[i]) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return tostring(v)
end

-- The message of an error without its "file:line: " prefix.
local function msg(e)
  local s = tostring(e)
  return (s:gsub("^[^:]*:%d+: ", ""))
end

-- Subscribes and returns the event list (filled as events come) and the subscription.
local function record(obs)
  local t0 = aio.now()
  local ev = {}
  local function stamp() return string.format("%g", math.floor((aio.now() - t0) * 1000 + 0.5) / 1000) end
  local sub = obs:subscribe(function(v) ev[#ev + 1] = stamp() .. ":" .. fmt(v) end,
    function(e) ev[#ev + 1] = stamp() .. ":#" .. msg(e) end,
    function() ev[#ev + 1] = stamp() .. ":|" end)
  return ev, sub
end

-- Subscribes, lets `run_for` virtual seconds pass, unsubscribes; returns the marble string.
local function marble(obs, run_for)
  local ev, sub = record(obs)
  aio.sleep(run_for or 10)
  sub:unsubscribe()
  return table.concat(ev, " ")
end

-- Values only, synchronously.
local function values(obs)
  local out = {}
  obs:subscribe(function(v) out[#out + 1] = fmt(v) end)
  return table.concat(out, ",")
end

-- A subject driven by a script of {t, value} pairs ("|" completes, "#x" errors) on the clock.
local function hot(script)
  local s = rx.subject()
  for _, step in ipairs(script) do
    aio.call_later(step[1], function()
      local v = step[2]
      if v == "|" then s:on_completed()
      elseif type(v) == "string" and v:sub(1, 1) == "#" then s:on_error(v:sub(2))
      else s:on_next(v) end
    end)
  end
  return s
end

-- Lets `seconds` pass, cancels task t and checks that awaiting it raises the cancellation.
local function cancel_after(t, seconds)
  aio.sleep(seconds)
  t:cancel()
  local ok, err = pcall(t.await, t)
  assert.is_false(ok)
  assert.is_true(aio.is_cancelled(err))
end

local unhandled
local saved_hook
setup(function()
  aio.clock.virtual()
  saved_hook = rx.on_unhandled_error
  rx.on_unhandled_error = function(e) unhandled[#unhandled + 1] = e end
end)
teardown(function()
  rx.on_unhandled_error = saved_hook
  aio.clock.real()
end)
before_each(function() unhandled = {} end)
after_each(function()
  aio.sleep(0)
  helper.assert_no_tasks()
end)

describe("creation", function()
  it("of, from (table, iterator, coroutine), range, empty, throw", function()
    assert.equal("1,a,true", values(rx.of(1, "a", true)))
    assert.equal("5,6,7", values(rx.from({ 5, 6, 7 })))
    local i = 0
    assert.equal("1,2,3", values(rx.from(function() i = i + 1 if i <= 3 then return i end end)))
    local co = coroutine.create(function() coroutine.yield("x") coroutine.yield("y") end)
    assert.equal("x,y", values(rx.from(co)))
    assert.equal("1,2,3,4", values(rx.range(4)))
    assert.equal("0,2,4", values(rx.range(0, 4, 2)))
    assert.equal("0:|", marble(rx.empty(), 0))
    assert.equal("0:#boom", marble(rx.throw("boom"), 0))
    assert.equal("", marble(rx.never(), 1))
  end)

  it("create runs its producer per subscription and its teardown on unsubscribe", function()
    local started, torn = 0, 0
    local obs = rx.create(function(sub)
      started = started + 1
      sub:next(started)
      return function() torn = torn + 1 end
    end)
    local s1 = obs:subscribe(function() end)
    local s2 = obs:subscribe(function() end)
    assert.equal(2, started)
    assert.equal(0, torn)
    s1:unsubscribe()
    s1:unsubscribe()  -- idempotent
    assert.equal(1, torn)
    s2:unsubscribe()
    assert.equal(2, torn)
  end)

  it("defer calls its factory at each subscription", function()
    local n = 0
    local obs = rx.defer(function() n = n + 1 return rx.of(n) end)
    assert.equal("1", values(obs))
    assert.equal("2", values(obs))
  end)

  it("accepts an observer table", function()
    local got, done = {}, false
    rx.of(1, 2):subscribe { on_next = function(v) got[#got + 1] = v end, on_completed = function() done = true end }
    assert.same({ 1, 2 }, got)
    assert.is_true(done)
  end)

  it("interval ticks on the loop clock", function()
    assert.equal("0.1:0 0.2:1 0.3:2 0.3:|", marble(rx.interval(0.1):take(3)))
  end)

  it("timer fires once, or periodically with a period", function()
    assert.equal("0.5:0 0.5:|", marble(rx.timer(0.5)))
    assert.equal("0.5:0 0.7:1 0.9:2 0.9:|", marble(rx.timer(0.5, 0.2):take(3)))
  end)

  it("from_future emits a task's result", function()
    local t = aio.spawn(function() aio.sleep(0.3) return "r" end)
    assert.equal("0.3:r 0.3:|", marble(rx.from_future(t), 1))
    local f = aio.future()
    aio.call_later(0.2, function() f:set_error("bad") end)
    assert.equal("0.2:#bad", marble(rx.from(f), 1))
  end)
end)

describe("operators", function()
  it("map, filter, take, skip", function()
    assert.equal("0,1,4,9", values(rx.range(0, 3):map(function(x) return x * x end)))
    assert.equal("2,4", values(rx.range(5):filter(function(x) return x % 2 == 0 end)))
    assert.equal("1,2", values(rx.range(5):take(2)))
    assert.equal("", values(rx.range(5):take(0)))
    assert.equal("4,5", values(rx.range(5):skip(3)))
  end)

  it("take_while, skip_while, take_until", function()
    assert.equal("1,2", values(rx.of(1, 2, 5, 1):take_while(function(x) return x < 3 end)))
    assert.equal("5,1", values(rx.of(1, 2, 5, 1):skip_while(function(x) return x < 3 end)))
    assert.equal("0.1:0 0.2:1 0.25:|", marble(rx.interval(0.1):take_until(rx.timer(0.25))))
  end)

  it("to_table gives each subscription its own list", function()
    local lists = rx.range(3):to_table()
    local a, b
    lists:subscribe(function(t) a = t end)
    lists:subscribe(function(t) b = t end)
    assert.same({1, 2, 3}, a)
    assert.same({1, 2, 3}, b)
    assert.are_not.equal(a, b)
  end)

  it("scan and reduce, with and without a seed", function()
    assert.equal("1,3,6", values(rx.range(3):scan(function(a, b) return a + b end)))
    assert.equal("11,13,16", values(rx.range(3):scan(function(a, b) return a + b end, 10)))
    assert.equal("6", values(rx.range(3):reduce(function(a, b) return a + b end)))
    assert.equal("0:|", marble(rx.empty():reduce(function(a, b) return a + b end), 0))
    assert.equal("0:0 0:|", marble(rx.empty():reduce(function(a, b) return a + b end, 0), 0))
    assert.equal("3", values(rx.of("a", "b", "c"):count()))
    assert.equal("10", values(rx.range(4):sum()))
    assert.equal("1", values(rx.range(4):first()))
    assert.equal("4", values(rx.range(4):last()))
  end)

  it("start_with, distinct, distinct_until_changed", function()
    assert.equal("0,1,2", values(rx.of(1, 2):start_with(0)))
    assert.equal("1,2,3", values(rx.of(1, 2, 1, 3, 2):distinct()))
    assert.equal("1,2", values(rx.of(1, 11, 2, 12):distinct(function(x) return x % 10 end)))
    assert.equal("1,2,1", values(rx.of(1, 1, 2, 2, 1):distinct_until_changed()))
  end)

  it("buffer_with_count, tumbling and sliding, flushing partial buffers", function()
    assert.equal("{1,2},{3,4},{5}", values(rx.range(5):buffer_with_count(2)))
    assert.equal("{1,2,3},{2,3,4},{3,4},{4}", values(rx.range(4):buffer_with_count(3, 1)))
    assert.equal("{1},{4}", values(rx.range(5):buffer_with_count(1, 3)))
  end)

  it("buffer_with_time collects per half-open window [start, end) (empty ones included)", function()
    -- A value due at the very instant a window ends belongs to the next window.
    assert.equal("0.25:{0,1} 0.5:{2,3} 0.75:{4,5,6} 1:{7,8} 1:{9} 1:|",
      marble(rx.interval(0.1):take(10):buffer_with_time(0.25)))
    local s = hot { { 0.1, "a" }, { 0.7, "b" }, { 0.8, "|" } }
    assert.equal("0.3:{a} 0.6:{} 0.8:{b} 0.8:|", marble(s:buffer_with_time(0.3)))
  end)

  it("buffer_with_time with a shift opens overlapping windows", function()
    assert.equal("0.3:{0,1} 0.5:{1,2,3} 0.7:{3,4,5} 0.7:{5,6} 0.7:|",
      marble(rx.interval(0.1):take(7):buffer_with_time(0.3, 0.2)))
  end)

  it("debounce emits after a quiet period and flushes at completion", function()
    local s = hot { { 0.1, "a" }, { 0.2, "b" }, { 0.6, "c" }, { 1.5, "d" }, { 1.6, "|" } }
    assert.equal("0.5:b 0.9:c 1.6:d 1.6:|", marble(s:debounce(0.3)))
  end)

  it("delay shifts values and completion", function()
    assert.equal("0.5:1 0.5:2 0.5:|", marble(rx.of(1, 2):delay(0.5)))
    assert.equal("0.3:0 0.4:1 0.4:|", marble(rx.interval(0.1):take(2):delay(0.2)))
  end)

  it("zip pairs by index and completes with the shortest", function()
    assert.equal("0.1:{a,0} 0.2:{b,1} 0.2:|", marble(rx.of("a", "b"):zip(rx.interval(0.1))))
    assert.equal("3,7", values(rx.zip(rx.of(1, 3), rx.of(2, 4, 6), function(a, b) return a + b end)))
  end)

  it("combine_latest emits once all have a value, then on every change", function()
    local a = hot { { 0.1, 1 }, { 0.3, 2 }, { 0.5, "|" } }
    local b = hot { { 0.2, "x" }, { 0.4, "y" }, { 0.6, "|" } }
    assert.equal("0.2:{1,x} 0.3:{2,x} 0.4:{2,y} 0.6:|", marble(rx.combine_latest(a, b)))
  end)

  it("group_by emits groups with .key; merge_all interleaves, concat_all orders", function()
    local groups = rx.range(0, 5):group_by(function(x) return x % 3 end)
    local keys = {}
    groups:subscribe(function(g) keys[#keys + 1] = g.key end)
    assert.same({ 0, 1, 2 }, keys)
    assert.equal("0,1,2,3,4,5", values(groups:merge_all()))
    local function make_replay(g)
      local r = g:replay()
      r:connect()
      return r
    end
    assert.equal("0,3,1,4,2,5", values(groups:map(make_replay):concat_all()))
    assert.equal("10,13", values(rx.range(0, 5):group_by(function(x) return x % 3 end,
      function(x) return x + 10 end):take(1):merge_all()))
  end)

  it("group_by keeps feeding a group taken with take(1)", function()
    local got = {}
    rx.range(0, 3):group_by(function(x) return x % 2 end):take(1)
      :subscribe(function(g) g:subscribe(function(x) got[#got + 1] = x end) end)
    assert.same({ 0, 2 }, got)
  end)

  it("merge_all of timed inners, with and without a concurrency limit", function()
    local outer = rx.of(rx.interval(0.2):take(2):map(function(i) return "a" .. i end),
      rx.interval(0.3):take(2):map(function(i) return "b" .. i end))
    assert.equal("0.2:a0 0.3:b0 0.4:a1 0.6:b1 0.6:|", marble(outer:merge_all()))
    assert.equal("0.2:a0 0.4:a1 0.7:b0 1:b1 1:|", marble(outer:concat_all()))
    assert.equal("0.2:a0 0.4:a1 0.7:b0 1:b1 1:|", marble(outer:merge_all(1)))
  end)

  it("flat_map and concat_map", function()
    local f = function(x) return rx.timer(x * 0.1):map(function() return x end) end
    assert.equal("0.1:1 0.2:2 0.3:3 0.3:|", marble(rx.of(3, 1, 2):flat_map(f)))
    assert.equal("0.3:3 0.4:1 0.6:2 0.6:|", marble(rx.of(3, 1, 2):concat_map(f)))
    assert.equal("1,1,2,2", values(rx.of(1, 2):flat_map(function(x) return { x, x } end)))
  end)

  it("merge and concat of sources", function()
    assert.equal("0.1:0 0.15:0 0.2:1 0.3:1 0.3:|",
      marble(rx.merge(rx.interval(0.1):take(2), rx.interval(0.15):take(2))))
    assert.equal("1,2,3", values(rx.concat(rx.of(1), rx.of(2, 3))))
  end)
end)

describe("error operators", function()
  it("catch_error continues with another observable", function()
    local src = rx.concat(rx.of(1, 2), rx.throw("bad"))
    assert.equal("0:1 0:2 0:x:bad 0:|", marble(src:catch_error(function(e) return rx.of("x:" .. msg(e)) end), 0))
    assert.equal("0:1 0:2 0:#worse", marble(src:catch_error(function() error("worse") end), 0))
  end)

  it("retry resubscribes after an error, at most n times", function()
    local attempts = 0
    local flaky = rx.defer(function()
      attempts = attempts + 1
      if attempts < 3 then return rx.concat(rx.of("try" .. attempts), rx.throw("fail" .. attempts)) end
      return rx.of("ok")
    end)
    assert.equal("0:try1 0:try2 0:ok 0:|", marble(flaky:retry(5), 0))
    attempts = 0
    assert.equal("0:try1 0:try2 0:#fail2", marble(flaky:retry(1), 0))
  end)

  it("timeout fails when the next value is late, and is quiet otherwise", function()
    local s = hot { { 0.1, "a" }, { 0.3, "b" }, { 0.9, "c" } }
    local ev = record(s:timeout(0.4))
    aio.sleep(2)
    assert.equal("0.1:a 0.3:b", table.concat(ev, " ", 1, 2))
    assert.truthy(ev[3]:match("^0%.7:#"), ev[3])
    assert.equal("0.1:0 0.2:1 0.2:|", marble(rx.interval(0.1):take(2):timeout(0.15)))
    local err
    rx.never():timeout(0.1):subscribe(nil, function(e) err = e end)
    aio.sleep(0.2)
    assert.is_true(aio.is_timeout(err))
  end)

  it("a group prints its key", function()
    local g
    rx.of(5):group_by(function(x) return x % 2 end):subscribe(function(x) g = x end)
    assert.equal("aio.rx.group (key 1)", tostring(g))
  end)
end)

describe("hot and cold", function()
  it("a cold interval starts a new sequence per subscriber", function()
    local cold = rx.interval(0.1):take(2)
    local ev1 = record(cold)
    aio.sleep(0.05)
    local ev2 = record(cold)
    aio.sleep(1)
    assert.equal("0.1:0 0.2:1 0.2:|", table.concat(ev1, " "))
    assert.equal("0.1:0 0.2:1 0.2:|", table.concat(ev2, " "))
  end)

  it("publish shares one subscription from connect on; a late subscriber joins midway", function()
    local subscriptions = 0
    local src = rx.defer(function() subscriptions = subscriptions + 1 return rx.interval(0.1) end)
    local hot_obs = src:publish()
    local ev1 = record(hot_obs:take(4))
    aio.sleep(0.5)
    assert.equal("", table.concat(ev1, " "))  -- nothing before connect
    local conn = hot_obs:connect()
    assert.equal(conn, hot_obs:connect())    -- connect is idempotent while connected
    aio.sleep(0.25)
    local ev2 = record(hot_obs:take(2))
    aio.sleep(1)
    conn:unsubscribe()
    assert.equal(1, subscriptions)
    assert.equal("0.6:0 0.7:1 0.8:2 0.9:3 0.9:|", table.concat(ev1, " "))
    assert.equal("0.05:2 0.15:3 0.15:|", table.concat(ev2, " "))
  end)

  it("replay(n) hands a late subscriber the last n values at once", function()
    local r = rx.interval(0.1):replay(2)
    local conn = r:connect()
    aio.sleep(0.45)
    local ev = record(r:take(3))
    aio.sleep(1)
    conn:unsubscribe()
    assert.equal("0:2 0:3 0.05:4 0.05:|", table.concat(ev, " "))
  end)

  it("share connects on the first subscriber and disconnects after the last", function()
    local active = 0
    local src = rx.create(function(sub)
      active = active + 1
      local h = aio.every(0.1, function() sub:next(aio.now()) end)
      return function() active = active - 1 h:cancel() end
    end)
    local shared = src:share()
    local a = shared:subscribe(function() end)
    local b = shared:subscribe(function() end)
    assert.equal(1, active)
    a:unsubscribe()
    assert.equal(1, active)
    b:unsubscribe()
    assert.equal(0, active)
  end)

  it("subject multicasts, and a late subscriber of a finished subject gets the end", function()
    local s = rx.subject()
    local a, b = {}, {}
    local sa = s:subscribe(function(v) a[#a + 1] = v end)
    s:on_next(1)
    s:subscribe(function(v) b[#b + 1] = v end)
    s:on_next(2)
    sa:unsubscribe()
    s:on_next(3)
    assert.same({ 1, 2 }, a)
    assert.same({ 2, 3 }, b)
    assert.equal(1, s:observer_count())
    s:on_completed()
    assert.equal("0:|", marble(s, 0))
    s:on_next(4)
    assert.same({ 2, 3 }, b)
  end)

  it("replay_subject and behavior_subject", function()
    local r = rx.replay_subject(2)
    r:on_next(1) r:on_next(2) r:on_next(3)
    assert.equal("0:2 0:3", marble(r, 0))
    local bsub = rx.behavior_subject("init")
    assert.equal("0:init", marble(bsub, 0))
    bsub:on_next("new")
    assert.equal("new", bsub:value())
  end)
end)

describe("unsubscription", function()
  it("take stops a synchronous infinite source", function()
    local produced = 0
    local src = rx.create(function(sub)
      while not sub.closed do
        produced = produced + 1
        sub:next(produced)
      end
    end)
    assert.equal("1,2,3", values(src:take(3)))
    assert.equal(3, produced)
  end)

  it("completion, error and unsubscribe each run the upstream teardown exactly once", function()
    local torn = 0
    local function src()
      return rx.create(function(sub)
        local h = aio.every(0.1, function() sub:next(1) end)
        return function() torn = torn + 1 h:cancel() end
      end)
    end
    marble(src():take(2), 1)
    assert.equal(1, torn)
    marble(src():map(function() error("x") end), 1)
    assert.equal(2, torn)
    local s = src():subscribe(function() end)
    aio.sleep(0.25)
    s:unsubscribe()
    assert.equal(3, torn)
    assert.is_true(s.closed)
  end)

  it("after take() completes an interval, its timer is gone", function()
    local ticks = 0
    marble(rx.interval(0.1):tap(function() ticks = ticks + 1 end):take(2), 0.5)
    aio.sleep(1)
    assert.equal(2, ticks)
  end)

  it("a cancellation raised in catch_error's handler cancels the task, not the stream", function()
    local got
    local t = aio.spawn(function()
      rx.throw("x"):catch_error(function() aio.sleep(1) return rx.of(1) end)
        :subscribe(function(v) got = v end, function(e) got = e end)
      return "went on"
    end)
    cancel_after(t, 0.1)
    assert.is_nil(got)
  end)

  it("cancelling a task awaiting to_list unsubscribes", function()
    local torn = false
    local src = rx.create(function() return function() torn = true end end)
    local t = aio.spawn(function() return src:to_list() end)
    cancel_after(t, 0.1)
    assert.is_true(torn)
  end)
end)

describe("errors", function()
  it("an error in an operator's function reaches on_error and stops the stream", function()
    assert.equal("0:1 0:#bad 2", marble(rx.range(3):map(function(x)
      if x == 2 then error("bad 2") end
      return x
    end), 0))
  end)

  it("an error in the subscriber's on_next goes to its own on_error", function()
    local got
    local s = rx.range(5):subscribe(function(x) if x == 2 then error("no two") end end,
      function(e) got = msg(e) end)
    assert.equal("no two", got)
    assert.is_true(s.closed)
  end)

  it("errors nobody handles go to rx.on_unhandled_error, never to the loop", function()
    rx.range(3):map(function() error("lost") end):subscribe(function() end)
    rx.throw("also lost"):subscribe(function() end, function() error("handler broke") end)
    assert.equal(2, #unhandled)
    assert.equal("lost", msg(unhandled[1]))
    assert.equal("handler broke", msg(unhandled[2]))
  end)

  it("an error raised in a timer-driven callback does not kill the loop", function()
    local after = 0
    local ev = record(rx.interval(0.1):map(function(i) if i == 1 then error("tick") end return i end))
    aio.call_later(0.5, function() after = after + 1 end)
    aio.sleep(1)
    assert.equal("0.1:0 0.2:#tick", table.concat(ev, " "))
    assert.equal(1, after)
  end)

  it("an error raised in an operator's terminal callback fails the stream downstream", function()
    assert.equal("0:1 0:2 0:#tap done", marble(rx.of(1, 2):tap(nil, nil, function()
      error("tap done")
    end), 0))
    assert.equal("0:#tap err", marble(rx.throw("x"):tap(nil, function() error("tap err") end), 0))
    assert.equal("0:#rx.from: cannot make an observable from a nil",
      marble(rx.throw("x"):catch_error(function() return nil end), 0))
    assert.equal(0, #unhandled)
  end)

  it("an operator given a wrong argument raises at the call, not when values come", function()
    local src = rx.of(1)
    assert.has_error(function() src:map(nil) end, "map: expected a function, got nil")
    assert.has_error(function() src:filter("x") end, "filter: expected a function, got string")
    assert.has_error(function() src:take() end, "take: expected a number >= 0, got nil")
    assert.has_error(function() src:debounce("1") end, "debounce: expected a number >= 0, got 1")
    assert.has_error(function() src:group_by() end, "group_by key: expected a function, got nil")
    local callable = setmetatable({}, { __call = function(_, v) return v + 1 end })
    assert.equal("2", values(src:map(callable)))
  end)

  it("the operators with optional or several arguments check each one at the call", function()
    local src = rx.of(1)
    assert.has_error(function() src:tap("x") end, "tap on_next: expected a function, got string")
    assert.has_error(function() src:tap(nil, 1) end, "tap on_error: expected a function, got number")
    assert.has_error(function() src:tap(nil, nil, {}) end, "tap on_completed: expected a function, got table")
    assert.has_error(function() src:distinct("k") end, "distinct: expected a function, got string")
    assert.has_error(function() src:distinct_until_changed(1) end,
      "distinct_until_changed: expected a function, got number")
    assert.has_error(function() src:group_by(math.abs, 2) end, "group_by element: expected a function, got number")
    assert.has_error(function() src:flat_map() end, "flat_map: expected a function, got nil")
    assert.has_error(function() src:concat_map(1) end, "concat_map: expected a function, got number")
    assert.has_error(function() src:retry(-1) end, "retry: expected a number >= 0, got -1")
    assert.has_error(function() src:retry("3") end, "retry: expected a number >= 0, got 3")
    assert.has_error(function() src:merge_all(0) end, "merge_all: expected a number >= 1, got 0")
    assert.has_error(function() src:merge_all(0 / 0) end, "merge_all: expected a number >= 1, got " .. tostring(0 / 0))
    assert.has_error(function() src:buffer_with_count("2") end, "buffer_with_count n: expected a number > 0, got 2")
    assert.has_error(function() src:buffer_with_count(2, 0) end, "buffer_with_count skip: expected a number > 0, got 0")
    assert.has_error(function() src:buffer_with_time(1, -1) end, "buffer_with_time shift: expected a number > 0, got -1")
    -- 0 passed the check, then failed each subscription with aio.every's error
    assert.has_error(function() src:buffer_with_time(0) end, "buffer_with_time span: expected a number > 0, got 0")
    assert.has_error(function() src:buffer_with_time(1, 0) end, "buffer_with_time shift: expected a number > 0, got 0")
    assert.has_error(function() rx.interval(-1) end, "interval: expected a number > 0, got -1")
    assert.has_error(function() rx.interval(0 / 0) end, "interval: expected a number > 0, got " .. tostring(0 / 0))
    assert.has_error(function() rx.timer(-1) end, "timer due: expected a number >= 0, got -1")
    assert.has_error(function() rx.timer(0 / 0) end, "timer due: expected a number >= 0, got " .. tostring(0 / 0))
    assert.has_error(function() rx.timer(1, 0) end, "timer period: expected a number > 0, got 0")
    assert.has_error(function() rx.timer(1, "x") end, "timer period: expected a number > 0, got x")
    -- The error names the line of the call, where the mistake is, not one inside aio.rx.
    local ok, err = pcall(function() src:tap(5) end)
    assert.is_false(ok)
    assert.truthy(err:find("rx_spec.lua:%d+: tap on_next"), err)
    -- The optional arguments may still be left out (or given as nil).
    assert.equal("1", values(src:tap(nil, nil, nil):distinct(nil):retry(nil)
      :map(function(v) return rx.of(v) end):merge_all(nil)))
  end)

  it("subscribe given a callback that cannot be called raises at the call", function()
    local src = rx.of(1)
    assert.has_error(function() src:subscribe(5) end, "subscribe on_next: expected a function, got number")
    assert.has_error(function() src:subscribe(nil, "x") end, "subscribe on_error: expected a function, got string")
    assert.has_error(function() src:subscribe({ on_completed = 1 }) end,
      "subscribe on_completed: expected a function, got number")
    local ok, err = pcall(function() src:subscribe(true) end)
    assert.is_false(ok)
    assert.truthy(err:find("rx_spec.lua:%d+: subscribe on_next"), err)
  end)

  it("a producer that raises fails the subscription", function()
    assert.equal("0:#oops", marble(rx.create(function() error("oops") end), 0))
  end)

  it("an error raised after the subscriber ended goes to rx.on_unhandled_error, not nowhere", function()
    assert.equal("0:|", marble(rx.create(function(sub) sub:completed() error("late") end), 0))
    local subj, s = rx.subject(), nil
    s = subj:subscribe(function() s:unsubscribe() error("after unsubscribe") end, function() end)
    subj:on_next(1)
    assert.equal(2, #unhandled)
    assert.equal("late", msg(unhandled[1]))
    assert.equal("after unsubscribe", msg(unhandled[2]))
  end)

  it("errors propagate to every group and through merge_all", function()
    local s = rx.subject()
    local ev = record(s:group_by(function(x) return x % 2 end):merge_all())
    s:on_next(1) s:on_next(2) s:on_error("down")
    assert.equal("0:1 0:2 0:#down", table.concat(ev, " "))
  end)
end)

describe("bridges", function()
  it("to_list awaits the stream at top level and in a task", function()
    assert.same({ 0, 1, 2 }, rx.interval(0.1):take(3):to_list())
    local t = aio.spawn(function() return rx.interval(0.1):take(2):to_list() end)
    assert.same({ 0, 1 }, t:await())
    local ok, err = pcall(function() return rx.throw("nope"):to_list() end)
    assert.is_false(ok)
    assert.equal("nope", msg(err))
  end)

  it("to_future resolves with the list", function()
    local f = rx.of(1, 2):to_future()
    assert.same({ 1, 2 }, f:await())
  end)

  it("each awaits, calling fn in order even when fn itself awaits", function()
    local got = {}
    local t0 = aio.now()
    rx.interval(0.1):take(3):each(function(v)
      aio.sleep(0.25)  -- slower than the stream: values wait their turn
      got[#got + 1] = v
    end)
    assert.same({ 0, 1, 2 }, got)
    assert.near(0.85, aio.now() - t0, 1e-6)
    local ok, err = pcall(function() rx.throw("stream failed"):each(function() end) end)
    assert.is_false(ok)
    assert.equal("stream failed", msg(err))
  end)

  it("from_queue drains a queue until it is closed", function()
    local q = aio.queue()
    local ev = record(rx.from_queue(q))
    aio.call_later(0.1, function() q:put_nowait("a") end)
    aio.call_later(0.2, function() q:put_nowait("b") q:close() end)
    aio.sleep(1)
    assert.equal("0.1:a 0.2:b 0.2:|", table.concat(ev, " "))
  end)

  it("unsubscribing from from_queue cancels its task", function()
    local q = aio.queue()
    local s = rx.from_queue(q):subscribe(function() end)
    aio.sleep(0.1)
    assert.equal(1, #aio.tasks())
    s:unsubscribe()
    aio.sleep(0.1)
    assert.equal(0, #aio.tasks())
  end)
end)
