-- scripts/server.lua — the notebooks' metric server (tornado's AddMetric), on aio.http.
--
--   aioshell scripts/server.lua [--port 8080] [--host 127.0.0.1] [--metrics metric_data.json]
--
-- GET /add?name=N&delay=MS  waits MS milliseconds (default 1024), answers "." and records
--                           {start, end, dt} (epoch seconds) under N;
-- GET /add?flush=1          writes every record to metric_data.json (lua-cjson);
-- a delay that is not an integer answers 400 "Invalid value for delay", as the seed does.
--
-- Loaded with `loadfile(path)("--module")` it returns {start = fn(opts) → server, metrics}
-- instead of serving (scripts/crawler.lua embeds it that way).
local aio = require "aio"
local http = require "aio.http"

local M = {}

-- The loop clock is monotonic; records use epoch seconds like the seed (offset taken once).
local epoch_offset
local function wall()
  if not epoch_offset then
    local ok, sys = pcall(require, "aio.sys")
    local t = ok and type(sys) == "table" and type(sys.time) == "function" and sys.time() or os.time()
    epoch_offset = t - aio.now()
  end
  return aio.now() + epoch_offset
end

-- Python's int() accepts surrounding blanks and a sign; so do we.
local function parse_delay(s)
  local d = s:match("^%s*([-+]?%d+)%s*$")
  return d and tonumber(d)
end

-- Starts the metric server: opts.host, opts.port, opts.metrics (file name), opts.quiet.
-- Returns the server and the metrics table {name = {{start=, ["end"]=, dt=}, ...}}.
function M.start(opts)
  opts = opts or {}
  local metrics = {}
  local metric_file = opts.metrics or "metric_data.json"
  local server = http.serve {
    host = opts.host or "127.0.0.1",
    port = opts.port or 0,
    handler = function(req, res)
      if req.path ~= "/add" then return 404, "Not Found\n" end
      local q = req.query
      if q.flush and q.flush ~= "" then
        local f = assert(io.open(metric_file, "w"))
        -- lua-cjson writes 14 significant digits: epoch seconds keep 0.1 ms resolution
        f:write(require("cjson").encode(metrics))
        f:close()
        return 200, ""
      end
      local name = q.name
      if not name then return 400, "Missing argument name\n" end
      local delay = parse_delay(q.delay or "1024")
      if not delay then return 400, "Invalid value for delay\n" end
      local start = wall()
      if delay > 0 then aio.sleep(delay / 1000) else aio.sleep(0) end
      res:finish(".")
      local stop = wall()
      local list = metrics[name]
      if not list then list = {}; metrics[name] = list end
      list[#list + 1] = { start = start, ["end"] = stop, dt = stop - start }
    end,
  }
  return server, metrics
end

if select(1, ...) == "--module" then return M end

-- Command line.
local opts = { port = 8080 }
local argv = { ... }
local i = 1
while i <= #argv do
  local a = argv[i]
  local v = argv[i + 1]
  if a == "--port" then opts.port = assert(tonumber(v), "--port needs a number"); i = i + 1
  elseif a == "--host" then opts.host = v; i = i + 1
  elseif a == "--metrics" then opts.metrics = v; i = i + 1
  elseif a:match("^%-%-port=") then opts.port = tonumber(a:match("=(.*)"))
  elseif a:match("^%-%-host=") then opts.host = a:match("=(.*)")
  elseif a == "-h" or a == "--help" then
    print("usage: aioshell scripts/server.lua [--port 8080] [--host 127.0.0.1] [--metrics FILE]")
    return
  else error("unknown argument: " .. a) end
  i = i + 1
end
local server = M.start(opts)
print(string.format("Listening on port: %d", server:port()))
io.stdout:flush()
