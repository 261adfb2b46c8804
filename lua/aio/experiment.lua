-- aio.experiment — the small protocol every notebook script in scripts/ speaks, so that
-- scripts/notebooks.lua can run them as child processes and build the report.
--
-- A script: parses --quick (default) / --full and its own options, does its work, records
-- checks and results, then calls e:finish(), which exits 1 if any check failed.
-- Each result is printed as one line `RESULT {json}` on stdout (the runner reads those, and the
-- `EXPERIMENT {json}` line finish prints: the title); every other line is the script's ordinary
-- output, shown as is in the report.
local cjson = require "cjson"
local flags = require "aio.flags"

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

-- The metavariable and the text of option k's help (the `help` table of new), or nil, nil.
local function option_help(e, k)
  local h = e.help[k]
  if type(h) == "table" then return h[1], h[2] end
  return nil, h
end

-- The option word of key k: --load-at for load_at.
local function option_word(k) return "--" .. k:gsub("_", "-") end

-- The declared option keys, sorted.
local function option_keys(e)
  local keys = {}
  for k in pairs(e.options) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- The usage of experiment e: the protocol's flags, then each declared option with its
-- metavariable from `help`, else its default (V where it has none; nothing for a bare one).
local function usage(prog, e)
  local parts = { "[--quick | --full] [--virtual-time] [--figures DIR]" }
  for _, k in ipairs(option_keys(e)) do
    local d, opt, meta = e.options[k], option_word(k), option_help(e, k)
    parts[#parts + 1] = e.bare[k] and "[" .. opt .. "]"
      or string.format("[%s %s]", opt, meta or (d == false and "V" or tostring(d)))
  end
  return flags.usage(prog, table.concat(parts, " "))
end

-- A duration option's help text with aio.flags' words on units after its own unit ("in ms"),
-- before its closing "(default ...)" if it has one.
local function with_units(text)
  local own, default = text:match("^(.-)%s*(%(default [^()]*%))$")
  if not own then return text .. flags.UNITS end
  return own .. flags.UNITS .. " " .. default
end

-- What --help prints after the usage: the title, then one line per flag (the protocol's, then
-- the declared options' with their `help` text and default).
local function description(e)
  local lines = { e.title, "  --quick | --full    the quick sizes (default), or the notebook's own",
    "  --virtual-time      timers and sleeps jump instead of waiting (loop seconds; real for threads)",
    "  --figures DIR       write the SVG figures into DIR (made if missing)" }
  for _, k in ipairs(option_keys(e)) do
    local meta, text = option_help(e, k)
    local d = e.options[k]
    local flag = option_word(k) .. (e.bare[k] and "" or " " .. (meta or "V"))
    local words = { e.duration[k] and with_units(text or "a time in " .. e.duration[k]) or text }
    if d ~= false and not e.bare[k] then words[#words + 1] = "(default " .. tostring(d) .. ")" end
    lines[#lines + 1] = string.format("  %-19s %s", flag, table.concat(words, " "))
  end
  return table.concat(lines, "\n") .. "\n"
end

-- Sets the declared option given by the word a (named name; --load-at sets load_at). A string
-- default takes any value; every other option is numeric: its value must be a finite number,
-- an integer for the options declared `integer`, > 0 (an integer >= 1) for those declared
-- `positive`, >= 0 for those declared `nonnegative`; a `duration` one takes a unit too
-- (aio.flags' duration: 100ms, 0.1s), is >= 0, and > 0 or whole as declared. Only the options
-- declared `bare` may be given without a value (--no-load), which sets them to true.
local function set_option(e, cl, a, name)
  local key = name:sub(3):gsub("-", "_")
  local default = e.options[key]
  if default == nil then cl:error("unknown option %s", name) end
  local v
  if type(default) == "string" then v = cl:value(a, name)
  elseif e.bare[key] then
    v = cl:value_or_true(a, name)
    if v ~= true then v = cl:number(name, v) end
  elseif e.duration[key] then
    v = cl:duration(name, cl:value(a, name), e.duration[key],
      { positive = e.positive[key], integer = e.integer[key] })
  elseif e.integer[key] then v = cl:int(name, cl:value(a, name), e.positive[key] and 1 or nil)
  elseif e.positive[key] then v = cl:positive(name, cl:value(a, name))
  elseif e.nonnegative[key] then v = cl:nonnegative(name, cl:value(a, name))
  else v = cl:number(name, cl:value(a, name)) end
  e.options[key] = v
end

-- Reads the command line args into e with aio.flags (a mistake: message, usage, exit 2). A
-- word that is not an option is a mistake too (a typo such as -count 5 went unnoticed).
local function parse(e, prog, args)
  local cl = flags.new(prog, usage(prog, e), args)
  e.cl = cl
  for a, name in cl:each() do
    if a == "--full" then e.full, e.quick = true, false
    elseif a == "--quick" then e.full, e.quick = false, true
    elseif a == "--virtual-time" then e.virtual = true
    elseif name == "--figures" then e.figures = cl:value(a, name)
    elseif a == "-h" or a == "--help" then io.write(cl.usage, description(e)) os.exit(0)
    elseif a:sub(1, 2) == "--" then set_option(e, cl, a, name)
    else cl:error("unknown argument %s", a) end
  end
end

-- new{name=, title=, args=arg, options={name=default, ...}, positive={name, ...},
-- nonnegative={name, ...}, integer={name, ...}, bare={name, ...}, duration={name=unit, ...},
-- help={name=text or {METAVAR, text}}, autojump=seconds, real_time=why} -> experiment.
-- Recognised flags: --quick, --full, --figures DIR, --virtual-time, -h/--help, and --NAME VALUE
-- (or --NAME=VALUE) for each declared option; a default of false declares an option with no
-- default. Values are numbers unless the default is a string; the options named in `integer`
-- (a count, a seed) need an integer, those in `positive` (a time scale, a delay, a count) one
-- > 0, those in `nonnegative` (a time from the start) one >= 0, and those in `bare` (a switch)
-- may be given alone, which sets them to true. Those in `duration` (a delay: delay = "ms") are
-- times in that unit ("us", "ms", "s"), given bare or with a unit (100ms, 0.1s), >= 0 unless
-- also `positive`, whole if also `integer`. `help` says what an option means (--help prints
-- it, and for a duration that it takes units; METAVAR replaces V in the usage: "S", "MS").
-- Under --virtual-time the clock jumps once the loop has had no I/O for `autojump` real seconds
-- (default 0: at once; set it when threads or processes send the loop work, which must arrive
-- before the jump). An experiment whose measurement needs real time (a thread's real sleep, a
-- loop polling the real clock) says why in `real_time`: --virtual-time then runs it in real
-- time with a note on stderr.
function M.new(t)
  local e = setmetatable({ name = t.name, title = t.title or t.name, quick = true,
                           full = false, checks = 0, failures = 0, results = {},
                           lines = {}, options = {}, positive = {}, nonnegative = {}, integer = {},
                           bare = {}, duration = {}, help = t.help or {}, figures = nil }, E)
  for k, v in pairs(t.options or {}) do e.options[k] = v end
  for k, unit in pairs(t.duration or {}) do e.duration[k] = unit end
  for _, kind in ipairs { "positive", "nonnegative", "integer", "bare" } do
    for _, k in ipairs(t[kind] or {}) do e[kind][k] = true end
  end
  parse(e, t.name, t.args or {})
  if e.virtual and t.real_time then        -- what it measures needs real time: say so, run in it
    io.stderr:write(string.format("%s: --virtual-time does not apply (%s); running in real time\n",
      t.name, t.real_time))
    e.virtual = false
  end
  if e.virtual then
    local aio = require "aio"
    if aio.clock and aio.clock.virtual then aio.clock.virtual(t.autojump) end
  end
  return e
end

-- Reports a mistake the options make together (--load-at after the end of --duration), as one
-- option's is: "name: message" and the usage on stderr, exit status 2.
function E:reject(fmt, ...)
  self.cl:error(fmt, ...)
end

-- Picks the quick or the full value.
function E:size(quick, full)
  if self.full then return full end
  return quick
end

-- Runs fn(...) and returns the seconds it took, then its results: real seconds, except under
-- --virtual-time when a timer fired meanwhile: then loop seconds (sleeps jumped, and count what
-- they would have lasted). The virtual clock stands still while threads, processes or the CPU
-- work, so for a section with no timer only real seconds say anything (loop seconds said 0).
function E:time(fn, ...)
  local loop_now = self.virtual and require("aio").now
  local t0, v0 = clock(), loop_now and loop_now()
  local r = table.pack(fn(...))
  local took = clock() - t0
  if loop_now and loop_now() > v0 then took = loop_now() - v0 end
  return took, table.unpack(r, 1, r.n)
end

-- fmt formatted with the arguments, or fmt as is when there are none (it may hold a '%').
local function format(fmt, ...)
  if select("#", ...) > 0 then return string.format(fmt, ...) end
  return fmt
end

-- Prints a line (format(fmt, ...)) and keeps it in e.lines, so that checks can look at what
-- was printed and in which order.
function E:say(fmt, ...)
  local s = format(fmt, ...)
  self.lines[#self.lines + 1] = s
  print(s)
  return s
end

-- Records one check; prints "check ok: ..." or "check FAILED: ...". Returns cond.
function E:check(cond, fmt, ...)
  self.checks = self.checks + 1
  local msg = format(fmt, ...)
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

-- A figure that cannot be written: the reason on stderr, and a failed run (finish exits 1).
local function figure_failed(e, why)
  io.stderr:write(e.name, ": --figures: ", why, "\n")
  e.failures = e.failures + 1
  return nil
end

-- Writes an SVG figure into the --figures directory (if given; made as by mkdir -p, as the
-- crawler's --svg DIR) and announces it to the runner as `FIGURE {json}`. Returns the path or
-- nil.
function E:figure(name, svg, caption)
  if not self.figures then return nil end
  local made, why = require("aio.sys").mkdir(self.figures, true)
  if not made then return figure_failed(self, why) end
  local path = self.figures .. "/" .. self.name .. "-" .. name .. ".svg"
  local f, err = io.open(path, "w")
  if not f then return figure_failed(self, err) end
  f:write(svg)
  f:close()
  io.stdout:write("FIGURE ", cjson.encode({ path = path, caption = caption or name,
    experiment = self.name }), "\n")
  io.stdout:flush()
  return path
end

-- Prints `EXPERIMENT {json}` (its name and title, for the runner's report) and the summary
-- line, and exits: status 1 if any check failed, 0 otherwise.
function E:finish()
  io.stdout:write("EXPERIMENT ", cjson.encode({ name = self.name, title = self.title }), "\n")
  print(string.format("%s: %d checks, %d failed", self.name, self.checks, self.failures))
  io.stdout:flush()
  os.exit(self.failures == 0 and 0 or 1)
end

return M
