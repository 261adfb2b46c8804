-- scripts/notebooks.lua — replays every experiment of the five notebooks and writes a report.
--
--   aioshell scripts/notebooks.lua [--full] [--out DIR] [--only a,b] [--notebook N] [--list]
--                                  [--timeout S] [--script FILE ...]
--
-- Each experiment is a script of scripts/ run as a child process of this same binary (quick
-- sizes by default, the seeds' sizes with --full). A child's exit status is its verdict; lines
-- it prints as `RESULT {json}` become rows of the report (measured value, the seed's published
-- figure, reproduced or not) and `FIGURE {json}` lines, or SVG files it leaves in the figure
-- directory, become its pictures (see lua/aio/experiment.lua for the protocol).
-- The report is DIR/report.md (Markdown with SVG figures) and DIR/index.html (one
-- self-contained page). Exits 1 if any experiment failed its own check or is missing.
local cjson = require "cjson"
local sys = require "aio.sys"
local plot = require "aio.plot"
local experiment = require "aio.experiment"

local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."

---------------------------------------------------------------------------------------------
-- The manifest: every notebook cell group, the script that replays it, and its sizes.
-- `figures` says how the script is told where to put pictures ("--figures" for scripts that
-- speak aio.experiment, "--svg" for the crawler, whose --notebook N prints the RESULT lines).
---------------------------------------------------------------------------------------------

local NOTEBOOKS = {
  "Crawler 500: tornado, grequests, asyncio",
  "Crawler 1000: gevent, tornado, aiohttp",
  "Sites, a race, CPU-bound work",
  "Concurrency and parallelism course",
  "Callbacks, futures, asyncio, Rx",
  "Extra experiments (--script)",
}

local EXPERIMENTS = {
  -- notebook 1
  { id = "crawler_500", notebook = 1, script = "crawler.lua", figures = "--svg",
    cells = "serial requests, grequests pool, tornado curl client, asyncio+aiohttp (500 × 100 ms)",
    quick = { "--n", "100", "--serial-n", "10", "--mode", "serial,gevent,callback,aiohttp", "--quiet", "--notebook", "1" },
    full = { "--n", "500", "--mode", "serial,gevent,callback,aiohttp", "--notebook", "1" },
    reference = "serial 55.2 s · grequests 4.12 s · tornado 1.07 s · asyncio+aiohttp 1.78 s" },
  -- notebook 2
  { id = "crawler_1000", notebook = 2, script = "crawler.lua", figures = "--svg",
    cells = "gevent, tornado, aiohttp crawlers (1000 × 100 ms) and their call-graph shapes",
    quick = { "--n", "200", "--serial-n", "5", "--mode", "serial,gevent,tornado,aiohttp", "--quiet",
      "--notebook", "2" },
    full = { "--n", "1000", "--mode", "serial,gevent,tornado,aiohttp", "--notebook", "2" },
    reference = "serial 101.6 s · gevent 1.15 s · tornado 1.11 s · aiohttp 0.24 s (invalid: HTTP 400s)" },
  -- notebook 3 (the workers engineer's scripts)
  { id = "sites", notebook = 3, script = "nb3_sites.lua", figures = "--figures",
    cells = "download 160 sites: serial, threads(5), asyncio, multiprocessing",
    reference = "serial 11.8 s · threads(5) 0.005 s (invalid: TypeErrors) · asyncio 0.63 s · multiprocessing 2.29 s" },
  { id = "race", notebook = 3, script = "nb3_race.lua", figures = "--figures",
    cells = "the race condition on a shared counter, and its fix",
    reference = "lost updates without a lock" },
  { id = "sum_of_squares", notebook = 3, script = "nb3_cpu_bound.lua", figures = "--figures",
    cells = "sum of squares 20 × 5M: serial, threads(5), asyncio, multiprocessing",
    reference = "serial 10.97 s · threads(5) 10.29 s · asyncio 11.85 s · multiprocessing 3.69 s" },
  -- notebook 4
  { id = "latency_throughput", notebook = 4, script = "nb4_latency_throughput.lua", figures = "--figures",
    cells = "latency vs throughput: the 8-station example as a pipeline and as a farm (simulation)",
    reference = "pipeline: latency 8, 1 job/unit · farm: latency 1, 8 jobs/unit" },
  { id = "threads_queue", notebook = 4, script = "nb4_threads.lua", figures = "--figures",
    cells = "threading: copy_op queue workers, find_rand primes, GIL dot products, atomic ops",
    reference = "primes [6458901531, 9914236195, 14071826345] in 1.36 s" },
  { id = "processes", notebook = 4, script = "nb4_processes.lua", figures = "--figures",
    cells = "multiprocessing: Pipe, Manager, doubler, Lock printer, creator/consumer Queue, Pool.map",
    reference = "[42, None, 'hello'] · {1: '1', '2': 2, 0.25: None} · [10, 20, 40]" },
  { id = "executors", notebook = 4, script = "nb4_executors.lua", figures = "--figures",
    cells = "concurrent.futures: submit/done, ProcessPoolExecutor, deadlocks, as_completed, map, is_prime",
    reference = "False True 'Result: hello' · as_completed order" },
  { id = "generators", notebook = 4, script = "nb4_generators.lua", figures = "--figures",
    cells = "eager vs lazy range, jumping_range with send, yield from, bottom/middle/top",
    reference = "0,1,2,3,4 · 0,2,3,2,3,4 · 42 → 84" },
  { id = "display_date", notebook = 4, script = "nb4_display_date.lua", figures = "--figures",
    cells = "display_date: two tasks for 50 s, the second stops the loop",
    reference = "two loops interleaved for ~50 s" },
  { id = "kettle", notebook = 4, script = "nb4_kettle.lua", figures = "--figures",
    cells = "minitask 7: kettle sequential, concurrent, TaskGroup", reference = "5.00 s · 3.00 s · 3.00 s" },
  { id = "fetch", notebook = 4, script = "nb4_fetch.lua", figures = "--figures",
    cells = "aiohttp fetch (status, content-type, body) and the gathered scrape_all_titles",
    reference = "Status: 200 · text/html; charset=utf-8 · <!doctype html>" },
  { id = "rule_of_thumb", notebook = 4, script = "nb4_rule_of_thumb.lua", figures = "--figures",
    cells = "rule of thumb: slow I/O → tasks, fast I/O → threads, CPU → processes",
    reference = "asyncio / threads / multiprocessing" },
  -- notebook 5
  { id = "network_request", notebook = 5, script = "nb5_network_request.lua", figures = "--figures",
    cells = "network_request blocking vs callbacks vs futures vs coroutines; wait_and_print",
    reference = "blocking 3 s · callbacks/futures/coroutines ≈ 1 s" },
  { id = "futures", notebook = 5, script = "nb5_futures.lua", figures = "--figures",
    cells = "asyncio.Future: set_result, result, add_done_callback; fetch_square with futures",
    reference = "Hello · Result is: 4" },
  { id = "event_loop", notebook = 5, script = "nb5_event_loop.lua", figures = "--figures",
    cells = "the toy busy-wait event loop and its timers, next to the real loop",
    reference = "busy-waiting burns the CPU" },
  { id = "coroutines", notebook = 5, script = "nb5_coroutines.lua", figures = "--figures",
    cells = "call_later + stop, range_generator, parrot, run_until_complete vs ensure_future",
    reference = "3 s sequential · 1 s with ensure_future" },
  { id = "executor", notebook = 5, script = "nb5_executor.lua", figures = "--figures",
    cells = "run_in_executor(ThreadPoolExecutor), fetch_urls sequential and gathered",
    reference = "Hello, asyncio executor" },
  { id = "rx_observables", notebook = 5, script = "nb5_rx_observables.lua", figures = "--figures",
    cells = "Observable.from_iterable, take, map, group_by, merge_all, replay + concat_all",
    reference = "0 1 2 3 · 0 1 4 9 · 0 2 1 3" },
  { id = "rx_hot_cold", notebook = 5, script = "nb5_rx_hot_cold.lua", figures = "--figures",
    cells = "interval cold vs hot, publish/connect, replay, Subject",
    reference = "cold restarts at 0 · hot joins midway · replay catches up" },
  { id = "cpu_monitor", notebook = 5, script = "nb5_cpu_monitor.lua", figures = "--figures",
    cells = "CPU monitor: 100 ms cpu_percent, sliding window plot, high-CPU alert",
    reference = "alert label normal → high" },
}

---------------------------------------------------------------------------------------------
-- Command line
---------------------------------------------------------------------------------------------

local USAGE = require("aio.flags").usage("notebooks", "[--full] [--out DIR] [--only id,id] [--notebook N]" ..
  " [--list] [--timeout S] [--script FILE ...]")

-- What --help prints after the usage.
local HELP = [[
Replays the notebooks' experiments (scripts/) and writes DIR/report.md and DIR/index.html.
  --full             the notebooks' own sizes (default: --quick, the small ones)
  --out DIR          where the report goes (default report)
  --only id,id       only these experiments (ids or script names: see --list)
  --notebook N       only notebook N's experiments (6: those given with --script)
  --list             list the selected experiments and exit
  --timeout S        time an experiment may take, in seconds]] .. require("aio.flags").UNITS
  .. [[ (default 300)
  --script FILE      also run FILE, a script speaking aio.experiment's protocol (repeatable)
]]

local opts = { out = "report", timeout = 300 }
local cl = require("aio.flags").new("notebooks", USAGE, arg)
for a, name in cl:each() do
  if a == "--full" then opts.full = true
  elseif a == "--quick" then opts.full = false
  elseif name == "--out" then opts.out = cl:value(a, name)
  elseif name == "--only" then opts.only = cl:value(a, name)
  elseif name == "--notebook" then opts.notebook = cl:int(name, cl:value(a, name), 1, #NOTEBOOKS)
  elseif name == "--timeout" then opts.timeout = cl:duration(name, cl:value(a, name), "s", { positive = true })
  elseif a == "--list" then opts.list = true
  elseif name == "--script" then
    opts.scripts = opts.scripts or {}
    opts.scripts[#opts.scripts + 1] = cl:value(a, name)
  elseif a == "-h" or a == "--help" then
    io.write(USAGE, HELP)
    os.exit(0)
  else
    cl:error("unknown argument %s", a)
  end
end

-- Extra experiments given with --script FILE (any script speaking the same protocol).
for _, path in ipairs(opts.scripts or {}) do
  local name = path:match("([^/]+)%.lua$") or path
  EXPERIMENTS[#EXPERIMENTS + 1] = { id = name, notebook = #NOTEBOOKS, script = path:match("[^/]+$"), path = path,
    figures = "--figures", cells = "extra experiment " .. path, reference = "–" }
end

local selected = {}
do
  local only
  if opts.only then
    only = {}
    local known = {}
    for _, ex in ipairs(EXPERIMENTS) do known[ex.id], known[ex.script] = true, true end
    for id in opts.only:gmatch("[^,%s]+") do
      if not known[id] then cl:error("--only: no experiment '%s' (see --list)", id) end
      only[id] = true
    end
    if next(only) == nil then cl:error("--only needs at least one experiment id") end
  end
  for _, ex in ipairs(EXPERIMENTS) do
    if (not only or only[ex.id] or only[ex.script] or ex.path) and (not opts.notebook or opts.notebook == ex.notebook) then
      selected[#selected + 1] = ex
    end
  end
end

if #selected == 0 then
  cl:error("nothing to run: no experiment of notebook %d%s", opts.notebook or 0,
    opts.only and (" among --only " .. opts.only) or "")
end

if opts.list then
  for _, ex in ipairs(selected) do
    print(string.format("%-16s notebook %d  %-26s %s", ex.id, ex.notebook, ex.script, ex.cells))
  end
  os.exit(0)
end

---------------------------------------------------------------------------------------------
-- Running one experiment
---------------------------------------------------------------------------------------------

-- Quotes s for /bin/sh.
local function q(s)
  s = tostring(s)
  if s:match("^[%w%-%./_=:,+@]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Reads a whole file, or "".
local function readfile(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- The .svg files in dir, as a set.
local function svg_files(dir)
  local set = {}
  local p = io.popen("ls -1 " .. q(dir) .. " 2>/dev/null")
  for name in p:lines() do
    if name:match("%.svg$") then set[name] = true end
  end
  p:close()
  return set
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

local interp = experiment.interpreter()
local figdir = opts.out .. "/fig"
do
  local ok, err = sys.mkdir(figdir, true)
  if not ok then io.stderr:write("notebooks: ", err, "\n") os.exit(1) end
end

-- Runs one experiment as a child; returns its record for the report.
local function run(ex)
  local rec = { ex = ex, results = {}, figures = {}, checks = {}, status = "missing" }
  local path = ex.path or (script_dir .. "/" .. ex.script)
  if not exists(path) then
    rec.output = "(script " .. ex.script .. " is not in scripts/ yet)"
    return rec
  end
  local args = opts.full and (ex.full or { "--full" }) or (ex.quick or {})
  local sub = figdir .. "/" .. ex.id
  local made, why = sys.mkdir(sub, true)
  if not made then rec.output = "cannot make " .. sub .. ": " .. tostring(why) return rec end
  local argv = { q(interp), q(path) }
  for _, a in ipairs(args) do argv[#argv + 1] = q(a) end
  if ex.figures then
    argv[#argv + 1] = ex.figures
    argv[#argv + 1] = q(sub)
  end
  local outfile, errfile = os.tmpname(), os.tmpname()
  local cmd = string.format("timeout -k 5 %s %s > %s 2> %s < /dev/null", q(opts.timeout),
    table.concat(argv, " "), q(outfile), q(errfile))
  local t0 = sys.clock()
  local ok, how, code = os.execute(cmd)
  rec.wall = sys.clock() - t0
  rec.command = table.concat(argv, " ")
  rec.exit = ok and 0 or (how == "signal" and 128 + code or code)
  local out, err = readfile(outfile), readfile(errfile)
  os.remove(outfile)
  os.remove(errfile)
  local lines = {}
  for line in out:gmatch("[^\n]*") do
    local kind, json = line:match("^(%u+) (.*)$")
    if kind == "RESULT" or kind == "FIGURE" or kind == "EXPERIMENT" then
      local okj, v = pcall(cjson.decode, json)
      if okj and kind == "RESULT" then rec.results[#rec.results + 1] = v
      elseif okj and kind == "FIGURE" then rec.figures[#rec.figures + 1] = v
      elseif okj and type(v) == "table" and type(v.title) == "string" and ex.path then rec.title = v.title end
    else
      local verdict, text = line:match("^check (%S+): (.*)$")
      if verdict then rec.checks[#rec.checks + 1] = { ok = verdict == "ok", text = text } end
      lines[#lines + 1] = line
    end
  end
  while lines[#lines] == "" do lines[#lines] = nil end
  -- Pictures the script wrote without announcing them (e.g. the crawler's call graphs).
  local announced = {}
  for _, f in ipairs(rec.figures) do announced[f.path:match("[^/]+$")] = true end
  local extra = {}
  for name in pairs(svg_files(sub)) do
    if not announced[name] then extra[#extra + 1] = name end
  end
  table.sort(extra)
  for _, name in ipairs(extra) do
    rec.figures[#rec.figures + 1] = { path = sub .. "/" .. name, caption = name:gsub("%.svg$", "") }
  end
  rec.output = table.concat(lines, "\n")
  rec.stderr = err
  rec.status = rec.exit == 0 and "passed" or (rec.exit == 124 and "timed out" or "failed")
  return rec
end

-- What an experiment's section is titled after its id: the cells it replays, or for one given
-- with --script the title it gave aio.experiment.new (its EXPERIMENT line), else its path.
local function heading(rec)
  return rec.title or rec.ex.cells
end

---------------------------------------------------------------------------------------------
-- Run them all
---------------------------------------------------------------------------------------------

local records = {}
local t_all = sys.clock()
print(string.format("notebooks: %d experiments, %s sizes, report in %s/", #selected,
  opts.full and "full (the seeds')" or "quick", opts.out))
for i, ex in ipairs(selected) do
  io.write(string.format("[%2d/%d] notebook %d  %-18s ", i, #selected, ex.notebook, ex.id))
  io.flush()
  local rec = run(ex)
  records[#records + 1] = rec
  local nfail = 0
  for _, c in ipairs(rec.checks) do if not c.ok then nfail = nfail + 1 end end
  print(string.format("%-9s %6.2f s  %d checks%s", rec.status, rec.wall or 0, #rec.checks,
    nfail > 0 and string.format(", %d failed", nfail) or ""))
  if rec.status ~= "passed" and rec.status ~= "missing" then
    local tail = (rec.stderr or ""):sub(-600)
    if tail ~= "" then io.write("         ", tail:gsub("\n", "\n         "), "\n") end
  end
end
local total = sys.clock() - t_all

---------------------------------------------------------------------------------------------
-- The report
---------------------------------------------------------------------------------------------

-- Formats a measured value with its unit.
local function fmt_value(r)
  local v = r.measured
  if type(v) == "number" then
    local s
    if v == math.floor(v) and r.unit ~= "s" and math.abs(v) < 1e15 then s = string.format("%d", v)
    elseif math.abs(v) >= 100 then s = string.format("%.0f", v)
    elseif math.abs(v) >= 1 then s = string.format("%.2f", v)
    else s = string.format("%.3f", v) end
    return s .. ((r.unit and r.unit ~= "") and (r.unit == "%" and " %" or " " .. r.unit) or "")
  end
  return tostring(v == nil and "–" or v)
end

-- Escapes for HTML.
local function h(s)
  return (tostring(s):gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }))
end

-- Escapes a Markdown table cell.
local function md(s)
  return (tostring(s):gsub("|", "\\|"):gsub("\n", " "))
end

-- Verdict of one result row.
local function verdict(r)
  if r.reproduced == true then return "yes" end
  if r.reproduced == false then return "no" end
  return "–"
end

local counts = { passed = 0, failed = 0, missing = 0, ["timed out"] = 0 }
local nresults, nreproduced = 0, 0
for _, rec in ipairs(records) do
  counts[rec.status] = (counts[rec.status] or 0) + 1
  for _, r in ipairs(rec.results) do
    nresults = nresults + 1
    if r.reproduced == true then nreproduced = nreproduced + 1 end
  end
end

-- A summary picture: wall time of each experiment, coloured by status.
local COLORS = { passed = "#3ca951", failed = "#ff725c", missing = "#9498a0", ["timed out"] = "#efb118" }
local bars = {}
for _, rec in ipairs(records) do
  bars[#bars + 1] = { label = rec.ex.id, value = rec.wall or 0, color = COLORS[rec.status], note = rec.status }
end
local summary_svg = plot.bar_svg { title = "Wall time per experiment", unit = " s", bars = bars, label_width = 140 }
plot.save(figdir .. "/summary.svg", summary_svg)

local stamp = os.date("!%Y-%m-%d %H:%M UTC")
local mdl = {}
local function w(s) mdl[#mdl + 1] = s or "" end
w("# aioshell — the notebook experiments, replayed")
w()
w(string.format("%s · %s sizes · %d experiments: %d passed, %d failed, %d missing · %d of %d results reproduced · %.1f s",
  stamp, opts.full and "full (the seeds')" or "quick", #records, counts.passed, counts.failed + counts["timed out"],
  counts.missing, nreproduced, nresults, total))
w()
w("Each experiment is a script in `scripts/`, run as a child of `" .. interp .. "`; it checks its own")
w("result and exits non-zero when a check fails. *Reproduced* compares the measured value with what the")
w("seed reports, scaled to this run's size (quick runs shorten every wait; `--full` uses the seeds' sizes).")
w()
w("![Wall time per experiment](fig/summary.svg)")
w()
for nb = 1, #NOTEBOOKS do
  local any = false
  for _, rec in ipairs(records) do if rec.ex.notebook == nb then any = true end end
  if any then
    w(string.format("## Notebook %d — %s", nb, NOTEBOOKS[nb]))
    w()
    w("| experiment | status | measured | seed's figure | reproduced |")
    w("|---|---|---|---|---|")
    for _, rec in ipairs(records) do
      if rec.ex.notebook == nb then
        if #rec.results == 0 then
          w(string.format("| %s (`%s`) | %s | %s | %s | %s |", md(rec.ex.id), rec.ex.script, rec.status,
            rec.wall and string.format("ran in %.2f s", rec.wall) or "–", md(rec.ex.reference),
            rec.status == "passed" and "checks pass" or "no"))
        else
          for k, r in ipairs(rec.results) do
            w(string.format("| %s | %s | %s | %s | %s |", md(k == 1 and (rec.ex.id .. " (`" .. rec.ex.script .. "`): ") or "")
              .. md(r.label or r.key), k == 1 and rec.status or "", md(fmt_value(r)) ..
              (r.note and (" — " .. md(r.note)) or ""), md(r.reference or rec.ex.reference), verdict(r)))
          end
        end
      end
    end
    w()
    for _, rec in ipairs(records) do
      if rec.ex.notebook == nb then
        w(string.format("### %s — %s", rec.ex.id, heading(rec)))
        w()
        w(string.format("`%s` · %s%s", rec.command or rec.ex.script, rec.status,
          rec.wall and string.format(" in %.2f s", rec.wall) or ""))
        w()
        for _, c in ipairs(rec.checks) do w(string.format("- %s %s", c.ok and "✔" or "✘", c.text)) end
        if #rec.checks > 0 then w() end
        for _, f in ipairs(rec.figures) do
          local rel = f.path:sub(#opts.out + 2)
          w(string.format("![%s](%s)", f.caption or "", rel))
          w()
        end
        if rec.output and rec.output ~= "" then
          local out = rec.output
          if #out > 4000 then out = out:sub(1, 4000) .. "\n… (" .. #rec.output .. " bytes in all)" end
          w("<details><summary>output</summary>")
          w()
          w("```")
          w(out)
          w("```")
          w()
          w("</details>")
          w()
        end
      end
    end
  end
end
plot.save(opts.out .. "/report.md", table.concat(mdl, "\n") .. "\n")

-- The HTML page: the same content, self-contained (SVGs inlined), readable without a server.
local html = {}
local function hw(s) html[#html + 1] = s end
hw([[<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>aioshell — notebook experiments</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
h3 { font-size: 1.05rem; margin-top: 1.6rem; }
table { border-collapse: collapse; width: 100%; margin: .6rem 0; }
th, td { border: 1px solid #ddd; padding: .3rem .5rem; text-align: left; vertical-align: top; font-size: 14px; }
th { background: #f4f4f4; }
.passed { color: #1a7f37; font-weight: 600; } .failed, .timed { color: #cf222e; font-weight: 600; }
.missing { color: #6e7781; font-weight: 600; }
.yes { color: #1a7f37; } .no { color: #cf222e; }
.summary { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1rem 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .5rem 1rem; min-width: 7rem; }
.card b { display: block; font-size: 1.5rem; }
figure { margin: .8rem 0; } figcaption { color: #555; font-size: 13px; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: .6rem; }
svg { max-width: 100%; height: auto; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: 12.5px; max-height: 24rem; }
ul.checks { list-style: none; padding-left: .4rem; } code { font-size: 13px; }
</style></head><body>]])
hw("<h1>aioshell — the notebook experiments, replayed</h1>")
hw(string.format("<p>%s · %s sizes · run in %.1f s by <code>%s</code></p>", h(stamp),
  opts.full and "full (the seeds')" or "quick", total, h(interp)))
hw('<div class="summary" id="summary">')
hw(string.format('<div class="card"><b id="n-experiments">%d</b>experiments</div>', #records))
hw(string.format('<div class="card"><b class="passed" id="n-passed">%d</b>passed</div>', counts.passed))
hw(string.format('<div class="card"><b class="failed" id="n-failed">%d</b>failed</div>', counts.failed + counts["timed out"]))
hw(string.format('<div class="card"><b class="missing" id="n-missing">%d</b>missing</div>', counts.missing))
hw(string.format('<div class="card"><b id="n-reproduced">%d / %d</b>results reproduced</div>', nreproduced, nresults))
hw("</div>")
hw("<figure>" .. summary_svg .. "<figcaption>Wall time per experiment (green passed, red failed, grey missing)</figcaption></figure>")
for nb = 1, #NOTEBOOKS do
  local any = false
  for _, rec in ipairs(records) do if rec.ex.notebook == nb then any = true end end
  if any then
    hw(string.format('<h2 id="notebook-%d">Notebook %d — %s</h2>', nb, nb, h(NOTEBOOKS[nb])))
    hw("<table><thead><tr><th>experiment</th><th>status</th><th>measured</th><th>seed's figure</th><th>reproduced</th></tr></thead><tbody>")
    for _, rec in ipairs(records) do
      if rec.ex.notebook == nb then
        local cls = rec.status:match("^%a+")
        if #rec.results == 0 then
          hw(string.format('<tr class="experiment" data-id="%s" data-status="%s"><td><a href="#%s">%s</a></td><td class="%s">%s</td><td>%s</td><td>%s</td><td>%s</td></tr>',
            h(rec.ex.id), h(rec.status), h(rec.ex.id), h(rec.ex.id), cls, h(rec.status),
            rec.wall and string.format("ran in %.2f s", rec.wall) or "–", h(rec.ex.reference),
            rec.status == "passed" and "checks pass" or "no"))
        else
          for k, r in ipairs(rec.results) do
            hw(string.format('<tr class="%s" data-id="%s" data-status="%s"><td>%s%s</td><td class="%s">%s</td><td>%s%s</td><td>%s</td><td class="%s">%s</td></tr>',
              k == 1 and "experiment" or "result", h(rec.ex.id), h(rec.status),
              k == 1 and string.format('<a href="#%s">%s</a>: ', h(rec.ex.id), h(rec.ex.id)) or "",
              h(r.label or r.key), cls, k == 1 and h(rec.status) or "", h(fmt_value(r)),
              r.note and (" — " .. h(r.note)) or "", h(r.reference or rec.ex.reference), verdict(r), verdict(r)))
          end
        end
      end
    end
    hw("</tbody></table>")
    for _, rec in ipairs(records) do
      if rec.ex.notebook == nb then
        hw(string.format('<h3 id="%s">%s — %s</h3>', h(rec.ex.id), h(rec.ex.id), h(heading(rec))))
        hw(string.format('<p><code>%s</code> · <span class="%s">%s</span>%s</p>', h(rec.command or rec.ex.script),
          rec.status:match("^%a+"), h(rec.status), rec.wall and string.format(" in %.2f s", rec.wall) or ""))
        if #rec.checks > 0 then
          hw('<ul class="checks">')
          for _, c in ipairs(rec.checks) do
            hw(string.format('<li class="%s">%s %s</li>', c.ok and "yes" or "no", c.ok and "✔" or "✘", h(c.text)))
          end
          hw("</ul>")
        end
        if #rec.figures > 0 then hw('<div class="figs">') end
        for _, f in ipairs(rec.figures) do
          local svg = readfile(f.path):gsub("^%s*<%?xml[^>]*>%s*", "")
          if svg ~= "" then
            hw("<figure>" .. svg .. "<figcaption>" .. h(f.caption or "") .. "</figcaption></figure>")
          end
        end
        if #rec.figures > 0 then hw("</div>") end
        if rec.output and rec.output ~= "" then
          local out = rec.output
          if #out > 4000 then out = out:sub(1, 4000) .. "\n… (" .. #rec.output .. " bytes in all)" end
          hw("<details><summary>output</summary><pre>" .. h(out) .. "</pre></details>")
        end
      end
    end
  end
end
hw("</body></html>")
plot.save(opts.out .. "/index.html", table.concat(html, "\n") .. "\n")

print(string.format("notebooks: %d passed, %d failed, %d missing; %d of %d results reproduced; %.1f s",
  counts.passed, counts.failed + counts["timed out"], counts.missing, nreproduced, nresults, total))
print("report: " .. opts.out .. "/report.md, " .. opts.out .. "/index.html")
local bad = counts.failed + counts["timed out"] + counts.missing
os.exit(bad == 0 and 0 or 1)
