-- spec/helper_spec.lua — the shared spec helpers do what the other specs rely on.
local helper = require "spec.helper"

describe("spec.helper", function()
  after_each(helper.cleanup)

  it("runs a child aioshell and returns stdout, stderr and the exit status", function()
    local out, err, status = helper.run({"-e", "io.write('o') io.stderr:write('e') os.exit(3)"})
    assert.are.equal("o", out)
    assert.are.equal("e", err)
    assert.are.equal(3, status)
  end)

  it("feeds stdin, sets and unsets environment variables, sets argv[0]", function()
    local out = helper.run({"-"}, {stdin = "print(os.getenv('X'), os.getenv('HOME') ~= nil, arg[-1])",
      env = {X = "it's set", HOME = false}, argv0 = "myname"})
    assert.are.equal("it's set\tfalse\tmyname\n", out)
  end)

  it("reports death by signal as 128 + n, and a timeout as 124", function()
    local _, _, status = helper.exec({"sh", "-c", "kill -TERM $$"})
    assert.are.equal(128 + 15, status)
    _, _, status = helper.exec({"sleep", "5"}, {timeout = 0.2})
    assert.are.equal(124, status)
  end)

  it("runs a script file with flags and arguments", function()
    local out = helper.run_lua("print(...)", {flags = {"-e", "io.write('first ')"}, args = {"a", "b"}})
    assert.are.equal("first a\tb\n", out)
  end)

  it("makes temporary files and directories and removes them", function()
    local f = helper.tmpfile("content", ".txt")
    local d = helper.tmpdir()
    assert.are.equal("content", helper.readfile(f))
    assert.is_true(os.rename(d, d))
    helper.cleanup()
    assert.is_nil(helper.readfile(f))
    assert.is_nil(os.rename(d, d))
  end)

  it("runs a test body as a task with the loop running", helper.async(function()
    local aio = require "aio"
    assert.is_truthy(aio.current())
    aio.sleep(0.001)
    assert.are.equal(6, aio.gather(aio.spawn(function(x) return x * 2 end, 3)))
  end))

  it("finds tasks left running", function()
    local aio = require "aio"
    local t = aio.spawn(function() aio.sleep(10) end)
    t:set_name("leaky")
    local ok, err = pcall(helper.assert_no_tasks)
    assert.is_false(ok)
    assert.matches("leaky", err)
    t:cancel()
    aio.wait({t})
    helper.assert_no_tasks()
  end)
end)
