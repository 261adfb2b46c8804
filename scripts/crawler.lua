-- scripts/crawler.lua — the crawler experiments of notebooks 1 and 2, every strategy in one run.
--
--   aioshell scripts/crawler.lua                      # all modes, in-process delay server
--   aioshell scripts/crawler.lua --url http://127.0.0.1:8082/add   # an external server
--   aioshell scripts/crawler.lua --mode gevent,tornado --n 1000 --delay 100 --concurrency 100
--
-- Every mode fetches n URLs of the form <url>?name=<mode>&delay=<ms>&<10 random letters>, checks
-- that every status is 200 and that the body sizes add up to n (the seed's aiohttp run silently
-- counted HTTP 400s as data), and prints one table row. Each request's start/stop is recorded
-- and drawn as a call graph (one SVG per mode in --svg DIR, a text rendering with --plot).
local aio = require "aio"
local http = require "aio.http"
local plot = require "aio.plot"
local sys = require "aio.sys"

local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."

---------------------------------------------------------------------------------------------
-- Options
---------------------------------------------------------------------------------------------

local MODES = { "serial", "gevent", "tornado", "callback", "aiohttp", "gather" }

local DESCRIPTION = {
  serial = "one request after another (requests.get)",
  gevent = "semaphore(c) + spawn all + as_completed (gevent.iwait), new connection each",
  tornado = "client max_connections=c + as_completed over all futures",
  callback = "tornado callbacks + a counter; no coroutine in user code",
  aiohttp = "one session + semaphore(c) + as_completed",
  gather = "unbounded: one task per URL, gather (max_connections=n)",
}

-- The seeds' published figures (their machines), per notebook: seconds for n requests of
-- 100 ms each at 100 concurrent, by mode (notebook 1's grequests pool is our gevent mode, its
-- tornado callbacks our callback mode: `called` names what the notebook ran where it is not
-- the mode's name). `invalid` marks a figure that measured something else.
local SEED = {
  { n = 500, serial = 55.2, gevent = 4.12, callback = 1.07, aiohttp = 1.78,
    called = { gevent = "grequests", callback = "tornado", aiohttp = "asyncio" } },
  { n = 1000, serial = 101.6, gevent = 1.15, tornado = 1.11, aiohttp = 0.24,
    invalid = { aiohttp = "HTTP 400s" } },
}
local SEED_DELAY, SEED_CONCURRENCY = 100, 100

-- The seed's figure for a mode as text: one notebook's, or every notebook's that has one.
local function seed_text(mode, nb)
  local parts = {}
  for k, seed in ipairs(SEED) do
    if seed[mode] and (not nb or nb == k) then
      local bad = seed.invalid and seed.invalid[mode]
      local called = seed.called and seed.called[mode]
      parts[#parts + 1] = string.format("%g s (nb%d%s, n=%d%s)", seed[mode], k, called and (" " .. called) or "",
        seed.n, bad and (", invalid: " .. bad) or "")
    end
  end
  return #parts > 0 and table.concat(parts, " / ") or "-"
end

-- The physical floor of a mode, in seconds: n requests one after another (serial), one wave
-- (gather, unbounded), or ceil(n / c) waves (the bounded modes), each wave delay_ms long.
local function floor_seconds(mode, n, delay_ms, c)
  if mode == "serial" then return n * delay_ms / 1000 end
  if mode == "gather" then return delay_ms / 1000 end
  return math.ceil(n / c) * delay_ms / 1000
end

local USAGE = require("aio.flags").usage("crawler", "[options]") .. [[
  --url URL          an external metric server's /add URL (default: one started in-process)
  --n N              requests per mode (default 1000)
  --serial-n N       requests for the serial mode (default min(n, 100): it takes n x delay)
  --delay MS         server delay per request in ms]] .. require("aio.flags").UNITS .. [[ (default 100)
  --concurrency C    concurrent requests for bounded modes (default 100)
  --mode LIST        comma-separated modes (default all): ]] .. table.concat(MODES, ",") .. [[

  --svg DIR          write one call-graph SVG per mode into DIR (default: crawler-callgraphs)
  --no-svg           write no SVG
  --plot             print a text call graph per mode
  --metrics FILE     after the run, ask the server to flush its metric_data.json to FILE
                     (in-process server only; default: none)
  --server-on-loop   run the in-process server on the crawler's own loop (default: on an OS
                     thread of its own, as the notebooks' server ran in a process of its own)
  --no-pin           leave the crawler's and the server thread's CPUs to the kernel (default,
                     with 2 CPUs or more: each on a CPU of its own, as bench/http's pinned
                     placement; the kernel tends to run both on one CPU, the other idle)
  --quiet            only the table
  --notebook N       compare with notebook N's figures (1: n=500, 2: n=1000) and print one
                     RESULT line per mode for scripts/notebooks.lua (default: both, no RESULT)
]]

local opts = { n = 1000, delay = 100, concurrency = 100, svg = "crawler-callgraphs" }
local cl = require("aio.flags").new("crawler", USAGE, { ... })
for a, name in cl:each() do
  if name == "--url" then opts.url = cl:value(a, name)
  elseif name == "--n" then opts.n = cl:int(name, cl:value(a, name), 1)
  elseif name == "--serial-n" then opts.serial_n = cl:int(name, cl:value(a, name), 1)
  elseif name == "--delay" then opts.delay = cl:duration(name, cl:value(a, name), "ms", { integer = true })
  elseif name == "--concurrency" then opts.concurrency = cl:int(name, cl:value(a, name), 1)
  elseif name == "--mode" or name == "--modes" then opts.mode = cl:value(a, name)
  elseif name == "--svg" then opts.svg = cl:value(a, name)
  elseif a == "--no-svg" then opts.svg = nil
  elseif a == "--plot" then opts.plot = true
  elseif name == "--metrics" then opts.metrics = cl:value(a, name)
  elseif a == "--server-on-loop" then opts.server_on_loop = true
  elseif a == "--no-pin" then opts.no_pin = true
  elseif a == "--quiet" then opts.quiet = true
  elseif name == "--notebook" then opts.notebook = cl:int(name, cl:value(a, name), 1, #SEED)
  elseif a == "-h" or a == "--help" then io.write(USAGE) return
  else cl:error("unknown argument %s", a) end
end
if opts.url and not opts.url:match("^https?://[^/]") then
  cl:error("--url needs an http:// or https:// URL, not '%s'", opts.url)
end
opts.serial_n = opts.serial_n or math.min(opts.n, 100)

local modes = {}
if opts.mode then
  for m in opts.mode:gmatch("[^,%s]+") do
    if not DESCRIPTION[m] then cl:error("unknown mode %s", m) end
    modes[#modes + 1] = m
  end
  if #modes == 0 then cl:error("--mode needs at least one of %s", table.concat(MODES, ",")) end
else
  modes = MODES
end

-- Outputs are checked before the run, not after it: a directory that cannot be made, a
-- metrics file that cannot be written (exit 1), --metrics without the in-process server (2).
if opts.metrics and opts.url then
  cl:error("--metrics needs the in-process server: an external server (--url) writes its own file")
end
if opts.server_on_loop and opts.url then cl:error("--server-on-loop needs the in-process server") end
if opts.svg then
  local ok, err = sys.mkdir(opts.svg, true)
  if not ok then io.stderr:write("crawler: --svg: ", err, "\n"); os.exit(1) end
end
if opts.metrics then
  local f, err = io.open(opts.metrics, "a")
  if not f then io.stderr:write("crawler: --metrics: ", err, "\n"); os.exit(1) end
  f:close()
end

---------------------------------------------------------------------------------------------
-- The server (in-process unless --url) and the URLs
---------------------------------------------------------------------------------------------

-- The in-process server runs as a job of a one-thread pool: its own OS thread, Lua state and
-- loop, so its work runs on the other core instead of waiting behind the crawler's (on one
-- loop each wave's last response waits for ~100 requests' worth of both sides' work). The job
-- sends its port (or its start-up error) back, then serves until it is cancelled; close()
-- cancels it, and the job closes the server gracefully. Returns an object like a server.
local function start_server_thread(metrics, cpu)
  local thread = require "aio.thread"
  local pool = thread.pool { size = 1, name = "delay-server" }
  local ready = thread.channel()
  local job = pool:submit(function(dir, metrics_file, ready_ch, server_cpu)
    local aio_ = require "aio"
    if server_cpu then require("aio.sys").affinity({ server_cpu }) end  -- this worker thread
    collectgarbage("incremental")  -- the thread's own state: as server.lua runs (see there)
    local ok, s = pcall(function()
      return assert(loadfile(dir .. "/server.lua"))("--module").start { port = 0, metrics = metrics_file }
    end)
    ready_ch:send(ok and s:port() or { error = tostring(s) })
    if not ok then return end
    local _, err = pcall(aio_.sleep, math.huge)  -- serves until cancelled
    s:close()
    if not aio_.is_cancelled(err) then error(err, 0) end
  end, script_dir, metrics, ready, cpu)
  local port = ready:recv()
  if type(port) == "table" then
    pool:close()
    error("crawler: the in-process server did not start: " .. port.error, 0)
  end
  return {
    port = function() return port end,
    close = function()
      job:cancel()
      pcall(job.await, job)
      pool:close()
    end,
  }
end

local server, base
if opts.url then
  base = opts.url
elseif opts.server_on_loop then
  local M = assert(loadfile(script_dir .. "/server.lua"))("--module")
  server = M.start { port = 0, metrics = opts.metrics }
else
  -- Two CPUs of the allowed ones, one for this loop's thread and one for the server's: left to
  -- the kernel, a loopback send's wake-up often pulls the server onto the crawler's CPU while
  -- the other idles (see bench/http/run.lua: the same happens to two processes).
  local cpus = not opts.no_pin and sys.affinity() or {}
  if #cpus >= 2 and sys.affinity({ cpus[1] }) then
    opts.pinned = { cpus[1], cpus[2] }
  end
  server = start_server_thread(opts.metrics, opts.pinned and opts.pinned[2])
end
if server then base = string.format("http://127.0.0.1:%d/add", server:port()) end
local sep = base:find("?", 1, true) and "&" or "?"

---------------------------------------------------------------------------------------------
-- Open descriptors: each connection is a socket, two with the in-process server (its end of
-- the connection too), plus a margin for stdio, the loop, curl and the listening socket. An
-- unbounded run of 1000 needs about 2000, above a shell's usual soft limit of 1024: raise the
-- soft limit (up to the hard one) before running, and fail a mode that still cannot fit.
---------------------------------------------------------------------------------------------

local FD_MARGIN = 64

-- Connections a mode holds open at once, and the descriptors that takes.
local function fds_needed(mode)
  local n = mode == "serial" and opts.serial_n or opts.n
  local conns = mode == "serial" and 1 or mode == "gather" and n or math.min(opts.concurrency, n)
  return conns * (server and 2 or 1) + FD_MARGIN, conns
end

-- The soft nofile limit after raising it for the selected modes (math.huge if unknown).
local fd_limit, fd_hard = sys.rlimit("nofile")
if not fd_limit then fd_limit, fd_hard = math.huge, math.huge end
do
  local need = 0
  for _, m in ipairs(modes) do need = math.max(need, (fds_needed(m))) end
  if need > fd_limit then
    local soft = sys.rlimit("nofile", math.min(need, fd_hard))
    if soft then fd_limit = soft end
  end
end

-- Why a mode cannot run within the descriptor limit, or nil when it can.
local function fd_shortage(mode)
  local need, conns = fds_needed(mode)
  if need <= fd_limit then return nil end
  return string.format("needs about %d open files (%d connections%s + %d), but the limit is %d " ..
    "(hard limit %s): raise it with ulimit -n %d, or lower --n/--concurrency", need, conns,
    server and " x 2 with the in-process server" or "", FD_MARGIN, fd_limit,
    fd_hard == math.huge and "unlimited" or tostring(fd_hard), need)
end

local letters = {}
for c = string.byte("a"), string.byte("z") do letters[#letters + 1] = string.char(c) end

-- 10 distinct random letters, like random.sample(string.ascii_lowercase, 10): breaks caches.
local function sample10()
  local pool = { table.unpack(letters) }
  local out = {}
  for k = 1, 10 do
    local j = math.random(k, #pool)
    pool[k], pool[j] = pool[j], pool[k]
    out[k] = pool[k]
  end
  return table.concat(out)
end

local function generate_urls(name, n)
  local urls = {}
  local prefix = string.format("%s%sname=%s&delay=%d&", base, sep, name, opts.delay)
  for i = 1, n do urls[i] = prefix .. sample10() end
  return urls
end

---------------------------------------------------------------------------------------------
-- Progress bar (stderr, only on a terminal, only for runs that take a while)
---------------------------------------------------------------------------------------------

local isatty = sys.isatty(2)

local PROGRESS_AFTER = 1.0   -- seconds a mode runs before its bar appears

-- A progress bar for one mode: tick() per response, clear() at the end. Drawn on stderr when
-- it is a terminal, and only once the mode has run PROGRESS_AFTER seconds (short modes
-- would only flicker).
local function progress(label, total)
  if not isatty or opts.quiet then return function() end, function() end end
  local done, last, shown, t0 = 0, -1, false, sys.clock()
  local function draw()
    local width = 30
    local filled = math.floor(width * done / total)
    io.stderr:write(string.format("\r  %-8s [%s%s] %d/%d", label, string.rep("#", filled),
      string.rep(".", width - filled), done, total))
    shown = true
  end
  return function()
    done = done + 1
    local pct = math.floor(100 * done / total)
    if pct ~= last and (shown or sys.clock() - t0 >= PROGRESS_AFTER) then last = pct; draw() end
  end, function()
    if shown then io.stderr:write("\r" .. string.rep(" ", 60) .. "\r") end
  end
end

---------------------------------------------------------------------------------------------
-- The strategies. Each gets (urls, record) and returns the summed body size; record(res) is
-- called once per response (it checks the status and keeps the request's span).
---------------------------------------------------------------------------------------------

local strategies = {}

-- Records each response as its task or future completes (as_completed, in the notebooks'
-- order of arrival), then closes client; returns the summed body size.
local function record_as_completed(client, futures, record)
  local size = 0
  for f in aio.as_completed(futures) do
    local res = f:result()
    record(res)
    size = size + #res.body
  end
  client:close()
  return size
end

-- requests.get in a loop: the main chunk awaits each request in turn (top-level await).
function strategies.serial(urls, record)
  local client = http.client { max_connections = 1 }
  local size = 0
  for _, url in ipairs(urls) do
    local res = client:get(url)
    record(res)
    size = size + #res.body
  end
  client:close()
  return size
end

-- A task per URL, at most c of them in a request at once (a semaphore), the responses
-- recorded as they complete: gevent's and aiohttp's shape. request_opts go to client:get.
local function spawn_limited(client, urls, record, c, request_opts)
  local sem = aio.semaphore(c)
  local function download(url)
    local _ <close> = sem:acquire()
    return client:get(url, request_opts)
  end
  local tasks = {}
  for i, url in ipairs(urls) do tasks[i] = aio.spawn(download, url) end
  return record_as_completed(client, tasks, record)
end

-- gevent: Semaphore(c), gevent.spawn for every URL, gevent.iwait; urllib opens a new
-- connection per request (closing(urlopen(url))), so we send Connection: close as it does.
function strategies.gevent(urls, record, c)
  return spawn_limited(http.client { max_connections = c }, urls, record, c,
    { headers = { Connection = "close" } })
end

-- tornado: CurlAsyncHTTPClient(max_clients=c); fetch() every URL, asyncio.as_completed.
function strategies.tornado(urls, record, c)
  local client = http.client { max_connections = c }
  local futures = {}
  for i, url in ipairs(urls) do futures[i] = client:start { url = url } end
  return record_as_completed(client, futures, record)
end

-- tornado callbacks: fetch(url, callback=...) and a counter; the last callback finishes.
function strategies.callback(urls, record, c)
  local client = http.client { max_connections = c }
  local all_done = aio.future()
  local responses, size, failed = 0, 0, nil
  local function on_fetched(f)
    local ok, res = pcall(f.result, f)
    if ok then
      record(res)
      size = size + #res.body
    else
      failed = failed or res
    end
    responses = responses + 1
    if responses == #urls and not all_done:done() then  -- (done: Ctrl-C abandoned the wait)
      if failed then all_done:set_error(failed) else all_done:set_result(size) end
    end
  end
  for _, url in ipairs(urls) do client:start({ url = url }):add_done_callback(on_fetched) end
  local result = all_done:await()
  client:close()
  return result
end

-- aiohttp: one ClientSession, a Semaphore(c) around each request (async with), asyncio.as_completed.
function strategies.aiohttp(urls, record, c)
  return spawn_limited(http.client { max_connections = c }, urls, record, c)
end

-- Unbounded: a task per URL, all at once, gather. Each task records its response as it
-- completes (so the progress bar moves); the sizes are summed from gather's list.
function strategies.gather(urls, record)
  local client = http.client { max_connections = #urls }
  local function fetch(url)
    local res = client:get(url)
    record(res)
    return res
  end
  local tasks = {}
  for i, url in ipairs(urls) do tasks[i] = aio.spawn(fetch, url) end
  local results = aio.gather(tasks)
  local size = 0
  for _, res in ipairs(results) do size = size + #res.body end
  client:close()
  return size
end

---------------------------------------------------------------------------------------------
-- Running and checking
---------------------------------------------------------------------------------------------

local clock, cputime = sys.clock, sys.process_time

local function run_mode(mode)
  local n = mode == "serial" and opts.serial_n or opts.n
  local urls = generate_urls(mode, n)
  local spans, statuses = {}, {}
  local shortage = fd_shortage(mode)
  if shortage then
    return { mode = mode, n = n, size = 0, spans = {}, statuses = {}, error = shortage, skipped = true }
  end
  local tick, clear = progress(mode, n)
  local t0, l0
  -- The request's own transfer, from the client's start time on the loop clock (res.started)
  -- to its end: not when the consumer got round to the response.
  local function record(res)
    spans[#spans + 1] = { start = res.started - l0, stop = res.started + res.time - l0 }
    statuses[res.status] = (statuses[res.status] or 0) + 1
    tick()
  end
  collectgarbage()
  local c0 = cputime()
  t0, l0 = clock(), aio.now()
  local ok, size = pcall(strategies[mode], urls, record, opts.concurrency)
  -- Ctrl-C stops the run, not only the mode, at once: the server's thread is not closed (its
  -- graceful close, and a job left running at the script's end, would wait a whole delay for
  -- the requests in flight).
  if not ok and tostring(size):match("interrupted!$") then
    io.stderr:write("crawler: interrupted!\n")
    os.exit(1)
  end
  local elapsed = clock() - t0
  local cpu = cputime() - c0
  clear()
  -- One row per request in start order, as the call graphs draw them.
  table.sort(spans, function(a, b) return a.start < b.start end)
  for i, sp in ipairs(spans) do sp.label = tostring(i) end
  local row = { mode = mode, n = n, seconds = elapsed, cpu = cpu, spans = spans, statuses = statuses }
  if not ok then
    row.error = tostring(size)
    row.size = 0
    return row
  end
  row.size = size
  local problems = {}
  for status, count in pairs(statuses) do
    if status ~= 200 then problems[#problems + 1] = string.format("%d x HTTP %d", count, status) end
  end
  if size ~= n then problems[#problems + 1] = string.format("bytes %d ~= %d", size, n) end
  if #spans ~= n then problems[#problems + 1] = string.format("%d responses for %d requests", #spans, n) end
  row.ok = #problems == 0
  if not row.ok then row.error = table.concat(problems, ", ") end
  return row
end

-- One table line: the first column left-aligned, the middle ones right-aligned, the last as it
-- is (padding it would only leave blanks at the end of the line).
local function fmt_row(cols, widths)
  local out = {}
  for i, c in ipairs(cols) do
    local w = widths[i]
    out[i] = i == #cols and c or string.format((i == 1 and "%-" or "%") .. w .. "s", c)
  end
  return table.concat(out, "  ")
end

if not opts.quiet then
  print(string.format("crawler: %d requests x %d ms per mode, concurrency %d, server %s%s",
    opts.n, opts.delay, opts.concurrency, base, server and (opts.server_on_loop and " (in-process, on this loop)"
    or opts.pinned and string.format(" (in-process, on its own thread; crawler on CPU %d, server on CPU %d)",
      opts.pinned[1], opts.pinned[2])
    or " (in-process, on its own thread)") or ""))
end

local rows = {}
for _, mode in ipairs(modes) do
  rows[#rows + 1] = run_mode(mode)
end

-- The yardstick for the speed-ups: the serial mode's measured time per request; without a
-- passing serial run, the nominal delay (said so in the footer); with neither, none.
local per_request, yardstick
for _, r in ipairs(rows) do
  if r.mode == "serial" and r.ok then per_request = r.seconds / r.n end
end
if per_request then
  yardstick = string.format("the serial run's %.1f ms per request", per_request * 1000)
elseif opts.delay > 0 then
  per_request = opts.delay / 1000
  yardstick = string.format("the nominal %d ms per request (no serial run: client and server costs not included)",
    opts.delay)
end

-- The floor of each kind of mode that ran, as phrases: serial n x delay, the bounded modes
-- ceil(n / c) waves, gather one wave.
local function floors(list)
  local bounded, seen = {}, {}
  for _, r in ipairs(list) do
    if r.mode ~= "serial" and r.mode ~= "gather" and not seen[r.mode] then bounded[#bounded + 1] = r.mode end
    seen[r.mode] = true
  end
  local out, said = {}, {}  -- a mode asked for twice (--mode gevent,gevent) is described once
  for _, r in ipairs(list) do
    if not said[r.mode] then
      said[r.mode] = true
      local f = floor_seconds(r.mode, r.n, opts.delay, opts.concurrency)
      if r.mode == "serial" then
        out[#out + 1] = string.format("serial %d x %d ms = %.2f s", r.n, opts.delay, f)
      elseif r.mode == "gather" then
        out[#out + 1] = string.format("gather one wave of %d ms = %.2f s", opts.delay, f)
      elseif r.mode == bounded[1] then
        local waves = math.ceil(r.n / opts.concurrency)
        out[#out + 1] = string.format("%s %d wave%s of %d ms at %d concurrent = %.2f s",
          table.concat(bounded, ","), waves, waves == 1 and "" or "s", opts.delay, opts.concurrency, f)
      end
    end
  end
  return out
end

local header = { "mode", "requests", "bytes", "seconds", "cpu s", "req/s", "speed-up", "check", "seed's figure" }
local widths = { 8, 8, 6, 8, 6, 8, 8, 5, 0 }
local lines = {}
for _, r in ipairs(rows) do
  local label = r.mode == "serial" and r.n < opts.n and string.format("%d*", r.n) or tostring(r.n)
  local ran = r.seconds ~= nil        -- false for a mode refused up front
  lines[#lines + 1] = {
    r.mode, label, tostring(r.size),
    ran and string.format("%.3f", r.seconds) or "-", ran and string.format("%.2f", r.cpu) or "-",
    -- a failed mode's rate and speed-up would be the speed of its failure: none shown
    r.ok and string.format("%.0f", r.n / r.seconds) or "-",
    r.ok and per_request and string.format("%.1fx", per_request * r.n / r.seconds) or "-",
    r.ok and "ok" or "FAIL", seed_text(r.mode, opts.notebook),
  }
end
for _, l in ipairs(lines) do
  for i, c in ipairs(l) do if #c > widths[i] then widths[i] = #c end end
end
for i, c in ipairs(header) do if #c > widths[i] then widths[i] = #c end end
print(fmt_row(header, widths))
local total = 0
for _, w in ipairs(widths) do total = total + w + 2 end
print(string.rep("-", total - 2))
for _, l in ipairs(lines) do print(fmt_row(l, widths)) end
if not opts.quiet then
  for _, r in ipairs(rows) do
    if r.mode == "serial" and r.ok and r.n < opts.n then
      print(string.format("* serial ran %d requests (--serial-n); at that pace %d would take %.1f s.",
        r.n, opts.n, r.seconds / r.n * opts.n))
    end
  end
  print(yardstick and ("speed-up = requests x " .. yardstick .. " / seconds.")
    or "speed-up: none (no serial run to compare with, and no delay).")
  print("floor (the delays alone): " .. table.concat(floors(rows), "; ") .. ".")
end

-- With --notebook N: one RESULT line per mode (aio.experiment's protocol, read by
-- scripts/notebooks.lua) comparing the time with that notebook's figure scaled to this run's
-- floor; reproduced when at most 25 % slower than the scaled figure.
if opts.notebook then
  local experiment = require "aio.experiment"
  local seed = SEED[opts.notebook]
  local e = experiment.new { name = "crawler", args = {} }
  e.full = opts.n == seed.n
  for _, r in ipairs(rows) do
    local fig, bad = seed[r.mode], seed.invalid and seed.invalid[r.mode]
    local ours = floor_seconds(r.mode, r.n, opts.delay, opts.concurrency)
    local expected, reproduced, note
    if not r.ok then
      reproduced, note = false, "FAILED: " .. (r.error or "?")
    elseif not fig then
      note = string.format("notebook %d has no figure for this mode", opts.notebook)
    elseif bad then
      note = "the seed's figure is not comparable (" .. bad .. ")"
    elseif ours == 0 then
      note = "delay 0: no floor to scale the seed's figure to"
    else
      expected = fig * ours / floor_seconds(r.mode, seed.n, SEED_DELAY, SEED_CONCURRENCY)
      reproduced = r.seconds <= expected * 1.25
      note = string.format("the seed's %g s scaled to this run: %.3f s (at most 25 %% slower " ..
        "reproduces it); every status 200", fig, expected)
    end
    e:result { key = r.mode, label = string.format("%s, %d requests", r.mode, r.n), measured = r.seconds,
      unit = "s", reference = seed_text(r.mode, opts.notebook), expected = expected, reproduced = reproduced,
      note = note }
  end
end

local failed = false
for _, r in ipairs(rows) do
  if not r.ok then
    failed = true
    io.stderr:write(string.format("crawler: mode %s FAILED: %s\n", r.mode, r.error or "?"))
  end
end

---------------------------------------------------------------------------------------------
-- Call graphs
---------------------------------------------------------------------------------------------

if opts.svg or opts.plot then
  local written = {}
  for _, r in ipairs(rows) do
    if #r.spans > 0 then
      local title = string.format("%s: %d requests x %d ms (%s) — %.3f s", r.mode, r.n, opts.delay,
        DESCRIPTION[r.mode], r.seconds)
      if opts.svg then
        local path = string.format("%s/%s.svg", opts.svg, r.mode)
        local ok, err = plot.save(path, plot.timeline_svg { title = title, spans = r.spans, unit = "s" })
        if ok then
          written[#written + 1] = path
        else
          failed = true
          io.stderr:write("crawler: cannot write the call graph: ", err, "\n")
        end
      end
      if opts.plot then
        print()
        print(plot.timeline_text { title = title, spans = r.spans, width = 72, max_rows = 12 })
      end
    end
  end
  if #written > 0 and not opts.quiet then
    print("call graphs: " .. table.concat(written, " "))
  end
end

if server then
  if opts.metrics then
    local res = http.get(base .. sep .. "flush=1")
    if res.status ~= 200 then
      failed = true
      io.stderr:write("crawler: the server did not write ", opts.metrics, ": ", res.body)
    elseif not opts.quiet then
      print("server metrics: " .. opts.metrics)
    end
  end
  server:close()
end
if failed then os.exit(1) end
