-- aio.argcheck — the argument checks of the Lua-side modules (internal, not an API): one
-- wording, lauxlib's ("bad argument #1 to 'f' (function expected, got nil)"), raised at the
-- user's call. Each takes `level`: where the error goes, counted as error() counts it in the
-- checker's caller (2: the caller of the function that checks).
local M = {}
local type, tonumber, error = type, tonumber, error

-- Raises "bad argument #arg to 'fname' (expected expected, got TYPE)" at `level`; without
-- fname, "bad argument #arg (...)". expected is free text: "table", "target: function".
function M.typeerror(v, expected, arg, fname, level)
  local to = fname and (" to '%s'"):format(fname) or ""
  error(("bad argument #%d%s (%s expected, got %s)"):format(arg, to, expected, type(v)), level + 1)
end

-- Raises at `level` unless v, argument `arg` of `fname`, is of type `want`.
function M.type(v, want, arg, fname, level)
  if type(v) ~= want then M.typeerror(v, want, arg, fname, level + 1) end
end

-- A wait's time limit in seconds, argument `arg` of `fname`, as a number (nil: none); raises
-- at `level` if it is not a number or is NaN. `what` names it in the message ("seconds:
-- number expected", "seconds is NaN"); without it the message is lauxlib's plain "number
-- expected" and a NaN is "timeout is NaN". The rest of the rule for durations (negative
-- counts as 0, math.huge never ends) is the timer's: aio_duration_ns in timer.c.
function M.timeout(seconds, arg, fname, level, what)
  if seconds == nil then return nil end
  local s = tonumber(seconds)
  if s == nil then
    M.typeerror(seconds, what and what .. ": number" or "number", arg, fname, level + 1)
  elseif s ~= s then
    error(("bad argument #%d to '%s' (%s is NaN)"):format(arg, fname, what or "timeout"), level + 1)
  end
  return s
end

return M
