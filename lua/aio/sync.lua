-- aio.sync — semaphores, locks, events, conditions and queues, built on aio.core futures.
--
-- Every waiter waits on a future of its own, kept in a FIFO list. A release or put hands the
-- permit / wake-up to the first waiter still pending; a waiter that was cancelled leaves a
-- cancelled future behind, which is skipped (and removed with the others once they are the
-- majority: Waiters:forget). A waiter woken, then cancelled before it ran, gives what it was
-- handed back (to the next waiter, or the primitive) and raises the cancellation at once
-- (the give-back rule, asyncio's since 3.12): a permit, an item or a wake-up is never lost to
-- a cancelled waiter, nor kept by one whose caller is gone (aio.gather, aio.wait_for).
local core = require "aio.core"
local argcheck = require "aio.argcheck"
local future, take_cancel = core.future, core.take_cancel

local sync = {}

-- A FIFO of waiter futures with O(1) push and pop.
local Waiters = {}
Waiters.__index = Waiters

local function waiters() return setmetatable({head = 1, tail = 0, dead = 0}, Waiters) end

function Waiters:push(label)
  local f = future(label)
  self.tail = self.tail + 1
  self[self.tail] = f
  return f
end

-- Completes the first still-pending waiter; returns true if there was one.
function Waiters:wake_one(...)
  while self.head <= self.tail do
    local f = self[self.head]
    self[self.head] = nil
    self.head = self.head + 1
    if not f:done() then f:set_result(...); return true end
    if self.dead > 0 then self.dead = self.dead - 1 end
  end
  return false
end

-- Forgets the waiter f, whose await raised (cancelled, timed out): cancels it so a wake skips
-- it, and once such dead entries are the majority removes them all, keeping the order of the
-- live ones, so that timed-out waiters on an idle queue or event do not pile up (amortised
-- O(1) per waiter).
function Waiters:forget(f)
  f:cancel()
  self.dead = self.dead + 1
  if self.dead * 2 <= self.tail - self.head + 1 then return end
  local j = 0
  for i = self.head, self.tail do
    local w = self[i]
    self[i] = nil
    if not w:done() then j = j + 1; self[j] = w end
  end
  self.head, self.tail, self.dead = 1, j, 0
end

function Waiters:wake_all(...)
  while self:wake_one(...) do end
end

function Waiters:empty()
  for i = self.head, self.tail do
    if not self[i]:done() then return false end
  end
  return true
end

-- Pushes a waiter on the list ws and awaits it; if that raises, forgets it and re-raises. If
-- the waiter was woken but its task cancelled before it ran, give_back(obj) passes on what it
-- was handed and the cancellation is raised at once.
local function await_waiter(ws, label, give_back, obj)
  local f = ws:push(label)
  local ok, err = pcall(f.await, f)
  if not ok then
    ws:forget(f)
    error(err, 0)
  end
  local cancel = take_cancel()
  if cancel ~= nil then
    if give_back then give_back(obj) end
    error(cancel, 0)
  end
  return err
end

-- Misuse raises at the user's call: error levels are counted as error() counts them, and a
-- helper that raises for a function reached from several depths (release from a call, from
-- <close>, from a condition) takes the level of its caller.

-- Raises (at the caller of the function that checks) unless n is a non-negative integer.
local function check_count(n, what)
  if math.type(n) ~= "integer" or n < 0 then error(what .. " must be a non-negative integer", 3) end
  return n
end

-- ---- Semaphore --------------------------------------------------------------------------------

local Semaphore = {__name = "aio.semaphore"}
Semaphore.__index = Semaphore

-- aio.semaphore(n [, {bounded=true}]) -> semaphore with n permits. Bounded by default: releasing
-- more than acquired raises.
function sync.semaphore(n, opts)
  n = check_count(n or 1, "semaphore value")
  local bounded = not (opts and opts.bounded == false)
  return setmetatable({value = n, limit = bounded and n or math.huge, waiters = waiters()}, Semaphore)
end

-- sem:acquire() -> sem (usable as `local _ <close> = sem:acquire()`), FIFO among waiters.
function Semaphore:acquire()
  if self.value > 0 and self.waiters:empty() then
    self.value = self.value - 1
    return self
  end
  await_waiter(self.waiters, "semaphore", Semaphore._give_back, self)  -- handed over by release
  return self
end

-- Passes on a permit handed to a waiter cancelled before it ran: to the next waiter, or back.
function Semaphore:_give_back()
  if not self.waiters:wake_one() then self.value = self.value + 1 end
end

-- sem:try_acquire() -> true if a permit was free.
function Semaphore:try_acquire()
  if self.value > 0 and self.waiters:empty() then
    self.value = self.value - 1
    return true
  end
  return false
end

-- sem:release(): hands the permit to the first waiter, or returns it to the pool.
function Semaphore:release() self:_release(2) end

-- release, raising at `level` (counted in the caller) when it would release too many times.
function Semaphore:_release(level)
  if self.waiters:wake_one() then return end
  if self.value >= self.limit then error("semaphore released too many times", level + 1) end
  self.value = self.value + 1
end

function Semaphore:locked() return self.value == 0 end
Semaphore.__close = function(self) self:_release(2) end  -- level 2: the scope that closed

-- sem:with(fn, ...) -> fn's results, holding a permit.
function Semaphore:with(fn, ...)
  argcheck.type(fn, "function", 1, "with", 2)
  local _ <close> = self:acquire()
  return fn(...)
end

function Semaphore:__tostring()
  return ("aio.semaphore (%d free)"):format(self.value)
end

-- ---- Lock ---------------------------------------------------------------------------------------

local Lock = setmetatable({__name = "aio.lock"}, {__index = Semaphore})
Lock.__index = Lock
Lock.__close = Semaphore.__close

-- aio.lock() -> a mutual-exclusion lock (`local _ <close> = lock:acquire()`).
function sync.lock()
  return setmetatable({value = 1, limit = 1, waiters = waiters()}, Lock)
end

function Lock:acquire()
  Semaphore.acquire(self)
  self.owner = core.current()
  return self
end

-- lock:try_acquire() -> true if the lock was free (the running task then holds it: `owner`).
function Lock:try_acquire()
  if not Semaphore.try_acquire(self) then return false end
  self.owner = core.current()
  return true
end

function Lock:release() self:_release(2) end

-- release, raising at `level` (counted in the caller) when the lock is not held.
function Lock:_release(level)
  if self.value > 0 and self.waiters:empty() then error("lock is not acquired", level + 1) end
  self.owner = nil
  Semaphore._release(self, level + 1)
end

function Lock:__tostring()
  return self.value == 0 and "aio.lock (locked)" or "aio.lock (unlocked)"
end

-- ---- Event ----------------------------------------------------------------------------------------

local Event = {__name = "aio.event"}
Event.__index = Event

-- aio.event() -> an event: wait() blocks until set().
function sync.event()
  return setmetatable({flag = false, waiters = waiters()}, Event)
end

function Event:set()
  self.flag = true
  self.waiters:wake_all(true)
end

function Event:clear() self.flag = false end
function Event:is_set() return self.flag end

-- ev:wait() -> true once the event is set.
function Event:wait()
  if self.flag then return true end
  await_waiter(self.waiters, "event")
  return true
end

function Event:__tostring()
  return self.flag and "aio.event (set)" or "aio.event (clear)"
end

-- ---- Condition --------------------------------------------------------------------------------------

local Condition = {__name = "aio.condition"}
Condition.__index = Condition

-- aio.condition([lock]) -> a condition variable bound to lock (a new lock by default).
function sync.condition(lock)
  return setmetatable({lock = lock or sync.lock(), waiters = waiters()}, Condition)
end

function Condition:acquire() self.lock:acquire(); return self end
function Condition:release() self.lock:_release(2) end
Condition.__close = function(self) self.lock:_release(2) end
function Condition:locked() return self.lock:locked() end

-- cond:wait(): releases the lock, waits for notify, re-acquires the lock (even when cancelled).
function Condition:wait() return (self:_wait(2)) end

-- wait, raising at `level` (counted in the caller) when the lock is not held.
function Condition:_wait(level)
  if not self.lock:locked() then error("cannot wait on an un-acquired condition", level + 1) end
  local f = self.waiters:push("condition")
  self.lock:release()
  local ok, err = pcall(f.await, f)
  local notified = ok
  if not ok then
    self.waiters:forget(f)
  else  -- notified, then cancelled before it ran: the wake-up is passed on below
    local cancel = take_cancel()
    if cancel ~= nil then ok, err = false, cancel end
  end
  while true do  -- the lock must be held again whatever happened
    local ok2, err2 = pcall(self.lock.acquire, self.lock)
    if ok2 then break end
    if ok then ok, err = false, err2 end
  end
  if not ok then
    -- Notified, then cancelled (before it ran, or while re-acquiring the lock): the wake-up
    -- goes to the next waiter instead of being lost with us (asyncio's gh-112202).
    if notified then self.waiters:wake_one() end
    error(err, 0)
  end
  return true
end

-- cond:wait_for(predicate) -> the predicate's first true value.
function Condition:wait_for(pred)
  local v = pred()
  while not v do
    self:_wait(2)
    v = pred()
  end
  return v
end

function Condition:notify(n)
  for _ = 1, n or 1 do
    if not self.waiters:wake_one() then break end
  end
end

function Condition:notify_all() self.waiters:wake_all() end

-- ---- Queues ---------------------------------------------------------------------------------------

local Queue = {__name = "aio.queue"}
Queue.__index = Queue

-- A queue closed error value.
local closed_error = setmetatable({message = "queue is closed", closed = true},
  debug.getregistry()["aio.error"])
sync.queue_closed = closed_error

-- The three stores: FIFO (ring of indices), LIFO (stack) and priority (binary heap).
local fifo = {
  new = function() return {head = 1, tail = 0} end,
  push = function(s, item) s.tail = s.tail + 1; s[s.tail] = item end,
  pop = function(s) local v = s[s.head]; s[s.head] = nil; s.head = s.head + 1; return v end,
  size = function(s) return s.tail - s.head + 1 end,
}
local lifo = {
  new = function() return {n = 0} end,
  push = function(s, item) s.n = s.n + 1; s[s.n] = item end,
  pop = function(s) local v = s[s.n]; s[s.n] = nil; s.n = s.n - 1; return v end,
  size = function(s) return s.n end,
}
-- Heap entries are {priority, seq, item}; equal priorities leave in insertion order.
local function before(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end
local heap = {
  new = function() return {n = 0, seq = 0} end,
  push = function(s, item, priority)
    if priority == nil then priority = item end
    local e = {priority, s.seq + 1, item}
    -- Find the place first: a priority that cannot be compared raises here, and the heap is
    -- left as it was. Then move the parents down and count the item.
    local i = s.n + 1
    while i > 1 and before(e, s[i // 2]) do i = i // 2 end
    local j = s.n + 1
    while j > i do s[j] = s[j // 2]; j = j // 2 end
    s[i] = e
    s.n, s.seq = s.n + 1, s.seq + 1
  end,
  pop = function(s)
    local top, last = s[1], s[s.n]
    s[s.n] = nil
    s.n = s.n - 1
    local i, n = 1, s.n
    if n > 0 then
      while true do
        local c = 2 * i
        if c > n then break end
        if c + 1 <= n and before(s[c + 1], s[c]) then c = c + 1 end
        if not before(s[c], last) then break end
        s[i] = s[c]; i = c
      end
      s[i] = last
    end
    return top[3]
  end,
  size = function(s) return s.n end,
}

-- Makes a queue of the given store kind (maxsize checked).
local function new_queue(store, maxsize)
  return setmetatable({store = store, items = store.new(), maxsize = maxsize,
                       getters = waiters(), putters = waiters(), unfinished = 0,
                       all_done = sync.event(), closed = false}, Queue)
end

-- aio.queue([maxsize]) -> FIFO queue (0 = unbounded). aio.lifo_queue, aio.priority_queue alike:
-- a priority queue's put takes (item [, priority]); lower priorities come out first.
function sync.queue(maxsize) return new_queue(fifo, check_count(maxsize or 0, "maxsize")) end
function sync.lifo_queue(maxsize) return new_queue(lifo, check_count(maxsize or 0, "maxsize")) end
function sync.priority_queue(maxsize) return new_queue(heap, check_count(maxsize or 0, "maxsize")) end

function Queue:size() return self.store.size(self.items) end
function Queue:empty() return self:size() == 0 end
function Queue:full() return self.maxsize > 0 and self:size() >= self.maxsize end

-- q:put_nowait(item [, priority]): raises "queue is full" instead of waiting.
function Queue:put_nowait(item, priority)
  if self.closed then error(closed_error, 2) end
  if self:full() then error("queue is full", 2) end
  self.store.push(self.items, item, priority)
  self.unfinished = self.unfinished + 1
  self.all_done:clear()
  self.getters:wake_one()
end

-- q:put(item [, priority]): waits while the queue is full.
function Queue:put(item, priority)
  while self:full() and not self.closed do
    await_waiter(self.putters, "queue put", Queue._pass_room, self)
  end
  self:put_nowait(item, priority)
  if not self:full() then self.putters:wake_one() end  -- pass the turn on
end

-- q:get_nowait() -> item; raises "queue is empty" instead of waiting.
function Queue:get_nowait()
  if self:empty() then
    if self.closed then error(closed_error, 2) end
    error("queue is empty", 2)
  end
  local item = self.store.pop(self.items)
  self.putters:wake_one()
  return item
end

-- q:get() -> item: waits while the queue is empty; raises a closed error once closed and empty.
function Queue:get()
  while self:empty() do
    if self.closed then error(closed_error, 2) end
    await_waiter(self.getters, "queue get", Queue._pass_item, self)
  end
  local item = self:get_nowait()
  if not self:empty() then self.getters:wake_one() end  -- more items: wake the next getter
  return item
end

-- A getter woken for an item was cancelled before it ran: the item, still at the front, goes
-- to the next getter.
function Queue:_pass_item()
  if not self:empty() then self.getters:wake_one() end
end

-- A putter woken for room was cancelled before it ran: the room goes to the next putter.
function Queue:_pass_room()
  if not self:full() then self.putters:wake_one() end
end

-- q:task_done(): one fetched item is fully processed (for join).
function Queue:task_done()
  if self.unfinished <= 0 then error("task_done() called too many times", 2) end
  self.unfinished = self.unfinished - 1
  if self.unfinished == 0 then self.all_done:set() end
end

-- q:join(): waits until every item put has been marked task_done.
function Queue:join()
  if self.unfinished > 0 then self.all_done:wait() end
end

-- q:close(): no more puts; getters drain what is left, then get raises a closed error.
function Queue:close()
  self.closed = true
  self.getters:wake_all()
  self.putters:wake_all()
end

-- Iterates over items until the queue is closed and empty: `for item in q:iter() do ... end`.
function Queue:iter()
  return function()
    local ok, item = pcall(self.get, self)
    if ok then return item end
    if item == closed_error then return nil end
    error(item, 0)
  end
end

function Queue:__tostring()
  return ("aio.queue (%d items%s)"):format(self:size(), self.closed and ", closed" or "")
end

return sync
