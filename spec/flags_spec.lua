-- spec/flags_spec.lua — aio.flags, the scripts' command lines: values after '=' or in the next
-- word, integers with bounds, and mistakes reported as message + usage, exit status 2.
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
end)
