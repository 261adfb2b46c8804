-- spec/flags_spec.lua — aio.flags, the scripts' command lines: values after '=' or in the next
-- word, integers with bounds, durations with units, and mistakes reported as message + usage,
-- exit status 2.
local helper = require "spec.helper"

-- Runs a small program parsing its arguments with aio.flags; prints what it got.
local PROGRAM = [[
local cl = require("aio.flags").new("prog", "usage: prog [--n N] [--name S] [--t S] [--x X]\n", { ... })
local got = {}
for a, name in cl:each() do
  if name == "--n" then got[#got + 1] = "n=" .. cl:int(name, cl:value(a, name), 1, 10)
  elseif name == "--name" then got[#got + 1] = "name=" .. cl:value(a, name)
  elseif name == "--t" then got[#got + 1] = "t=" .. cl:positive(name, cl:value(a, name))
  elseif name == "--x" then got[#got + 1] = "x=" .. cl:number(name, cl:value(a, name))
  else cl:error("unknown argument %s", a) end
end
print(table.concat(got, " "))
]]

local function run(...)
  return helper.run_lua(PROGRAM, { args = { ... } })
end

describe("aio.flags", function()
  after_each(helper.cleanup)

  it("takes a value after '=' or as the next word", function()
    local out, err, status = run("--n=3", "--name", "x y", "--t", "0.5", "--x=-2.5")
    assert.equal(0, status, err)
    assert.equal("n=3 name=x y t=0.5 x=-2.5\n", out)
  end)

  it("reports mistakes with the usage on stderr and exit status 2", function()
    for _, c in ipairs {
      { { "--n", "11" }, "prog: --n needs an integer from 1 to 10, not '11'" },
      { { "--n", "2.5" }, "prog: --n needs an integer from 1 to 10, not '2.5'" },
      { { "--name", "--n", "3" }, "prog: missing value for --name" },
      { { "--name=" }, "prog: empty value for --name" },
      { { "--t", "0" }, "prog: --t needs a number > 0, not '0'" },
      { { "--t", "inf" }, "prog: --t needs a number > 0, not 'inf'" },
      { { "--x", "abc" }, "prog: --x needs a number, not 'abc'" },
      { { "--x", "-inf" }, "prog: --x needs a number, not '-inf'" },
      { { "--x", "nan" }, "prog: --x needs a number, not 'nan'" },
      { { "--y" }, "prog: unknown argument --y" },
    } do
      local out, err, status = run(table.unpack(c[1]))
      assert.equal(2, status, table.concat(c[1], " "))
      assert.equal("", out)
      assert.equal(c[2] .. "\nusage: prog [--n N] [--name S] [--t S] [--x X]\n", err)
    end
  end)

  it("value_or_true gives true for a bare flag, and names may hold '_'", function()
    local program = [[
local cl = require("aio.flags").new("prog", "usage: prog\n", { ... })
local got = {}
for a, name in cl:each() do got[#got + 1] = name .. "=" .. tostring(cl:value_or_true(a, name)) end
print(table.concat(got, " "))
]]
    local out, err, status = helper.run_lua(program, { args = { "--no-load", "--load_at=2", "--n", "3", "--quiet" } })
    assert.equal(0, status, err)
    assert.equal("--no-load=true --load_at=2 --n=3 --quiet=true\n", out)
    out, err, status = helper.run_lua(program, { args = { "--x=" } })
    assert.equal(2, status)
    assert.equal("prog: empty value for --x\nusage: prog\n", err)
  end)

  it("nonnegative takes 0 and more; usage makes the runnable usage line of a script", function()
    local program = [[
local flags = require "aio.flags"
local cl = flags.new("prog", flags.usage("prog", "[--at S]"), { ... })
for a, name in cl:each() do print(cl:nonnegative(name, cl:value(a, name))) end
io.write(flags.usage("bare"))
]]
    local out, err, status = helper.run_lua(program, { args = { "--at", "0", "--at=1.5" } })
    assert.equal(0, status, err)
    assert.equal("0\n1.5\nusage: aioshell scripts/bare.lua\n", out)
    for _, v in ipairs { "-0.5", "inf", "x" } do
      out, err, status = helper.run_lua(program, { args = { "--at", v } })
      assert.equal(2, status)
      assert.equal("prog: --at needs a number >= 0, not '" .. v .. "'\nusage: aioshell scripts/prog.lua [--at S]\n", err)
    end
  end)

  -- A duration in ms that must be whole (the crawler's --delay), one in seconds > 0 (a page's
  -- latency) and one in seconds >= 0 (a time from the start).
  local DURATIONS = [[
local cl = require("aio.flags").new("prog", "usage: prog\n", { ... })
local got = {}
for a, name in cl:each() do
  local v = cl:value(a, name)
  if name == "--ms" then v = cl:duration(name, v, "ms", { integer = true })
  elseif name == "--s" then v = cl:duration(name, v, "s", { positive = true })
  else v = cl:duration(name, v, "s") end
  got[#got + 1] = name:sub(3) .. "=" .. math.type(v) .. " " .. v
end
print(table.concat(got, ", "))
]]

  it("duration takes a bare number in the option's own unit, as before", function()
    local out, err, status = helper.run_lua(DURATIONS, { args = { "--ms", "100", "--s", "0.5", "--at=0", "--ms", "1e2" } })
    assert.equal(0, status, err)
    assert.equal("ms=integer 100, s=float 0.5, at=integer 0, ms=integer 100\n", out)
  end)

  it("duration takes us, ms, s and m, and converts to the option's unit both ways, exactly", function()
    local out, err, status = helper.run_lua(DURATIONS, { args = { "--ms", "100ms", "--ms", "0.1s", "--ms", "0.3s",
      "--ms=1.1s", "--ms", "2m", "--ms", "3000us", "--ms", "0.0001m", "--ms", "0s" } })
    assert.equal(0, status, err)
    assert.equal("ms=integer 100, ms=integer 100, ms=integer 300, ms=integer 1100, ms=integer 120000, "
      .. "ms=integer 3, ms=integer 6, ms=integer 0\n", out)
    out, err, status = helper.run_lua(DURATIONS, { args = { "--s", "1.5s", "--s", "100ms", "--s", "250000us",
      "--s", "2m", "--s", "0.5m", "--at", "0ms", "--s", "1e3ms" } })
    assert.equal(0, status, err)
    assert.equal("s=float 1.5, s=float 0.1, s=float 0.25, s=integer 120, s=integer 30, at=integer 0, s=integer 1\n", out)
  end)

  it("duration reports a bad time, unit or spacing naming the option and the units (usage, exit status 2)", function()
    local units = "or with a unit us, ms, s or m (100ms, 0.1s)"
    for _, c in ipairs {
      { { "--s", "10", "ms" }, "--s takes its unit without a space: '10ms', not '10 ms'" },
      { { "--ms=5", "s" }, "--ms takes its unit without a space: '5s', not '5 s'" },
      { { "--s", "5h" }, "--s needs a time > 0 in seconds, " .. units .. ", not '5h'" },
      { { "--s", "-1s" }, "--s needs a time > 0 in seconds, " .. units .. ", not '-1s'" },
      { { "--s", "fast" }, "--s needs a time > 0 in seconds, " .. units .. ", not 'fast'" },
      { { "--s", "5MS" }, "--s needs a time > 0 in seconds, " .. units .. ", not '5MS'" },  -- case-sensitive
      { { "--s", "0ms" }, "--s needs a time > 0 in seconds, " .. units .. ", not '0ms'" },
      { { "--s", "1e999s" }, "--s needs a time > 0 in seconds, " .. units .. ", not '1e999s'" },
      { { "--s", "1 s" }, "--s needs a time > 0 in seconds, " .. units .. ", not '1 s'" },
      { { "--s", "1e99999999999999999999s" },   -- an exponent too big for an integer: was a traceback
        "--s needs a time > 0 in seconds, " .. units .. ", not '1e99999999999999999999s'" },
      { { "--at", "5e-99999999999999999999ms" },
        "--at needs a time >= 0 in seconds, " .. units .. ", not '5e-99999999999999999999ms'" },
      { { "--at", "-0.5" }, "--at needs a time >= 0 in seconds, " .. units .. ", not '-0.5'" },
      { { "--ms", "-1" }, "--ms needs a time >= 0 in ms, " .. units .. ", not '-1'" },
      { { "--ms", "s" }, "--ms needs a time >= 0 in ms, " .. units .. ", not 's'" },
    } do
      local out, err, status = helper.run_lua(DURATIONS, { args = c[1] })
      assert.equal(2, status, table.concat(c[1], " "))
      assert.equal("", out)
      assert.equal("prog: " .. c[2] .. "\nusage: prog\n", err)
    end
  end)

  it("duration refuses a fraction of a whole-number option rather than rounding it", function()
    for _, c in ipairs {
      { "0.5ms", "'0.5ms' is 0.5 ms" },
      { "1500us", "'1500us' is 1.5 ms" },
      { "0.0005s", "'0.0005s' is 0.5 ms" },
      { "2.5", "'2.5' is 2.5 ms" },
    } do
      local out, err, status = helper.run_lua(DURATIONS, { args = { "--ms", c[1] } })
      assert.equal(2, status, c[1])
      assert.equal("", out)
      assert.equal("prog: --ms needs a whole number of ms: " .. c[2] .. "\nusage: prog\n", err)
    end
  end)

  it("duration says a whole-number option's value is too large, not that it is a fraction", function()
    for _, c in ipairs { { "1e300s", "'1e300s' is 1e+303 ms" }, { "1e300", "'1e300' is 1e+300 ms" } } do
      local out, err, status = helper.run_lua(DURATIONS, { args = { "--ms", c[1] } })
      assert.equal(2, status, c[1])
      assert.equal("", out)
      assert.equal("prog: --ms is too large: " .. c[2] .. "\nusage: prog\n", err)
    end
  end)
end)
