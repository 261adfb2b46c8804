-- spec/report_spec.lua — scripts/notebooks.lua: runs experiments as children, writes a Markdown
-- report with SVG figures and an HTML page that a real headless browser (Debian's chromium)
-- renders; exits non-zero when an experiment fails its own check.
local helper = require "spec.helper"

local NOTEBOOKS = helper.root .. "/scripts/notebooks.lua"

-- The chromium binary, or nil when it is not installed (then the browser tests are pending).
local function chromium()
  for _, name in ipairs { "chromium", "chromium-browser", "google-chrome" } do
    local out, _, status = helper.exec({ "sh", "-c", "command -v " .. name })
    if status == 0 and out ~= "" then return (out:gsub("%s+$", "")) end
  end
end

-- Runs headless chromium on a file with extra flags; returns stdout, stderr, status.
local function browse(file, flags)
  local profile = helper.tmpdir()
  local argv = { chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--user-data-dir=" .. profile }
  for _, f in ipairs(flags) do argv[#argv + 1] = f end
  argv[#argv + 1] = "file://" .. file
  return helper.exec(argv, { timeout = 60 })
end

-- Counts the occurrences of a plain string.
local function count(s, pat)
  local n, i = 0, 1
  while true do
    local a, b = s:find(pat, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

describe("scripts/notebooks.lua", function()
  local out_dir, out, err, status

  setup(function()
    out_dir = helper.tmpdir()
    out, err, status = helper.run({ NOTEBOOKS, "--out", out_dir, "--only", "generators,rx_observables,futures,fetch" },
      { timeout = 120 })
  end)
  teardown(helper.cleanup)

  it("runs the selected experiments and exits 0 when all pass", function()
    assert.equal(0, status, out .. err)
    assert.truthy(out:find("4 passed, 0 failed, 0 missing", 1, true), out)
  end)

  it("writes a Markdown report with every experiment, its checks and results", function()
    local md = assert(helper.readfile(out_dir .. "/report.md"))
    assert.truthy(md:find("## Notebook 4", 1, true))
    assert.truthy(md:find("## Notebook 5", 1, true))
    for _, id in ipairs { "generators", "rx_observables", "futures", "fetch" } do
      assert.truthy(md:find("### " .. id, 1, true), id)
    end
    assert.truthy(md:find("| experiment | status | measured | seed's figure | reproduced |", 1, true))
    assert.truthy(md:find("✔ take(4) gives 0,1,2,3", 1, true))
    -- every figure the report links exists and is an SVG
    for path in md:gmatch("!%[[^%]]*%]%(([^)]+)%)") do
      local svg = helper.readfile(out_dir .. "/" .. path)
      assert.truthy(svg and svg:find("<svg", 1, true), path)
    end
  end)

  it("lists experiments with --list and rejects unknown arguments", function()
    local o, _, s = helper.run({ NOTEBOOKS, "--list" })
    assert.equal(0, s)
    assert.truthy(o:find("cpu_monitor", 1, true) and o:find("crawler_1000", 1, true))
    local _, e2, s2 = helper.run({ NOTEBOOKS, "--bogus" })
    assert.equal(2, s2)
    assert.truthy(e2:find("unknown argument --bogus", 1, true))
  end)

  it("exits 1 and reports the failure when an experiment fails its own check", function()
    local bad = helper.tmpfile([[
print("check ok: this one holds")
print("check FAILED: this one does not")
print('RESULT {"key":"x","label":"a failing result","measured":1.5,"unit":"s","reproduced":false,"reference":"1 s"}')
os.exit(1)
]], ".lua")
    local dir = helper.tmpdir()
    local o, _, s = helper.run({ NOTEBOOKS, "--out", dir, "--notebook", "6", "--script", bad }, { timeout = 60 })
    assert.equal(1, s, o)
    assert.truthy(o:find("0 passed, 1 failed", 1, true), o)
    local md = helper.readfile(dir .. "/report.md")
    assert.truthy(md:find("✘ this one does not", 1, true))
    assert.truthy(md:find("a failing result | failed | 1.50 s | 1 s | no |", 1, true), md)
  end)

  it("titles a --script experiment's section with the title it gave aio.experiment.new, not its path", function()
    local script = helper.tmpfile([[
local e = require("aio.experiment").new { name = "extra", title = "Ping-pong over a channel", args = arg }
e:check(true, "it ran")
e:finish()
]], ".lua")
    local dir = helper.tmpdir()
    local o, e, s = helper.run({ NOTEBOOKS, "--out", dir, "--notebook", "6", "--script", script }, { timeout = 60 })
    assert.equal(0, s, o .. e)
    local id = script:match("([^/]+)%.lua$")
    local md = helper.readfile(dir .. "/report.md")
    assert.truthy(md:find("### " .. id .. " — Ping-pong over a channel\n", 1, true), md)
    assert.falsy(md:find("EXPERIMENT {", 1, true), md)  -- the protocol line is not shown as output
    local html = helper.readfile(dir .. "/index.html")
    assert.truthy(html:find(">" .. id .. " — Ping-pong over a channel</h3>", 1, true))
  end)

  it("renders the HTML page in headless chromium: the DOM has the summary, tables and inline SVGs", function()
    if not chromium() then pending("chromium is not installed (apt-get install chromium)") return end
    local dom, e, s = browse(out_dir .. "/index.html", { "--dump-dom" })
    assert.equal(0, s, e)
    assert.truthy(dom:find('<b class="passed" id="n-passed">4</b>', 1, true), dom:sub(1, 2000))
    assert.truthy(dom:find('<b class="failed" id="n-failed">0</b>', 1, true))
    assert.equal(4, count(dom, 'class="experiment"'))
    assert.truthy(count(dom, "<svg") >= 1)
    assert.truthy(dom:find("notebook experiments, replayed", 1, true))
  end)

  it("renders a screenshot of the page", function()
    if not chromium() then pending("chromium is not installed (apt-get install chromium)") return end
    local png = out_dir .. "/page.png"
    local _, e, s = browse(out_dir .. "/index.html", { "--screenshot=" .. png, "--window-size=1000,1400",
      "--hide-scrollbars" })
    assert.equal(0, s, e)
    local data = assert(helper.readfile(png))
    assert.equal("\137PNG", data:sub(1, 4))
    assert.truthy(#data > 20000, "a blank page would compress to a few KB: " .. #data)
  end)
end)

describe("scripts/notebooks.lua options", function()
  teardown(helper.cleanup)

  it("rejects what would run nothing or crash: message, usage, exit status 2", function()
    for _, c in ipairs {
      { { "--only", "kettle,bogus" }, "--only: no experiment 'bogus' (see --list)" },
      { { "--only", "," }, "--only needs at least one experiment id" },
      { { "--notebook", "9" }, "--notebook needs an integer from 1 to 6, not '9'" },
      { { "--notebook", "6" }, "nothing to run: no experiment of notebook 6" },
      { { "--timeout", "0" }, "--timeout needs a time > 0 in seconds, or with a unit us, ms, s or m (100ms, 0.1s), not '0'" },
      { { "--timeout", "abc" }, "--timeout needs a time > 0 in seconds, or with a unit us, ms, s or m (100ms, 0.1s), not 'abc'" },
      { { "--timeout", "5h" }, "--timeout needs a time > 0 in seconds, or with a unit us, ms, s or m (100ms, 0.1s), not '5h'" },
      { { "--timeout", "30", "s" }, "--timeout takes its unit without a space: '30s', not '30 s'" },
      { { "--out" }, "missing value for --out" },
      { { "--bogus" }, "unknown argument --bogus" },
    } do
      local argv = { NOTEBOOKS }
      for _, a in ipairs(c[1]) do argv[#argv + 1] = a end
      local out, err, status = helper.run(argv, { cwd = helper.tmpdir() })
      local what = table.concat(c[1], " ")
      assert.equal(2, status, what .. "\n" .. out .. err)
      assert.equal("", out, what)
      assert.truthy(err:find("notebooks: " .. c[2], 1, true), what .. ": " .. err)
      assert.truthy(err:find("usage:", 1, true), what)
      assert.falsy(err:find("traceback", 1, true), what)
    end
  end)

  it("takes a fractional --timeout (it was formatted with %d and crashed)", function()
    local dir = helper.tmpdir()
    local out, err, status = helper.run({ NOTEBOOKS, "--only", "generators", "--timeout", "30.5", "--out", dir },
      { timeout = 60 })
    assert.equal(0, status, out .. err)
    assert.truthy(out:find("1 passed, 0 failed", 1, true), out)
  end)

  it("takes --timeout with a unit, and times an experiment out after it", function()
    local slow = helper.tmpfile('require("aio").sleep(30)\n', ".lua")
    local dir = helper.tmpdir()
    local out, err, status = helper.run({ NOTEBOOKS, "--notebook", "6", "--script", slow, "--timeout", "500ms",
      "--out", dir }, { timeout = 20 })
    assert.equal(1, status, out .. err)
    assert.truthy(out:find("timed out", 1, true), out .. err)
  end)
end)
