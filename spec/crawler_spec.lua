-- spec/crawler_spec.lua — the notebook experiments as programs: scripts/server.lua (the metric
-- server), scripts/crawler.lua (every strategy, checked) and scripts/callgraph.lua.
-- Each runs as a child aioshell, small sizes so the file stays fast.
local helper = require "spec.helper"

local root = helper.root

local function crawler(args, opts)
  local argv = { root .. "/scripts/crawler.lua" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return helper.run(argv, opts)
end

local MODES = { serial = true, gevent = true, tornado = true, callback = true, aiohttp = true, gather = true }

-- Parses the crawler's table into {mode = {requests=, bytes=, seconds=, cpu=, rate=, speedup=,
-- check=, seed=}} (the text of each column; seconds and bytes as numbers when they are).
local function table_rows(out)
  local rows = {}
  for line in out:gmatch("[^\n]+") do
    local f = {}
    for w in line:gmatch("%S+") do f[#f + 1] = w end
    if MODES[f[1]] and #f >= 9 and f[2]:match("^%d+%*?$") then
      rows[f[1]] = { requests = f[2], bytes = tonumber(f[3]), seconds = tonumber(f[4]) or f[4], cpu = f[5],
        rate = f[6], speedup = f[7], check = f[8], seed = line:match("^" .. ("%S+%s+"):rep(8) .. "(.-)$") }
    end
  end
  return rows
end

describe("scripts/crawler.lua", function()
  after_each(function() helper.cleanup() end)

  it("runs every mode against its in-process server and checks the results", function()
    local dir = helper.tmpdir()
    local out, err, status = crawler({ "--n", "60", "--delay", "20", "--concurrency", "20",
      "--serial-n", "5", "--svg", dir .. "/svg" }, { timeout = 60 })
    assert.are.equal(0, status, err)
    local rows = table_rows(out)
    for _, mode in ipairs { "serial", "gevent", "tornado", "callback", "aiohttp", "gather" } do
      assert.is_table(rows[mode], "missing row for " .. mode .. "\n" .. out)
      assert.are.equal("ok", rows[mode].check)
      local n = mode == "serial" and 5 or 60
      assert.are.equal(n, rows[mode].bytes)
      -- 60 requests of 20 ms at 20 concurrent: 3 waves, so at least 60 ms
      if mode ~= "serial" and mode ~= "gather" then assert.is_true(rows[mode].seconds >= 0.06) end
      local svg = helper.readfile(dir .. "/svg/" .. mode .. ".svg")
      assert.is_string(svg, "no SVG for " .. mode)
      assert.matches("<svg", svg)
    end
    assert.are.equal("5*", rows.serial.requests)
    for line in out:gmatch("[^\n]+") do assert.not_matches(" $", line) end   -- no trailing blanks
  end)

  -- The in-process server runs on an OS thread of its own by default (its requests are not
  -- this loop's tasks); --server-on-loop puts it on the crawler's own loop.
  it("serves from its own thread by default (pinned apart from the crawler's), from the crawler's loop with --server-on-loop", function()
    local dir = helper.tmpdir()
    local args = { "--n", "20", "--delay", "10", "--concurrency", "10", "--mode", "tornado",
      "--no-svg", "--metrics", dir .. "/m.json" }
    local out, err, status = crawler(args, { timeout = 60 })
    assert.are.equal(0, status, err)
    local cpus = require("aio.sys").affinity()
    if #cpus >= 2 then  -- each thread on a CPU of its own, unless --no-pin
      assert.matches(string.format("(in-process, on its own thread; crawler on CPU %d, server on CPU %d)",
        cpus[1], cpus[2]), out, 1, true)
    else
      assert.matches("(in-process, on its own thread)", out, 1, true)
    end
    assert.are.equal("ok", table_rows(out).tornado.check)
    local metrics = require("cjson").decode(helper.readfile(dir .. "/m.json"))
    local recorded = 0
    for _, list in pairs(metrics) do recorded = recorded + #list end
    assert.are.equal(20, recorded)  -- the thread's server flushed its own records
    args[#args + 1] = "--no-pin"
    out, err, status = crawler(args, { timeout = 60 })
    assert.are.equal(0, status, err)
    assert.matches("(in-process, on its own thread)", out, 1, true)
    args[#args] = "--server-on-loop"
    out, err, status = crawler(args, { timeout = 60 })
    assert.are.equal(0, status, err)
    assert.matches("(in-process, on this loop)", out, 1, true)
    _, err, status = crawler({ "--server-on-loop", "--url", "http://127.0.0.1:1/add" })
    assert.are.equal(2, status)
    assert.matches("--server-on-loop needs the in-process server", err, 1, true)
  end)

  -- Ctrl-C stops the run: the interrupted mode is not recorded as a failure and the next
  -- modes do not start (it used to abort only the current mode's requests), and the requests
  -- it abandons report nothing (the callback mode's last one used to fail its task), and the
  -- exit does not wait for the server thread's requests in flight (here 30 s, killed at 20 s).
  it("stops at Ctrl-C instead of going on with the next mode", function()
    for _, case in ipairs { { "serial", 200 }, { "callback", 200 }, { "gather", 30000 } } do
      local cmd = string.format("%s %s/scripts/crawler.lua --mode %s,gevent --n 40 --serial-n 40 "
        .. "--concurrency 2 --delay %d --no-svg", helper.quote(helper.aioshell), root, case[1], case[2])
      local p = io.popen(("sh -c '%s 2>&1 & pid=$!; sleep 0.6; kill -INT $pid; "
        .. "(sleep 20; kill -KILL $pid) >/dev/null 2>&1 & k=$!; wait $pid; echo status=$?; kill $k'"):format(cmd))
      local out = p:read("a")
      p:close()
      assert.is_nil(table_rows(out).gevent, out)
      assert.matches("interrupted!", out, 1, true)
      assert.not_matches("nobody observed", out, 1, true)
      assert.not_matches("status=0\n", out)
      assert.not_matches("status=137\n", out)
    end
  end)

  it("fails loudly when responses are not what they should be", function()
    -- a server that answers 404 to /nope: every mode must report FAIL and exit 1
    local code = [[
      local http = require "aio.http"
      local s = http.serve{handler = function() return 404, "not here, longer than one byte" end}
      print(s:port()) io.stdout:flush()
    ]]
    local script = helper.tmpfile(code, ".lua")
    local portfile, pidfile = helper.tmpfile(""), helper.tmpfile("")
    os.execute(string.format("%s %s > %s 2>/dev/null & echo $! > %s", helper.quote(helper.aioshell),
      helper.quote(script), helper.quote(portfile), helper.quote(pidfile)))
    local port = helper.wait_until(function() return tonumber((helper.readfile(portfile) or ""):match("^(%d+)")) end, 10)
    local pid = tonumber(helper.readfile(pidfile):match("%d+"))
    local out, err, status = crawler({ "--url", "http://127.0.0.1:" .. port .. "/nope", "--n", "10",
      "--mode", "tornado,aiohttp", "--no-svg" }, { timeout = 30 })
    os.execute("kill " .. pid)
    assert.are.equal(1, status)
    local rows = table_rows(out)
    assert.are.equal("FAIL", rows.tornado.check)
    assert.are.equal("FAIL", rows.aiohttp.check)
    -- the rate and speed-up of a failed mode would be those of its failure: "-"
    assert.are.equal("-", rows.tornado.rate)
    assert.are.equal("-", rows.tornado.speedup)
    assert.are.equal("-", rows.aiohttp.speedup)
    assert.matches("10 x HTTP 404", err)
  end)

  it("draws each request's own transfer: never more in flight than the bound", function()
    -- spans come from the client's start time and duration (res.started, res.time); taking the
    -- end as the moment the consumer handled a response overlapped them (peaks of 17-20 here)
    local dir = helper.tmpdir()
    local out, err, status = crawler({ "--mode", "serial,gevent,tornado,callback,aiohttp", "--n", "200",
      "--serial-n", "10", "--concurrency", "10", "--delay", "20", "--plot", "--svg", dir }, { timeout = 60 })
    assert.are.equal(0, status, err)
    local peaks, mode = {}, nil
    for line in out:gmatch("[^\n]+") do
      mode = line:match("^(%a+): %d+ requests") or mode
      local peak = line:match("peak (%d+) at once")
      if peak and mode then peaks[mode] = tonumber(peak) end
    end
    assert.are.equal(1, peaks.serial, out)
    for _, m in ipairs { "gevent", "tornado", "callback", "aiohttp" } do
      assert.are.equal(10, peaks[m], m .. "\n" .. out)
      assert.matches("peak 10 at once", helper.readfile(dir .. "/" .. m .. ".svg"))
    end
  end)

  it("raises its soft open-file limit to what an unbounded run needs", function()
    -- 100 connections, each two descriptors with the in-process server: > 200
    local out, err, status = helper.exec({ "bash", "-c", 'ulimit -Sn 200 && exec "$0" "$@"', helper.aioshell,
      root .. "/scripts/crawler.lua", "--mode", "gather", "--n", "100", "--delay", "50", "--no-svg" }, { timeout = 60 })
    assert.are.equal(0, status, err)
    assert.are.equal("ok", table_rows(out).gather.check)
  end)

  it("refuses a mode that cannot fit under the hard open-file limit, saying what it needs", function()
    local out, err, status = helper.exec({ "bash", "-c", 'ulimit -n 200 && exec "$0" "$@"', helper.aioshell,
      root .. "/scripts/crawler.lua", "--mode", "gather,aiohttp", "--n", "100", "--delay", "20", "--concurrency", "20",
      "--no-svg" }, { timeout = 60 })
    assert.are.equal(1, status, err)
    local rows = table_rows(out)
    assert.are.equal("FAIL", rows.gather.check)
    assert.are.equal("-", rows.gather.seconds)
    assert.are.equal("ok", rows.aiohttp.check)     -- 20 connections fit
    assert.matches("mode gather FAILED: needs about 264 open files %(100 connections x 2 with the in%-process " ..
      "server %+ 64%), but the limit is 200 %(hard limit 200%)", err)
    assert.not_matches("traceback", err)
  end)

  it("--notebook N compares each mode with that notebook's figure in RESULT lines", function()
    local out, err, status = crawler({ "--n", "40", "--serial-n", "4", "--delay", "20", "--concurrency", "20",
      "--no-svg", "--quiet", "--notebook", "1" }, { timeout = 60 })
    assert.are.equal(0, status, err)
    local results = {}
    for json in out:gmatch("RESULT (%b{})") do
      local r = require("cjson").decode(json)
      results[r.key] = r
    end
    -- notebook 1: grequests (our gevent) took 4.12 s for 500 requests; scaled to 2 waves of 20 ms
    assert.are.equal("4.12 s (nb1 grequests, n=500)", results.gevent.reference)  -- named as the notebook ran it
    assert.is_true(math.abs(results.gevent.expected - 4.12 * 0.04 / 0.5) < 1e-9)
    assert.are.equal(results.gevent.measured <= results.gevent.expected * 1.25, results.gevent.reproduced)
    assert.are.equal("55.2 s (nb1, n=500)", results.serial.reference)
    assert.are.equal("1.07 s (nb1 tornado, n=500)", results.callback.reference)
    assert.are.equal("1.78 s (nb1 asyncio, n=500)", results.aiohttp.reference)
    assert.is_nil(results.tornado.reproduced)           -- notebook 1 has no figure for it
    assert.matches("no figure", results.tornado.note)
    -- notebook 2's aiohttp figure measured HTTP 400s: never "reproduced"
    out = crawler({ "--n", "20", "--delay", "10", "--mode", "aiohttp", "--no-svg", "--quiet", "--notebook", "2" },
      { timeout = 60 })
    local r = require("cjson").decode(out:match("RESULT (%b{})"))
    assert.is_nil(r.reproduced)
    assert.matches("not comparable", r.note)
    assert.matches("invalid: HTTP 400s", r.reference)
    local _, e2, s2 = crawler({ "--notebook", "3" })
    assert.are.equal(2, s2)
    assert.matches("--notebook needs an integer from 1 to 2, not '3'", e2, 1, true)
  end)

  it("notebooks.lua shows notebook 1's own figures for crawler_500 (grequests 4.12 s)", function()
    local dir = helper.tmpdir()
    local out, err, status = helper.run({ root .. "/scripts/notebooks.lua", "--only", "crawler_500", "--out", dir },
      { timeout = 90 })
    assert.are.equal(0, status, out .. err)
    local md = helper.readfile(dir .. "/report.md")
    assert.matches("| gevent, 100 requests |  | [%d.]+ s — the seed's 4.12 s scaled", md)
    assert.not_matches("101.6", md, 1, true)           -- notebook 2's figures stay in notebook 2
    -- only notebook 1's four cells: serial, grequests (gevent), tornado callbacks, asyncio
    for _, mode in ipairs { "serial", "gevent", "callback", "aiohttp" } do
      assert.matches("[|:] " .. mode .. ", %d+ requests |", md)   -- the first row starts "crawler_500 (...): "
    end
    assert.not_matches("| tornado, ", md, 1, true)
    assert.not_matches("| gather, ", md, 1, true)
  end)

  it("checks its outputs before running: --metrics with --url, a --svg dir or metrics file it cannot make", function()
    local _, err, status = crawler({ "--metrics", "/tmp/m.json", "--url", "http://127.0.0.1:1/add" })
    assert.are.equal(2, status)
    assert.matches("--metrics needs the in-process server", err, 1, true)
    _, err, status = crawler({ "--svg", "/proc/nope", "--n", "5" })
    assert.are.equal(1, status)
    assert.matches("crawler: --svg: mkdir /proc/nope: No such file or directory", err, 1, true)
    _, err, status = crawler({ "--metrics", "/proc/nope/m.json", "--n", "5" })
    assert.are.equal(1, status)
    assert.matches("crawler: --metrics: /proc/nope/m.json: No such file or directory", err, 1, true)
  end)

  it("makes its --svg directory without a shell: quotes in the name are just characters", function()
    local dir = helper.tmpdir()
    local odd = "it's a dir; touch pwned"
    local _, err, status = crawler({ "--n", "4", "--serial-n", "2", "--delay", "5", "--mode", "serial,gather",
      "--svg", odd, "--quiet" }, { cwd = dir, timeout = 30 })
    assert.are.equal(0, status, err)
    assert.matches("<svg", helper.readfile(dir .. "/" .. odd .. "/gather.svg"))
    assert.is_nil(helper.readfile(dir .. "/pwned"))
  end)

  it("says what its speed-up and floor are measured against, and gives none it cannot", function()
    -- gather is one wave, whatever n and the bound are (not ceil(n / c) waves)
    local out, err, status = crawler({ "--mode", "gather", "--n", "250", "--delay", "20", "--no-svg" }, { timeout = 30 })
    assert.are.equal(0, status, err)
    assert.matches("floor (the delays alone): gather one wave of 20 ms = 0.02 s.", out, 1, true)
    assert.matches("the nominal 20 ms per request (no serial run", out, 1, true)
    -- the delay with a unit: in seconds, converted to the server's ms (bare: ms, as before)
    out, err, status = crawler({ "--mode", "gather", "--n", "10", "--delay", "0.02s", "--no-svg" }, { timeout = 30 })
    assert.are.equal(0, status, err)
    assert.matches("floor (the delays alone): gather one wave of 20 ms = 0.02 s.", out, 1, true)
    -- no serial run and no delay: no speed-up at all (was 0.0x)
    out, err, status = crawler({ "--mode", "gevent", "--n", "10", "--delay", "0", "--no-svg" }, { timeout = 30 })
    assert.are.equal(0, status, err)
    assert.are.equal("-", table_rows(out).gevent.speedup)
    assert.matches("speed-up: none (no serial run to compare with, and no delay).", out, 1, true)
    -- with a serial run, its measured pace; floors per kind of mode
    out, err, status = crawler({ "--mode", "serial,aiohttp", "--n", "20", "--serial-n", "2", "--delay", "10",
      "--concurrency", "10", "--no-svg" }, { timeout = 30 })
    assert.are.equal(0, status, err)
    assert.matches("speed%-up = requests x the serial run.s [%d.]+ ms per request / seconds%.", out)
    assert.matches("serial 2 x 10 ms = 0.02 s; aiohttp 2 waves of 10 ms at 10 concurrent = 0.02 s.", out, 1, true)
    -- a mode asked for twice is measured twice and described once
    out, err, status = crawler({ "--mode", "tornado,gather,tornado", "--n", "20", "--delay", "10",
      "--concurrency", "10", "--no-svg" }, { timeout = 30 })
    assert.are.equal(0, status, err)
    assert.matches("floor (the delays alone): tornado 2 waves of 10 ms at 10 concurrent = 0.02 s; "
      .. "gather one wave of 10 ms = 0.01 s.\n", out, 1, true)
  end)

  it("shows a progress bar on a terminal only for a mode that runs a while", function()
    -- script(1) gives the crawler a terminal; both streams come back on it
    local function on_tty(args)
      local words = { helper.quote(helper.aioshell), helper.quote(root .. "/scripts/crawler.lua") }
      for _, a in ipairs(args) do words[#words + 1] = helper.quote(a) end
      local out, err, status = helper.exec({ "script", "-qec", table.concat(words, " "), "/dev/null" }, { timeout = 30 })
      assert.are.equal(0, status, out .. err)
      return out
    end
    local quick = on_tty { "--mode", "gather", "--n", "50", "--delay", "10", "--no-svg" }
    assert.matches("gather", quick, 1, true)
    assert.not_matches("gather   [", quick, 1, true)          -- over before the bar would help
    local slow = on_tty { "--mode", "serial", "--n", "12", "--serial-n", "12", "--delay", "100", "--no-svg" }
    assert.matches("serial   [##############################] 12/12", slow, 1, true)
  end)

  it("rejects bad flags with a message, the usage and exit status 2 (no traceback)", function()
    local cases = {
      { { "--mode", "threads" }, "unknown mode threads" },
      { { "--mode", "," }, "--mode needs at least one of serial," },
      { { "--n", "zero" }, "--n needs an integer >= 1, not 'zero'" },
      { { "--n", "2.5" }, "--n needs an integer >= 1, not '2.5'" },
      { { "--serial-n", "0" }, "--serial-n needs an integer >= 1, not '0'" },
      { { "--serial-n", "-3" }, "--serial-n needs an integer >= 1, not '-3'" },
      { { "--serial-n", "abc" }, "--serial-n needs an integer >= 1, not 'abc'" },
      { { "--delay", "-1" }, "--delay needs a time >= 0 in ms, or with a unit us, ms, s or m (100ms, 0.1s), not '-1'" },
      -- a duration takes a unit, glued to it; the server takes whole ms, so a fraction is refused
      { { "--delay", "-1s" }, "--delay needs a time >= 0 in ms, or with a unit us, ms, s or m (100ms, 0.1s), not '-1s'" },
      { { "--delay", "5h" }, "--delay needs a time >= 0 in ms, or with a unit us, ms, s or m (100ms, 0.1s), not '5h'" },
      { { "--delay", "fast" }, "--delay needs a time >= 0 in ms, or with a unit us, ms, s or m (100ms, 0.1s), not 'fast'" },
      { { "--delay", "10", "ms" }, "--delay takes its unit without a space: '10ms', not '10 ms'" },
      { { "--delay", "0.5ms" }, "--delay needs a whole number of ms: '0.5ms' is 0.5 ms" },
      { { "--delay", "0.0125s" }, "--delay needs a whole number of ms: '0.0125s' is 12.5 ms" },
      { { "--concurrency", "0" }, "--concurrency needs an integer >= 1, not '0'" },
      { { "--url", "--n", "5" }, "missing value for --url" },
      { { "--url", "localhost:8080/add" }, "--url needs an http:// or https:// URL" },
      { { "--n" }, "missing value for --n" },
      { { "--bogus" }, "unknown argument --bogus" },
    }
    for _, c in ipairs(cases) do
      local out, err, status = crawler(c[1])
      local what = table.concat(c[1], " ")
      assert.are.equal(2, status, what)
      assert.are.equal("", out, what)
      assert.matches("crawler: " .. c[2]:gsub("%p", "%%%0"), err, 1, false, what)
      assert.matches("usage: aioshell scripts/crawler.lua", err, 1, true)
      assert.not_matches("traceback", err, 1, true)
    end
  end)
end)

describe("scripts/server.lua and scripts/callgraph.lua", function()
  after_each(function() helper.cleanup() end)

  it("records metrics, rejects bad delays, flushes metric_data.json and draws it", function()
    local dir = helper.tmpdir()
    local code = [[
      local aio = require "aio"
      local http = require "aio.http"
      local M = assert(loadfile(ROOT .. "/scripts/server.lua"))("--module")
      local s = M.start{ metrics = DIR .. "/metric_data.json" }
      local base = "http://127.0.0.1:" .. s:port() .. "/add"
      local bad = http.get(base .. "?name=x&delay=abc")
      print("bad", bad.status, bad.body)
      bad = http.get(base .. "?name=x&delay=abc")      -- again: the parsed delays are cached
      print("again", bad.status, bad.body)
      -- beyond 2^31 - 1 ms the timer would overflow and answer at once: rejected as well
      for _, d in ipairs { "99999999999999999999", "2147483648", "-2147483648", "1.5" } do
        local r = http.get(base .. "?name=x&delay=" .. d)
        print("big", d, r.status, r.body)
      end
      local tasks = {}
      for i = 1, 6 do tasks[i] = aio.spawn(http.get, base .. "?name=demo&delay=30&" .. i) end
      for _, r in ipairs(aio.gather(tasks)) do io.write(r.body) end
      print()
      print("flush", http.get(base .. "?flush=1").status)
      s:close()
    ]]
    code = code:gsub("ROOT", string.format("%q", root)):gsub("DIR", string.format("%q", dir))
    local out, err, status = helper.run_lua(code, { timeout = 20 })
    assert.are.equal(0, status, err)
    assert.matches("bad\t400\tInvalid value for delay", out)
    assert.matches("again\t400\tInvalid value for delay", out)
    for _, d in ipairs { "99999999999999999999", "2147483648", "%-2147483648", "1%.5" } do
      assert.matches("big\t" .. d .. "\t400\tInvalid value for delay", out)
    end
    assert.matches("\n%.%.%.%.%.%.\n", out)
    assert.matches("flush\t200", out)
    local data = require("cjson").decode(helper.readfile(dir .. "/metric_data.json"))
    assert.are.equal(6, #data.demo)
    for _, r in ipairs(data.demo) do
      assert.is_true(r.dt >= 0.029 and r.dt < 1, "dt " .. r.dt)
      assert.is_true(math.abs(r["end"] - r.start - r.dt) < 2e-4)  -- 14 digits of epoch seconds
      assert.is_true(r.start > 1.6e9)      -- epoch seconds, like the seed's time.time()
    end
    assert.is_nil(data.x)                  -- the rejected request recorded nothing
    out, err, status = helper.run({ root .. "/scripts/callgraph.lua", dir .. "/metric_data.json",
      "--svg", dir .. "/cg" })
    assert.are.equal(0, status, err)
    assert.matches("demo: 6 requests", out)
    assert.matches("peak 6 concurrent", out)
    assert.matches("<svg", helper.readfile(dir .. "/cg/demo.svg"))
  end)

  it("callgraph.lua: bad data exits 1 with a message, a bad flag 2 with the usage, never a traceback", function()
    local function json(text) return helper.tmpfile(text, ".json") end
    local good = json('{"a":[{"start":1,"end":2}],"empty":[]}')
    local cases = {
      { { json('{"a":[]}') }, 1, "no records in" },
      { { json('{"a":[1,2]}') }, 1, "a record 1: not an object" },
      { { json('{"a":{"x":1}}') }, 1, "a: not a list of records" },
      { { json('{"a":[{"start":"x"}]}') }, 1, "a record 1: start is not a number" },
      { { json('{"a":[{"start":1}]}') }, 1, "a record 1: needs end or dt" },
      { { json('[1,2]') }, 1, "is not a metric_data.json object" },
      { { json('not json') }, 1, "is not a metric_data.json object" },
      { { "/nonexistent/m.json" }, 1, "No such file or directory" },
      { { good, "--name", "nosuch" }, 1, "no name 'nosuch' in ", "(it has: a, empty)" },
      { { good, "--width", "2.5" }, 2, "--width needs an integer from 10 to 1000, not '2.5'" },
      { { good, "--width", "0" }, 2, "--width needs an integer" },
      { { good, "--width", "-5" }, 2, "--width needs an integer from 10 to 1000, not '-5'" },
      { { good, "--svg" }, 2, "missing value for --svg" },
      { { good, "--bogus" }, 2, "unknown option --bogus" },
      { { good, "--svg", "/proc/nope/dir" }, 1, "mkdir /proc/nope: No such file or directory" },
    }
    for _, c in ipairs(cases) do
      local argv = { root .. "/scripts/callgraph.lua" }
      for _, a in ipairs(c[1]) do argv[#argv + 1] = a end
      local out, err, status = helper.run(argv)
      local what = table.concat(c[1], " ")
      assert.are.equal(c[2], status, what .. "\n" .. out .. err)
      assert.matches(c[3], err, 1, true, what)
      assert.matches("^callgraph: ", err, 1, false, what)
      if c[4] then assert.matches(c[4], err, 1, true, what) end
      assert.not_matches("traceback", err, 1, true)
      assert.not_matches("nan", out, 1, true)
      if c[2] == 2 then assert.matches("usage:", err, 1, true) end
    end
    -- a name without records is skipped with a note; the others are drawn
    local out, err, status = helper.run({ root .. "/scripts/callgraph.lua", good, "--no-svg", "--width", "20" })
    assert.are.equal(0, status, err)
    assert.matches("empty: no records, skipped", err, 1, true)
    assert.matches("a: 1 requests over 1.000 s, mean 1000.0 ms, peak 1 concurrent", out, 1, true)
  end)

  it("server.lua rejects a bad port or flag with the usage and exit status 2", function()
    for _, c in ipairs {
      { { "--port=abc" }, "--port needs an integer from 0 to 65535, not 'abc'" },
      { { "--port", "70000" }, "--port needs an integer from 0 to 65535, not '70000'" },
      { { "--port", "-1" }, "--port needs an integer from 0 to 65535, not '-1'" },
      { { "--port", "19322.5" }, "--port needs an integer from 0 to 65535, not '19322.5'" },
      { { "--port" }, "missing value for --port" },
      { { "--host", "--port", "0" }, "missing value for --host" },
      { { "--bogus" }, "unknown argument --bogus" },
    } do
      local argv = { root .. "/scripts/server.lua" }
      for _, a in ipairs(c[1]) do argv[#argv + 1] = a end
      local out, err, status = helper.run(argv, { timeout = 5 })
      local what = table.concat(c[1], " ")
      assert.are.equal(2, status, what)
      assert.are.equal("", out, what)
      assert.matches("server: " .. c[2], err, 1, true)
      assert.matches("usage:", err, 1, true)
      assert.not_matches("traceback", err, 1, true)
    end
  end)

  it("serves on the command line with --port and answers the seed's URLs", function()
    local portfile, pidfile = helper.tmpfile(""), helper.tmpfile("")
    os.execute(string.format("%s %s --port 0 > %s 2>&1 & echo $! > %s", helper.quote(helper.aioshell),
      helper.quote(root .. "/scripts/server.lua"), helper.quote(portfile), helper.quote(pidfile)))
    local port = helper.wait_until(function()
      return tonumber((helper.readfile(portfile) or ""):match("Listening on port: (%d+)"))
    end, 10)
    local pid = tonumber(helper.readfile(pidfile):match("%d+"))
    assert.is_number(port)
    local out = helper.exec({ "python3", "-c", [[
import sys, urllib.request
u = "http://127.0.0.1:%s/add?name=py&delay=10&abcdefghij" % sys.argv[1]
print(urllib.request.urlopen(u).read().decode())
]], tostring(port) }, { timeout = 10 })
    os.execute("kill " .. pid)
    assert.are.equal(".\n", out)
  end)
end)
