-- spec/leaks_spec.lua — at exit nothing the program allocated is left behind, whatever it was
-- doing when it ended. Each case runs a child aioshell and wants exactly its expected stderr
-- and status: on the ASan build (make asan-test, CI), LeakSanitizer turns a leak into a report
-- on stderr and exit status 1.
local helper = require "spec.helper"

-- Runs script and checks that it wrote nothing on stderr and exited 0.
local function clean(script)
  local _, err, status = helper.run_lua(script, { timeout = 30 })
  assert.are.equal("", err)
  assert.are.equal(0, status)
end

-- Runs script, which ends with error("the script fails"), and checks that this error (and its
-- traceback) is all it wrote, with status 1.
local function fails_cleanly(script)
  local _, err, status = helper.run_lua(script, { timeout = 30 })
  assert.matches("^[^\n]*: the script fails\nstack traceback:\n", err)
  assert.is_nil(err:find("Sanitizer", 1, true), err)
  assert.are.equal(1, status)
end

describe("nothing is left at exit", function()
  after_each(function() helper.cleanup() end)

  it("after a loop-side recv(0) served a parked sender (no notification left queued)", function()
    clean([[
      local aio, thread = require "aio", require "aio.thread"
      local ch = thread.channel(1)
      ch:send(1)
      local s = aio.spawn(function() return ch:send(2) end)
      aio.sleep(0)
      assert(ch:recv(0) == 1)
      assert(s:await() == true)
      assert(ch:recv(0) == 2)
    ]])
  end)

  it("when the script fails while tasks wait on channels, one served by a worker meanwhile", function()
    fails_cleanly([[
      local aio, thread = require "aio", require "aio.thread"
      local ch, full = thread.channel(), thread.channel(1)
      full:send(1)
      aio.spawn(function() return ch:recv() end)
      aio.spawn(function() return ch:recv(5) end)
      aio.spawn(function() return full:send(2) end)
      aio.sleep(0)
      local pool = thread.pool(1)
      pool:submit(function(ch) ch:send("x") end, ch)
      while #ch == 0 do end  -- sent: its notification waits in the loop's inbox, never read
      error("the script fails")
    ]])
  end)

  it("when the script fails while a forked child runs", function()
    fails_cleanly([[
      local aio, process = require "aio", require "aio.process"
      process.fork(function() aio.sleep(10) end)
      error("the script fails")
    ]])
  end)

  it("when the script fails while a process pool has jobs queued and running", function()
    fails_cleanly([[
      local aio, process = require "aio", require "aio.process"
      local pool = process.pool{size = 1}
      pool:submit(function() require("aio").sleep(10) end)
      pool:submit(function() return 2 end)
      aio.sleep(0.3)
      error("the script fails")
    ]])
  end)

  it("when the script fails while process.exec runs a program still reading its stdin", function()
    fails_cleanly([[
      local aio, process = require "aio", require "aio.process"
      aio.spawn(function() return process.exec({"sleep", "5"}, {stdin = ("x"):rep(1000000)}) end)
      aio.sleep(0.1)
      error("the script fails")
    ]])
  end)

  it("when the script fails while a server listens with a request in flight", function()
    fails_cleanly([[
      local aio, http = require "aio", require "aio.http"
      local s = http.serve{handler = function() aio.sleep(10) return 200, "x" end}
      aio.spawn(function() return http.get("http://127.0.0.1:" .. s:port() .. "/") end)
      aio.sleep(0.2)
      error("the script fails")
    ]])
  end)

  it("after a server ran on a worker thread", function()
    clean([[
      local aio, thread, http = require "aio", require "aio.thread", require "aio.http"
      local pool = thread.pool(1)
      local ch = thread.channel()
      local job = pool:submit(function(ch)
        local aio, http = require "aio", require "aio.http"
        local answered = false
        local s = http.serve{handler = function() answered = true return 200, "x" end}
        ch:send(s:port())
        while not answered do aio.sleep(0.01) end
        s:close()
      end, ch)
      assert(http.get("http://127.0.0.1:" .. ch:recv() .. "/").status == 200)
      job:await()
      pool:close()
    ]])
  end)

  it("after --trace wrote its file at exit", function()
    local path = helper.tmpfile("", ".json")
    local _, err, status = helper.run({ "--trace", path, "-e", "require('aio').spawn(function() end)" })
    assert.are.equal("", err)
    assert.are.equal(0, status)
    assert.matches('"traceEvents"', helper.readfile(path))
  end)
end)
