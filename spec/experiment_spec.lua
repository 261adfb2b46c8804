-- spec/experiment_spec.lua — aio.experiment, the protocol of the notebook scripts: options,
-- checks and the exit status, RESULT and FIGURE lines, virtual-time timing.
local helper = require "spec.helper"
local cjson = require "cjson"

-- Runs a script body that uses aio.experiment with the given arguments.
local function run(body, args)
  return helper.run_lua('local experiment = require "aio.experiment"\n' .. body, { args = args })
end

-- Asserts that each case {args, message} of body's command line is a mistake: nothing on
-- stdout, the message and the usage on stderr, exit status 2.
local function rejects(body, cases, usage)
  for _, c in ipairs(cases) do
    local out, err, status = run(body, c[1])
    assert.equal(2, status, table.concat(c[1], " "))
    assert.equal("", out)
    assert.equal(c[2] .. "\n" .. usage, err)
  end
end

after_each(helper.cleanup)

describe("aio.experiment", function()
  it("parses --quick/--full, declared options (numbers, strings, bare flags)", function()
    local body = [[
local e = experiment.new { name = "t", args = arg, options = { n = 3, name = "x", flag = false, delay = false },
                            bare = { "flag" } }
print(e.quick, e.full, e:size("q", "f"), e.options.n, e.options.name, e.options.flag, e.options.delay)
]]
    local out = run(body, {})
    assert.equal("true\tfalse\tq\t3\tx\tfalse\tfalse\n", out)
    out = run(body, { "--full", "--n", "7", "--name=y", "--flag", "--delay", "0.5" })
    assert.equal("false\ttrue\tf\t7\ty\ttrue\t0.5\n", out)
  end)

  it("rejects an unknown option with status 2", function()
    local _, err, status = run('experiment.new { name = "t", args = arg }', { "--bogus", "1" })
    assert.equal(2, status)
    assert.truthy(err:find("unknown option --bogus", 1, true))
  end)

  -- The command line is read by aio.flags, the scripts' one parser: the same values and mistakes.
  local DECLARED = 'experiment.new { name = "t", args = arg, options = { load_at = false, n = 3, name = "x", ' ..
    'jobs = false, seed = 1, real = false }, positive = { "load_at", "jobs" }, integer = { "jobs", "seed" }, ' ..
    'bare = { "real" } }'
  local USAGE = "usage: aioshell scripts/t.lua [--quick | --full] [--virtual-time] [--figures DIR] [--jobs V] [--load-at V] [--n 3] "
    .. "[--name x] [--real] [--seed 1]\n"

  it("reports a mistake as aio.flags does: the message, the usage, status 2", function()
    rejects(DECLARED, {
      { { "--bogus" }, "t: unknown option --bogus" },
      { { "--figures" }, "t: missing value for --figures" },
      { { "--figures", "--full" }, "t: missing value for --figures" },
      { { "--name=" }, "t: empty value for --name" },
      { { "--n", "abc" }, "t: --n needs a number, not 'abc'" },  -- a number, not a traceback later
      { { "--n", "nan" }, "t: --n needs a number, not 'nan'" },
      { { "--n" }, "t: missing value for --n" },
      { { "--name" }, "t: missing value for --name" },
      { { "--load-at", "0" }, "t: --load-at needs a number > 0, not '0'" },
      { { "--load-at" }, "t: missing value for --load-at" },
      -- an option declared false needs its value unless it is declared bare (a count given
      -- bare was true, and a traceback at its first use)
      { { "--jobs" }, "t: missing value for --jobs" },
      { { "--jobs", "2.5" }, "t: --jobs needs an integer >= 1, not '2.5'" },
      { { "--jobs", "0" }, "t: --jobs needs an integer >= 1, not '0'" },
      { { "--seed", "1.5" }, "t: --seed needs an integer, not '1.5'" },
      { { "--real=x" }, "t: --real needs a number, not 'x'" },
      -- a word that is not an option (a single-dash typo) was silently ignored
      { { "-n", "3" }, "t: unknown argument -n" },
      { { "stray" }, "t: unknown argument stray" },
    }, USAGE)
  end)

  it("takes a number >= 0 for an option declared nonnegative (a time from the start), and reject reports a mistake", function()
    local body = [[
local e = experiment.new { name = "t", args = arg, options = { at = false }, nonnegative = { "at" } }
if e.options.at == 7 then e:reject("--at (%g) is after the end", e.options.at) end
print(e.options.at)
]]
    assert.equal("0\n", run(body, { "--at", "0" }))
    assert.equal("2.5\n", run(body, { "--at=2.5" }))
    local usage = "usage: aioshell scripts/t.lua [--quick | --full] [--virtual-time] [--figures DIR] [--at V]\n"
    rejects(body, {
      { { "--at", "-1" }, "t: --at needs a number >= 0, not '-1'" },
      { { "--at", "inf" }, "t: --at needs a number >= 0, not 'inf'" },
      { { "--at", "7" }, "t: --at (7) is after the end" },
    }, usage)
  end)

  it("takes numbers for numeric options, any word for string ones, true for a bare option", function()
    local body = [[
local e = experiment.new { name = "t", args = arg, options = { n = 3, name = "x", flag = false, seed = 1 },
                           bare = { "flag" }, integer = { "seed" } }
print(e.options.n, e.options.name, e.options.flag, e.options.seed)
]]
    assert.equal("-1\t12\ttrue\t-7\n", run(body, { "--n", "-1", "--name", "12", "--flag", "--seed", "-7" }))
    assert.equal("3\tx\t0.5\t1\n", run(body, { "--flag", "0.5" }))
  end)

  it("prints the usage for --help and -h, and exits 0", function()
    for _, h in ipairs { "--help", "-h" } do
      local out, err, status = run(DECLARED, { h })
      assert.equal(0, status, err)
      assert.equal(USAGE, out:sub(1, #USAGE))
    end
  end)

  it("--help says what each flag means: the protocol's, then the options' help (metavariable, text)", function()
    local out, err, status = run('experiment.new { name = "t", title = "A title", args = arg, ' ..
      'options = { delay = false, n = 3, real = false }, bare = { "real" }, ' ..
      'help = { delay = { "MS", "latency in milliseconds (default 10, --full 74)" }, real = "wait for real" } }',
      { "--help" })
    assert.equal(0, status, err)
    assert.equal("usage: aioshell scripts/t.lua [--quick | --full] [--virtual-time] [--figures DIR] [--delay MS] [--n 3] [--real]\n"
      .. "A title\n"
      .. "  --quick | --full    the quick sizes (default), or the notebook's own\n"
      .. "  --virtual-time      timers and sleeps jump instead of waiting (loop seconds; real for threads)\n"
      .. "  --figures DIR       write the SVG figures into DIR (made if missing)\n"
      .. "  --delay MS          latency in milliseconds (default 10, --full 74)\n"
      .. "  --n V               (default 3)\n"
      .. "  --real              wait for real\n", out)
  end)

  -- Durations: a page delay in whole ms > 0, a wait in seconds > 0, a time from the start >= 0.
  local DURATIONS = 'local e = experiment.new { name = "t", title = "T", args = arg, ' ..
    'options = { delay = false, wait = 0.2, at = false }, duration = { delay = "ms", wait = "s", at = "s" }, ' ..
    'positive = { "delay", "wait" }, integer = { "delay" }, nonnegative = { "at" }, ' ..
    'help = { delay = { "MS", "latency in ms (default 10, --full 74)" }, wait = { "S", "a wait in seconds" } } }\n' ..
    'print(e.options.delay, e.options.wait, e.options.at)'

  it("takes a declared duration bare, in its own unit as before, or with a unit, converted", function()
    assert.equal("5\t0.5\t0\n", run(DURATIONS, { "--delay", "5", "--wait", "0.5", "--at", "0" }))
    assert.equal("false\t0.2\tfalse\n", run(DURATIONS, {}))
    assert.equal("100\t0.25\t120\n", run(DURATIONS, { "--delay", "0.1s", "--wait=250ms", "--at", "2m" }))
    assert.equal("3\t1.5\t0\n", run(DURATIONS, { "--delay", "3000us", "--wait", "1.5s", "--at", "0ms" }))
  end)

  it("reports a bad duration as aio.flags does, and a fraction of a whole-ms one", function()
    local usage = "usage: aioshell scripts/t.lua [--quick | --full] [--virtual-time] [--figures DIR] [--at V] "
      .. "[--delay MS] [--wait S]\n"
    rejects(DURATIONS, {
      { { "--delay", "0.5ms" }, "t: --delay needs a whole number of ms: '0.5ms' is 0.5 ms" },
      { { "--delay", "0" }, "t: --delay needs a time > 0 in ms, or with a unit us, ms, s or m (100ms, 0.1s), not '0'" },
      { { "--wait", "5h" }, "t: --wait needs a time > 0 in seconds, or with a unit us, ms, s or m (100ms, 0.1s), not '5h'" },
      { { "--at", "-1s" }, "t: --at needs a time >= 0 in seconds, or with a unit us, ms, s or m (100ms, 0.1s), not '-1s'" },
      { { "--wait", "10", "ms" }, "t: --wait takes its unit without a space: '10ms', not '10 ms'" },
    }, usage)
  end)

  it("--help says that a duration takes units, before its default", function()
    local out, err, status = run(DURATIONS, { "--help" })
    assert.equal(0, status, err)
    assert.matches("\n  --delay MS          latency in ms, or with a unit: 100ms, 0.1s (default 10, --full 74)\n", out, 1, true)
    assert.matches("\n  --wait S            a wait in seconds, or with a unit: 100ms, 0.1s (default 0.2)\n", out, 1, true)
    assert.matches("\n  --at V              a time in s, or with a unit: 100ms, 0.1s\n", out, 1, true)
  end)

  it("takes --figures=DIR and --load_at=V as well as --figures DIR and --load-at V", function()
    local body = DECLARED:gsub("^", "local e = ") .. "\nprint(e.figures, e.options.load_at)"
    assert.equal("d\t0.5\n", run(body, { "--figures=d", "--load_at=0.5" }))
    assert.equal("d\t0.5\n", run(body, { "--figures", "d", "--load-at", "0.5" }))
  end)

  it("finish exits 0 when every check held and 1 otherwise, printing each check", function()
    local out, _, status = run([[
local e = experiment.new { name = "t", args = arg }
e:check(true, "fine %d", 1)
e:finish()
]])
    assert.equal(0, status)
    assert.truthy(out:find("check ok: fine 1\n", 1, true))
    assert.truthy(out:find("t: 1 checks, 0 failed", 1, true))
    out, _, status = run([[
local e = experiment.new { name = "t", args = arg }
e:check(true, "fine")
e:check(false, "broken")
e:finish()
]])
    assert.equal(1, status)
    assert.truthy(out:find("check FAILED: broken\n", 1, true))
  end)

  it("say prints a line, formatted only when given arguments, and keeps it in e.lines", function()
    local out, err, status = run([[
local e = experiment.new { name = "t", args = arg }
e:say("100%% %s", "done")
e:say("50% as is")
print(#e.lines, e.lines[1], e.lines[2])
]])
    assert.equal(0, status, err)
    assert.equal("100% done\n50% as is\n2\t100% done\t50% as is\n", out)
  end)

  it("prints results as RESULT lines of JSON and writes figures into --figures", function()
    local dir = helper.tmpdir()
    local out, _, status = run([[
local e = experiment.new { name = "t", args = arg }
e:result { key = "k", measured = 1.5, unit = "s", reproduced = true }
e:figure("pic", "<svg xmlns='http://www.w3.org/2000/svg'/>", "a picture")
e:finish()
]], { "--figures", dir })
    assert.equal(0, status)
    local r = cjson.decode(out:match("RESULT (%b{})"))
    assert.same({ key = "k", measured = 1.5, unit = "s", reproduced = true, experiment = "t", size = "quick" }, r)
    local f = cjson.decode(out:match("FIGURE (%b{})"))
    assert.equal(dir .. "/t-pic.svg", f.path)
    assert.equal("a picture", f.caption)
    assert.truthy(helper.readfile(f.path):find("<svg", 1, true))
  end)


  it("makes a missing --figures directory, and says so when a figure cannot be written", function()
    local body = [[
local e = experiment.new { name = "t", args = arg }
e:figure("pic", "<svg xmlns='http://www.w3.org/2000/svg'/>", "a picture")
e:finish()
]]
    local dir = helper.tmpdir() .. "/new/figs"  -- like --svg DIR of the crawler: mkdir -p
    local out, err, status = run(body, { "--figures", dir })
    assert.equal(0, status, err)
    assert.truthy(helper.readfile(dir .. "/t-pic.svg"):find("<svg", 1, true))
    local file = helper.tmpfile("not a directory")
    out, err, status = run(body, { "--figures", file .. "/sub" })
    assert.equal(1, status, out .. err)  -- it was silently skipped: no figure, status 0
    assert.truthy(err:find("t: --figures: ", 1, true), err)
    assert.falsy(out:find("FIGURE", 1, true), out)
  end)
  it("times in loop seconds under --virtual-time, so waits cost nothing", function()
    local out, _, status = run([[
local aio = require "aio"
local e = experiment.new { name = "t", args = arg }
local t = e:time(function() aio.sleep(30) end)
print(string.format("%.3f", t), aio.clock.is_virtual())
]], { "--virtual-time" })
    assert.equal(0, status)
    assert.equal("30.000\ttrue\n", out)
  end)

  -- The virtual clock stands still while a thread works: loop seconds said 0 s for any thread
  -- pool's work, and the speed-ups were nan.
  it("times a section with no timer in real seconds under --virtual-time (a thread pool's work)", function()
    local out, err, status = run([[
local aio, thread = require "aio", require "aio.thread"
local e = experiment.new { name = "t", args = arg }
local pool = thread.pool(1)
local t = e:time(function() return pool:submit(function() require("aio.thread").sleep(0.2) end):await() end)
local slept = e:time(function() aio.sleep(30) end)
pool:close()
print(t >= 0.2, string.format("%.3f", slept))
]], { "--virtual-time" })
    assert.equal(0, status, err)
    assert.equal("true\t30.000\n", out)
  end)

  it("close_to allows a relative and an absolute slack", function()
    local out = run([[print(experiment.close_to(1.2, 1.0), experiment.close_to(1.4, 1.0), experiment.close_to(0.05, 0, 0.25, 0.05))]])
    assert.equal("true\tfalse\ttrue\n", out)
  end)

  it("interpreter names the binary running the script", function()
    local out = run("print(experiment.interpreter())")
    assert.equal(helper.aioshell .. "\n", out)
  end)
end)
