-- aio.http — HTTP client (libcurl multi on the loop) and server (libuv + llhttp).
-- The mechanism lives in C (src/http_client*.c, src/http_server*.c); this file is the sugar:
-- sessions, the default client, request/response objects, query decoding, handler dispatch.
local aio = require "aio"
local CC = require "aio.http_client_c"
local SC = require "aio.http_server_c"

local http = {}
local find, gsub = string.find, string.gsub

-- Lazily loaded tracer (aio.trace), so plain use costs nothing.
local trace_mod
local function tracer()
  if trace_mod == nil then
    local ok, m = pcall(require, "aio.trace")
    trace_mod = ok and m or false
  end
  return trace_mod and trace_mod.active and trace_mod or nil
end

---------------------------------------------------------------------------------------------
-- Client
---------------------------------------------------------------------------------------------

local Client = {}
Client.__index = Client
Client.__name = "aio.http.client"

-- http.client{max_connections=100, max_per_host=, timeout=, connect_timeout=} → session.
function http.client(opts)
  opts = opts or {}
  local ok, c = pcall(CC.new, opts)  -- a bad option raises here, at the caller (no position from pcall)
  if not ok then error(c, 2) end
  return setmetatable({ _c = c, opts = opts }, Client)
end

function Client:__tostring()
  if self.closed then return "aio.http.client (closed)" end
  if not self._c:owned() then return "aio.http.client (of the parent process)" end
  local active, queued = self._c:stats()
  return string.format("aio.http.client (%d active, %d queued)", active, queued)
end

-- Hands a request to the C client and returns its future, traced as a span from now to its
-- completion when aio.trace is on (aio.on_done: synchronous, no extra task). A bad option
-- raises at `level`, counted as error() counts it in begin's caller.
local function begin(self, method, url, headers, body, t, level)
  local ok, fut = pcall(self._c.request, self._c, method, url, headers, body, t)
  if not ok then error(fut, level + 1) end
  local tr = tracer()
  if tr then
    local t0 = aio.now()
    aio.on_done(fut, function(f)
      local ok, res = pcall(f.result, f)
      tr.complete(method .. " " .. url, "http", t0, aio.now(),
        { status = ok and res.status or nil, error = (not ok) and tostring(res) or nil,
          queued = ok and res.queued or nil })
    end)
  end
  return fut
end

-- Starts a request and returns its future (awaitable; cancelling it aborts the transfer).
-- t: method, url, headers, body, timeout, connect_timeout, follow (redirects), max_redirects.
-- A bad option raises at `level`, counted as error() counts it in start's caller.
local function start(self, t, level)
  local body = t.body
  local headers = t.headers
  if t.json ~= nil then
    body = require("cjson").encode(t.json)
    headers = headers or {}
    local has = false
    for k in pairs(headers) do if k:lower() == "content-type" then has = true end end
    if not has then
      local h = { ["Content-Type"] = "application/json" }
      for k, v in pairs(headers) do h[k] = v end
      headers = h
    end
  end
  local fut = begin(self, t.method or (body and "POST" or "GET"), t.url, headers, body, t, level + 1)
  return fut
end
function Client:start(t) return (start(self, t, 2)) end

-- Performs a request and returns the response {status, ok, headers, body, url, time, queued,
-- started}. Failures (refused, dns, timeout, reset, ...) raise {kind=, url=, message=}.
-- (get, post and http.get/post/request tail-call it: level 2 is their caller.)
function Client:request(t)
  if type(t) == "string" then t = { url = t } end
  return start(self, t, 2):await()
end

-- client:get(url [, opts]) → response. Without opts no request table is made: a plain GET
-- costs ~4,300 instructions less (callgrind, 2026-11-24, medians of 5 alternating runs of
-- 4,000 keep-alive GETs: 100,878 -> 96,579 per request, -4.3 %).
function Client:get(url, opts)
  if opts == nil then return begin(self, "GET", url, nil, nil, nil, 2):await() end
  local t = { url = url }
  if opts then for k, v in pairs(opts) do t[k] = v end end
  t.url = url
  return self:request(t)
end

-- client:post(url, body [, opts]) → response.
function Client:post(url, body, opts)
  local t = { url = url, method = "POST", body = body }
  if opts then for k, v in pairs(opts) do t[k] = v end end
  t.url, t.method, t.body = url, t.method or "POST", body
  return self:request(t)
end

-- client:stats() → active, queued.
function Client:stats() return self._c:stats() end

-- client:close(): aborts what is out (awaiters get a cancellation) and frees curl.
function Client:close()
  self.closed = true
  self._c:close()
end
Client.__close = Client.close

local default_client
-- The default session (max_connections=100), created on first use, and again after it is closed
-- (`local c <close> = http.default_client()` must not break http.get for the rest of the program).
function http.default_client()
  -- a forked child gets its own: the parent's connections and curl state are not its to use
  if not default_client or default_client.closed or not default_client._c:owned() then
    default_client = http.client()
  end
  return default_client
end

-- http.get(url [, opts]) with the default session (opts.client picks another).
function http.get(url, opts)
  return ((opts and opts.client) or http.default_client()):get(url, opts)
end

-- http.post(url, body [, opts]).
function http.post(url, body, opts)
  return ((opts and opts.client) or http.default_client()):post(url, body, opts)
end

-- http.request{method=, url=, headers=, body=, timeout=, follow=, client=} → response.
function http.request(t)
  if type(t) == "string" then t = { url = t } end
  return (t.client or http.default_client()):request(t)
end

-- http.is_error(v) → true for the client's structured errors.
http.is_error = CC.is_error
http.curl_version = CC.version

---------------------------------------------------------------------------------------------
-- URL helpers
---------------------------------------------------------------------------------------------

-- Decodes %XX escapes (and "+" as space when plus is true).
http.unescape = SC.unescape

-- Encodes everything but unreserved characters (RFC 3986).
function http.escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- Decodes a query string into a table: pairs split at "&" or ";", "+" as space, %XX decoded; a
-- repeated key keeps its last value (tornado's get_argument).
http.decode_query = SC.decode_query

-- Encodes a table as a query string (keys sorted, so the output is stable).
function http.encode_query(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local out = {}
  for i, k in ipairs(keys) do out[i] = http.escape(k) .. "=" .. http.escape(t[k]) end
  return table.concat(out, "&")
end

---------------------------------------------------------------------------------------------
-- Server
---------------------------------------------------------------------------------------------

-- The request: method, target, path, query and headers (both made on first use), body, version.
local Req = {}
Req.__name = "aio.http.request"
Req.__index = function(req, k)
  if k == "query" then
    local q = http.decode_query(rawget(req, "raw_query"))
    rawset(req, "query", q)
    return q
  elseif k == "headers" then
    local h = SC.headers(rawget(req, "_headers"))
    rawset(req, "headers", h)
    return h
  end
  return nil
end

-- The response being built by a handler.
local Res = {}
Res.__index = Res
Res.__name = "aio.http.response"

local mtype, tointeger = math.type, math.tointeger

-- The status n as an integer; raises (at the caller's caller) unless it is a final status 200..599.
local function check_status(n)
  if mtype(n) == "integer" and n >= 200 and n <= 599 then return n end
  local i = mtype(n) and tointeger(n)
  if not i or i < 200 or i > 599 then
    error(string.format("http: status must be an integer from 200 to 599, got %s", tostring(n)), 3)
  end
  return i
end

-- res:status(n) sets the status (before anything is sent).
function Res:status(n) self._status = check_status(n); return self end

-- res:header(k, v) adds a response header (before anything is sent). Raises when k is not an
-- HTTP token or tostring(v) holds CR, LF or NUL (header injection).
function Res:header(k, v)
  local ok, val = pcall(SC.check_header, k, v == nil and "" or v)
  if not ok then error(val, 2) end
  if v == nil then val = nil end           -- res:header(k, nil) removes k
  local h = self._headers
  if not h then h = {}; self._headers = h end
  h[k] = val
  return self
end

-- res:write(chunk) streams a chunk (the head goes first, with chunked encoding). The flags
-- _started and _finished are set only once the C side has taken the head or the end: a call
-- that raises has sent nothing, so dispatch knows whether a 500 can still go out.
function Res:write(chunk)
  if self._finished then error("http: response already finished", 2) end
  local conn, seq, drained = self._conn, self._seq, nil
  if self._started then
    drained = conn:write(seq, chunk)
  else
    drained = conn:start(seq, self._status, self._headers, chunk)   -- the head and this chunk
    self._started = true
  end
  while drained do                             -- over write_buffer: wait for the client to read
    drained:await()
    drained = conn:drain(seq)
  end
  return self
end

-- res:finish([body]) ends the response (as one Content-Length response if nothing was streamed).
function Res:finish(body)
  if self._finished then return self end
  if self._started then
    if body ~= nil then self._conn:write(self._seq, body) end
    self._conn:finish(self._seq)
  else
    self._conn:respond(self._seq, self._status, self._headers, body)   -- (C applies tostring)
  end
  self._finished = true
  return self
end

-- res:json(v [, status]) answers with a JSON body.
function Res:json(v, status)
  if status then self._status = check_status(status) end
  self:header("Content-Type", "application/json")
  return self:finish(require("cjson").encode(v))
end

local Server = {}
Server.__index = Server
Server.__name = "aio.http.server"

-- server:port() → the bound port.
function Server:port() return self._s:port() end

-- "host:port" for a URL: an IPv6 literal goes in brackets ("[::1]:8080").
local function authority(host, port)
  return string.format(host:find(":", 1, true) and "[%s]:%d" or "%s:%d", host, port)
end

-- server:url([path]) → "http://host:port/path".
function Server:url(path) return "http://" .. authority(self.host, self._s:port()) .. (path or "/") end

-- server:connections() → open connections.
function Server:connections() return self._s:connections() end

-- server:close(): stop accepting, let in-flight requests finish, then return. Called from one
-- of the server's own handlers it returns at once (waiting would wait for its own request);
-- the graceful close goes on in the background.
function Server:close()
  local done, own = self._s:close()
  if not own then done:await() end
end

function Server:__tostring() return "aio.http.server " .. authority(self.host, self._s:port()) end

-- http.serve{host="127.0.0.1", port=0, handler=fn(req, res), max_body=, max_header=,
--            header_timeout=, idle_timeout=, max_pipeline=, write_buffer=, log=} → server.
-- The handler runs as a task per request; it answers with res:finish(...) or by returning
-- status, body [, headers] (or just a body string). An error answers 500 and logs a traceback.
-- (docs/http.md has the rules: statuses, headers, backpressure, close, clients that go away.)
function http.serve(opts)
  if type(opts) == "function" then opts = { handler = opts } end
  local handler = opts.handler or opts[1]
  if not handler then error("http.serve: handler required", 2) end
  local log = opts.log or function(msg) io.stderr:write(msg, "\n") end
  local traceback = debug.traceback
  local host = opts.host or "127.0.0.1"

  -- Logs through opts.log; a log function that fails must not leave a request unanswered.
  local function report(msg)
    if not pcall(log, msg) then io.stderr:write(msg, "\n") end
  end

  -- Runs the handler and sends what it returned, both under dispatch's xpcall.
  local function run(req, res)
    local s, b, h = handler(req, res)
    if res._finished then return end
    if res._started then return res:finish(b) end
    if type(s) == "number" then
      res._status = check_status(s)
      res._headers = h or res._headers
      return res:finish(b)
    end
    return res:finish(s)
  end

  -- The task of one request: any error on the way to the answer (the handler's, a bad status,
  -- a header that cannot be sent) is logged with its traceback and becomes a 500 while nothing
  -- was sent; after the head it ends the connection; after the end it is only logged.
  local function dispatch(conn, seq, req)  -- req: a Req from C (target, path, raw_query, ...)
    local res = setmetatable({ _conn = conn, _seq = seq, _status = 200 }, Res)
    local tr = tracer()
    local t0 = tr and aio.now()
    local ok, err = xpcall(run, traceback, req, res)
    if not ok then
      local cancelled = aio.is_cancelled(err)
      if not cancelled then
        report(string.format("aioshell http: handler error on %s %s: %s", req.method, req.target, tostring(err)))
      end
      if res._finished then                -- the answer is complete: it stands
      elseif res._started or cancelled then conn:abort()
      else conn:respond(seq, 500, nil, "Internal Server Error\n") end
    end
    if tr then tr.complete(req.method .. " " .. req.target, "http.server", t0, aio.now()) end
  end

  local ok, s, err = pcall(SC.listen, host, opts.port or 0, dispatch, opts, Req)  -- a bad option raises
  if not ok then error(s, 2) end
  if not s then error(err, 2) end
  return setmetatable({ _s = s, host = host }, Server)
end

return http
