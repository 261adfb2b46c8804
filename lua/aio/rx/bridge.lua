-- aio.rx.bridge — bridges from streams to tasks and futures: to_future, to_list, each.
-- Internal: part of aio.rx, which loads it.
local aio = require "aio"
local core = require "aio.rx.core"

local Observable = core.Observable

-- Subscribes collecting every value; returns a future for the list, and the subscription.
local function list_future(obs)
  local fut = aio.future()
  local list = {}
  local s = obs:subscribe(function(v) list[#list + 1] = v end,
    function(e)  -- (a future cannot fail with nil: name it as lua.c does)
      if e == nil then e = "(error object is a nil value)" end
      if not fut:done() then fut:set_error(e) end
    end,
    function() if not fut:done() then fut:set_result(list) end end)
  return fut, s
end

-- to_future(): a future resolved with the list of all values at completion (or failed).
function Observable:to_future()
  return (list_future(self))
end

-- to_list(): awaits completion and returns every value as a list (raises the stream's error).
-- Cancelling the awaiting task unsubscribes.
function Observable:to_list()
  local fut, s = list_future(self)
  local ok, res = pcall(fut.await, fut)
  if not ok then
    s:unsubscribe()
    error(res, 0)
  end
  return res
end

-- each(fn): awaits the stream, calling fn(value) for each value in order; fn may itself await
-- (values wait in a queue meanwhile). Raises the stream's error; returns at completion.
function Observable:each(fn)
  local items, head, tail = {}, 1, 0
  local finished, failed, err = false, false, nil
  local wake
  local function push(item)
    tail = tail + 1
    items[tail] = item
    if wake and not wake:done() then wake:set_result(true) end
  end
  local s = self:subscribe(function(v) push({ v }) end,
    function(e) failed, err = true, e push(false) end,
    function() finished = true push(false) end)
  local ok, e2 = pcall(function()
    while true do
      while head > tail do
        wake = aio.future()
        wake:await()
      end
      local item = items[head]
      items[head] = nil
      head = head + 1
      if item == false then
        if failed then error(err, 0) end
        return
      end
      fn(item[1])
    end
  end)
  s:unsubscribe()
  if not ok then error(e2, 0) end
  return finished
end
Observable.for_each = Observable.each
