-- spec/repl_spec.lua: the REPL (issue 5), end to end.
--
-- Piped input is compared with the stock `lua5.4 -i`. Terminal behaviour is driven on a real
-- pseudo-terminal with tmux (tests/repl/tmux.lua): every session has its own tmux server,
-- killed in `finally`, so no process is left behind.
package.path = "tests/repl/?.lua;" .. package.path
local tmux = require "tmux"

local AIOSHELL = tmux.aioshell()
local q = tmux.quote

-- Runs `prog -i` with input on stdin; returns stdout, stderr, exit status.
local function piped(prog, input, args)
  local inf, outf, errf = os.tmpname(), os.tmpname(), os.tmpname()
  local f = assert(io.open(inf, "wb"))
  f:write(input)
  f:close()
  local ok, _, code = os.execute(("timeout 20 %s %s < %s > %s 2> %s"):format(
    prog, args or "-i", inf, outf, errf))
  local function slurp(p)
    local h = assert(io.open(p, "rb"))
    local s = h:read("a")
    h:close()
    os.remove(p)
    return s
  end
  os.remove(inf)
  return slurp(outf), slurp(errf), ok and 0 or code
end

-- Drops lua5.4's / aioshell's banner line.
local function body(s)
  return (s:gsub("^Lua [^\n]*\n", ""))
end

-- A temporary history file name (removed by the caller).
local function temp_history()
  local p = os.tmpname()
  os.remove(p)
  return p
end

-- Writes a temporary script (removed by the caller) made of the strings given; returns its path.
local function temp_script(...)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(...)
  f:close()
  return path
end

-- Starts an interactive aioshell on a pty with its own history file; waits for the prompt.
local function session(hist, extra)
  local s = tmux.start(("AIOSHELL_HISTORY=%s %s -i %s"):format(q(hist), q(AIOSHELL), extra or ""))
  s:wait_for("\n>$", 5, "the first prompt")
  return s
end

describe("piped input (stdin not a terminal)", function()
  it("prints exactly what lua5.4 -i prints for plain values, statements and chunks", function()
    local input = table.concat({
      "1+1", "x = 3", "x", "function f(a)", "return a * 2", "end", "f(21)", "= 5",
      "print(1, 2)", "return 1, nil, 'a', true", "for i = 1, 2 do", "print(i)", "end",
      "local y = 1", "'s' .. 'tr'", "2^10", "nil", "", "return",
      "_PROMPT = 'lua> '; _PROMPT2 = '... '", "if x then", "print('yes')", "end",
      "_PROMPT = nil", "x=1" }, "\n")
    local want, werr, wcode = piped("lua5.4", input)
    local got, gerr, gcode = piped(AIOSHELL, input)
    assert.are.equal(body(want), body(got))
    assert.are.equal(werr, gerr)
    assert.are.equal(wcode, gcode)
  end)

  it("reports errors like lua5.4 -i and goes on", function()
    local input = "error('boom')\nx = = 1\nfor\n1+2\nerror(42)\nerror(4.5)\n"
    local want, werr = piped("lua5.4", input)
    local got, gerr = piped(AIOSHELL, input)
    assert.are.equal(body(want), body(got))
    assert.are.equal(werr, gerr)
    assert.truthy(gerr:find("stdin:1: unexpected symbol near '='", 1, true))
    assert.truthy(gerr:find("stdin:1: boom\nstack traceback:\n", 1, true))
    assert.truthy(gerr:find("\n42\nstack traceback:\n", 1, true), gerr)  -- a number, as lua.c
  end)

  it("reports an incomplete chunk at end of input (lua5.4 prints '(null)' there)", function()
    local input = "function g()\nreturn 1\n"
    local want = piped("lua5.4", input)
    local got, gerr = piped(AIOSHELL, input)
    assert.are.equal(body(want), body(got))
    assert.are.equal("stdin:2: 'end' expected (to close 'function' at line 1) near <eof>\n", gerr)
  end)

  it("gives the REPL the global aio (not scripts, not a name already taken)", function()
    local got, gerr, code = piped(AIOSHELL, "print(aio == require 'aio')\naio.sleep(0.01)\n")
    assert.are.equal("", gerr)
    assert.are.equal(0, code)
    assert.truthy(got:find("\ntrue\n", 1, true), got)
    got = piped(AIOSHELL, "print(aio)\n", "-i -e \"aio = 5\"")
    assert.truthy(got:find("\n5\n", 1, true), got)
    got = piped(AIOSHELL, "", "-e \"print(aio)\"")     -- no REPL: lua5.4's globals
    assert.are.equal("nil\n", got)
    local strict = "setmetatable(_G, {__index = function(_, k) if k == 'aio' then error('undeclared') end end})"
    got, gerr = piped(AIOSHELL, "print(rawget(_G, 'aio'))\n", "-i -e \"" .. strict .. "\"")
    assert.truthy(got:find("\nnil\n", 1, true), got .. gerr)
  end)

  it("lets a line await while background tasks run", function()
    local input = table.concat({
      "aio = require 'aio'",
      "t = aio.spawn(function() aio.sleep(0.05) print('bg done') return 7 end)",
      "aio.sleep(0.2)",
      "t:await() * 6",
    }, "\n") .. "\n"
    local got, gerr, code = piped(AIOSHELL, input)
    assert.are.equal("", gerr)
    assert.are.equal(0, code)
    local bg = got:find("bg done\n", 1, true)
    local answer = got:find("\n42\n", 1, true)
    assert.truthy(bg, got)
    assert.truthy(answer, got)
    assert.truthy(bg < answer)
  end)

  it(":tasks lists thread and process pool jobs next to the tasks", function()
    local input = table.concat({
      "thread = require 'aio.thread'",
      "process = require 'aio.process'",
      "tp, tq = thread.pool(1), thread.pool{size = 1, name = 'fetchers'}",
      "pp = process.pool{size = 1, name = 'crunch'}",
      "f = tp:submit(function() require('aio.thread').sleep(0.3) end)",
      "e = tq:submit(function() require('aio.thread').sleep(0.3) end)",
      "g = pp:submit(function() os.execute('sleep 0.3') end)",
      ":tasks",
      "f:await(); e:await(); g:await(); tp:close(); tq:close(); pp:close()",
      ":tasks",
    }, "\n") .. "\n"
    local got, gerr, code = piped(AIOSHELL, input)
    assert.are.equal("", gerr)
    assert.are.equal(0, code)
    local first, second = got:match("(> :tasks.-)(> :tasks.*)")
    assert.truthy(first, got)
    -- each job is named after its pool, in full: the default pool1, pool2, ... or the name given
    assert.matches("\nT%d+ +pool%d+ +pending +[%d.]+m?s +a worker thread", first)
    assert.matches("\nT%d+ +fetchers +pending +[%d.]+m?s +a worker thread", first)
    assert.matches("\nP%d+ +crunch +pending +[%d.]+m?s +a worker process", first)
    assert.is_nil(second:find("pending", 1, true))
  end)

  it("prints tables as literals and tasks with their state", function()
    local input = table.concat({
      "{1, 'two', x = {y = 3}, [10] = true}",
      "t = {} t.self = t return t",
      "aio = require 'aio'",
      "f = aio.future(); return f",
    }, "\n") .. "\n"
    local got = piped(AIOSHELL, input)
    assert.truthy(got:find('{1, "two", [10] = true, x = {y = 3}}', 1, true), got)
    assert.truthy(got:find("{self = <cycle>}", 1, true), got)
    assert.truthy(got:find("pending", 1, true), got)
  end)

  it("reports a background task's unobserved failure before the next prompt", function()
    local input = "aio = require 'aio'\n"
      .. "t = aio.spawn(function() error('lost in the background') end)\n"
      .. "1 + 1\n"
    local got, gerr, code = piped(AIOSHELL, input)
    assert.truthy(gerr:find("nobody observed", 1, true), gerr)
    assert.truthy(gerr:find("lost in the background", 1, true), gerr)
    assert.truthy(got:find("\n2\n", 1, true), got)
    assert.are.equal(0, code)   -- reported once, during the session; lua5.4 -i exits 0
  end)

  it("runs console commands", function()
    local input = table.concat({
      "aio = require 'aio'",
      "t = aio.spawn(function() aio.sleep(30) end) t:set_name('sleeper7')",
      ":tasks",
      ":time aio.sleep(0.1)",
      ":cancel " .. "bogus",
      ":help",
      "t:cancel()",
    }, "\n") .. "\n"
    local got, gerr = piped(AIOSHELL, input)
    assert.truthy(got:find("\nID +NAME +STATE +AGE +WAITING ON +SPAWNED AT\n", 1), got)
    assert.truthy(got:find("\n%d+%s+sleeper7%s+sleeping%s+%d+ms%s+sleep %(%d+%.%d s left%)%s+stdin:1\n"), got)
    assert.is_nil(got:find("repl", 1, true), got)  -- the REPL's own tasks are not listed
    assert.truthy(got:find("wall 0%.1%d%d s, cpu %d+%.%d+ s"), got)
    assert.truthy(gerr:find("no live task with id bogus", 1, true), gerr)
    assert.truthy(got:find(":tasks", 1, true))
  end)

  it(":tasks and aio.dump print one table, without the REPL's own tasks", function()
    local input = table.concat({
      "aio = require 'aio'",
      "t = aio.spawn(function() aio.sleep(30) end) t:set_name('bg7')",
      ":tasks",
      "n = aio.dump()",
      "#aio.tasks()",
      "t:cancel()",
    }, "\n") .. "\n"
    local got = piped(AIOSHELL, input)
    local tasks, dump = got:match("> :tasks\n(.-)> n = aio%.dump%(%)\n(.-)> #aio")
    assert.truthy(tasks and dump, got)
    local function without_age(s) return (s:gsub("%d+m?s ", "AGE ")) end
    assert.equal(without_age(tasks), without_age(dump))
    assert.matches("^ID +NAME +STATE +AGE +WAITING ON +SPAWNED AT\n%d+ +bg7 +sleeping", dump)
    assert.is_nil(dump:find("repl", 1, true), dump)   -- the prompt's task and the line's are not listed
    assert.truthy(got:find("> #aio.tasks()\n1\n", 1, true), got)
  end)

  it("says a command's usage when its argument is missing", function()
    local _, gerr = piped(AIOSHELL, ":cancel\n:where  \n:time\n")
    assert.equal("usage: :cancel ID\nusage: :where ID\nusage: :time <expr>\n", gerr)  -- was "no live task with id "
  end)

  it("runs after a script with -i, the script's tasks still running", function()
    local script = temp_script("aio = require 'aio'\n",
      "aio.spawn(function() aio.sleep(0.1) print('from the script task') end)\n")
    local got, gerr, code = piped(AIOSHELL, "aio.sleep(0.3)\n'after'\n", "-i " .. script)
    os.remove(script)
    assert.are.equal("", gerr)
    assert.are.equal(0, code)
    assert.truthy(got:find("> aio.sleep(0.3)\nfrom the script task\n> 'after'\nafter\n", 1, true), got)
  end)

  -- Without line editing the console is not active: workers write their own output, as before.
  it("leaves process workers' output to the workers when input is piped", function()
    local script = temp_script("process = require 'aio.process'; pool = process.pool(1)\n",
      "pool:submit(function() print('from the script job') end):await()\n")
    local got, gerr, code = piped(AIOSHELL,
      "pool:submit(function() print('job print') io.stderr:write('job stderr\\n') return 7 end):await()\n"
      .. "process.fork(function() print('child print') end):join()\n'after'\n", "-i " .. script)
    os.remove(script)
    assert.are.equal("job stderr\n", gerr)
    assert.are.equal(0, code)
    assert.truthy(got:find("from the script job\n", 1, true), got)
    assert.truthy(got:find(":await()\njob print\n7\n> process.fork(function() print('child print') "
      .. "end):join()\nchild print\n> 'after'\nafter\n", 1, true), got)
  end)

  it(":tasks also lists jobs of loaded pool modules that export jobs()", function()
    local input = "package.loaded['aio.process'] = { jobs = function() return { { id = 'p9', "
      .. "name = 'squares', state = 'running', age = 2, waiting_on = '', site = 'x.lua:3' }, "
      .. "{ id = 'P1234567', name = 'cubes', state = 'pending', age = 1 } } end }\n"
      .. ":tasks\n"
    local got = piped(AIOSHELL, input)
    assert.truthy(got:find("p9%s+squares%s+running%s+2%.0s%s+x%.lua:3"), got)
    assert.truthy(got:find("\nP1234567  cubes%s+pending"), got)  -- a long id is not cut
  end)

  it("cancels tasks still running at end of input after a grace period", function()
    local input = "aio = require 'aio'\n"
      .. "t = aio.spawn(function() aio.sleep(60) end) t:set_name('forever')\n"
    local t0 = tmux.clock()
    local _, gerr, code = piped(AIOSHELL, input)
    assert.truthy(tmux.clock() - t0 < 10)
    assert.truthy(gerr:find("1 task(s) still running", 1, true), gerr)
    assert.truthy(gerr:find("forever", 1, true), gerr)
    assert.are.equal(0, code)
  end)

  -- A pool job still running at the end of the session used to be cut off without a word (the
  -- loop still had work, so the session ended the program at once), its output with it.
  it("gives pool jobs still running at end of input the tasks' grace, and says so", function()
    local input = "thread = require 'aio.thread'; p = thread.pool{size = 1, name = 'printer'}\n"
      .. "f = p:submit(function() local t = require 'aio.thread' "
      .. "for i = 1, 10 do t.sleep(0.03) print('job line', i) end end)\n"
      .. "aio = require 'aio'; t = aio.spawn(function() aio.sleep(0.1) end) t:set_name('short')\n"
    local out, gerr, code = piped(AIOSHELL, input)
    assert.truthy(gerr:find("1 task%(s%) and 1 pool job%(s%) still running %(#%d+ short, T%d+ printer%)"), gerr)
    for i = 1, 10 do assert.truthy(out:find("job line\t" .. i .. "\n", 1, true), out) end
    assert.are.equal(0, code)
  end)

  it("reports a task that fails during the exit grace (waiting for it is not observing it)", function()
    local input = "aio = require 'aio'\n"
      .. "t = aio.spawn(function() aio.sleep(0.2) error('late failure') end) t:set_name('late')\n"
    local _, gerr, code = piped(AIOSHELL, input)
    assert.truthy(gerr:find("1 task(s) still running", 1, true), gerr)
    assert.truthy(gerr:find("task late failed and nobody observed its error", 1, true), gerr)
    assert.truthy(gerr:find("late failure", 1, true), gerr)
    assert.are.equal(0, code)  -- reported, as before a prompt: lua5.4 -i ends with 0
  end)
end)

describe("on a terminal", function()
  local hist, s
  before_each(function() hist = temp_history() end)
  after_each(function()
    tmux.kill_all()
    s = nil
    os.remove(hist)
  end)

  it("keeps the half-typed line intact while a background task prints", function()
    s = session(hist)
    s:line("aio = require 'aio'; n = 0")
    s:line("ticker = aio.every(0.05, function() n = n + 1 print('tick ' .. n) end)")
    s:type('half = "typed but not sent')
    s:wait_for("tick 8", 5)
    local last = s:last_line()
    assert.are.equal('> half = "typed but not sent', last)
    -- the ticks are above the prompt, each on its own line
    local screen = s:screen()
    assert.truthy(screen:find("\ntick 7\n", 1, true), screen)
    s:line('"')
    s:line("ticker:cancel(); return half")
    s:wait_for("\ntyped but not sent\n", 5)
  end)

  -- Types half a line while a job of pool p (made by `setup`) prints four times with print,
  -- io.write and io.stderr:write, `sleep` apart; the text must be above the line, intact.
  local function pool_job_above_line(setup, sleep)
    s = session(hist)
    s:line(setup)
    s:line("f = p:submit(function() for i = 1, 4 do " .. sleep .. "(0.15) print('job print', i) "
      .. "io.write('job write ', i, '\\n') io.stderr:write('job stderr ', i, '\\n') end end)")
    s:type('half = "typed while a worker prints')
    s:wait_for("job stderr 4", 5)
    assert.are.equal('> half = "typed while a worker prints', s:last_line())  -- it was cut by the job's text
    local screen = s:screen()
    for i = 1, 4 do
      for _, what in ipairs { "job print\t" .. i, "job write " .. i, "job stderr " .. i } do
        assert.truthy(screen:find("\n" .. what:gsub("\t", "%%s+") .. "\n"), screen)
      end
    end
    s:line('"')
    s:line("return half")
    s:wait_for("\ntyped while a worker prints\n", 5)
  end

  it("puts a thread-pool job's print, io.write and stderr output above the half-typed line", function()
    pool_job_above_line("thread = require 'aio.thread'; p = thread.pool(1)", "require('aio.thread').sleep")
  end)

  it("puts a process-pool job's print, io.write and stderr output above the half-typed line", function()
    pool_job_above_line("process = require 'aio.process'; p = process.pool(1)", "require('aio').sleep")
  end)

  -- Forked before the REPL started (by the -i script), a process.fork child, and a worker of a
  -- pool made inside a pool worker's job: all of them print above the line.
  it("puts output of a pool made by the -i script, a process.fork child and a nested pool above the line", function()
    local script = temp_script("process = require 'aio.process'; early = process.pool(1)\n")
    finally(function() os.remove(script) end)
    s = session(hist, q(script))
    s:line("h = process.fork(function() for i = 1, 3 do aio.sleep(0.15) print('child print', i) "
      .. "io.stderr:write('child stderr ', i, '\\n') end end)")
    s:line("f = early:submit(function() local aio, process = require 'aio', require 'aio.process' "
      .. "aio.sleep(0.1) print('early pool') local inner = process.pool(1) inner:submit(function() "
      .. "for i = 1, 3 do require('aio').sleep(0.12) print('nested', i) end end):await() inner:close() end)")
    s:type('half = "typed while children print')
    s:wait_for("nested%s+3\n", 5)
    s:wait_for("child stderr 3\n", 5)
    assert.are.equal('> half = "typed while children print', s:last_line())
    local screen = s:screen()
    assert.truthy(screen:find("\nearly pool\n"), screen)
    for i = 1, 3 do
      for _, what in ipairs { "child print\t" .. i, "child stderr " .. i, "nested\t" .. i } do
        assert.truthy(screen:find("\n" .. what:gsub("\t", "%%s+") .. "\n"), screen)
      end
    end
    s:line('"')
  end)

  -- The REPL wraps os.exit to close itself first; a forked child inherits the wrapper. It used
  -- to close the parent's REPL in the child: libuv aborted on the editing handles the child's
  -- loop no longer has, and (without that) it would have said for every process of the tree
  -- that the console had gone, so workers wrote into the edited line again.
  it("lets a process.fork child call os.exit without closing the REPL for the others", function()
    s = session(hist)
    s:line("process = require 'aio.process'; p = process.pool(1)")
    s:line("h = process.fork(function() os.exit(5) end); h:join(); print('exit' .. 'code', h.exitcode)")
    s:wait_for("exitcode%s+%-?%d+\n", 5)
    assert.truthy(s:screen():find("exitcode%s+5\n"), s:screen())
    assert.falsy(s:screen():find("Assertion", 1, true), s:screen())
    s:line("f = p:submit(function() require('aio').sleep(0.2) print('after the exit') end)")
    s:type('half = "typed after the exit')
    s:wait_for("\nafter the exit\n", 5)
    assert.are.equal('> half = "typed after the exit', s:last_line())
    s:keys("C-u")
  end)

  -- Starts a session whose terminal output is also copied to a temporary file; returns its path.
  local function logged_session()
    local log = os.tmpname()
    finally(function() os.remove(log) end)
    s = session(hist)
    s:pipe_to(log)
    return log
  end

  -- Checks that the file at path holds the lines N1 .. N<count>, in order; returns its text.
  local function assert_numbered_lines(path, count)
    local f = assert(io.open(path, "rb"))
    local text = f:read("a")
    f:close()
    local want = 1
    for n in text:gmatch("N(%d+)\r*\n") do
      assert.are.equal(want, tonumber(n), "out of order near N" .. want)
      want = want + 1
    end
    assert.are.equal(count + 1, want)
    return text
  end

  -- Its output travels on the worker's stream: the parent drains it as it comes (no deadlock
  -- however much is printed) and reads what was sent before the worker died.
  it("prints all of a process-pool worker's output in order, also when it prints a lot and dies", function()
    local log = logged_session()
    s:line("process = require 'aio.process'; p = process.pool(1)")
    s:line("f = p:submit(function() for i = 1, 3000 do io.write('N', i, '\\n') end io.stdout:write('the', ' end') os.exit(3) end)")
    s:line("ok, e = pcall(f.await, f); print('job' .. ' done:', e)")
    s:wait_for("job done:%s+process pool worker", 20)
    local text = assert_numbered_lines(log, 3000)
    assert.truthy(text:find("N3000\r*\n.*the end"), text:sub(-300))  -- (prompt redraws between)
    assert.truthy(s:screen():find("died while running this job: exit status 3"), s:screen())
  end)

  -- A worker's text queued while a prompt was shown used to wait for the loop's next turn after
  -- the line was entered, and what the worker wrote at once in between came out first.
  it("keeps a worker's output in order when lines are entered while it prints", function()
    local log = logged_session()
    s:line("thread = require 'aio.thread'; p = thread.pool(1)")
    s:line("f = p:submit(function() for i = 1, 20000 do io.write('N', i, '\\n') end end)")
    for _ = 1, 100 do s:line("for j = 1, 2e5 do end") end
    s:line("f:await(); print('job' .. ' done')")
    s:wait_for("\njob done\n", 20)
    assert_numbered_lines(log, 20000)
  end)

  it("clears every row of a wrapped line of wide characters before printing above it", function()
    s = tmux.start(("AIOSHELL_HISTORY=%s %s -i"):format(q(hist), q(AIOSHELL)), { width = 40 })
    s:wait_for("\n>$", 5, "the first prompt")
    s:line("aio = require 'aio'; n = 0")
    s:line("h = aio.every(0.1, function() n = n + 1 print('tick ' .. n) end)")
    s:type(("日"):rep(30))   -- 60 columns: the line takes two rows of 40
    s:wait_for("tick 4\n", 5)
    tmux.sleep(0.15)
    -- one copy of the line's first row: stale rows would repeat it above each tick
    assert.are.equal(1, s:count("> " .. ("日"):rep(19)), s:screen())
    s:keys("C-u")
    s:line("h:cancel()")
  end)

  it("survives a pasted line of 10000 characters (cut in pieces, as lua.c cuts long input)", function()
    s = session(hist)
    s:line("s = 0")
    local paste = os.tmpname()
    local f = assert(io.open(paste, "w"))
    f:write(("s = s + 1 "):rep(1000), "\n", "s * 2\n")
    f:close()
    os.execute(("tmux -L %s load-buffer %s && tmux -L %s paste-buffer -t 0"):format(
      s.sock, q(paste), s.sock))
    os.remove(paste)
    s:wait_for("\n2000\n>$", 20, "the sum after the paste")
  end)

  it("shows a background task's unobserved failure above the prompt while it waits", function()
    s = session(hist)
    s:line("aio = require 'aio'")
    s:line("t = aio.spawn(function() aio.sleep(0.3) error('failed while you typed') end)")
    s:type("half a line")
    s:wait_for("nobody observed its error", 5, "the report, without pressing Enter")
    assert.truthy(s:screen():find("\n[^\n]*:%d+: failed while you typed\n"), s:screen())
    assert.are.equal("> half a line", s:last_line())
    s:keys("C-u")
    s:line("return t:done()")
    s:wait_for("\ntrue\n", 5)
  end)

  it("puts io.write and stderr output of background tasks above the edited line", function()
    s = session(hist)
    s:line("aio = require 'aio'")
    s:line("h = aio.every(0.05, function() io.write('partial') io.stderr:write('to stderr\\n') end)")
    s:type("still here")
    s:wait_for("partial\nto stderr\npartial\nto stderr\npartial", 5)
    assert.are.equal("> still here", s:last_line())
    s:keys("C-u")
    s:line("h:cancel()")
  end)

  it("opens with the banner when started with no arguments on a terminal", function()
    s = tmux.start(("AIOSHELL_HISTORY=%s %s"):format(q(hist), q(AIOSHELL)))
    s:wait_for("^Lua 5%.4[^\n]*\n>$", 5, "banner and prompt")
    s:line("_VERSION")
    s:wait_for("\nLua 5%.4\n>$", 5)
  end)

  it("awaits at the prompt: aio.sleep then an expression", function()
    s = session(hist)
    s:line("aio = require 'aio'")
    s:line("aio.sleep(0.2)")
    s:line("40 + 2")
    s:wait_for("\n42\n>$", 5)
  end)

  it("Ctrl-C cancels a sleeping line quickly and the next prompt works", function()
    s = session(hist)
    s:line("aio = require 'aio'")
    s:line("bg = aio.spawn(function() aio.sleep(60) end)")
    s:line("aio.sleep(60)")
    tmux.sleep(0.3)
    s:keys("C-c")
    -- the 60 s line ends at once (3 s is only the bound that keeps a loaded machine green)
    s:wait_for("cancel[^\n]*\n>$", 3, "a cancellation line and a prompt")
    s:line("bg:done(), 6 * 7")
    s:wait_for("\nfalse%s+42\n>$", 5)
  end)

  it("Ctrl-C stops a line busy in Lua code", function()
    s = session(hist)
    s:line("while true do end")
    tmux.sleep(0.3)
    s:keys("C-c")
    s:wait_for("interrupted!\n>$", 3)
    s:line("1 + 1")
    s:wait_for("\n2\n>$", 5)
  end)

  it("a second Ctrl-C ends the shell when a busy background task holds the loop", function()
    s = session(hist)
    s:line("aio = require 'aio'")
    s:line("aio.spawn(function() while true do end end)")
    tmux.sleep(0.3)
    s:keys("C-c")
    tmux.sleep(1.3)
    s:keys("C-c")
    s:wait_for("event loop is stuck in Lua code; exiting\n%[exited 130%]", 5)
  end)

  it("Ctrl-C at an idle prompt clears the line, also in a continued chunk", function()
    s = session(hist)
    s:type("abandoned text")
    tmux.sleep(0.2)
    s:keys("C-c")
    s:wait_for("\n>$", 3)
    s:line("function h()")
    s:wait_for(">>$", 3)
    s:keys("C-c")
    s:wait_for("\n>$", 3)
    s:line("3 * 3")
    s:wait_for("\n9\n>$", 5)
  end)

  it("completes globals, module fields and methods with Tab", function()
    s = session(hist)
    s:line("aio = require 'aio'")
    s:line("tsk = aio.spawn(function() end)")
    s:type("aio.slee")
    s:keys("Tab")
    s:wait_for("> aio%.sleep$", 3)
    s:keys("C-c")
    s:type("tsk:awa")
    s:keys("Tab")
    s:wait_for("> tsk:await$", 3)
    s:keys("C-c")
    s:type("string.for")
    s:keys("Tab")
    s:wait_for("> string%.format$", 3)
  end)

  it("keeps history across two sessions", function()
    s = session(hist)
    s:line("marker_from_first = 4321")
    tmux.sleep(0.1)
    s:keys("C-d")
    s:wait_for("%[exited 0%]", 5)
    s:kill()
    s = session(hist)
    s:keys("Up")
    s:wait_for("> marker_from_first = 4321$", 3)
    s:keys("Enter")
    s:line("marker_from_first + 1")
    s:wait_for("\n4322\n>$", 5)
  end)

  it(":tasks lists a named background task; :where and :cancel work on it", function()
    s = session(hist)
    s:line("aio = require 'aio'")
    s:line("w = aio.spawn(function() aio.sleep(60) end); w:set_name('worker42'); return w.id")
    local screen = s:wait_for("\n(%d+)\n>$", 5)
    local id = screen:match("\n(%d+)\n>$")
    s:line(":tasks")
    s:wait_for("\n" .. id .. "%s+worker42%s+sleeping", 3)
    s:line(":where " .. id)
    s:wait_for("stack traceback:\n%s+%[C%]: in function 'aio[%w.]*sleep'\n%s+stdin:1: in function <stdin:1>\n>$", 3)
    s:line(":cancel " .. id)
    s:line("w:cancelled()")
    s:wait_for("\ntrue\n>$", 5)
  end)

  it("edits UTF-8 text (LC_CTYPE from the environment while the REPL runs)", function()
    s = session(hist)
    s:type("u = 'hé'")
    s:keys("Left", "Left")
    s:type("é")
    s:keys("Enter")
    s:line("u, #u")
    s:wait_for("\nhéé\t?%s*5\n>$", 5)
  end)

  it("continues multi-line function definitions with the >> prompt", function()
    s = session(hist)
    s:line("function sq(x)")
    s:wait_for("\n>>$", 3)
    s:line("  return x * x")
    s:line("end")
    s:line("sq(12)")
    s:wait_for("\n144\n>$", 5)
    assert.truthy(s:screen():find(">>   return x * x", 1, true))
  end)

  it("Ctrl-D reports running tasks, cancels them and exits", function()
    s = session(hist)
    s:line("aio = require 'aio'")
    s:line("z = aio.spawn(function() aio.sleep(60) end); z:set_name('sleepy')")
    s:wait_for("\n>$", 3)
    s:keys("C-d")
    s:wait_for("1 task%(s%) still running %(#%d+ sleepy%)", 3)
    s:wait_for("%[exited 0%]", 5)
  end)
end)
