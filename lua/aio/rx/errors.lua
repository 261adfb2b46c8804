-- aio.rx.errors — the error-handling operators: catch_error, retry.
-- Internal: part of aio.rx, which loads it.
local core = require "aio.rx.core"

local rx, Observable, operator = core.rx, core.Observable, core.operator
local check_callable, check_number = core.check_callable, core.check_number

-- catch_error(handler): on an error, continues with handler(err)'s observable (or table)
-- instead of failing. (An error the handler raises fails the stream: _chain guards it.)
function Observable:catch_error(handler)
  check_callable(handler, "catch_error")
  return operator(self, function(src, sub)
    src:_chain(sub, function(v) sub:next(v) end, function(e)
      rx.from(handler(e)):_chain(sub, function(v) sub:next(v) end)
    end)
  end)
end
Observable.catch = Observable.catch_error

-- retry([n]): on an error, subscribes to the source again, at most n times (forever if nil).
function Observable:retry(n)
  check_number(n, 0, "retry", true)
  return operator(self, function(src, sub)
    local left = n
    local attempt
    attempt = function()
      src:_chain(sub, function(v) sub:next(v) end, function(e)
        if left ~= nil then
          if left <= 0 then sub:error(e) return end
          left = left - 1
        end
        attempt()
      end)
    end
    attempt()
  end)
end
