-- aio.rx — reactive streams (observables) on the aio loop's clock.
--
-- The model is RxJS's: an observable is a function that, given a subscriber, starts producing
-- and returns what tears it down. Three rules make it safe on a single loop:
--   1. A subscriber stops at its first terminal event (error or completed) and then runs its
--      teardowns: every upstream subscription is released automatically (RxLua does not do
--      this, so `interval():take(4)` there keeps ticking forever).
--   2. Every user callback runs under pcall; an error becomes an on_error of that chain and
--      never escapes into the loop. A chain with no on_error reports to rx.on_unhandled_error.
--   3. Operators create their upstream subscriber *before* subscribing to the source and add it
--      to the downstream one, so a synchronous source (rx.from of a huge table) sees `closed`
--      as soon as a downstream take() is satisfied and stops its loop.
-- Time (interval, timer, debounce, buffer_with_time, delay) uses the core's aio.call_later /
-- aio.every, so aio.clock.virtual() makes it instant and deterministic; there is no scheduler
-- of our own.
--
-- This file is the entry point; each concept is its own file under lua/aio/rx/:
--   core.lua       subscribers, observables, rx.create, subscribe, the argument checks
--   create.lua     creation functions (of, range, from, interval, timer, from_queue ...)
--   transform.lua  transforming and filtering operators (map, filter, take, scan ...)
--   time.lua       operators on the clock (buffer_with_time, debounce, delay, timeout)
--   errors.lua     catch_error, retry
--   subjects.lua   subject, replay_subject, behavior_subject
--   multicast.lua  hot and cold: multicast, publish, replay, share
--   group.lua      group_by
--   combine.lua    higher-order and combining (merge_all, flat_map, merge, zip ...)
--   bridge.lua     to tasks and futures (to_future, to_list, each)
-- Each adds its functions to the one `rx` table and its operators to the observables'
-- metatable, so the operators stay methods.
local core = require "aio.rx.core"
require "aio.rx.create"
require "aio.rx.transform"
require "aio.rx.time"
require "aio.rx.errors"
require "aio.rx.subjects"
require "aio.rx.multicast"
require "aio.rx.group"
require "aio.rx.combine"
require "aio.rx.bridge"

return core.rx
