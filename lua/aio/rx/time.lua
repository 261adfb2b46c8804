-- aio.rx.time — the operators on the loop's clock: buffer_with_time, debounce, delay, timeout.
-- They use aio.call_later / aio.every, so aio.clock.virtual() makes them instant.
-- Internal: part of aio.rx, which loads it.
local aio = require "aio"
local core = require "aio.rx.core"

local Observable, operator, remove_value = core.Observable, core.operator, core.remove_value
local check_number, check_positive = core.check_number, core.check_positive

-- buffer_with_time(span [, shift]): lists of the values seen in each `span` seconds; a new
-- list opens every `shift` seconds (default span: back-to-back windows). Empty lists are
-- emitted too (nothing happened in that window is information).
function Observable:buffer_with_time(span, shift)
  check_positive(span, "buffer_with_time span")  -- (aio.every takes no 0)
  check_positive(shift, "buffer_with_time shift", true)
  return operator(self, function(src, sub)
    local timers = {}
    local windows = {}
    local function cancel_all()
      for i = 1, #timers do timers[i]:cancel() end
      timers = {}
    end
    if shift == nil or shift == span then
      windows[1] = {}
      timers[1] = aio.every(span, function()
        local w = windows[1]
        windows[1] = {}
        sub:next(w)
      end)
    else
      local function open()
        local w = {}
        windows[#windows + 1] = w
        local h
        h = aio.call_later(span, function()
          remove_value(windows, w)
          remove_value(timers, h)
          sub:next(w)
        end)
        timers[#timers + 1] = h
      end
      open()
      timers[#timers + 1] = aio.every(shift, open)
    end
    src:_chain(sub, function(v)
      for i = 1, #windows do
        local w = windows[i]
        w[#w + 1] = v
      end
    end, function(e)
      cancel_all()
      sub:error(e)
    end, function()
      cancel_all()
      for i = 1, #windows do sub:next(windows[i]) end
      windows = {}
      sub:completed()
    end)
    return cancel_all
  end)
end

-- debounce(seconds): a value is emitted only after `seconds` without a newer one; the
-- pending value is flushed at completion.
function Observable:debounce(seconds)
  check_number(seconds, 0, "debounce")
  return operator(self, function(src, sub)
    local handle, has, last = nil, false, nil
    local function cancel()
      if handle then handle:cancel() handle = nil end
    end
    src:_chain(sub, function(v)
      last, has = v, true
      cancel()
      handle = aio.call_later(seconds, function()
        handle = nil
        if has then
          has = false
          local x = last
          last = nil
          sub:next(x)
        end
      end)
    end, function(e)
      cancel()
      sub:error(e)
    end, function()
      cancel()
      if has then
        has = false
        sub:next(last)
      end
      sub:completed()
    end)
    return cancel
  end)
end
Observable.throttle_with_timeout = Observable.debounce

-- delay(seconds): every event (values and completion) shifted later by `seconds`; errors are
-- delivered at once.
function Observable:delay(seconds)
  check_number(seconds, 0, "delay")
  return operator(self, function(src, sub)
    local pending = {}
    local function later(fn)
      local h
      h = aio.call_later(seconds, function()
        pending[h] = nil
        fn()
      end)
      pending[h] = true
    end
    src:_chain(sub, function(v) later(function() sub:next(v) end) end,
      nil, function() later(function() sub:completed() end) end)
    return function()
      for h in pairs(pending) do h:cancel() end
      pending = {}
    end
  end)
end

-- timeout(seconds): fails with a timeout error (aio.is_timeout recognises it) when no value
-- arrives within `seconds` of subscribing or of the previous value.
function Observable:timeout(seconds)
  check_number(seconds, 0, "timeout")
  return operator(self, function(src, sub)
    local h
    local function arm()
      if h then h:cancel() end
      h = aio.call_later(seconds, function()
        h = nil
        local err = aio.timeout_error and aio.timeout_error(seconds) or ("timeout after " .. seconds .. " s")
        sub:error(err)
      end)
    end
    arm()
    src:_chain(sub, function(v)
      arm()
      sub:next(v)
    end, function(e)
      if h then h:cancel() h = nil end
      sub:error(e)
    end, function()
      if h then h:cancel() h = nil end
      sub:completed()
    end)
    return function() if h then h:cancel() h = nil end end
  end)
end
