-- aio.flags — the command lines of the scripts in scripts/: one place for how an option takes
-- its value, how numbers are checked and how a mistake is reported (the message and the usage
-- on stderr, exit status 2, no traceback).
--
--   local cl = require("aio.flags").new("crawler", USAGE, { ... })
--   for a, name in cl:each() do
--     if name == "--n" then opts.n = cl:int(name, cl:value(a, name), 1)
--     elseif a == "--quiet" then opts.quiet = true
--     else cl:error("unknown argument %s", a) end
--   end
local flags = {}

local P = {}
P.__index = P

-- The usage line of script name (scripts/NAME.lua) with its arguments' synopsis: the command
-- that runs it, `usage: aioshell scripts/NAME.lua SYNOPSIS`, ending in a newline.
function flags.usage(name, synopsis)
  return "usage: aioshell scripts/" .. name .. ".lua" .. (synopsis and " " .. synopsis or "") .. "\n"
end

-- A parser of argv (a list of words) for program prog, whose usage text is usage.
function flags.new(prog, usage, argv)
  return setmetatable({ prog = prog, usage = usage, argv = argv, i = 0 }, P)
end

-- Reports a mistake on the command line: "prog: message" and the usage on stderr; exits 2.
function P:error(fmt, ...)
  io.stderr:write(self.prog, ": ", string.format(fmt, ...), "\n", self.usage)
  os.exit(2)
end

-- Iterates over the words: each word, and its option name (the part before '=' of --x=v).
function P:each()
  return function()
    self.i = self.i + 1
    local a = self.argv[self.i]
    if a == nil then return nil end
    return a, a:match("^(%-%-[%w_-]+)=") or a
  end
end

-- The value of the option word a (named name): after '=', or the next word, which must be there
-- and must not be another option (so `--url --n 5` is a missing URL, not the URL "--n").
function P:value(a, name)
  local v = self:value_or_true(a, name)
  if v == true then self:error("missing value for %s", name) end
  return v
end

-- Like value, but true when a has no value: no '=' and the next word missing or another
-- option. For an option that is also a bare flag (`--no-load`, `--threads 4`).
function P:value_or_true(a, name)
  local v = a:match("^%-%-[%w_-]+=(.*)$")
  if not v then
    v = self.argv[self.i + 1]
    if v == nil or v:match("^%-%-") then return true end
    self.i = self.i + 1
  end
  if v == "" then self:error("empty value for %s", name) end
  return v
end

-- v as an integer of at least lo (and at most hi, when given; lo nil: any), or a mistake
-- naming the option.
function P:int(name, v, lo, hi)
  local n = math.tointeger(tonumber(v))
  if not n or (lo and n < lo) or (hi and n > hi) then
    self:error("%s needs an integer%s, not '%s'", name, hi and string.format(" from %d to %d", lo, hi)
      or lo and string.format(" >= %d", lo) or "", v)
  end
  return n
end

-- v as a finite number, or a mistake naming the option.
function P:number(name, v)
  local n = tonumber(v)
  if not n or n ~= n or n == math.huge or n == -math.huge then
    self:error("%s needs a number, not '%s'", name, v)
  end
  return n
end

-- v as a finite number above lo (at least lo when inclusive), or a mistake naming the option
-- and saying which (">= 0", "> 0").
local function at_least(self, name, v, lo, inclusive)
  local n = tonumber(v)
  if not n or n ~= n or n == math.huge or n < lo or (n == lo and not inclusive) then
    self:error("%s needs a number %s %s, not '%s'", name, inclusive and ">=" or ">", lo, v)
  end
  return n
end

-- The units a duration option takes, and their lengths in microseconds.
local UNITS = { us = 1, ms = 1000, s = 1000000, m = 60000000 }
local UNIT_NAMES = "us, ms, s or m"
local UNIT_WORDS = { s = "seconds", m = "minutes" }

-- What --help says after a duration option's own unit ("in ms"): the other spelling.
flags.UNITS = ", or with a unit: 100ms, 0.1s"

-- The decimal numeral s ("1.5", "-2e3") as an integer and an exponent (s = n * 10^x), or nil
-- (also for an exponent beyond +-9999, which no time needs and string.format's %d cannot take).
local function decimal(s)
  local mantissa, x = s:match("^([^eE]+)[eE]([+-]?%d+)$")
  mantissa = mantissa or s
  x = tonumber(x) or 0
  local sign, int, frac = mantissa:match("^([+-]?)(%d*)%.?(%d*)$")
  if not sign or int .. frac == "" or #(int .. frac) > 15 or math.abs(x) > 9999 then return nil end
  return math.tointeger(tonumber(sign .. int .. frac)), x - #frac
end

-- n * 10^x as a number, and whether it is a whole one (the decimal digits, so exact: 0.3s is
-- 300 ms, not 299.99999999999994).
local function scaled(n, x)
  while x < 0 and n % 10 == 0 and n ~= 0 do n, x = n // 10, x + 1 end
  return tonumber(string.format("%de%d", n, x)), x >= 0 or n == 0
end

-- v, a number with one of UNITS ("0.5s"), in the unit `unit`, and whether it is whole; nil
-- when v is not one. The ratio of two units is a whole number times a power of ten.
local function convert(v, unit)
  local num, u = v:match("^(.-)(%a+)$")
  local n, x = decimal(num or "")
  if not n or not UNITS[u] then return nil end
  local big, small = math.max(UNITS[u], UNITS[unit]), math.min(UNITS[u], UNITS[unit])
  local ratio, shift = big // small, 0
  while ratio % 10 == 0 do ratio, shift = ratio // 10, shift + 1 end
  if UNITS[u] < UNITS[unit] then return scaled(n, x - shift) end
  return scaled(n * ratio, x + shift)
end

-- v in the unit `unit`, and whether it is whole: a bare number as it is, a number with a unit
-- converted (a whole result an integer, as the bare number would be); nil when v is neither.
local function in_unit(v, unit)
  local n = tonumber(v)
  if n then return n, math.tointeger(n) ~= nil end
  local c, whole = convert(v, unit)
  if whole then c = math.tointeger(c) or c end
  return c, whole
end

-- v as a duration in the option's unit `unit` ("ms", "s", "us"): a bare number is in that
-- unit, a number with a unit of UNITS ("100ms", "0.1s", "2m") is converted to it. It must be
-- >= 0 (> 0 with how.positive) and finite; with how.integer a whole number of `unit`, which a
-- converted value that is not one breaks too (0.5ms of an integer-ms option: never rounded).
-- A mistake names the option and the units; `--delay 10 ms` is one (its unit a word apart).
function P:duration(name, v, unit, how)
  how = how or {}
  local words = UNIT_WORDS[unit] or unit
  local after = self.argv[self.i + 1]
  if UNITS[after] and tonumber(v) then
    self:error("%s takes its unit without a space: '%s%s', not '%s %s'", name, v, after, v, after)
  end
  local n, whole = in_unit(v, unit)
  if not n or n ~= n or n == math.huge or n < 0 or (how.positive and n == 0) then
    self:error("%s needs a time %s in %s, or with a unit %s (100ms, 0.1s), not '%s'", name,
      how.positive and "> 0" or ">= 0", words, UNIT_NAMES, v)
  end
  if how.integer then
    if n > 2 ^ 53 then                  -- beyond exact integers: not a fraction, just too large
      self:error("%s is too large: '%s' is %s %s", name, v, n, unit)
    end
    if not whole or not math.tointeger(n) then
      self:error("%s needs a whole number of %s: '%s' is %s %s", name, words, v, n, unit)
    end
    return math.tointeger(n)
  end
  return n
end

-- v as a finite number >= 0 (a time from the start, say), or a mistake naming the option.
function P:nonnegative(name, v) return at_least(self, name, v, 0, true) end

-- v as a finite number > 0 (fractions allowed), or a mistake naming the option.
function P:positive(name, v) return at_least(self, name, v, 0, false) end

return flags
