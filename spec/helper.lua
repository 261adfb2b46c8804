-- spec/helper.lua — helpers shared by the busted specs.
--
--   local helper = require "spec.helper"
--   local out, err, status = helper.run({"-e", "print(1)"})           -- a child aioshell
--   local out, err, status = helper.run_lua("print(1)", {args = {"x"}})  -- a script file
--   it("...", helper.async(function() aio.sleep(0.01) end))          -- a test body as a task
--
-- Specs run from the repository root (busted's default), under the interpreter being tested:
-- `busted --lua=build/aioshell spec/foo_spec.lua`.
local helper = {}

-- Directory of this file's repository (the parent of spec/), absolute when busted gives it so.
local here = debug.getinfo(1, "S").source:match("^@(.*)/spec/helper%.lua$") or "."
if here:sub(1, 1) ~= "/" then
  local p = io.popen("pwd")
  local cwd = p:read("l")
  p:close()
  here = here == "." and cwd or (cwd .. "/" .. here:gsub("^%./", ""))
end
helper.root = here

-- The aioshell under test: $AIOSHELL, else build/aioshell of this repository.
helper.aioshell = os.getenv("AIOSHELL") or (helper.root .. "/build/aioshell")
if helper.aioshell:find("/") and helper.aioshell:sub(1, 1) ~= "/" then
  helper.aioshell = helper.root .. "/" .. helper.aioshell:gsub("^%./", "")
end
-- The reference interpreter for conformance tests.
helper.lua54 = os.getenv("LUA54") or "lua5.4"

-- Quotes s for /bin/sh.
function helper.quote(s)
  s = tostring(s)
  if s:match("^[%w%-%./_=:,+@]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Reads a whole file (nil if it cannot be opened).
function helper.readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- The Markdown pages: README.md, docs/*.md and bench/*/README.md, as {path = text} (paths
-- relative to the root).
function helper.doc_pages()
  local out = {}
  local p = io.popen("cd " .. helper.quote(helper.root) .. " && ls README.md docs/*.md bench/*/README.md")
  for path in p:lines() do out[path] = helper.readfile(helper.root .. "/" .. path) end
  p:close()
  return out
end

-- Writes content to a new temporary file and returns its path (removed by helper.cleanup()).
local temps = {}
function helper.tmpfile(content, suffix)
  local path = os.tmpname()
  if suffix then
    os.remove(path)
    path = path .. suffix
  end
  local f = assert(io.open(path, "wb"))
  f:write(content or "")
  f:close()
  temps[#temps + 1] = path
  return path
end

-- A new empty temporary directory (removed by helper.cleanup()).
function helper.tmpdir()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkdir -p " .. helper.quote(path)))
  temps[#temps + 1] = path
  return path
end

-- Removes the temporary files and directories made so far.
function helper.cleanup()
  for i = #temps, 1, -1 do
    os.execute("rm -rf " .. helper.quote(temps[i]))
    temps[i] = nil
  end
end

-- Starts a program and returns at once; the handle's :wait() waits for it and returns stdout,
-- stderr, exit status (128 + n when killed by signal n). argv is a list: {program, arg1, ...}.
-- opts:
--   stdin   = string fed to its standard input (default: empty, from /dev/null)
--   env     = {NAME = value | false} set (or unset, with false) for the child; LUA_INIT and
--             LUA_INIT_5_4 are unset unless given here
--   argv0   = the name the program sees as argv[0] (bash's exec -a)
--   timeout = seconds before the child is killed (default 30); a timeout gives status 124
--   cwd     = directory to run in
-- Several handles may be running at once (run them all, then wait for each): a child blocks
-- only once its output fills the pipe, until its :wait().
function helper.spawn(argv, opts)
  opts = opts or {}
  local env, sets = {"env", "-u", "LUA_INIT", "-u", "LUA_INIT_5_4"}, {}
  for k, v in pairs(opts.env or {}) do -- env wants every -u before the first NAME=value
    if v == false then
      env[#env + 1] = "-u " .. helper.quote(k)
    else
      sets[#sets + 1] = helper.quote(k .. "=" .. tostring(v))
    end
  end
  table.move(sets, 1, #sets, #env + 1, env)
  local words = {}
  for i, a in ipairs(argv) do words[i] = helper.quote(a) end
  local cmd = table.concat(words, " ")
  if opts.argv0 then
    cmd = "bash -c 'exec -a \"$0\" \"$@\"' " .. helper.quote(opts.argv0) .. " " .. cmd
  end
  local errfile = os.tmpname()
  local infile = "/dev/null"
  if opts.stdin then infile = helper.tmpfile(opts.stdin) end
  local full = string.format("%s%s timeout -k 2 %s %s < %s 2> %s",
    opts.cwd and ("cd " .. helper.quote(opts.cwd) .. " && ") or "",
    table.concat(env, " "), tostring(opts.timeout or 30), cmd, helper.quote(infile),
    helper.quote(errfile))
  local p = assert(io.popen(full, "r"))
  local handle = {}
  function handle:wait()
    local out = p:read("a")
    local _, how, code = p:close()
    local err = helper.readfile(errfile) or ""
    os.remove(errfile)
    if how == "signal" then code = 128 + code end
    return out, err, code
  end
  return handle
end

-- Runs a program and waits for it: helper.spawn(argv, opts):wait().
function helper.exec(argv, opts)
  return helper.spawn(argv, opts):wait()
end

-- Runs aioshell with the argument list args (see helper.exec for opts).
function helper.run(args, opts)
  local argv = {helper.aioshell}
  for i, a in ipairs(args or {}) do argv[i + 1] = a end
  return helper.exec(argv, opts)
end

-- Runs lua5.4 with the argument list args (see helper.exec for opts).
function helper.run54(args, opts)
  local argv = {helper.lua54}
  for i, a in ipairs(args or {}) do argv[i + 1] = a end
  return helper.exec(argv, opts)
end

-- Writes code to a temporary script and runs it with aioshell: opts.args are the script's
-- arguments, opts.flags the interpreter options before it; other opts as helper.exec.
function helper.run_lua(code, opts)
  opts = opts or {}
  local args = {}
  for _, a in ipairs(opts.flags or {}) do args[#args + 1] = a end
  args[#args + 1] = helper.tmpfile(code, ".lua")
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  return helper.run(args, opts)
end

-- Wraps a test body so it runs as an aio task with the loop running until it ends; errors
-- come out with the failing task's own traceback. Usage: it("x", helper.async(function() end)).
function helper.async(fn)
  return function(...)
    local aio = require "aio"
    return aio.run(fn, ...)
  end
end

-- Fails if aio tasks are still alive (use in after_each to catch leaks between tests).
function helper.assert_no_tasks()
  local aio = package.loaded["aio"]
  if not aio or not aio.tasks then return end
  local live = aio.tasks()
  if #live > 0 then
    local names = {}
    for i, t in ipairs(live) do names[i] = tostring(t.name or t.id or t) end
    error(("%d task(s) left running: %s"):format(#live, table.concat(names, ", ")), 2)
  end
end

-- Calls fn until it returns a true value or `seconds` pass (polling every 10 ms with the
-- shell's sleep); returns fn's last value. For waiting on child processes from a spec.
function helper.wait_until(fn, seconds)
  local deadline = os.time() + (seconds or 10)
  local v = fn()
  while not v and os.time() <= deadline do
    os.execute("sleep 0.01")
    v = fn()
  end
  return v
end

return helper
