-- scripts/server.lua — the notebooks' metric server (tornado's AddMetric), on aio.http.
--
--   aioshell scripts/server.lua [--port 8080] [--host 127.0.0.1] [--metrics metric_data.json]
--
-- GET /add?name=N&delay=MS  waits MS milliseconds (default 1024), answers "." and records
--                           {start, end, dt} (epoch seconds) under N;
-- GET /add?flush=1          writes every record to metric_data.json (lua-cjson);
-- a delay that is not an integer answers 400 "Invalid value for delay", as the seed does, and
-- so does one beyond 2^31 - 1 ms (~24.8 days) either way, which the seed would accept.
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

-- The longest delay answered, in ms (2^31 - 1, about 24.8 days): Python's int() takes any
-- size, but a value past this would overflow the timer and answer at once.
local MAX_DELAY = 2 ^ 31 - 1

-- Python's int() accepts surrounding blanks and a sign; so do we. Returns nil for anything
-- that is not an integer of at most MAX_DELAY in absolute value.
local function parse_delay(s)
  local d = s:match("^%s*([-+]?%d+)%s*$")
  d = d and math.tointeger(tonumber(d))
  if not d or math.abs(d) > MAX_DELAY then return nil end
  return d
end

-- parse_delay's answers (false: invalid) by delay string: clients send the same few values, and
-- parsing one cost ~2,000 instructions a request. At most 64 are kept (any string may come).
local delays, ndelays = {}, 0
local function cached_delay(s)
  local d = delays[s]
  if d == nil then
    d = parse_delay(s) or false
    if ndelays < 64 then delays[s], ndelays = d, ndelays + 1 end
  end
  return d or nil
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
        local f, err = io.open(metric_file, "w")
        if not f then return 500, "cannot write the metrics: " .. err .. "\n" end
        -- lua-cjson writes 14 significant digits: epoch seconds keep 0.1 ms resolution
        f:write(require("cjson").encode(metrics))
        f:close()
        return 200, ""
      end
      local name = q.name
      if not name then return 400, "Missing argument name\n" end
      local delay = cached_delay(q.delay or "1024")
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
local USAGE = require("aio.flags").usage("server", "[--port 8080] [--host 127.0.0.1] [--metrics FILE]")

-- What --help prints after the usage.
local HELP = [[
The notebooks' metric server: GET /add?name=N&delay=MS answers "." after MS milliseconds and
records the request; GET /add?flush=1 writes the records to the metrics file.
  --port N           port to listen on (default 8080; 0: any free one)
  --host ADDR        address to listen on (default 127.0.0.1)
  --metrics FILE     where /add?flush=1 writes the records (default metric_data.json)
]]

local opts = { port = 8080 }
local cl = require("aio.flags").new("server", USAGE, { ... })
for a, name in cl:each() do
  if name == "--port" then opts.port = cl:int(name, cl:value(a, name), 0, 65535)
  elseif name == "--host" then opts.host = cl:value(a, name)
  elseif name == "--metrics" then opts.metrics = cl:value(a, name)
  elseif a == "-h" or a == "--help" then io.write(USAGE, HELP) return
  else cl:error("unknown argument %s", a) end
end
-- The incremental collector, not aioshell's default generational one: a request's objects
-- outlive two minor collections (a request spans many loop turns), so they were promoted and
-- freed only by full collections, and each minor one traversed the growing metrics table again
-- (an old table touched by every request). Callgrind: ~8 % fewer instructions a request.
collectgarbage("incremental")
local ok, server = pcall(M.start, opts)
if not ok then
  io.stderr:write("server: cannot listen on ", opts.host or "127.0.0.1", ":", opts.port, ": ",
    (tostring(server):gsub("^[^:]*:%d+: ", "")), "\n")
  os.exit(1)
end
print(string.format("Listening on port: %d", server:port()))
io.stdout:flush()
