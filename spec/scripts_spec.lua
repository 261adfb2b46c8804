-- spec/scripts_spec.lua — every script in scripts/ runs to success in quick mode.
--
-- Each script checks its own result and exits non-zero when a check fails, so running it is
-- the test. Scripts run with no arguments unless listed below (their defaults must be quick);
-- timer-only experiments run on virtual time, which makes them instant and deterministic.
local helper = require "spec.helper"

local ARGS = {
  ["crawler.lua"] = { "--n", "50", "--serial-n", "3", "--no-svg", "--quiet" },
  ["notebooks.lua"] = { "--list" },  -- the full runner is exercised by spec/report_spec.lua
  ["nb4_display_date.lua"] = { "--virtual-time" },
  ["nb4_kettle.lua"] = { "--virtual-time" },
  ["nb5_network_request.lua"] = { "--virtual-time" },
  ["nb5_futures.lua"] = { "--virtual-time" },
  ["nb5_coroutines.lua"] = { "--virtual-time" },
  ["nb5_rx_hot_cold.lua"] = { "--virtual-time" },
  ["nb5_cpu_monitor.lua"] = { "--duration", "1.2", "--load-at", "0.2", "--load", "0.8" },
  -- real threads under virtual time: the clock's autojump threshold keeps their fetches overlapping
  ["nb5_executor.lua"] = { "--virtual-time" },
  -- measures the real clock: --virtual-time runs it in real time (its checks fail on virtual time)
  ["nb5_event_loop.lua"] = { "--scale", "0.1", "--virtual-time" },
  ["nb3_sites.lua"] = { "--sites", "40" },
}

-- Scripts that need something set up around them: a function returning argv and opts.
local SPECIAL = {
  -- A server runs until stopped: load it as a module, serve one request, close it.
  ["server.lua"] = function(path)
    local code = string.format([[
local aio, http = require "aio", require "aio.http"
local M = assert(loadfile(%q))("--module")
local server = M.start { port = 0, metrics = os.tmpname() }
local r = http.get(string.format("http://127.0.0.1:%%d/add?name=spec&delay=1", server:port()))
assert(r.status == 200 and r.body == ".", "server answered " .. tostring(r.status))
server:close()
]], path)
    return { "-e", code }
  end,
  -- The call-graph drawer reads a metric file: give it a small one.
  ["callgraph.lua"] = function(path)
    local json = helper.tmpfile('{"spec":[{"start":100.0,"end":100.1,"dt":0.1},{"start":100.05,"end":100.2,"dt":0.15}]}',
      ".json")
    return { path, json, "--svg", helper.tmpdir() }
  end,
}

-- The scripts, sorted.
local function list_scripts()
  local p = io.popen("ls -1 " .. helper.quote(helper.root .. "/scripts"))
  local names = {}
  for name in p:lines() do
    if name:match("%.lua$") then names[#names + 1] = name end
  end
  p:close()
  table.sort(names)
  return names
end

describe("scripts/", function()
  teardown(helper.cleanup)

  local names = list_scripts()
  it("has the notebook experiments", function()
    local set = {}
    for _, n in ipairs(names) do set[n] = true end
    for _, n in ipairs { "notebooks.lua", "nb5_cpu_monitor.lua", "nb5_rx_observables.lua", "nb4_kettle.lua" } do
      assert.is_true(set[n] or false, n)
    end
  end)

  it("nb5_network_request.lua prints each way's results under its heading, before its time", function()
    local out, err, status = helper.run({ helper.root .. "/scripts/nb5_network_request.lua", "--virtual-time" },
      { timeout = 30 })
    assert.equal(0, status, err)
    for _, way in ipairs { "blocking", "futures", "coroutines" } do
      local section = out:match("%-%- " .. way .. "\n(.-)\n" .. way .. ": ")
      assert.equal("Result is: 4\nResult is: 9\nResult is: 16", section, way .. "\n" .. out)
    end
  end)

  it("nb5_executor.lua reports its fetch times in page-times (one page's delay), not 'pages'", function()
    local out, err, status = helper.run({ helper.root .. "/scripts/nb5_executor.lua" }, { timeout = 60 })
    assert.equal(0, status, err)
    local units = {}
    for json in out:gmatch("RESULT (%b{})") do
      local r = require("cjson").decode(json)
      units[r.key] = r.unit
    end
    assert.equal("page-times", units.sequential)
    assert.equal("page-times", units.gathered)
  end)

  -- Runs a script of scripts/ with args; asserts it succeeded and returns its stdout.
  local function run_script(name, args, timeout)
    local argv = { helper.root .. "/scripts/" .. name }
    for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
    local out, err, status = helper.run(argv, { timeout = timeout or 60, cwd = helper.tmpdir() })
    assert.equal(0, status, out .. err)
    return out
  end

  it("nb4_latency_throughput.lua: the farm's throughput is 8 jobs per unit, as the notebook says (not 9)", function()
    local out = run_script("nb4_latency_throughput.lua")
    assert.matches("pipeline:.- throughput 1%.00 jobs/unit", out)
    assert.matches("farm:.- throughput 8%.00 jobs/unit", out)
    assert.matches("(notebook: latency 1, 8 jobs per unit)", out, 1, true)
    -- a last batch that is not full: 20 jobs leave in 3 batches, 6.67 jobs per unit
    out = run_script("nb4_latency_throughput.lua", { "--jobs", "20" })
    assert.matches("farm:.- throughput 6%.67 jobs/unit, 20 jobs in 3%.00 units", out)
  end)

  it("nb4_generators.lua replays the notebook's for-loop-with-send cell: 0, 2, 4, then RuntimeError", function()
    local out = run_script("nb4_generators.lua")
    assert.matches("for loop with send: 0,2,4 then RuntimeError: generator raised StopIteration", out, 1, true)
  end)

  it("nb4_kettle.lua says that quick times are notebook seconds, with the notebook's figure and what was measured", function()
    local out = run_script("nb4_kettle.lua", { "--virtual-time" })
    assert.matches("quick: one notebook second lasts 0.1 s here", out, 1, true)
    assert.matches("boiling kettle is done\ncleaning cups is done\nExecuted in 5.00 seconds.   " ..
      "(notebook: 5.00 s; measured 0.50 s at 0.1x time)", out, 1, true)
    assert.matches("Executed in 3.00 seconds.   (notebook: 3.00 s; measured 0.30 s at 0.1x time)", out, 1, true)
    out = run_script("nb4_kettle.lua", { "--virtual-time", "--full" })
    assert.matches("Executed in 5.00 seconds.   (notebook: 5.00 s)\n", out, 1, true)
    assert.not_matches("quick:", out, 1, true)
  end)

  it("a time scale, delay or count out of range, or a number that is not one, is a usage error, not a traceback", function()
    for _, c in ipairs {
      { "nb4_kettle.lua", "--scale", "0", "--scale needs a number > 0, not '0'" },
      { "nb4_executors.lua", "--scale", "-1", "--scale needs a number > 0, not '-1'" },
      { "nb5_event_loop.lua", "--scale", "0", "--scale needs a number > 0, not '0'" },
      { "nb5_network_request.lua", "--delay", "0", "--delay needs a time > 0 in seconds, UNITS, not '0'" },
      { "nb5_executor.lua", "--delay", "0", "--delay needs a time > 0 in ms, UNITS, not '0'" },
      { "nb4_latency_throughput.lua", "--unit", "0", "--unit needs a time > 0 in seconds, UNITS, not '0'" },
      { "nb5_cpu_monitor.lua", "--duration", "0", "--duration needs a time > 0 in seconds, UNITS, not '0'" },
      { "nb5_cpu_monitor.lua", "--load-at", "-1", "--load-at needs a time >= 0 in seconds, UNITS, not '-1'" },  -- it ran
      { "nb5_cpu_monitor.lua", "--points", "0", "--points needs an integer >= 1, not '0'" },
      { "nb5_cpu_monitor.lua", "--load", "-2", "--load needs a time > 0 in seconds, UNITS, not '-2'" },
      { "nb3_sites.lua", "--threads", "five", "--threads needs an integer >= 1, not 'five'" },
      -- a page delay below 0 ran ("after -5 ms"), a fraction of a ms was a traceback
      { "nb3_sites.lua", "--delay", "-5", "--delay needs a time > 0 in ms, UNITS, not '-5'" },
      { "nb3_sites.lua", "--delay", "2.5", "--delay needs a whole number of ms: '2.5' is 2.5 ms" },
      { "nb4_fetch.lua", "--delay", "-1", "--delay needs a time > 0 in seconds, UNITS, not '-1'" },
      -- durations take a unit (us, ms, s, m); the server takes whole ms, and a fraction of one
      -- is refused, not rounded (nb5_executor's fractional --delay was a traceback)
      { "nb4_fetch.lua", "--delay", "5h", "--delay needs a time > 0 in seconds, UNITS, not '5h'" },
      { "nb5_network_request.lua", "--delay", "fast", "--delay needs a time > 0 in seconds, UNITS, not 'fast'" },
      { "nb4_latency_throughput.lua", "--unit", "-1s", "--unit needs a time > 0 in seconds, UNITS, not '-1s'" },
      { "nb3_sites.lua", "--delay", "0.5ms", "--delay needs a whole number of ms: '0.5ms' is 0.5 ms" },
      { "nb5_executor.lua", "--delay", "2.5", "--delay needs a whole number of ms: '2.5' is 2.5 ms" },
      { "nb5_executor.lua", "--delay", "1500us", "--delay needs a whole number of ms: '1500us' is 1.5 ms" },
      -- counts that are not whole, or not >= 1, and counts given bare (true): tracebacks before
      { "nb3_race.lua", "--threads", "2.5", "--threads needs an integer >= 1, not '2.5'" },
      { "nb3_cpu_bound.lua", "--count", "0", "--count needs an integer >= 1, not '0'" },
      { "nb4_threads.lua", "--dim", "-3", "--dim needs an integer >= 1, not '-3'" },
      { "nb4_display_date.lua", "--seed", "1.5", "--seed needs an integer, not '1.5'" },
      { "nb3_cpu_bound.lua", "--n", nil, "missing value for --n" },
      { "nb4_fetch.lua", "--delay", nil, "missing value for --delay" },
    } do
      local out, err, status = helper.run({ helper.root .. "/scripts/" .. c[1], c[2], c[3] }, { timeout = 30 })
      assert.equal(2, status, c[1] .. " " .. out .. err)
      assert.matches((c[4]:gsub("UNITS", "or with a unit us, ms, s or m (100ms, 0.1s)")), err, 1, true)
      assert.not_matches("traceback", err)
    end
  end)

  it("a duration with a unit is converted to the script's own: ms given seconds, seconds given ms", function()
    -- 5 sites of 50 ms: one wave for the 5 threads, long enough that starting the pool (slow
    -- under ASan) leaves the script's own "threads > 2.5x faster" check a margin (4 of 20 ms did not)
    local out = run_script("nb3_sites.lua", { "--sites", "5", "--delay", "0.05s" })
    assert.matches("5 downloads from a local server answering each page after 50 ms\n", out, 1, true)
    out = run_script("nb5_network_request.lua", { "--virtual-time", "--delay", "50ms" })
    assert.matches("check ok: blocking takes 3 x 0.05 s", out, 1, true)
    out = run_script("nb5_network_request.lua", { "--virtual-time", "--delay", "0.05" })  -- bare: seconds, as before
    assert.matches("check ok: blocking takes 3 x 0.05 s", out, 1, true)
  end)

  it("nb5_cpu_monitor.lua refuses a load that starts after the run ends, or a run shorter than take(4)", function()
    for _, c in ipairs {
      { { "--load-at", "5", "--duration", "2" }, "--load-at (5 s) needs to come before the end of --duration (2 s)" },
      { { "--load-at", "3" }, "--load-at (3 s) needs to come before the end of --duration (3 s)" },  -- the default
      { { "--duration", "0.3", "--no-load" }, "--duration needs a number > 0.4 (take(4) waits for 4 readings), not '0.3'" },
      -- with units: the times are compared in seconds
      { { "--load-at", "5s", "--duration", "2000ms" }, "--load-at (5 s) needs to come before the end of --duration (2 s)" },
      { { "--duration", "300ms", "--no-load" }, "--duration needs a number > 0.4 (take(4) waits for 4 readings), not '0.3'" },
    } do
      local argv = { helper.root .. "/scripts/nb5_cpu_monitor.lua" }
      for _, a in ipairs(c[1]) do argv[#argv + 1] = a end
      local out, err, status = helper.run(argv, { timeout = 30 })
      assert.equal(2, status, table.concat(c[1], " ") .. out .. err)
      assert.equal("", out)
      assert.matches("^nb5_cpu_monitor: " .. c[2]:gsub("%p", "%%%0") .. "\nusage: aioshell scripts/nb5_cpu_monitor.lua ", err)
    end
  end)

  it("nb4_display_date.lua prints datetime.now() to the microsecond, following the loop's clock", function()
    local out = run_script("nb4_display_date.lua", { "--virtual-time" })
    assert.matches("quick: the notebook's 50 s window and 0-5 s sleeps at 0.04x (2 s and 0-0.2 s); "
      .. "--full for the notebook's own (1:1)\n", out, 1, true)  -- the sentence ended at "notebook's"
    local stamps = {}
    for num, stamp in out:gmatch("Loop: (%d) Time: (%d+%-%d+%-%d+ %d+:%d+:[%d.]+)\n") do
      local h, m, sec = stamp:match("(%d+):(%d+):([%d.]+)$")
      stamps[#stamps + 1] = { num = num, t = h * 3600 + m * 60 + tonumber(sec), text = stamp }
    end
    assert.is_true(#stamps >= 10, out)
    assert.matches("%.%d%d%d%d%d%d$", stamps[1].text)
    -- the sleeps are multiples of 0.04 s (randint(0, 5) notebook seconds), and the stamps show them
    local span = stamps[#stamps].t - stamps[1].t
    if span < 0 then span = span + 86400 end          -- across midnight
    assert.is_true(span > 1.5 and span < 2.2, "the stamps span the 2 s window: " .. span)
  end)

  it("nb3_sites.lua names the notebook's figure on each line, and its 0.005 s threads figure as TypeErrors", function()
    local out = run_script("nb3_sites.lua", { "--sites", "20" })
    assert.matches("20 downloads from a local server answering each page after 10 ms (quick; --full: 74 ms",
      out, 1, true)
    assert.matches("Downloaded 20 in [%d.]+ seconds %(serial%)   notebook: 11%.8 s\n", out)
    assert.matches("Downloaded 20 in [%d.]+ seconds %(5 threads%)   notebook: 0%.005 s, but it downloaded nothing.-" ..
      "TypeError", out)
    assert.matches("Downloaded 20 sites in [%d.]+ seconds %(tasks%)   notebook: 0%.63 s\n", out)
    assert.matches("Downloaded 20 in [%d.]+ seconds %(%d+ processes%)   notebook: 2%.29 s\n", out)
    local threads
    for json in out:gmatch("RESULT (%b{})") do
      local r = require("cjson").decode(json)
      if r.key == "threads" then threads = r end
    end
    assert.is_nil(threads.reproduced)               -- an invalid figure is neither reproduced nor not
    assert.matches("invalid: every call raised TypeError", threads.reference, 1, true)
  end)

  it("nb3_race.lua and nb3_cpu_bound.lua say when they run smaller than the notebook", function()
    local out = run_script("nb3_race.lua")
    assert.matches("1000 jobs x 100 increments on 8 threads (expected 100000); quick: --full for 5000 jobs\n" ..
      "  (the notebook: 5000 jobs on ThreadPoolExecutor(max_workers=5000); it printed no count)", out, 1, true)
    out = run_script("nb3_cpu_bound.lua", { "--count", "2" })
    assert.matches("%(2 numbers%), %d+ CPU%(s%); quick: %-%-full for the notebook's n = 5,000,000\n", out)
  end)

  it("nb4_threads.lua lists both of the notebook's dis cells (+= and sort) and names its primes figure", function()
    local out = run_script("nb4_threads.lua")
    assert.matches("Execution time = [%d.]+ %(serial [%d.]+%)   notebook: 1%.35991", out)
    local sort = out:match("luac %-l of `function foo%(%) table%.sort%(lst%) end`[^\n]*\n(.-)\ncheck")
    assert.truthy(sort, out)
    assert.matches('GETFIELD[^\n]*"sort"', sort)
    assert.matches("%sCALL%s", sort)
  end)

  it("nb5_network_request.lua and nb5_coroutines.lua give their times next to the notebook's 3 s and 1 s", function()
    local out = run_script("nb5_network_request.lua", { "--virtual-time" })
    assert.matches("in notebook seconds (a request takes 0.2 s here, 1 s in the notebook): blocking 3.00 " ..
      "(notebook: 3 s), callbacks 1.00, futures 1.00, coroutines 1.00 (notebook: about 1 s each)", out, 1, true)
    out = run_script("nb5_coroutines.lua", { "--virtual-time" })
    assert.matches("run_until_complete x3: 0.60 s;  ensure_future x3: 0.20 s   (notebook: 3 s and 1 s, at 1 s " ..
      "per request; 0.2 s here)", out, 1, true)
  end)

  it("nb5_rx_hot_cold.lua says its times are periods, and how long a period lasts", function()
    local out = run_script("nb5_rx_hot_cold.lua", { "--virtual-time" })
    assert.matches("^each line is %(value, time since start%) in periods, i%.e%. notebook seconds: a period " ..
      "lasts 0%.1 s here %(%-%-full: 1 s, the notebook's interval%(1000%)%)\n", out)
  end)

  it("nb5_event_loop.lua says its timers are the notebook's 1 s and 2 s, scaled", function()
    local out = run_script("nb5_event_loop.lua", { "--scale", "0.1" })
    assert.matches("(the notebook's Timer(1.0) and Timer(2.0) at 0.1x: 0.1 s and 0.2 s here (--full for 1 s and 2 s)",
      out, 1, true)
  end)

  it("nb4_executors.lua says its quick seconds are scaled", function()
    local out = run_script("nb4_executors.lua", { "--scale", "0.02" })
    assert.matches("^the notebook's seconds at 0.02x: its sleep%(5%) lasts 0.1 s here %(%-%-full for 1:1%)\n", out)
  end)

  it("each notebook script's --help says what every option means (it listed them as '[--delay V]')", function()
    for _, name in ipairs(names) do
      if name:match("^nb%d") then
        local out, err, status = helper.run({ helper.root .. "/scripts/" .. name, "--help" }, { timeout = 30 })
        assert.equal(0, status, name .. err)
        local options = 0
        for flag, text in out:gmatch("\n  (%-%-[%w-]+[^\n]-)  +([^\n]*)") do
          options = options + 1
          assert.truthy(text:find("%a") and not text:match("^%(default [^)]*%)$"), name .. ": " .. flag .. " " .. text)
        end
        assert.truthy(options >= 3, name .. "\n" .. out)  -- at least the protocol's flags
      end
    end
  end)

  it("every script's usage line is the command that runs it (the notebook scripts said 'usage: nb3_sites')", function()
    for _, name in ipairs(names) do
      local out, err, status = helper.run({ helper.root .. "/scripts/" .. name, "--help" }, { timeout = 30 })
      assert.equal(0, status, name .. err)
      assert.equal("usage: aioshell scripts/" .. name, out:match("^usage: %S+ %S+"), name .. "\n" .. out)
    end
  end)

  it("every script's --help explains each flag of its usage line (notebooks, server, callgraph listed them bare)", function()
    for _, name in ipairs(names) do
      local out, err, status = helper.run({ helper.root .. "/scripts/" .. name, "--help" }, { timeout = 30 })
      assert.equal(0, status, name .. err)
      local first, rest = out:match("^([^\n]*)\n(.*)$")
      for flag in first:gmatch("%-%-[%w-]+") do
        assert.truthy(rest:find(flag, 1, true), name .. ": " .. flag .. " is not explained\n" .. out)
      end
    end
  end)

  it("nb4_processes.lua and nb4_executors.lua report what they saw next to the seed's output, not 1", function()
    local measured = {}
    local out = run_script("nb4_processes.lua") .. run_script("nb4_executors.lua", { "--scale", "0.02" })
    for json in out:gmatch("RESULT (%b{})") do
      local r = require("cjson").decode(json)
      measured[r.key] = r.measured
    end
    assert.equal("[42, None, 'hello']", measured.pipe)
    assert.equal("[10, 20, 40]", measured.pool_map)
    assert.equal("False True 'Result: hello'", measured.submit)
    assert.matches("^Return of 1, Return of 3, ", measured.as_completed)
  end)

  it("nb4_rule_of_thumb.lua lines its table's columns up (labels padded by characters, not bytes)", function()
    local out = run_script("nb4_rule_of_thumb.lua")
    local ends = {}  -- the column where each line's first time cell ends ("tasks s" in the header)
    for line in out:gmatch("[^\n]+") do
      local upto = line:match("^(.-tasks s)") or line:match("^(.-%d+%.%d%d%d)")
      if upto and (line:find("tasks s", 1, true) or line:find("fastest:", 1, true)) then
        ends[#ends + 1] = utf8.len(upto)
      end
    end
    assert.equal(4, #ends, out)
    for i = 2, 4 do assert.equal(ends[1], ends[i], out) end
  end)

  for _, name in ipairs(names) do
    it(name .. " runs to success", function()
      local path = helper.root .. "/scripts/" .. name
      local argv
      if SPECIAL[name] then
        argv = SPECIAL[name](path)
      else
        argv = { path }
        for _, a in ipairs(ARGS[name] or {}) do argv[#argv + 1] = a end
      end
      local out, err, status = helper.run(argv, { timeout = 90, cwd = helper.tmpdir() })
      assert.equal(0, status, string.format("%s exited %d\n--- stdout (tail)\n%s\n--- stderr\n%s", name, status,
        out:sub(-1500), err:sub(-1500)))
      assert.falsy(out:find("check FAILED", 1, true), out)
    end)
  end
end)

describe("bench/", function()
  -- AIOSHELL points nowhere, so a run.py that took --help for a benchmark run stops at once.
  local function run_py(...)
    return helper.exec({"python3", helper.root .. "/bench/workers/run.py", ...},
                       { env = { AIOSHELL = "/nonexistent/aioshell" }, timeout = 20 })
  end

  it("workers/run.py prints its usage for --help and refuses an unknown flag", function()
    local out, err, status = run_py("--help")
    assert.equal(0, status, err)
    assert.matches("^usage: run%.py", out)
    assert.truthy(out:find("--only", 1, true), out)
    out, err, status = run_py("--bogus")
    assert.equal(2, status, out .. err)
    assert.truthy(err:find("unrecognized arguments: --bogus", 1, true), err)
  end)
end)

describe("scripts/hello_tasks.lua", function()
  -- It takes no options: --help used to run the demo, and a stray word was ignored.
  it("prints its usage for --help and refuses any argument", function()
    local script = helper.root .. "/scripts/hello_tasks.lua"
    local out, err, status = helper.run({ script, "--help" })
    assert.equal(0, status)
    assert.matches("^usage: aioshell scripts/hello_tasks.lua", out)
    assert.not_matches("starts, sleeps", out)
    out, err, status = helper.run({ script, "--fast" })
    assert.equal(2, status)
    assert.equal("", out)
    assert.matches("^hello_tasks: unknown argument %-%-fast\nusage:", err)
  end)
end)
