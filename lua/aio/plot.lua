-- aio.plot — the project's one plotting module: terminal sparklines and line charts (redrawn in
-- place on a tty, plain lines otherwise), and SVG for series, bars and timelines (the crawler's
-- call-graph pictures use timeline_svg / timeline_text).
--
-- Everything returns strings; only plot.live() writes, and only to the stream it is given.
-- SVG output is self-contained (no scripts, no external fonts) so a report can inline it.
local plot = {}

local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local concat, format = table.concat, string.format

local BLOCKS = { "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█" }
local PALETTE = { "#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2",
                  "#97bbf5", "#9c6b4e", "#9498a0" }
plot.palette = PALETTE

-- Escapes text for XML content and attribute values.
local function xml(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                        ['"'] = "&quot;", ["'"] = "&#39;" }))
end
plot.xml_escape = xml

-- Formats a number compactly for axis labels (no trailing zeros, no exponent for usual sizes).
local function num(v)
  if v == floor(v) and math.abs(v) < 1e15 then return format("%d", v) end
  local s = format("%.3g", v)
  return s
end
plot.format_number = num

-- The min and max of a list (ignoring nil), with fallbacks for an empty list.
local function range_of(values, lo, hi)
  local a, b = math.huge, -math.huge
  for i = 1, #values do
    local v = values[i]
    if v ~= nil then
      if v < a then a = v end
      if v > b then b = v end
    end
  end
  if a == math.huge then a, b = 0, 1 end
  return lo or a, hi or b
end

-- A "nice" step for about n ticks over [lo, hi] (1, 2 or 5 times a power of ten).
local function nice_step(lo, hi, n)
  local span = hi - lo
  if span <= 0 then return 1 end
  local raw = span / max(n, 1)
  local mag = 10 ^ floor(math.log(raw, 10))
  local r = raw / mag
  local step = (r < 1.5 and 1 or r < 3 and 2 or r < 7 and 5 or 10) * mag
  return step
end

---------------------------------------------------------------------------------------------
-- Terminal
---------------------------------------------------------------------------------------------

-- sparkline(values [, {min=, max=}]) -> one line of block characters.
function plot.sparkline(values, opts)
  opts = opts or {}
  local lo, hi = range_of(values, opts.min, opts.max)
  local out = {}
  for i = 1, #values do
    local v = values[i]
    if v == nil then
      out[i] = " "
    else
      local t = hi > lo and (v - lo) / (hi - lo) or 0.5
      t = min(max(t, 0), 1)
      out[i] = BLOCKS[1 + floor(t * (#BLOCKS - 1) + 0.5)]
    end
  end
  return concat(out)
end

-- line_chart(values [, {width=, height=, min=, max=, title=, unit=}]) -> multi-line text: a
-- y axis with labels and one mark per column (values are resampled to the width).
function plot.line_chart(values, opts)
  opts = opts or {}
  local height = opts.height or 10
  local width = opts.width or max(#values, 1)
  local lo, hi = range_of(values, opts.min, opts.max)
  if hi <= lo then hi = lo + 1 end
  local cols = {}
  local n = #values
  for c = 1, width do
    if n == 0 then break end
    local i = n <= width and c or floor((c - 1) * n / width) + 1
    if i > n then break end
    cols[c] = values[i]
  end
  local grid = {}
  for r = 1, height do
    local row = {}
    for c = 1, width do row[c] = " " end
    grid[r] = row
  end
  local prev
  for c = 1, #cols do
    local v = cols[c]
    if v ~= nil then
      local t = min(max((v - lo) / (hi - lo), 0), 1)
      local r = height - floor(t * (height - 1) + 0.5)  -- row 1 is the top
      grid[r][c] = "•"
      if prev then  -- join steep steps with a vertical stroke so the line reads as one
        local a, b = min(prev, r), max(prev, r)
        for k = a + 1, b - 1 do if grid[k][c] == " " then grid[k][c] = "│" end end
      end
      prev = r
    end
  end
  local unit = opts.unit or ""
  local labw = max(#(num(hi) .. unit), #(num(lo) .. unit))
  local lines = {}
  if opts.title then lines[#lines + 1] = opts.title end
  for r = 1, height do
    local label = ""
    if r == 1 then label = num(hi) .. unit
    elseif r == height then label = num(lo) .. unit
    elseif r == floor((height + 1) / 2) then label = num((hi + lo) / 2) .. unit end
    lines[#lines + 1] = string.rep(" ", labw - #label) .. label .. " ┤" .. concat(grid[r])
  end
  lines[#lines + 1] = string.rep(" ", labw) .. " └" .. string.rep("─", width)
  return concat(lines, "\n")
end

-- bar_text(bars [, {width=, unit=}]) -> one line per {label=, value=} with a proportional bar.
function plot.bar_text(bars, opts)
  opts = opts or {}
  local width = opts.width or 40
  local labw, hi = 0, 0
  for _, b in ipairs(bars) do
    labw = max(labw, #tostring(b.label))
    hi = max(hi, b.value or 0)
  end
  local lines = {}
  for _, b in ipairs(bars) do
    local v = b.value or 0
    local n = hi > 0 and floor(v / hi * width + 0.5) or 0
    local label = tostring(b.label)
    lines[#lines + 1] = label .. string.rep(" ", labw - #label) .. " " .. string.rep("█", n) ..
      " " .. num(v) .. (opts.unit or "")
  end
  return concat(lines, "\n")
end

-- In flight over time: for each of `width` equal slots of [t0, t1], the time-weighted average
-- number of spans active during the slot (a span covering half of a slot adds 0.5). Spans that
-- follow each other read as 1 all along, not 2 in the slots where one ends and the next starts.
local function concurrency(spans, t0, t1, width)
  local out = {}
  for c = 1, width do out[c] = 0 end
  local dt = (t1 - t0) / width
  if dt <= 0 then return out end
  for _, s in ipairs(spans) do
    local a, b = max(s.start, t0), min(s.stop or s.start, t1)
    if b > a then
      for c = min(floor((a - t0) / dt) + 1, width), min(floor((b - t0) / dt) + 1, width) do
        local overlap = min(b, t0 + c * dt) - max(a, t0 + (c - 1) * dt)
        if overlap > 0 then out[c] = out[c] + overlap / dt end
      end
    end
  end
  return out
end
plot.concurrency = concurrency

-- The highest value of a concurrency profile (0 for none).
local function profile_max(conc)
  local hi = 0
  for _, k in ipairs(conc) do hi = max(hi, k) end
  return hi
end

-- A concurrency profile as one row of blocks scaled to its highest slot; a slot with nothing
-- in flight is blank, one with anything at all at least the lowest block.
local function busy_row(conc)
  local hi, out = profile_max(conc), {}
  for c, k in ipairs(conc) do
    out[c] = k <= 0 and " " or BLOCKS[min(max(ceil(k / hi * #BLOCKS - 1e-9), 1), #BLOCKS)]
  end
  return concat(out)
end

-- The most spans active at the same instant (exact sweep; a span ending when another starts
-- does not overlap it).
local function peak_concurrency(spans)
  local ev = {}
  for _, s in ipairs(spans) do
    ev[#ev + 1] = { s.start, 1 }
    ev[#ev + 1] = { s.stop or s.start, -1 }
  end
  table.sort(ev, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]  -- ends before starts at the same time
  end)
  local k, peak = 0, 0
  for _, e in ipairs(ev) do
    k = k + e[2]
    if k > peak then peak = k end
  end
  return peak
end
plot.peak_concurrency = peak_concurrency

-- Start and end of a list of spans.
local function span_bounds(spans)
  local t0, t1 = math.huge, -math.huge
  for _, s in ipairs(spans) do
    t0 = min(t0, s.start)
    t1 = max(t1, s.stop or s.start)
  end
  if t0 == math.huge then t0, t1 = 0, 1 end
  if t1 <= t0 then t1 = t0 + 1 end
  return t0, t1
end

-- timeline_text{title=, spans={{start=, stop=, label=}, ...}, width=, max_rows=} -> text: one
-- row per span (a bar from start to stop on a shared time axis), and, when there are more
-- spans than rows, an evenly spaced sample plus the concurrency profile.
function plot.timeline_text(opts)
  local spans = opts.spans or {}
  local width = opts.width or 60
  local max_rows = opts.max_rows or 24
  local t0, t1 = span_bounds(spans)
  local lines = {}
  if opts.title then lines[#lines + 1] = opts.title end
  local labw = 0
  local rows = {}
  local n = #spans
  local shown = min(n, max_rows)
  for k = 1, shown do
    local i = n <= max_rows and k or floor((k - 1) * (n - 1) / max(shown - 1, 1)) + 1
    rows[#rows + 1] = spans[i]
    labw = max(labw, #tostring(spans[i].label or i))
  end
  labw = max(min(labw, 24), 4)  -- at least as wide as the "busy" row label
  for i, s in ipairs(rows) do
    local a = floor((s.start - t0) / (t1 - t0) * width)
    local b = ceil(((s.stop or s.start) - t0) / (t1 - t0) * width)
    if b <= a then b = a + 1 end
    if b > width then b = width end
    if a >= width then a = width - 1 end
    local label = tostring(s.label or i):sub(1, labw)
    lines[#lines + 1] = label .. string.rep(" ", labw - #label) .. " │" .. string.rep(" ", a) ..
      string.rep("█", b - a) .. string.rep(" ", width - b) .. "│"
  end
  if n > max_rows then
    lines[#lines + 1] = format("%s (%d of %d spans shown)", string.rep(" ", labw), shown, n)
  end
  local conc = concurrency(spans, t0, t1, width)
  lines[#lines + 1] = string.rep(" ", labw) .. " └" .. string.rep("─", width) .. "┘"
  local left, right = num(0), num(t1 - t0) .. "s"
  lines[#lines + 1] = string.rep(" ", labw + 2) .. left ..
    string.rep(" ", max(width - #left - #right, 1)) .. right
  lines[#lines + 1] = "busy" .. string.rep(" ", labw - 4) .. "  " ..
    busy_row(conc) .. format("  peak %d at once", peak_concurrency(spans))
  return concat(lines, "\n")
end

-- live{title=, min=, max=, height=, width=, out=, tty=} -> a chart that redraws in place on a
-- terminal (cursor up + clear) and prints one plain line per update when the stream is not a
-- terminal (logs, pipes, CI). Methods: :update(values [, status]), :close().
function plot.live(opts)
  opts = opts or {}
  local out = opts.out or io.stdout
  local tty = opts.tty
  if tty == nil then
    local ok, sys = pcall(require, "aio.sys")
    tty = ok and out == io.stdout and sys.isatty(1) or false
  end
  local self = { lines = 0, tty = tty, updates = 0 }
  -- Redraws with the latest window of values; `status` is a short word shown beside it.
  function self:update(values, status)
    if type(values) == "number" then values = { values } end
    self.updates = self.updates + 1
    local last = values[#values]
    if self.tty then
      local width = opts.width or max(#values, 1)
      local ok, sys = pcall(require, "aio.sys")
      local cols = ok and sys.tty_size(1)
      if cols and width > cols - 12 then width = max(cols - 12, 10) end  -- keep lines unwrapped
      local chart = plot.line_chart(values, { width = width,
        height = opts.height or 8, min = opts.min, max = opts.max, unit = opts.unit,
        title = format("%s  %s%s  [%s]", opts.title or "", last and num(last) or "-",
          opts.unit or "", status or "") })
      local buf = {}
      if self.lines > 0 then buf[1] = format("\27[%dA\27[J", self.lines) end
      buf[#buf + 1] = chart
      buf[#buf + 1] = "\n"
      out:write(concat(buf))
      local _, nl = chart:gsub("\n", "")
      self.lines = nl + 1
    else
      out:write(format("%s %s%s %s%s\n", opts.title or "", last and format("%5.1f", last) or "-",
        opts.unit or "", plot.sparkline(values, { min = opts.min, max = opts.max }),
        status and ("  [" .. status .. "]") or ""))
    end
    out:flush()
  end
  -- Ends the live area (leaves the last drawing on screen).
  function self:close() self.lines = 0 end
  return self
end

---------------------------------------------------------------------------------------------
-- SVG
---------------------------------------------------------------------------------------------

local TITLE_SIZE, TITLE_MIN = 14, 10  -- px: a title shrinks down to TITLE_MIN, then wraps
local CHAR_EM = 0.62                     -- width of an average bold sans-serif character, in em

-- Characters in s (UTF-8 aware; bytes for invalid UTF-8).
local function nchars(s) return utf8.len(s) or #s end

-- Splits a word into pieces of at most n characters.
local function split_word(word, n)
  local pieces = {}
  while nchars(word) > n do
    local cut = utf8.offset(word, n + 1) or (n + 1)
    pieces[#pieces + 1] = word:sub(1, cut - 1)
    word = word:sub(cut)
  end
  pieces[#pieces + 1] = word
  return pieces
end

-- Fits a title into a w px wide picture: one line at TITLE_SIZE if it fits, else at the
-- largest size down to TITLE_MIN that fits, else wrapped at word boundaries at TITLE_MIN
-- (words longer than a line are cut). Returns {lines=, size=, extra=} where extra is the
-- height the lines after the first take (callers move their plot down by it).
local function fit_title(title, w)
  if not title then return { lines = {}, size = TITLE_SIZE, extra = 0 } end
  local avail = w - 16
  for size = TITLE_SIZE, TITLE_MIN, -1 do
    if nchars(title) * size * CHAR_EM <= avail then return { lines = { title }, size = size, extra = 0 } end
  end
  local per_line = max(floor(avail / (TITLE_MIN * CHAR_EM)), 4)
  local lines, cur = {}, nil
  for word in title:gmatch("%S+") do
    for _, piece in ipairs(split_word(word, per_line)) do
      if cur and nchars(cur) + 1 + nchars(piece) <= per_line then
        cur = cur .. " " .. piece
      else
        lines[#lines + 1] = cur
        cur = piece
      end
    end
  end
  lines[#lines + 1] = cur
  return { lines = lines, size = TITLE_MIN, extra = (#lines - 1) * (TITLE_MIN + 4) }
end
plot.fit_title = fit_title

-- Opens an SVG document with a white background and a title laid out by fit_title (tl).
local function svg_open(buf, w, h, title, tl)
  buf[#buf + 1] = format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" ' ..
    'viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">', w, h, w, h)
  if title then buf[#buf + 1] = "<title>" .. xml(title) .. "</title>" end
  buf[#buf + 1] = format('<rect width="%d" height="%d" fill="#ffffff"/>', w, h)
  for i, line in ipairs(tl.lines) do
    buf[#buf + 1] = format('<text x="%d" y="%d" font-size="%d" font-weight="bold" ' ..
      'text-anchor="middle">%s</text>', floor(w / 2), 18 + (i - 1) * (tl.size + 4), tl.size, xml(line))
  end
end

-- Draws ticks and grid lines of a linear axis; `vertical` for the y axis.
local function svg_axis(buf, lo, hi, x0, y0, x1, y1, vertical, unit)
  local step = nice_step(lo, hi, 5)
  local first = ceil(lo / step) * step
  local v = first
  local guard = 0
  while v <= hi + step * 1e-9 and guard < 50 do
    guard = guard + 1
    local t = (v - lo) / (hi - lo)
    if vertical then
      local y = y1 - t * (y1 - y0)
      buf[#buf + 1] = format('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>',
        x0, y, x1, y)
      buf[#buf + 1] = format('<text x="%.1f" y="%.1f" text-anchor="end">%s</text>', x0 - 4,
        y + 4, xml(num(v) .. (unit or "")))
    else
      local x = x0 + t * (x1 - x0)
      buf[#buf + 1] = format('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>',
        x, y0, x, y1)
      buf[#buf + 1] = format('<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>', x,
        y1 + 14, xml(num(v) .. (unit or "")))
    end
    v = first + guard * step
  end
end

-- series_svg{title=, series={{name=, values={...}} or {name=, points={{x, y}, ...}}, ...},
-- width=, height=, xlabel=, ylabel=, ymin=, ymax=, xmin=, xmax=, marks={{y=, label=}}} -> SVG
-- line chart; `values` are plotted at x = 1, 2, ...
function plot.series_svg(opts)
  local W, H = opts.width or 640, opts.height or 320
  local tl = fit_title(opts.title, W)
  local L, R, T, B = 56, 16, 30 + tl.extra, 42
  H = H + tl.extra
  local series = opts.series or {}
  local xs, ys = {}, {}
  local norm = {}
  for si, s in ipairs(series) do
    local pts = {}
    if s.points then
      for i, p in ipairs(s.points) do pts[i] = { p[1] or p.x, p[2] or p.y } end
    else
      for i, v in ipairs(s.values or {}) do pts[i] = { i, v } end
    end
    for _, p in ipairs(pts) do xs[#xs + 1] = p[1] ys[#ys + 1] = p[2] end
    norm[si] = pts
  end
  for _, m in ipairs(opts.marks or {}) do ys[#ys + 1] = m.y end
  local xlo, xhi = range_of(xs, opts.xmin, opts.xmax)
  local ylo, yhi = range_of(ys, opts.ymin, opts.ymax)
  if xhi <= xlo then xhi = xlo + 1 end
  if yhi <= ylo then yhi = ylo + 1 end
  local function px(x) return L + (x - xlo) / (xhi - xlo) * (W - L - R) end
  local function py(y) return H - B - (y - ylo) / (yhi - ylo) * (H - T - B) end
  local buf = {}
  svg_open(buf, W, H, opts.title, tl)
  svg_axis(buf, ylo, yhi, L, T, W - R, H - B, true, opts.yunit)
  svg_axis(buf, xlo, xhi, L, T, W - R, H - B, false, opts.xunit)
  buf[#buf + 1] = format('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>', L, H - B,
    W - R, H - B)
  buf[#buf + 1] = format('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>', L, T, L, H - B)
  for _, m in ipairs(opts.marks or {}) do
    local y = py(m.y)
    buf[#buf + 1] = format('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#d62728" ' ..
      'stroke-dasharray="4 3"/>', L, y, W - R, y)
    if m.label then
      buf[#buf + 1] = format('<text x="%d" y="%.1f" fill="#d62728" text-anchor="end">%s</text>',
        W - R - 2, y - 3, xml(m.label))
    end
  end
  for si, pts in ipairs(norm) do
    local color = series[si].color or PALETTE[(si - 1) % #PALETTE + 1]
    local coords = {}
    for i, p in ipairs(pts) do coords[i] = format("%.1f,%.1f", px(p[1]), py(p[2])) end
    if #coords == 1 then
      buf[#buf + 1] = format('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>', px(pts[1][1]),
        py(pts[1][2]), color)
    elseif #coords > 1 then
      buf[#buf + 1] = format('<polyline fill="none" stroke="%s" stroke-width="1.8" ' ..
        'points="%s"/>', color, concat(coords, " "))
    end
    if series[si].name then  -- legend, top left, one row per series
      local ly = T + 4 + (si - 1) * 14
      buf[#buf + 1] = format('<rect x="%d" y="%d" width="10" height="10" fill="%s"/>', L + 8,
        ly, color)
      buf[#buf + 1] = format('<text x="%d" y="%d">%s</text>', L + 22, ly + 9,
        xml(series[si].name))
    end
  end
  if opts.xlabel then
    buf[#buf + 1] = format('<text x="%.1f" y="%d" text-anchor="middle">%s</text>',
      L + (W - L - R) / 2, H - 6, xml(opts.xlabel))
  end
  if opts.ylabel then
    buf[#buf + 1] = format('<text x="12" y="%.1f" text-anchor="middle" ' ..
      'transform="rotate(-90 12 %.1f)">%s</text>', T + (H - T - B) / 2, T + (H - T - B) / 2,
      xml(opts.ylabel))
  end
  buf[#buf + 1] = "</svg>"
  return concat(buf, "\n")
end

-- bar_svg{title=, bars={{label=, value=, color=, note=}, ...}, unit=, width=} -> horizontal
-- bar chart SVG (the report's measured-vs-published comparisons).
function plot.bar_svg(opts)
  local bars = opts.bars or {}
  local W = opts.width or 640
  local row = 22
  local tl = fit_title(opts.title, W)
  local L, R, T, B = opts.label_width or 200, 70, 30 + tl.extra, 24
  local H = T + B + row * max(#bars, 1)
  local hi = 0
  for _, b in ipairs(bars) do hi = max(hi, b.value or 0) end
  if hi <= 0 then hi = 1 end
  local buf = {}
  svg_open(buf, W, H, opts.title, tl)
  for i, b in ipairs(bars) do
    local y = T + (i - 1) * row
    local w = (b.value or 0) / hi * (W - L - R)
    local color = b.color or PALETTE[(i - 1) % #PALETTE + 1]
    buf[#buf + 1] = format('<text x="%d" y="%d" text-anchor="end">%s</text>', L - 6, y + 15,
      xml(b.label))
    buf[#buf + 1] = format('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>', L, y + 3,
      max(w, 0.5), row - 6, color)
    buf[#buf + 1] = format('<text x="%.1f" y="%d">%s</text>', L + w + 4, y + 15,
      xml(num(b.value or 0) .. (opts.unit or "") .. (b.note and ("  " .. b.note) or "")))
  end
  buf[#buf + 1] = "</svg>"
  return concat(buf, "\n")
end

-- timeline_svg{title=, spans={{start=, stop=, label=, color=, lane=}, ...}, width=, height=,
-- unit=} -> SVG Gantt chart: one lane per span (or per distinct `lane`), on a shared time axis
-- starting at the earliest start. Thousands of spans shrink to thin lanes; labels are drawn
-- only when lanes are tall enough to read them. A concurrency strip sits under the axis.
function plot.timeline_svg(opts)
  local spans = opts.spans or {}
  local W = opts.width or 720
  local t0, t1 = span_bounds(spans)
  local lanes, lane_of, nlanes = {}, {}, 0
  for i, s in ipairs(spans) do
    local key = s.lane
    if key == nil then key = i end
    if lanes[key] == nil then
      nlanes = nlanes + 1
      lanes[key] = nlanes
    end
    lane_of[i] = lanes[key]
  end
  local lane_h = opts.lane_height or min(18, max(600 / max(nlanes, 1), 0.5))
  local show_labels = lane_h >= 10
  local L = show_labels and (opts.label_width or 140) or 40
  local tl = fit_title(opts.title, W)
  local R, T = 20, 30 + tl.extra
  local plot_h = lane_h * max(nlanes, 1)
  local strip = 40
  local H = opts.height or floor(T + plot_h + 24 + strip + 20)
  local function px(t) return L + (t - t0) / (t1 - t0) * (W - L - R) end
  local buf = {}
  svg_open(buf, W, H, opts.title, tl)
  svg_axis(buf, 0, t1 - t0, L, T, W - R, T + plot_h, false, opts.unit or "s")
  local labeled = {}
  for i, s in ipairs(spans) do
    local lane = lane_of[i]
    local y = T + (lane - 1) * lane_h
    local x = px(s.start)
    local w = max(px(s.stop or s.start) - x, 0.5)
    local color = s.color or PALETTE[(lane - 1) % #PALETTE + 1]
    buf[#buf + 1] = format('<rect x="%.2f" y="%.2f" width="%.2f" height="%.2f" fill="%s">' ..
      '<title>%s</title></rect>', x, y + (lane_h > 3 and 1 or 0), w,
      max(lane_h - (lane_h > 3 and 2 or 0), 0.4), color,
      xml(format("%s: %.3f–%.3f s", tostring(s.label or i), s.start - t0,
        (s.stop or s.start) - t0)))
    if show_labels and s.label and not labeled[lane] then
      labeled[lane] = true
      buf[#buf + 1] = format('<text x="%d" y="%.1f" text-anchor="end">%s</text>', L - 6,
        y + lane_h / 2 + 4, xml(tostring(s.label):sub(1, 24)))
    end
  end
  -- Concurrency strip: the average number of spans in flight per slot, as a filled profile
  -- scaled to the highest slot (flat on the baseline where nothing is in flight).
  local cols = 120
  local conc = concurrency(spans, t0, t1, cols)
  local peak = profile_max(conc)
  if peak <= 0 then peak = 1 end
  local sy = T + plot_h + 24
  local pts = { format("%.1f,%.1f", px(t0), sy + strip) }
  for c, k in ipairs(conc) do
    local xa = px(t0 + (c - 1) * (t1 - t0) / cols)
    local xb = px(t0 + c * (t1 - t0) / cols)
    local y = sy + strip - k / peak * strip
    pts[#pts + 1] = format("%.1f,%.1f %.1f,%.1f", xa, y, xb, y)
  end
  pts[#pts + 1] = format("%.1f,%.1f", px(t1), sy + strip)
  buf[#buf + 1] = format('<polygon points="%s" fill="#9498a0" opacity="0.6"/>', concat(pts, " "))
  buf[#buf + 1] = format('<text x="%d" y="%.1f" text-anchor="end">busy</text>', L - 6,
    sy + strip / 2 + 4)
  buf[#buf + 1] = format('<text x="%d" y="%d">peak %d at once · %d spans · %s s</text>', L,
    H - 6, peak_concurrency(spans), #spans, num(t1 - t0))
  buf[#buf + 1] = "</svg>"
  return concat(buf, "\n")
end

-- save(path, text): writes a string to a file (SVG, Markdown, HTML); returns path or fail, msg.
function plot.save(path, text)
  local f, err = io.open(path, "w")
  if not f then return nil, err end
  f:write(text)
  f:close()
  return path
end

return plot
