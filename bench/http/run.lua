-- bench/http/run.lua — aioshell's HTTP client and server next to the Python and Node peers.
--
--   build/aioshell bench/http/run.lua [--rounds 5] [--parts crawler,server,client]
--                                     [--n 1000] [--delay 100] [--duration 5] [--requests 20000]
--                                     [--server tornado|aioshell|aiohttp|node] [--quick]
--                                     [--placement free,pinned]
--
-- (1) crawler: n URLs x delay ms at 100 concurrent and unbounded, every client against the same
--     server (the seeds' tornado server by default), plus requests serial on a few URLs; each
--     placement in turn: `free` (the kernel places server and client) and `pinned` (server on
--     CPU 1, client on CPU 0, with taskset; needs 2 CPUs). Free placement often runs both on
--     one core while the other idles: a loopback send wakes the server with the "sync" hint,
--     which pulls it onto the sender's core, where it waits for the client to block;
-- (2) server: wrk -t2 -c100 at delay 0 against aioshell, tornado, aiohttp.web (+uvloop), node;
-- (3) client: `requests` keep-alive GETs at 100 concurrent against one aioshell hello server.
-- HTTP figures swing about ±30 % on 2 shared cores, so every part runs `rounds` interleaved
-- rounds (the order rotates each round), a fresh server process each round, and prints
-- medians and ratios to aioshell. Peers' code is in bench/http/peers/.
local function realpath(p)
  local h = io.popen("realpath -- '" .. p:gsub("'", "'\\''") .. "'")
  local r = h:read("l")
  h:close()
  return r or p
end
local here = realpath(arg[0]:match("^(.*)/[^/]*$") or ".")
local root = realpath(here .. "/../..")
local aioshell = os.getenv("AIOSHELL") or (arg[-1] and arg[-1]:find("aioshell") and arg[-1]) or (root .. "/build/aioshell")
aioshell = realpath(aioshell)
local python = os.getenv("PYTHON") or "/usr/bin/python3"
local peers = here .. "/peers"

local opts = { rounds = 5, parts = "crawler,server,client", n = 1000, delay = 100, duration = 5,
               requests = 20000, server = "tornado,aioshell", serial_n = 20, placement = "free,pinned" }
do
  local argv, i = { ... }, 1
  while i <= #argv do
    local a, v = argv[i], argv[i + 1]
    if a == "--quick" then opts.rounds, opts.duration, opts.requests, opts.serial_n = 1, 2, 5000, 10
    elseif a == "--rounds" then opts.rounds = tonumber(v); i = i + 1
    elseif a == "--parts" then opts.parts = v; i = i + 1
    elseif a == "--n" then opts.n = tonumber(v); i = i + 1
    elseif a == "--delay" then opts.delay = tonumber(v); i = i + 1
    elseif a == "--duration" then opts.duration = tonumber(v); i = i + 1
    elseif a == "--requests" then opts.requests = tonumber(v); i = i + 1
    elseif a == "--server" then opts.server = v; i = i + 1
    elseif a == "--serial-n" then opts.serial_n = tonumber(v); i = i + 1
    elseif a == "--placement" then opts.placement = v; i = i + 1
    else io.stderr:write("usage: see the header of bench/http/run.lua\n"); os.exit(2) end
    i = i + 1
  end
end
local want = {}
for p in opts.parts:gmatch("[^,]+") do want[p] = true end

local function sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  p:close()
  return out
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local tmp = sh("mktemp -d"):gsub("%s+$", "")

---------------------------------------------------------------------------------------------
-- Servers: started fresh, checked ready with curl, stopped by pid.
---------------------------------------------------------------------------------------------

local SERVERS = {
  aioshell = function(port) return string.format("%s %s/scripts/server.lua --port %d", q(aioshell), q(root), port) end,
  tornado = function(port) return string.format("%s %s/server_tornado.py --port=%d", python, q(peers), port) end,
  aiohttp = function(port) return string.format("%s %s/server_aiohttp.py %d", python, q(peers), port) end,
  ["aiohttp+uvloop"] = function(port) return string.format("%s %s/server_aiohttp.py %d --uvloop", python, q(peers), port) end,
  node = function(port) return string.format("node %s/server_node.js %d", q(peers), port) end,
  hello = function(port) return string.format("%s %s/hello_server.lua %d", q(aioshell), q(here), port) end,
}

local next_port = 20000 + math.random(0, 9999)

-- Starts server `name` (run from the temporary directory, where metric files may land), its
-- command line after `prefix` (a taskset, or nothing); returns its base URL and a stop function.
local function start_server(name, path, prefix)
  next_port = next_port + 1
  local port = next_port
  local pidfile = tmp .. "/server.pid"
  os.execute(string.format("cd %s && %s%s > %s/server-%s.log 2>&1 & echo $! > %s", q(tmp), prefix or "", SERVERS[name](port),
    q(tmp), name:gsub("%W", "_"), q(pidfile)))
  local pid = tonumber(sh("cat " .. q(pidfile)))
  local url = string.format("http://127.0.0.1:%d%s", port, path)
  local ready = false
  for _ = 1, 200 do
    if sh(string.format("curl -s -o /dev/null -w '%%{http_code}' %s", q(url .. "name=probe&delay=0"))):match("^2") then
      ready = true
      break
    end
    os.execute("sleep 0.05")
  end
  if not ready then error("server " .. name .. " did not start (see " .. tmp .. ")") end
  return url, function() os.execute("kill " .. pid .. " 2>/dev/null; sleep 0.1; kill -9 " .. pid .. " 2>/dev/null") end
end

-- Runs a client command under /usr/bin/time; returns the RESULT fields and process CPU.
local function run_client(cmd)
  local tf = tmp .. "/time.txt"
  local out = sh(string.format("/usr/bin/time -f '%%U %%S' -o %s %s 2>&1", q(tf), cmd))
  local a, secs, bad = out:match("RESULT%s+(%d+)%s+([%d.e+-]+)%s+(%d+)")
  local u, s = sh("cat " .. q(tf)):match("([%d.]+) ([%d.]+)")
  if not secs then return { error = out:sub(1, 300) } end
  return { amount = tonumber(a), seconds = tonumber(secs), bad = tonumber(bad),
           cpu = (tonumber(u) or 0) + (tonumber(s) or 0) }
end

---------------------------------------------------------------------------------------------
-- Statistics and tables
---------------------------------------------------------------------------------------------

local function median(list)
  if #list == 0 then return nil end
  local t = { table.unpack(list) }
  table.sort(t)
  local m = #t // 2
  return #t % 2 == 1 and t[m + 1] or (t[m] + t[m + 1]) / 2
end

local function rotate(list, k)
  local out = {}
  for i = 1, #list do out[i] = list[(i + k - 1) % #list + 1] end
  return out
end

-- Prints rows {name, values..., note} with medians, min–max, ratio to the reference.
local function report(title, names, results, unit, lower_is_better, ref, extra)
  print()
  print(title)
  print(string.format("  %-26s %10s %18s %9s %s", "peer", "median", "min-max", "ratio", extra and extra.header or ""))
  local refmed = median(results[ref] or {})
  for _, name in ipairs(names) do
    local r = results[name] or {}
    local m = median(r)
    if m then
      local lo, hi = math.huge, -math.huge
      for _, v in ipairs(r) do lo, hi = math.min(lo, v), math.max(hi, v) end
      local ratio = ""
      if refmed and name ~= ref then
        -- ratio > 1 means aioshell is better by that factor
        ratio = string.format("%.2fx", lower_is_better and m / refmed or refmed / m)
      end
      print(string.format("  %-26s %10s %18s %9s %s", name, string.format(unit, m),
        string.format(unit .. "-" .. unit, lo, hi):gsub("%s", ""), ratio, extra and extra.fn(name) or ""))
    else
      print(string.format("  %-26s %10s", name, "failed"))
    end
  end
  print("  ratio: how many times better aioshell's median is than that peer's (>1: aioshell ahead)")
end

print(string.format("bench/http: %s; %d round(s); %s; %s", os.date("!%Y-%m-%d %H:%M UTC"), opts.rounds,
  sh("nproc"):gsub("%s+$", "") .. " cores", sh("uname -r"):gsub("%s+$", "")))

---------------------------------------------------------------------------------------------
-- (1) The crawler
---------------------------------------------------------------------------------------------

if want.crawler then
  local n, d = opts.n, opts.delay
  local clients = {
    { "aioshell", function(url, c) return string.format("%s %s/crawl.lua %s %d %d", q(aioshell), q(here), q(url), n, c) end },
    { "aiohttp", function(url, c) return string.format("%s %s/crawl_aiohttp.py %s %d %d", python, q(peers), q(url), n, c) end },
    { "tornado curl client", function(url, c) return string.format("%s %s/crawl_tornado.py %s %d %d", python, q(peers), q(url), n, c) end },
    { "gevent + urllib", function(url, c) return string.format("%s %s/crawl_gevent.py %s %d %d", python, q(peers), q(url), n, c) end },
    { "node http.Agent", function(url, c) return string.format("node %s/crawl_node.js %s %d %d", q(peers), q(url), n, c) end },
    -- libcurl's own C tool: the floor of any libcurl client (bounded only: curl caps at 300)
    { "curl --parallel (C)", function(url, c) return string.format("%s/crawl_curl.sh %s %d %d", q(peers), q(url), n, c) end,
      bounded_only = true },
  }
  local placements = {}
  for pl in opts.placement:gmatch("[^,]+") do
    if pl == "free" then placements[#placements + 1] = { name = "free placement", server = "", client = "" }
    elseif pl ~= "pinned" then error("--placement: free or pinned, not " .. pl)
    elseif tonumber((sh("nproc"):match("%d+"))) >= 2 then
      placements[#placements + 1] = { name = "pinned: server CPU 1, client CPU 0", server = "taskset -c 1 ", client = "taskset -c 0 " }
    else io.stderr:write("  (one CPU: no pinned placement)\n") end
  end
  for _, placement in ipairs(placements) do
  for server in opts.server:gmatch("[^,]+") do
  local wall, cpu, names, failures = {}, {}, {}, {}
  for _, conc in ipairs { 100, 0 } do
    for _, cl in ipairs(clients) do
      if conc > 0 or not cl.bounded_only then names[#names + 1] = cl[1] .. (conc == 0 and " unbounded" or " c=100") end
    end
  end
  names[#names + 1] = "requests serial"
  local serial_wall = {}
  for round = 1, opts.rounds do
    local url, stop = start_server(server, "/add?", placement.server)
    local base = url .. "name=bench&delay=" .. d .. "&"
    for _, cl in ipairs(rotate(clients, round - 1)) do
      for _, conc in ipairs(cl.bounded_only and { 100 } or { 100, 0 }) do
        local name = cl[1] .. (conc == 0 and " unbounded" or " c=100")
        local r = run_client(placement.client .. cl[2](base, conc))
        if r.error or r.bad > 0 or r.amount ~= n then
          failures[#failures + 1] = string.format("round %d %s: %s", round, name, r.error or
            string.format("%d bad statuses, %d bytes for %d", r.bad, r.amount, n))
        else
          wall[name] = wall[name] or {}; table.insert(wall[name], r.seconds)
          cpu[name] = cpu[name] or {}; table.insert(cpu[name], r.cpu)
        end
      end
    end
    local r = run_client(placement.client .. string.format("%s %s/crawl_requests.py %s %d", python, q(peers), q(base), opts.serial_n))
    if r.seconds then table.insert(serial_wall, r.seconds / opts.serial_n * n) end
    stop()
    io.stderr:write(string.format("  crawler (%s server, %s) round %d/%d done\n", server, placement.name, round, opts.rounds))
  end
  wall["requests serial"] = serial_wall
  local function reportc(suffix, ref)
    local sel = {}
    for _, nm in ipairs(names) do if nm:find(suffix, 1, true) or (suffix == " c=100" and nm == "requests serial") then sel[#sel + 1] = nm end end
    report(string.format("(1) crawler, %d x %d ms, %s, server: %s, %s — wall seconds of the crawl (process CPU incl. start-up)",
      n, d, suffix == " c=100" and "100 concurrent" or "unbounded", server, placement.name), sel, wall, "%.3f", true, ref,
      { header = "cpu s", fn = function(nm)
        if nm == "requests serial" then return string.format("(%d requests, scaled to %d)", opts.serial_n, n) end
        return cpu[nm] and string.format("%.2f", median(cpu[nm])) or "" end })
  end
  reportc(" c=100", "aioshell c=100")
  reportc(" unbounded", "aioshell unbounded")
  for _, f in ipairs(failures) do print("  FAILED: " .. f) end
  end
  end
end

---------------------------------------------------------------------------------------------
-- (2) Server throughput with wrk
---------------------------------------------------------------------------------------------

if want.server then
  local servers = { "aioshell", "tornado", "aiohttp", "aiohttp+uvloop", "node" }
  local rps, failures = {}, {}
  for round = 1, opts.rounds do
    for _, name in ipairs(rotate(servers, round - 1)) do
      local url, stop = start_server(name, "/add?")
      local out = sh(string.format("wrk -t2 -c100 -d%ds %s 2>&1", opts.duration, q(url .. "name=wrk&delay=0")))
      stop()
      local v = out:match("Requests/sec:%s+([%d.]+)")
      local errs = out:match("Non%-2xx or 3xx responses: (%d+)")
      if v and not errs then
        rps[name] = rps[name] or {}
        table.insert(rps[name], tonumber(v))
      else
        failures[#failures + 1] = name .. ": " .. (errs and (errs .. " non-2xx") or out:sub(1, 200))
      end
    end
    io.stderr:write(string.format("  server round %d/%d done\n", round, opts.rounds))
  end
  report(string.format("(2) server, wrk -t2 -c100 -d%ds, GET /add?delay=0 — requests/s", opts.duration),
    servers, rps, "%.0f", false, "aioshell")
  for _, f in ipairs(failures) do print("  FAILED: " .. f) end
end

---------------------------------------------------------------------------------------------
-- (3) Client throughput
---------------------------------------------------------------------------------------------

if want.client then
  local N, C = opts.requests, 100
  local clients = {
    { "aioshell", function(url) return string.format("%s %s/client.lua %s %d %d", q(aioshell), q(here), q(url), N, C) end },
    { "aiohttp", function(url) return string.format("%s %s/client_aiohttp.py %s %d %d", python, q(peers), q(url), N, C) end },
    { "aiohttp+uvloop", function(url) return string.format("%s %s/client_aiohttp.py %s %d %d --uvloop", python, q(peers), q(url), N, C) end },
    { "node http.Agent", function(url) return string.format("node %s/client_node.js %s %d %d", q(peers), q(url), N, C) end },
  }
  local rps, cpu, names, failures = {}, {}, {}, {}
  for i, cl in ipairs(clients) do names[i] = cl[1] end
  for round = 1, opts.rounds do
    for _, cl in ipairs(rotate(clients, round - 1)) do
      local url, stop = start_server("hello", "/?")
      local r = run_client(cl[2](url))
      stop()
      if r.error or r.bad > 0 then
        failures[#failures + 1] = cl[1] .. ": " .. (r.error or (r.bad .. " bad statuses"))
      else
        rps[cl[1]] = rps[cl[1]] or {}; table.insert(rps[cl[1]], r.amount / r.seconds)
        cpu[cl[1]] = cpu[cl[1]] or {}; table.insert(cpu[cl[1]], r.cpu)
      end
    end
    io.stderr:write(string.format("  client round %d/%d done\n", round, opts.rounds))
  end
  report(string.format("(3) client, %d keep-alive GETs at %d concurrent against an aioshell server — requests/s (process CPU s)", N, C),
    names, rps, "%.0f", false, "aioshell",
    { header = "cpu s", fn = function(nm) return cpu[nm] and string.format("%.2f", median(cpu[nm])) or "" end })
  for _, f in ipairs(failures) do print("  FAILED: " .. f) end
end

os.execute("rm -rf " .. q(tmp))
