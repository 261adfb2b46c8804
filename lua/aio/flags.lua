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

-- v as a finite number >= 0 (a time from the start, say), or a mistake naming the option.
function P:nonnegative(name, v) return at_least(self, name, v, 0, true) end

-- v as a finite number > 0 (fractions allowed), or a mistake naming the option.
function P:positive(name, v) return at_least(self, name, v, 0, false) end

return flags
