-- tests/repl/tmux.lua: drives a program on a real pseudo-terminal with tmux (for the REPL specs).
--
-- Each session gets its own tmux server (a unique -L socket), so parallel runs never meet, and
-- kill() ends exactly that server. The program runs under `sh -c` followed by a marker line
-- "[exited N]" so tests can see it end and its status.
local M = {}
M.__index = M

-- Runs a shell command, returns its stdout.
local function sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local s = p:read("a")
  p:close()
  return s
end

-- Quotes s for sh.
local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = q

-- Sleeps for a fraction of a second (a child process: works under any interpreter).
function M.sleep(s)
  os.execute("sleep " .. string.format("%.3f", s))
end

-- A monotonic-enough clock in seconds (wall time from date, good to the millisecond).
function M.clock()
  return tonumber(sh("date +%s.%N")) or os.time()
end

-- The interpreter running these specs when it is aioshell, else $AIOSHELL or build/aioshell.
function M.aioshell()
  local env = os.getenv("AIOSHELL")
  if env and env ~= "" then return env end
  local exe = sh("readlink -f /proc/$PPID/exe"):gsub("%s+$", "")
  if exe:match("aioshell$") then return exe end
  return "build/aioshell"
end

local counter = 0
local live = {}   -- sessions started and not yet killed (kill_all ends them)

-- Starts cmd (a shell command line) in a new detached session of w x h cells.
function M.start(cmd, opts)
  opts = opts or {}
  counter = counter + 1
  local tmp = os.tmpname()
  os.remove(tmp)
  local sock = ("aiorepl-%s-%d"):format(tmp:match("[^/]+$"), counter)
  local self = setmetatable({ sock = sock }, M)
  live[self] = true
  -- the trap keeps sh alive when Ctrl-C ends the program (a handler, unlike '', is not inherited)
  local full = "trap : INT; " .. cmd .. '; echo "[exited $?]"; sleep 60'
  local env = "env TERM=xterm LANG=C.UTF-8 "
  os.execute(("tmux -L %s -f /dev/null new-session -d -x %d -y %d %s"):format(
    sock, opts.width or 120, opts.height or 30, q(env .. "sh -c " .. q(full))))
  return self
end

-- Sends literal text (no key names interpreted).
function M:type(text)
  os.execute(("tmux -L %s send-keys -t 0 -l %s"):format(self.sock, q(text)))
end

-- Sends key names: "Enter", "C-c", "C-d", "Tab", "Up", ...
function M:keys(...)
  local ks = {}
  for i = 1, select("#", ...) do ks[i] = q((select(i, ...))) end
  os.execute(("tmux -L %s send-keys -t 0 %s"):format(self.sock, table.concat(ks, " ")))
end

-- Types a line and presses Enter.
function M:line(text)
  self:type(text)
  self:keys("Enter")
end

-- Copies everything the program writes to the pane from now on to the file path (what scrolls
-- off the screen too).
function M:pipe_to(path)
  os.execute(("tmux -L %s pipe-pane -t 0 %s"):format(self.sock, q("cat >> " .. q(path))))
end

-- The screen as text (trailing blank lines removed).
function M:screen()
  return (sh(("tmux -L %s capture-pane -p -t 0"):format(self.sock)):gsub("\n+$", ""))
end

-- The screen's lines as a list.
function M:lines()
  local t = {}
  for l in (self:screen() .. "\n"):gmatch("(.-)\n") do t[#t + 1] = l end
  return t
end

-- The last non-empty line of the screen.
function M:last_line()
  local ls = self:lines()
  for i = #ls, 1, -1 do
    if ls[i]:match("%S") then return ls[i] end
  end
  return ""
end

-- Waits until pred(screen) is true (pred may be a Lua pattern); returns the screen, or
-- raises with the screen after timeout seconds.
function M:wait_for(pred, timeout, what)
  local test = pred
  if type(pred) == "string" then
    test = function(s) return s:find(pred) ~= nil end
  end
  local deadline = M.clock() + (timeout or 5)
  local s
  repeat
    s = self:screen()
    if test(s) then return s end
    M.sleep(0.05)
  until M.clock() > deadline
  error(("timed out waiting for %s; screen:\n%s"):format(what or tostring(pred), s), 2)
end

-- Counts the occurrences of a plain string on the screen.
function M:count(plain)
  local n, init, s = 0, 1, self:screen()
  while true do
    local a, b = s:find(plain, init, true)
    if not a then return n end
    n, init = n + 1, b + 1
  end
end

-- Ends this session's tmux server (and the program in it).
function M:kill()
  live[self] = nil
  os.execute(("tmux -L %s kill-server 2>/dev/null"):format(self.sock))
  os.remove(("/tmp/tmux-%s/%s"):format(sh("id -u"):gsub("%s+", ""), self.sock))
end

-- Ends every session this module started that is still alive (for after_each: a test that
-- failed while starting its session never got a handle to kill).
function M.kill_all()
  for s in pairs(live) do s:kill() end
end

return M
