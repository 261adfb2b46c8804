-- aio.experiment — the small protocol every notebook script in scripts/ speaks, so that
-- scripts/notebooks.lua can run them as child processes and build the report.
--
-- A script: parses --quick (default) / --full and its own options, does its work, records
-- checks and results, then calls e:finish(), which exits 1 if any check failed.
-- Each result is printed as one line `RESULT {json}` on stdout (the runner reads those); every
-- other line is the script's ordinary output, shown as is in the report.
local cjson = require "cjson"

local M = {}
local E = {}
E.__index = E

-- Real (never virtual) seconds, for measuring wall time around loop work.
local function clock()
  local ok, sys = pcall(require, "aio.sys")
  if ok then return sys.clock() end
  return os.clock()
end
M.clock = clock

-- The command that started this script's interpreter (arg's lowest negative index), so an
-- experiment can run a child of the same binary: `aioshell`, `build/aioshell`, ...
function M.interpreter()
  local i, cmd = -1, nil
  while arg and arg[i] ~= nil do
    cmd = arg[i]
    i = i - 1
  end
  return cmd or "aioshell"
end

-- new{name=, title=, args=arg, options={name=default, ...}} -> experiment. Recognised flags:
-- --quick, --full, --figures DIR, --virtual-time, and --NAME VALUE for each declared option.
function M.new(t)
  local e = setmetatable({ name = t.name, title = t.title or t.name, quick = true,
                           full = false, checks = 0, failures = 0, results = {},
                           options = {}, figures = nil }, E)
  for k, v in pairs(t.options or {}) do e.options[k] = v end
  local args = t.args or {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--full" then e.full, e.quick = true, false
    elseif a == "--quick" then e.full, e.quick = false, true
    elseif a == "--virtual-time" then e.virtual = true
    elseif a == "--figures" then e.figures = args[i + 1] i = i + 1
    elseif a:sub(1, 2) == "--" then
      local key, val = a:sub(3):match("^([^=]+)=(.*)$")
      local flag = false
      if not key then
        key = a:sub(3)
        local nxt = args[i + 1]
        if nxt == nil or nxt:sub(1, 2) == "--" then  -- a bare flag: --no-load
          flag = true
        else
          val = nxt
          i = i + 1
        end
      end
      key = key:gsub("-", "_")
      if e.options[key] == nil then
        io.stderr:write(string.format("%s: unknown option --%s\n", t.name, key))
        os.exit(2)
      end
      local default = e.options[key]
      if flag then val = true
      elseif type(default) ~= "string" and tonumber(val) then val = tonumber(val) end
      e.options[key] = val
    end
    i = i + 1
  end
  if e.virtual then
    local aio = require "aio"
    if aio.clock and aio.clock.virtual then aio.clock.virtual() end
  end
  return e
end

-- Picks the quick or the full value.
function E:size(quick, full)
  if self.full then return full end
  return quick
end

-- Runs fn(...) and returns the seconds it took, then its results: real seconds, or loop
-- seconds under --virtual-time (where sleeps jump and real time says nothing).
function E:time(fn, ...)
  local now = clock
  if self.virtual then now = require("aio").now end
  local t0 = now()
  local r = table.pack(fn(...))
  return now() - t0, table.unpack(r, 1, r.n)
end

-- Records one check; prints "check ok: ..." or "check FAILED: ...". Returns cond.
function E:check(cond, fmt, ...)
  self.checks = self.checks + 1
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or fmt
  if cond then
    print("check ok: " .. msg)
  else
    self.failures = self.failures + 1
    print("check FAILED: " .. msg)
  end
  return cond
end

-- True if measured is within rel (default 25 %) plus abs seconds of expected.
function M.close_to(measured, expected, rel, abs)
  rel = rel or 0.25
  abs = abs or 0.05
  return math.abs(measured - expected) <= expected * rel + abs
end

-- Records a result row: {key=, label=, measured=, unit=, reference=, expected=, reproduced=,
-- note=}. `reference` is the seed's published figure (text), `expected` what this run should
-- give at its size. Printed as `RESULT {json}`.
function E:result(r)
  r.experiment = self.name
  r.size = self.full and "full" or "quick"
  self.results[#self.results + 1] = r
  io.stdout:write("RESULT ", cjson.encode(r), "\n")
  io.stdout:flush()
  return r
end

-- Writes an SVG figure into the --figures directory (if given) and announces it to the
-- runner as `FIGURE {json}`. Returns the path or nil.
function E:figure(name, svg, caption)
  if not self.figures then return nil end
  local path = self.figures .. "/" .. self.name .. "-" .. name .. ".svg"
  local f = io.open(path, "w")
  if not f then return nil end
  f:write(svg)
  f:close()
  io.stdout:write("FIGURE ", cjson.encode({ path = path, caption = caption or name,
    experiment = self.name }), "\n")
  io.stdout:flush()
  return path
end

-- Prints the summary line and exits: status 1 if any check failed, 0 otherwise.
function E:finish()
  print(string.format("%s: %d checks, %d failed", self.name, self.checks, self.failures))
  io.stdout:flush()
  os.exit(self.failures == 0 and 0 or 1)
end

return M
