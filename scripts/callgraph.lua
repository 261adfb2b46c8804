-- scripts/callgraph.lua — draws the request call graphs of a metric_data.json file.
--
--   aioshell scripts/callgraph.lua [metric_data.json] [--svg DIR | --no-svg] [--width N] [--name NAME]
--
-- The file is what the metric server writes on GET /add?flush=1 (the seed's format, also the
-- seed's own tornado server's): {name: [{start=, end=, dt=}, ...], ...}. For each name it prints
-- a text timeline (requests on the y axis, time on x) and writes DIR/<name>.svg; the shapes are
-- what notebook 2 compares (gevent uniform, tornado stop-and-go, aiohttp well-behaved).
-- Exit status: 0, 1 for a file that cannot be read or is not such data, 2 for a bad flag.
local plot = require "aio.plot"
local sys = require "aio.sys"
local cjson = require "cjson"

local USAGE = require("aio.flags").usage("callgraph",
  "[metric_data.json] [--svg DIR | --no-svg] [--width N] [--name NAME]")

-- What --help prints after the usage.
local HELP = [[
Draws the request call graphs of a metric_data.json file (what scripts/server.lua writes): a
text timeline per name, and an SVG per name.
  metric_data.json   the file to read (default metric_data.json)
  --svg DIR          write DIR/<name>.svg (default callgraphs); --no-svg: none
  --width N          columns of the text timeline, 10 to 1000 (default 72)
  --name NAME        only this name's requests
]]

-- Bad or unreadable data: the message on stderr, exit status 1.
local function fail(fmt, ...)
  io.stderr:write("callgraph: ", string.format(fmt, ...), "\n")
  os.exit(1)
end

local file, svg_dir, width, only = nil, "callgraphs", 72, nil
local cl = require("aio.flags").new("callgraph", USAGE, { ... })
for a, name in cl:each() do
  if name == "--svg" then svg_dir = cl:value(a, name)
  elseif a == "--no-svg" then svg_dir = nil
  elseif name == "--width" then width = cl:int(name, cl:value(a, name), 10, 1000)
  elseif name == "--name" then only = cl:value(a, name)
  elseif a == "-h" or a == "--help" then io.write(USAGE, HELP) return
  elseif a:match("^%-") and a ~= "-" then cl:error("unknown option %s", a)
  elseif file then cl:error("one metric file at a time (%s and %s)", file, a)
  else file = a end
end
file = file or "metric_data.json"

local f, err = io.open(file, "r")
if not f then fail("%s", err) end
local text, rerr = f:read("a")
f:close()
if not text then fail("%s: %s", file, rerr) end
local ok, data = pcall(cjson.decode, text)
if not ok or type(data) ~= "table" or (next(data) ~= nil and type(next(data)) ~= "string") then
  fail("%s is not a metric_data.json object ({name: [{start, end, dt}, ...]})", file)
end

-- Checks one name's records; returns nil or what is wrong with them.
local function bad_records(name, records)
  if type(records) ~= "table" or (next(records) ~= nil and records[1] == nil) then
    return string.format("%s: not a list of records", name)
  end
  for i, r in ipairs(records) do
    if type(r) ~= "table" then return string.format("%s record %d: not an object", name, i) end
    if math.type(r.start) == nil then return string.format("%s record %d: start is not a number", name, i) end
    local stop = r["end"]
    if stop ~= nil and math.type(stop) == nil then return string.format("%s record %d: end is not a number", name, i) end
    if stop == nil and math.type(r.dt) == nil then return string.format("%s record %d: needs end or dt", name, i) end
  end
end

local names, all = {}, {}
for name in pairs(data) do all[#all + 1] = name end
table.sort(all)
for _, name in ipairs(all) do
  local records = data[name]
  local problem = bad_records(name, records)
  if problem then fail("%s: %s", file, problem) end
  if not only or name == only then
    if #records > 0 then names[#names + 1] = name
    else io.stderr:write("callgraph: ", name, ": no records, skipped\n") end
  end
end
if only and data[only] == nil then
  fail("no name '%s' in %s (it has: %s)", only, file, #all > 0 and table.concat(all, ", ") or "none")
end
if #names == 0 then fail("no records in %s", file) end

-- Spans of one name, relative to its first start, sorted by start (the request order).
local function spans_of(records)
  local t0 = math.huge
  for _, r in ipairs(records) do if r.start < t0 then t0 = r.start end end
  local spans = {}
  for i, r in ipairs(records) do
    local stop = r["end"] or (r.start + r.dt)
    spans[i] = { start = r.start - t0, stop = stop - t0 }
  end
  table.sort(spans, function(a, b) return a.start < b.start end)
  for i, s in ipairs(spans) do s.label = tostring(i) end
  return spans
end

-- Summary figures: wall span, mean request time, peak concurrency.
local function summary(spans)
  local wall, sum = 0, 0
  for _, s in ipairs(spans) do
    if s.stop > wall then wall = s.stop end
    sum = sum + (s.stop - s.start)
  end
  return wall, sum / #spans, plot.peak_concurrency(spans)
end

if svg_dir then
  local made, merr = sys.mkdir(svg_dir, true)
  if not made then fail("%s", merr) end
end
for _, name in ipairs(names) do
  local spans = spans_of(data[name])
  local wall, mean, peak = summary(spans)
  local title = string.format("%s: %d requests over %.3f s, mean %.1f ms, peak %d concurrent",
    name, #spans, wall, mean * 1000, peak)
  print(plot.timeline_text { title = title, spans = spans, width = width, max_rows = 16 })
  print()
  if svg_dir then
    local path = string.format("%s/%s.svg", svg_dir, (name:gsub("[^%w_%-]", "_")))
    local saved, serr = plot.save(path, plot.timeline_svg { title = title, spans = spans, unit = "s" })
    if not saved then fail("%s", serr) end
    print("  -> " .. path)
  end
end
