-- scripts/nb5_rx_hot_cold.lua — notebook 5 (seed 004), §6.3.3 Hot and cold observables:
--   interval(1000).take(4) — a cold timer: each subscription starts its own clock;
--   two subscribers half a period apart on the cold interval — two independent sequences;
--   publish() + connect() — hot: a late subscriber joins the running sequence;
--   replay(None) — hot, but a late subscriber first receives what it missed;
--   Subject — on_next pushes to subscribers.
-- Times are printed in periods (one period = 1 s in --full, 0.1 s by default).
--
--   aioshell scripts/nb5_rx_hot_cold.lua [--quick | --full] [--virtual-time]
local aio = require "aio"
local rx = require "aio.rx"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb5_rx_hot_cold", title = "Hot and cold observables", args = arg }
local P = e:size(0.1, 1.0)
print(string.format("each line is (value, time since start) in periods, i.e. notebook seconds: a period lasts "
  .. "%g s here%s", P, P == 1 and ", as the notebook's interval(1000)" or " (--full: 1 s, the notebook's interval(1000))"))

-- Waits until every given subscription has ended (each counted by its on_completed).
local function completions(n)
  local left, done = n, aio.future()
  return function()
    left = left - 1
    if left == 0 then done:set_result(true) end
  end, done
end

-- A subscriber that records (value, periods since start) and prints them like the notebook.
local function recorder(name, start, into)
  return function(x)
    local t = (aio.now() - start) / P
    into[#into + 1] = { x, t }
    print(string.format("%s: (%d, %.2f)", name, x, t))
  end
end

-- Sections 4 and 5: a first subscriber of the connectable c, then connect(), and a second
-- subscriber 2.5 periods later (half a period off the ticks, so the output is deterministic);
-- waits for four values each, disconnects, and returns both records.
local function late_subscriber(c)
  local start = aio.now()
  local first, second = {}, {}
  local fin, all = completions(2)
  c:take(4):subscribe(recorder("First subscriber", start, first), nil, fin)
  local conn = c:connect()  -- data production starts here
  aio.sleep(2.5 * P)
  c:take(4):subscribe(recorder("Second subscriber", start, second), nil, fin)
  all:await()
  conn:unsubscribe()
  return first, second
end

-- Rounds to the nearest tenth of a period, for comparing timings.
local function r(t) return math.floor(t * 10 + 0.5) / 10 end

-- 1. interval(P).take(4).subscribe(print)
print("-- interval.take(4)")
local got = {}
local start = aio.now()
local fin, all = completions(1)
rx.interval(P):take(4):subscribe(recorder("interval", start, got), nil, fin)
all:await()
e:check(#got == 4 and got[1][1] == 0 and got[4][1] == 3, "interval.take(4) emits 0..3")
e:check(math.abs(got[1][2] - 1) < 0.5 and math.abs(got[4][2] - 4) < 0.5, "one value per period (last at %.2f periods)", got[4][2])

-- 2. Cold: the clock starts at subscription, not when the observable is made.
print("-- cold: made, then 2 periods later subscribed")
start = aio.now()
local cold = rx.interval(P):map(function(a) return a end)
aio.sleep(2 * P)
got = {}
fin, all = completions(1)
cold:take(4):subscribe(recorder("cold", start, got), nil, fin)
all:await()
e:check(got[1][1] == 0 and r(got[1][2]) >= 2.5, "cold: the first value is 0, three periods after creation (%.2f)", got[1][2])

-- 3. Two subscribers half a period apart on the cold interval: two sequences.
print("-- cold: two subscribers, half a period apart")
start = aio.now()
local first, second = {}, {}
fin, all = completions(2)
aio.sleep(2 * P)
cold:take(4):subscribe(recorder("First subscriber", start, first), nil, fin)
aio.sleep(0.5 * P)
cold:take(4):subscribe(recorder("Second subscriber", start, second), nil, fin)
all:await()
e:check(first[1][1] == 0 and second[1][1] == 0, "cold: both subscribers start from 0")
e:check(math.abs((second[1][2] - first[1][2]) - 0.5) < 0.3, "cold: the second runs half a period later")

-- 4. publish + connect: hot. Values flow from connect(); a late subscriber joins midway.
print("-- hot: publish, connect, second subscriber 2.5 periods later")
first, second = late_subscriber(rx.interval(P):publish())
e:check(first[1][1] == 0 and second[1][1] == 2, "hot: the late subscriber starts at 2, not 0 (got %s)", second[1][1])
e:check(math.abs(second[1][2] - first[3][2]) < 0.2, "hot: both see value 2 at the same moment")

-- 5. replay(None): the late subscriber first gets what it missed, at once.
print("-- replay: second subscriber 2.5 periods later")
first, second = late_subscriber(rx.interval(P):replay())
e:check(second[1][1] == 0 and second[2][1] == 1 and second[3][1] == 2,
  "replay: the late subscriber gets 0 and 1 replayed, then 2 live")
e:check(math.abs(second[1][2] - 2.5) < 0.3 and math.abs(second[2][2] - 2.5) < 0.3,
  "replay: the missed values arrive at once, at subscription (%.2f)", second[1][2])

-- 6. Subject
print("-- Subject")
local s = rx.subject()
local seen = {}
s:subscribe(function(x) seen[#seen + 1] = x print(string.format("Subject emitted value: %d", x)) end)
s:on_next(1)
s:on_next(2)
e:check(seen[1] == 1 and seen[2] == 2, "the subject pushed 1 and 2 to its subscriber")

e:result { key = "hot_cold", label = "interval cold/hot, publish, replay, Subject",
  measured = e.failures == 0 and "all sequences match" or "mismatch",
  reference = "cold restarts at 0 · hot joins at 2 · replay catches up", reproduced = e.failures == 0 }
e:finish()
