-- scripts/callgraph.lua — draws the request call graphs of a metric_data.json file.
--
--   aioshell scripts/callgraph.lua [metric_data.json] [--svg DIR] [--width N] [--name NAME]
--
-- The file is what the metric server writes on GET /add?flush=1 (the seed's format, also the
-- seed's own tornado server's): {name: [{start=, end=, dt=}, ...], ...}. For each name it prints
-- a text timeline (requests on the y axis, time on x) and writes DIR/<name>.svg; the shapes are
-- what notebook 2 compares (gevent uniform, tornado stop-and-go, aiohttp well-behaved).
local plot = require "aio.plot"
local cjson = require "cjson"

local file, svg_dir, width, only = "metric_data.json", "callgraphs", 72, nil
do
  local argv = { ... }
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--svg" then svg_dir = argv[i + 1]; i = i + 1
    elseif a == "--no-svg" then svg_dir = nil
    elseif a == "--width" then width = tonumber(argv[i + 1]); i = i + 1
    elseif a == "--name" then only = argv[i + 1]; i = i + 1
    elseif a == "-h" or a == "--help" then
      print("usage: aioshell scripts/callgraph.lua [metric_data.json] [--svg DIR | --no-svg] [--width N] [--name NAME]")
      return
    else file = a end
    i = i + 1
  end
end

local f, err = io.open(file, "r")
if not f then io.stderr:write("callgraph: " .. err .. "\n"); os.exit(1) end
local ok, data = pcall(cjson.decode, f:read("a"))
f:close()
if not ok or type(data) ~= "table" then
  io.stderr:write("callgraph: " .. file .. " is not a metric_data.json object\n")
  os.exit(1)
end

local names = {}
for name in pairs(data) do if not only or name == only then names[#names + 1] = name end end
table.sort(names)
if #names == 0 then io.stderr:write("callgraph: no records in " .. file .. "\n"); os.exit(1) end

-- Spans of one name, relative to its first start, sorted by start (the request order).
local function spans_of(records)
  local t0 = math.huge
  for _, r in ipairs(records) do if r.start < t0 then t0 = r.start end end
  local spans = {}
  for i, r in ipairs(records) do
    local stop = r["end"] or (r.start + (r.dt or 0))
    spans[i] = { start = r.start - t0, stop = stop - t0 }
  end
  table.sort(spans, function(a, b) return a.start < b.start end)
  for i, s in ipairs(spans) do s.label = tostring(i) end
  return spans
end

-- Summary figures: wall span, mean request time, peak concurrency.
local function summary(spans)
  local wall, sum, events = 0, 0, {}
  for _, s in ipairs(spans) do
    if s.stop > wall then wall = s.stop end
    sum = sum + (s.stop - s.start)
    events[#events + 1] = { s.start, 1 }
    events[#events + 1] = { s.stop, -1 }
  end
  table.sort(events, function(a, b) if a[1] == b[1] then return a[2] < b[2] end return a[1] < b[1] end)
  local cur, peak = 0, 0
  for _, e in ipairs(events) do cur = cur + e[2]; if cur > peak then peak = cur end end
  return wall, sum / #spans, peak
end

if svg_dir then os.execute(string.format("mkdir -p '%s'", svg_dir)) end
for _, name in ipairs(names) do
  local spans = spans_of(data[name])
  local wall, mean, peak = summary(spans)
  local title = string.format("%s: %d requests over %.3f s, mean %.1f ms, peak %d concurrent",
    name, #spans, wall, mean * 1000, peak)
  print(plot.timeline_text { title = title, spans = spans, width = width, max_rows = 16 })
  print()
  if svg_dir then
    local path = string.format("%s/%s.svg", svg_dir, name:gsub("[^%w_%-]", "_"))
    plot.save(path, plot.timeline_svg { title = title, spans = spans, unit = "s" })
    print("  -> " .. path)
  end
end
