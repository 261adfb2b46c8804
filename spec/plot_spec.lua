-- spec/plot_spec.lua — aio.plot: terminal renderings as snapshots, SVG parsed by a real XML
-- parser (python3's xml.etree), live redraw vs plain lines.
local plot = require "aio.plot"
local helper = require "spec.helper"

-- Parses an SVG with python3; returns the root tag and the number of elements of each kind
-- asked for, or raises with the parser's message.
local function parse_svg(svg, kinds)
  local path = helper.tmpfile(svg, ".svg")
  local script = string.format([[
import sys, xml.etree.ElementTree as E
root = E.parse(%q).getroot()
ns = '{http://www.w3.org/2000/svg}'
print(root.tag.replace(ns, ''))
for k in sys.argv[1:]:
    print(k, len(root.findall('.//' + ns + k)))
]], path)
  local out, err, status = helper.exec({ "python3", "-c", script, table.unpack(kinds or {}) })
  assert(status == 0, "SVG does not parse: " .. err)
  local lines = {}
  for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
  local counts = {}
  for i = 2, #lines do
    local k, n = lines[i]:match("^(%S+) (%d+)$")
    counts[k] = tonumber(n)
  end
  return lines[1], counts
end

-- A stream that records what is written to it.
local function sink()
  local buf = {}
  return { write = function(self, ...) for _, s in ipairs { ... } do buf[#buf + 1] = s end return self end,
           flush = function() end, text = function() return table.concat(buf) end }
end

after_each(helper.cleanup)

describe("terminal output", function()
  it("sparkline maps the range onto eight blocks", function()
    assert.equal("▁▂▄▅▇█", plot.sparkline({ 0, 20, 40, 60, 80, 100 }))
    assert.equal("▁▁█", plot.sparkline({ 0, 5, 100 }, { min = 0, max = 100 }))
    assert.equal("█▁", plot.sparkline({ 200, -5 }, { min = 0, max = 100 }))  -- clamped
    assert.equal("", plot.sparkline({}))
  end)

  it("line_chart draws a labelled y axis and one mark per column", function()
    local chart = plot.line_chart({ 0, 50, 100, 50 }, { height = 5, min = 0, max = 100, unit = "%", title = "cpu" })
    assert.equal(table.concat({
      "cpu",
      "100% ┤  • ",
      "     ┤  ││",
      " 50% ┤ • •",
      "     ┤ │  ",
      "  0% ┤•   ",
      "     └────",
    }, "\n"), chart)
  end)

  it("line_chart resamples to the width", function()
    local values = {}
    for i = 1, 100 do values[i] = i end
    local chart = plot.line_chart(values, { width = 10, height = 3 })
    local first = chart:match("[^\n]+")
    assert.equal(10, utf8.len(first:match("┤(.*)$")))
  end)

  it("timeline_text shows one bar per span on a shared axis", function()
    local text = plot.timeline_text { title = "calls", width = 10, spans = {
      { start = 0, stop = 0.5, label = "a" },
      { start = 0.5, stop = 1.0, label = "b" },
      { start = 0, stop = 1.0, label = "c" } } }
    assert.equal(table.concat({
      "calls",
      "a    │█████     │",
      "b    │     █████│",
      "c    │██████████│",
      "     └──────────┘",
      "      0       1s",
      "busy  ██████████  peak 2 at once",
    }, "\n"), text)
  end)

  it("the busy row counts requests in flight: a serial run is one all along, nothing is blank", function()
    local serial = {}
    for i = 1, 10 do serial[i] = { start = (i - 1) * 0.1, stop = i * 0.1, label = tostring(i) } end
    local busy = plot.timeline_text { spans = serial, width = 40 }:match("busy  (.-)  peak")
    assert.equal(string.rep("█", 40), busy)   -- not alternating where one ends and the next starts
    for _, k in ipairs(plot.concurrency(serial, 0, 1, 40)) do assert.is_true(math.abs(k - 1) < 1e-9) end
    -- a gap is blank, and an empty timeline is blank all along (not drawn at mid-height)
    busy = plot.timeline_text { spans = { { start = 0, stop = 1 }, { start = 2, stop = 3 } }, width = 30 }
      :match("busy  (.-)  peak")
    assert.equal(string.rep("█", 10) .. string.rep(" ", 10) .. string.rep("█", 10), busy)
    busy = plot.timeline_text { spans = {}, width = 20 }:match("busy  (.-)  peak")
    assert.equal(string.rep(" ", 20), busy)
    -- half a slot covered counts a half
    assert.same({ 0.5, 0 }, plot.concurrency({ { start = 0, stop = 0.5 } }, 0, 2, 2))
  end)

  it("timeline_text samples when there are more spans than rows", function()
    local spans = {}
    for i = 1, 100 do spans[i] = { start = i * 0.01, stop = i * 0.01 + 0.1, label = "r" .. i } end
    local text = plot.timeline_text { spans = spans, max_rows = 5, width = 20 }
    assert.truthy(text:find("(5 of 100 spans shown)", 1, true))
    assert.truthy(text:find("r1 ", 1, true) and text:find("r100", 1, true))
  end)

  it("bar_text scales bars to the largest value", function()
    assert.equal("a  ██████████ 10 s\nbb █████ 5 s", plot.bar_text({ { label = "a", value = 10 },
      { label = "bb", value = 5 } }, { width = 10, unit = " s" }))
  end)

  it("live prints one plain line per update when not on a terminal", function()
    local out = sink()
    local live = plot.live { title = "cpu", min = 0, max = 100, unit = "%", out = out, tty = false }
    live:update({ 10, 90 }, "normal")
    live:update({ 90, 95 }, "high")
    assert.equal("cpu  90.0% ▂▇  [normal]\ncpu  95.0% ▇█  [high]\n", out.text())
  end)

  it("live redraws in place on a terminal (cursor up + clear)", function()
    local out = sink()
    local live = plot.live { title = "cpu", min = 0, max = 100, out = out, tty = true, height = 3 }
    live:update({ 10, 20 })
    local first = out.text()
    assert.falsy(first:find("\27[", 1, true))
    live:update({ 30, 40 })
    local second = out.text():sub(#first + 1)
    -- title + 3 rows + axis = 5 lines to move up over
    assert.equal("\27[5A\27[J", second:sub(1, 7))
  end)
end)

describe("SVG output", function()
  it("series_svg is well-formed, with a polyline per series and the marks", function()
    local svg = plot.series_svg { title = "cpu <&> \"quoted\"", ymin = 0, ymax = 100,
      series = { { name = "a", values = { 1, 50, 20 } }, { name = "b & c", points = { { 0, 3 }, { 2, 9 } } } },
      marks = { { y = 20, label = "threshold" } }, xlabel = "s", ylabel = "%" }
    local root, n = parse_svg(svg, { "polyline", "title", "line" })
    assert.equal("svg", root)
    assert.equal(2, n.polyline)
    assert.equal(1, n.title)
    assert.truthy(svg:find("cpu &lt;&amp;&gt; &quot;quoted&quot;", 1, true))
  end)

  it("bar_svg has a bar per entry", function()
    local _, n = parse_svg(plot.bar_svg { title = "t", unit = " s",
      bars = { { label = "x", value = 1 }, { label = "y", value = 3, note = "seed 3.00" } } }, { "rect" })
    assert.equal(3, n.rect)  -- background + two bars
  end)

  it("timeline_svg draws every span, even thousands, and stays well-formed", function()
    local spans = {}
    for i = 1, 1000 do
      local s = (i - 1) // 100 * 0.1
      spans[i] = { start = s, stop = s + 0.1, label = "GET /add?name=" .. i .. "&x=<y>" }
    end
    local svg = plot.timeline_svg { title = "crawler", spans = spans }
    local _, n = parse_svg(svg, { "rect", "polygon" })
    assert.equal(1001, n.rect)  -- background + one per span
    assert.equal(1, n.polygon)  -- the concurrency strip
    assert.truthy(svg:find("peak 100 at once", 1, true))
  end)

  it("timeline_svg labels lanes when they are tall enough, and groups by lane", function()
    local svg = plot.timeline_svg { spans = {
      { start = 0, stop = 1, label = "first", lane = "w1" },
      { start = 1, stop = 2, label = "second", lane = "w1" },
      { start = 0, stop = 2, label = "third", lane = "w2" } } }
    parse_svg(svg)
    assert.truthy(svg:find(">first<", 1, true))
    assert.truthy(svg:find(">third<", 1, true))
    assert.falsy(svg:find(">second<", 1, true))  -- one label per lane
  end)

  it("fits a long title into the picture: smaller, then wrapped, never past the edges", function()
    local long = "gevent: 1000 requests x 100 ms (semaphore(c) + spawn all + as_completed (gevent.iwait), " ..
      "new connection each) — 1.143 s"
    local longer = string.rep("a fairly long title with words ", 8) .. "and_one_word_far_too_long_for_any_line_" ..
      string.rep("x", 120)
    for _, t in ipairs { "short", long, longer } do
      for _, svg in ipairs { plot.timeline_svg { title = t, spans = { { start = 0, stop = 1 } } },
                             plot.series_svg { title = t, series = { { values = { 1, 2 } } } },
                             plot.bar_svg { title = t, bars = { { label = "x", value = 1 } } } } do
        parse_svg(svg)
        local W = tonumber(svg:match('width="(%d+)"'))
        local words = {}
        for size, text in svg:gmatch('<text x="%d+" y="%d+" font%-size="(%d+)" font%-weight="bold" ' ..
          'text%-anchor="middle">(.-)</text>') do
          size = tonumber(size)
          assert.is_true(size >= 10 and size <= 14)
          -- centred: half of it on each side of the middle, at about 0.62 em a character
          assert.is_true(utf8.len(text) * size * 0.62 <= W - 16, t .. ": line too wide: " .. text)
          words[#words + 1] = text
        end
        local joined = table.concat(words, " "):gsub("&#39;", "'")
        assert.equal(t:gsub("%s+", ""), (joined:gsub("%s+", "")))   -- nothing lost
      end
    end
    assert.equal(1, #plot.fit_title("short", 720).lines)
    assert.equal(14, plot.fit_title("short", 720).size)
    local ninety = string.rep("abcdefghi ", 9)
    assert.equal(1, #plot.fit_title(ninety, 720).lines)           -- shrinks to fit one line
    assert.is_true(plot.fit_title(ninety, 720).size < 14)
    assert.is_true(#plot.fit_title(longer, 720).lines > 1)         -- wraps
  end)

  it("an empty chart is still a valid picture", function()
    parse_svg(plot.series_svg { series = {} })
    parse_svg(plot.timeline_svg { spans = {} })
    parse_svg(plot.bar_svg { bars = {} })
  end)
end)
