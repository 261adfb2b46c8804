-- spec/http_server_spec.lua — aio.http.serve on loopback: requests, handler forms, keep-alive,
-- pipelining, limits (431/413/400), timeouts, graceful close, large bodies.
-- Raw-socket cases (pipelining, malformed input, slowloris) run the server in a child aioshell
-- and talk to it with python3's socket module, since a blocking child client would stall an
-- in-process server.
local helper = require "spec.helper"
local aio = require "aio"
local http = require "aio.http"

-- Runs a test body as a task and awaits it (helper.async uses aio.run, which also waits for
-- the listening server of before_each to go away).
local function async(fn)
  return function() return aio.spawn(fn):await() end
end

-- Starts `code` (which must print the server's port on its first line) in a child aioshell;
-- returns port and a stop function that kills it by pid.
local function child_server(code)
  local script = helper.tmpfile(code, ".lua")
  local portfile = helper.tmpfile("")
  local pidfile = helper.tmpfile("")
  assert(os.execute(string.format("%s %s > %s 2>&1 & echo $! > %s", helper.quote(helper.aioshell),
    helper.quote(script), helper.quote(portfile), helper.quote(pidfile))))
  local port = helper.wait_until(function()
    local s = helper.readfile(portfile)
    return s and tonumber(s:match("^(%d+)\n"))
  end, 10)
  local pid = tonumber(helper.readfile(pidfile):match("%d+"))
  assert(port, "child server did not start: " .. tostring(helper.readfile(portfile)))
  return port, function()
    os.execute("kill " .. pid .. " 2>/dev/null; sleep 0.05; kill -9 " .. pid .. " 2>/dev/null")
    return helper.readfile(portfile)
  end
end

-- Sends raw bytes with python3 and returns everything read until the server closes (or
-- `wait` seconds of silence).
local function raw(port, payload, wait, pause_after)
  local py = [[
import socket, sys, time
port, wait, pause = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
data = sys.stdin.buffer.read()
s = socket.create_connection(("127.0.0.1", port))
s.settimeout(wait)
if pause > 0:
    s.sendall(data[:10]); time.sleep(pause); data = data[10:]
try:
    s.sendall(data)
except OSError:
    pass
out = b""
try:
    while True:
        b = s.recv(65536)
        if not b:
            out += b"<EOF>"
            break
        out += b
except socket.timeout:
    out += b"<TIMEOUT>"
except OSError as e:
    out += b"<ERR>"
sys.stdout.buffer.write(out)
]]
  local out = helper.exec({ "python3", "-c", py, tostring(port), tostring(wait or 2), tostring(pause_after or 0) },
    { stdin = payload, timeout = 20 })
  return out
end

local ECHO_SERVER = [[
local aio = require "aio"
local http = require "aio.http"
local bp = { written = 0, state = "none", mb = 0, hang = "none" }   -- what some handlers did
local srv = http.serve{ max_body = 1000, header_timeout = 0.3, idle_timeout = 0.5, max_pipeline = 8,
  handler = function(req, res)
    if req.path == "/slow" then aio.sleep(tonumber(req.query.s or "0.1")) end
    if req.path:match("^/busy") then     -- computes without awaiting: a reset is seen only by a write
      local function busy() local t = os.clock() + 0.2; while os.clock() < t do end end
      if req.path == "/busystream2" then res:write("abc"); busy(); res:write("def"); res:finish(); return end
      busy()
      if req.path == "/busybig" then return 200, string.rep("x", 100000) end
      if req.path == "/busystream" then res:write("abc"); res:write("def"); res:finish(); return end
    end
    if req.path == "/code" then return tonumber(req.query.c), "body" end
    if req.path == "/hdrs" then              -- the headers (and trailers) as seen, sorted
      local function list(t)
        local l = {}
        for k, v in pairs(t or {}) do l[#l + 1] = k .. "=" .. v end
        table.sort(l)
        return table.concat(l, "|")
      end
      return 200, list(req.headers) .. " T:" .. list(req.trailers) .. " Q:" .. req.raw_query .. ";"
    end
    if req.path == "/bp" then                -- streams n chunks of 64 KB, noting its progress
      bp.written, bp.state = 0, "writing"
      local chunk = string.rep("b", 65536)
      local ok, err = pcall(function()
        for i = 1, tonumber(req.query.n) do res:write(chunk); bp.written = i end
        res:finish()
      end)
      bp.state = ok and "finished" or (aio.is_cancelled(err) and "cancelled" or tostring(err))
      if not ok then error(err, 0) end
      return
    end
    if req.path == "/bpstate" then return 200, bp.written .. " " .. bp.state .. " " .. bp.mb .. " " .. bp.hang end
    if req.path == "/hang" then              -- sleeps, noting whether it was cancelled
      bp.hang = "sleeping"
      local ok, err = pcall(aio.sleep, 2)
      bp.hang = ok and "finished" or (aio.is_cancelled(err) and "cancelled" or tostring(err))
      if not ok then error(err, 0) end
      return 200, "late"
    end
    if req.path == "/mb" then bp.mb = bp.mb + 1; return 200, string.rep("m", 8000000) end
    if req.path == "/errafterfinish" then   -- a complete answer, then an error
      res:write(string.rep("c", tonumber(req.query.n))); res:finish(); error("late error")
    end
    return 200, req.method .. " " .. req.path .. " " .. #req.body .. ";"
  end }
print(srv:port())
io.stdout:flush()
]]

describe("aio.http server", function()
  local srv
  local seen                       -- per test: what the handler saw

  before_each(function()
    seen = {}
    srv = http.serve {
      max_body = 64 * 1024,
      handler = function(req, res)
        seen[#seen + 1] = req
        local p = req.path
        if p == "/hello" then return 200, "hi " .. (req.query.name or "") end
        if p == "/string" then return "just a string" end
        if p == "/headers" then return 201, "h", { ["X-Test"] = "yes", ["Content-Type"] = "text/x-test" } end
        if p == "/api" then
          res:status(202):header("X-Api", "1")
          res:finish("api")
          return
        end
        if p == "/stream" then
          for i = 1, 5 do res:write("part" .. i .. ";"); aio.sleep(0.001) end
          res:finish()
          return
        end
        if p == "/echo" then return 200, req.body, { ["X-Method"] = req.method } end
        if p == "/big" then return 200, string.rep("abcdefgh", 128 * 1024) end
        if p == "/fail" then error("boom in handler") end
        if p == "/sleep" then aio.sleep(tonumber(req.query.s)); return 200, "slept" end
        if p == "/json" then return res:json({ a = 1 }) end
        if p == "/float" then return 200.5, "x" end
        if p == "/resfloat" then res:status(200.5); return "x" end
        if p == "/numbody" then return 200, 42.5 end
        if p == "/objbody" then return res:finish(setmetatable({}, { __tostring = function() return "as text" end })) end
        if p == "/reenter" then               -- the body's tostring answers the request itself
          return res:finish(setmetatable({}, { __tostring = function() res:finish("inner"); return "outer" end }))
        end
        if p == "/reenterchunk" then          -- a chunk's tostring ends the response
          res:write("a;")
          res:write(setmetatable({}, { __tostring = function() res:finish("b;"); return "late;" end }))
          return
        end
        if p == "/badbody" then return 200, setmetatable({}, { __tostring = function() error("bad body tostring") end }) end
        if p == "/badchunk" then res:write(setmetatable({}, { __tostring = function() error("bad chunk tostring") end })) end
        if p == "/badtostring" then
          return 200, "x", { ["X-A"] = setmetatable({}, { __tostring = function() error("bad tostring") end }) }
        end
        if p == "/errafterfinish" then res:write("all"); res:finish(" there"); error("late error") end
        if p == "/own" then                   -- framing headers of the handler's own
          return 200, "x", { ["X-A"] = "1", ["Content-Length"] = "999", Connection = req.query.conn, Date = "custom" }
        end
        if p == "/headlen" then res:header("Content-Length", "1234"); return res:finish() end
        if p == "/hdr" then res:header(req.query.k or "X-Test", req.query.v); return 200, "ok" end
        if p == "/code" then return tonumber(req.query.c), "ignored body" end
        if p == "/hang" then
          local ok, err = pcall(aio.sleep, tonumber(req.query.s or 5))
          seen.hang = ok and "finished" or (aio.is_cancelled(err) and "cancelled" or tostring(err))
          if not ok then error(err, 0) end
          return 200, "late"
        end
        return 404, "no such page"
      end,
      log = function(msg) seen.log = (seen.log or "") .. msg end,
    }
  end)

  after_each(function()
    srv:close()
    helper.cleanup()
  end)

  it("answers a GET and decodes the path and the query", async(function()
    local res = http.get(srv:url("/hello?name=J%C3%BCrgen+B&x=1&x=2&empty=&flag"))
    assert.are.equal(200, res.status)
    assert.is_true(res.ok)
    assert.are.equal("hi Jürgen B", res.body)
    local req = seen[1]
    assert.are.equal("GET", req.method)
    assert.are.equal("/hello", req.path)
    assert.are.equal("2", req.query.x)
    assert.are.equal("", req.query.empty)
    assert.are.equal("", req.query.flag)
    assert.are.equal("1.1", req.version)
    assert.are.equal("127.0.0.1:" .. srv:port(), req.headers.host)
    assert.are.equal(req.headers.host, req.headers.Host)          -- names are case-insensitive
    assert.are.equal(req.headers.host, req.headers.HOST)
    local names = {}
    for k in pairs(req.headers) do names[#names + 1] = k end
    for _, k in ipairs(names) do assert.are.equal(k:lower(), k) end  -- stored lower-case
  end))

  it("decodes query strings and escapes like tornado (http.decode_query, http.unescape)", function()
    assert.same({ a = "1 2", b = "x+y", c = "", d = "%zz%4" }, http.decode_query("a=1+2;b=x%2By&&c&d=%zz%4"))
    assert.same({ k = "=v", [""] = "e" }, http.decode_query("k==v&=e"))
    assert.same({ x = "2" }, http.decode_query("x=1&x=2"))
    assert.same({}, http.decode_query(""))
    assert.same({}, http.decode_query(nil))
    assert.are.equal("a b+c", http.unescape("a%20b+c"))
    assert.are.equal("a b c", http.unescape("a%20b+c", true))
    assert.are.equal("100%", http.unescape("100%"))
  end)

  it("decodes a percent-encoded path and keeps the raw target", async(function()
    http.get(srv:url("/a%20b/c?q=1"))
    assert.are.equal("/a b/c", seen[1].path)
    assert.are.equal("/a%20b/c?q=1", seen[1].target)
    assert.are.equal("q=1", seen[1].raw_query)
    http.get(srv:url("/x%zzy%4"))                 -- malformed escapes stay as they are
    assert.are.equal("/x%zzy%4", seen[2].path)
    assert.are.equal("", seen[2].raw_query)
  end))

  it("supports every handler form", async(function()
    assert.are.equal("just a string", http.get(srv:url("/string")).body)
    local r = http.get(srv:url("/headers"))
    assert.are.equal(201, r.status)
    assert.are.equal("yes", r.headers["x-test"])
    assert.are.equal("text/x-test", r.headers["content-type"])
    assert.are.equal("text/x-test", r.headers["Content-Type"])    -- found in any case
    assert.are.equal("yes", r.headers["X-TEST"])
    assert.is_nil(r.headers["X-Missing"])
    assert.is_nil(rawget(r.headers, "Content-Type"))                -- stored once, lower-case
    r = http.get(srv:url("/api"))
    assert.are.equal(202, r.status)
    assert.are.equal("1", r.headers["x-api"])
    assert.are.equal("api", r.body)
    r = http.get(srv:url("/json"))
    assert.are.equal("application/json", r.headers["content-type"])
    assert.are.same({ a = 1 }, require("cjson").decode(r.body))
    r = http.get(srv:url("/nope"))
    assert.are.equal(404, r.status)
    assert.is_false(r.ok)
    assert.are.equal("42.5", http.get(srv:url("/numbody")).body)    -- a body goes through tostring
    assert.are.equal("as text", http.get(srv:url("/objbody")).body)
  end))

  -- A body (or chunk) whose tostring answers the request itself: the C side converts it before
  -- it looks the response up, so it never touches the slot that answer freed (ASan: a
  -- heap-use-after-free before).
  it("takes a body whose tostring answers the request itself", async(function()
    assert.are.equal("inner", http.get(srv:url("/reenter")).body)
    assert.are.equal("a;b;", http.get(srv:url("/reenterchunk")).body)
    assert.are.equal("as text", http.get(srv:url("/objbody")).body)
  end))

  it("streams a body with chunked encoding", async(function()
    local r = http.get(srv:url("/stream"))
    assert.are.equal(200, r.status)
    assert.are.equal("chunked", r.headers["transfer-encoding"])
    assert.are.equal("part1;part2;part3;part4;part5;", r.body)
  end))

  it("turns a handler error into a 500 and a log line with the traceback", async(function()
    local r = http.get(srv:url("/fail"))
    assert.are.equal(500, r.status)
    assert.matches("boom in handler", seen.log)
    assert.matches("stack traceback", seen.log)
    assert.matches("GET /fail", seen.log)
    assert.are.equal(200, http.get(srv:url("/hello")).status)   -- and keeps serving
  end))

  it("refuses header names that are not tokens and values with CR, LF or NUL (response splitting)", async(function()
    local r = http.get(srv:url("/hdr?v=a%0d%0aSet-Cookie:%20evil=1"))
    assert.are.equal(500, r.status)
    assert.is_nil(r.headers["set-cookie"])
    assert.matches('http_server_spec.lua:%d+: http: CR, LF or NUL in the value of header "X%-Test"', seen.log)
    for _, bad in ipairs { "a%0ab", "a%0db", "a%00b" } do
      seen.log = nil
      assert.are.equal(500, http.get(srv:url("/hdr?v=" .. bad)).status)
      assert.matches("CR, LF or NUL", seen.log)
    end
    for _, bad in ipairs { "X-A:%20b%0d%0aX-Evil", "X%20A", "X:A", "", "X%C3%A9" } do
      seen.log = nil
      assert.are.equal(500, http.get(srv:url("/hdr?v=1&k=" .. bad)).status)
      assert.matches("invalid header name", seen.log)
    end
    r = http.get(srv:url("/hdr?v=a%09b%20c&k=X-Ok!%23$%25%26'*%2B-.%5E_%60|~9"))   -- every token character
    assert.are.equal(200, r.status)
    assert.are.equal("a\tb c", r.headers["x-ok!#$%&'*+-.^_`|~9"])
  end))

  it("answers 500 when sending the answer fails (bad status, bad header value) and keeps serving", async(function()
    local client = http.client { max_connections = 1 }
    for _, case in ipairs { { "/float", "status must be an integer from 200 to 599, got 200.5" },
                            { "/resfloat", "status must be an integer from 200 to 599, got 200.5" },
                            { "/badtostring", "bad tostring" },
                            { "/badbody", "bad body tostring" },
                            { "/badchunk", "bad chunk tostring" } } do   -- converted before the head goes
      seen.log = nil
      local r = client:get(srv:url(case[1]), { timeout = 2 })
      assert.are.equal(500, r.status)
      assert.matches(case[2], seen.log, 1, true)
      assert.matches("stack traceback", seen.log)
      assert.are.equal(200, client:get(srv:url("/hello"), { timeout = 2 }).status)  -- same connection
    end
    client:close()
    assert.is_true(aio.wait_for(aio.spawn(function() srv:close(); return true end), 2))
  end))

  it("only logs an error raised after the response was finished", async(function()
    local r = http.get(srv:url("/errafterfinish"))
    assert.are.equal(200, r.status)
    assert.are.equal("all there", r.body)
    assert.matches("late error", seen.log)
    assert.are.equal(1, srv:connections())   -- the connection was kept
  end))

  it("echoes request bodies and methods, large ones included", async(function()
    local body = string.rep("0123456789", 5000)
    local r = http.post(srv:url("/echo"), body)
    assert.are.equal(body, r.body)
    assert.are.equal("POST", r.headers["x-method"])
    r = http.request { method = "PUT", url = srv:url("/echo"), body = "x=1" }
    assert.are.equal("PUT", r.headers["x-method"])
    r = http.get(srv:url("/big"))
    assert.are.equal(1024 * 1024, #r.body)
    assert.are.equal(string.rep("abcdefgh", 4), r.body:sub(1, 32))
  end))

  it("sends no body and no Content-Length with 204 and 304", async(function()
    for _, code in ipairs { 204, 304 } do
      local r = http.get(srv:url("/code?c=" .. code))
      assert.are.equal(code, r.status)
      assert.are.equal("", r.body)
      assert.is_nil(r.headers["content-length"])
    end
    assert.are.equal(200, http.get(srv:url("/hello")).status)   -- the connection is still in sync
  end))

  it("accepts only integer statuses from 200 to 599 (others answer 500)", async(function()
    for _, code in ipairs { "0", "99", "100", "101", "199", "600", "1000", "-5", "200.5" } do
      seen.log = nil
      assert.are.equal(500, http.get(srv:url("/code?c=" .. code)).status)
      assert.matches("status must be an integer from 200 to 599, got " .. code, seen.log, 1, true)
    end
    local r = http.get(srv:url("/code?c=205"))
    assert.are.same({ 205, "", "0" }, { r.status, r.body, r.headers["content-length"] })
    assert.are.equal(200, http.get(srv:url("/hello")).status)
  end))

  it("keeps a handler's Date, honours its Connection: close, keeps its Content-Length on HEAD", async(function()
    local client = http.client { max_connections = 1 }
    local r = client:get(srv:url("/own?conn=keep-alive"))
    assert.are.same({ "custom", "1", "1", "x" }, { r.headers.date, r.headers["content-length"], r.headers["x-a"], r.body })
    assert.is_nil(r.headers.connection)
    assert.are.equal(1, srv:connections())
    r = client:get(srv:url("/own?conn=Upgrade,%20CLOSE"))
    assert.are.equal("close", r.headers.connection)
    for _ = 1, 100 do
      if srv:connections() == 0 then break end
      aio.sleep(0.01)
    end
    assert.are.equal(0, srv:connections())
    client:close()
    r = http.request { method = "HEAD", url = srv:url("/headlen") }
    assert.are.same({ 200, "1234", "" }, { r.status, r.headers["content-length"], r.body })
    assert.are.equal("0", http.get(srv:url("/headlen")).headers["content-length"])   -- GET: ours
  end))

  it("answers HEAD without a body", async(function()
    local r = http.request { method = "HEAD", url = srv:url("/hello?name=x") }
    assert.are.equal(200, r.status)
    assert.are.equal("", r.body)
    assert.are.equal("4", r.headers["content-length"])
  end))

  it("keeps connections alive: sequential requests reuse one connection", async(function()
    local client = http.client { max_connections = 4 }
    for _ = 1, 20 do assert.are.equal(200, client:get(srv:url("/hello")).status) end
    local peers = {}
    for _, req in ipairs(seen) do peers[req.conn:peer() or "gone"] = true end
    local n = 0
    for _ in pairs(peers) do n = n + 1 end
    assert.are.equal(1, n)
    assert.are.equal(1, srv:connections())
    client:close()
  end))

  it("answers 413 when a body is over max_body and keeps serving", async(function()
    local r = http.post(srv:url("/echo"), string.rep("x", 64 * 1024 + 1))
    assert.are.equal(413, r.status)
    assert.are.equal("close", r.headers.connection)
    assert.are.equal(200, http.get(srv:url("/hello")).status)
  end))

  it("answers 431 when the headers are over 8 KB and keeps serving", async(function()
    local r = http.get(srv:url("/hello"), { headers = { ["X-Big"] = string.rep("y", 9000) } })
    assert.are.equal(431, r.status)
    assert.are.equal("close", r.headers.connection)
    r = http.get(srv:url("/hello"), { headers = { ["X-Fine"] = string.rep("y", 4000) } })
    assert.are.equal(200, r.status)
  end))

  it("closes gracefully: in-flight requests finish, new connections are refused", async(function()
    local url = srv:url("/sleep?s=0.2")
    local t = aio.spawn(http.get, url)
    aio.sleep(0.05)
    local t0 = aio.now()
    srv:close()
    assert.is_true(aio.now() - t0 >= 0.1)        -- close waited for the in-flight request
    assert.are.equal("slept", t:await().body)
    local ok, err = pcall(http.get, url, { client = http.client() })
    assert.is_false(ok)
    assert.are.equal("refused", err.kind)
  end))

  it("listens on a host name (localhost) and on IPv6, with URLs that work", async(function()
    for _, case in ipairs { { "localhost", "^http://localhost:%d+/x$" }, { "::1", "^http://%[::1%]:%d+/x$" } } do
      local s6 = http.serve { host = case[1], handler = function() return "hi" end }
      assert.matches(case[2], s6:url("/x"))
      assert.are.equal("aio.http.server " .. s6:url(""):sub(8), tostring(s6))
      assert.are.equal("hi", http.get(s6:url("/x"), { timeout = 2 }).body)
      s6:close()
    end
  end))

  it("checks its options (misuse raises)", function()
    local function serve(opts)
      opts.handler = function() end
      local ok, err = pcall(http.serve, opts)
      assert.is_false(ok)
      return err
    end
    local function says(msg, err) assert.matches(msg, err, 1, true) end
    says("http.serve: bad option 'write_buffer' (a number from 1 to 1000000000000000 expected, got 0)",
      serve { write_buffer = 0 })
    says("http.serve: bad option 'max_body' (a number from 0 to 1000000000000000 expected, got string)",
      serve { max_body = "big" })
    says("http.serve: bad option 'max_pipeline' (a number from 1 to 2147483647 expected, got -1)",
      serve { max_pipeline = -1 })
    -- no inf or NaN reaches the casts to milliseconds, sizes and ints
    says("http.serve: bad option 'idle_timeout' (a number of seconds from 0 to 1000000000 expected, got inf)",
      serve { idle_timeout = math.huge })
    assert.matches("http.serve: bad option 'backlog' %(a number from 1 to 2147483647 expected, got %-?nan%)",
      serve { backlog = 0 / 0 })
  end)

  it("closes from inside one of its own handlers without waiting for that request", async(function()
    local inner, returned
    inner = http.serve { handler = function()
      inner:close()
      returned = true
      return 200, "bye"
    end }
    local url = inner:url("/shutdown")
    local r = http.get(url, { timeout = 2, client = http.client() })
    assert.is_true(returned)
    assert.are.same({ 200, "bye", "close" }, { r.status, r.body, r.headers.connection })
    local ok, err = pcall(http.get, url, { client = http.client() })
    assert.is_false(ok)
    assert.are.equal("refused", err.kind)
    inner:close()                              -- from outside: waits for the rest, if any
  end))

  it("lets a handler finish when its client stops sending (EOF), dropping an answer nobody reads", async(function()
    -- curl gives up and closes: for the server that is an EOF, which a half-closing client
    -- sends too; so the handler is not cancelled (a reset would cancel it: see the raw specs)
    local ok, err = pcall(http.get, srv:url("/hang?s=0.3"), { timeout = 0.1 })
    assert.is_false(ok)
    assert.are.equal("timeout", err.kind)
    for _ = 1, 100 do
      if seen.hang then break end
      aio.sleep(0.01)
    end
    assert.are.equal("finished", seen.hang)
    assert.is_nil(seen.log)
    for _ = 1, 100 do
      if srv:connections() == 0 then break end
      aio.sleep(0.01)
    end
    assert.are.equal(0, srv:connections())
    assert.are.equal(200, http.get(srv:url("/hello")).status)
  end))

  it("runs handlers concurrently", async(function()
    local t0 = aio.now()
    local tasks = {}
    for i = 1, 20 do tasks[i] = aio.spawn(http.get, srv:url("/sleep?s=0.1")) end
    for _, r in ipairs(aio.gather(tasks)) do assert.are.equal("slept", r.body) end
    assert.is_true(aio.now() - t0 < 1.5)
  end))
end)

describe("aio.http server with raw clients", function()
  local port, stop
  setup(function() port, stop = child_server(ECHO_SERVER) end)
  teardown(function() stop(); helper.cleanup() end)

  local function statuses(out)
    local list = {}
    for s in out:gmatch("HTTP/1%.1 (%d%d%d)") do list[#list + 1] = tonumber(s) end
    return list
  end

  it("answers pipelined requests in request order", function()
    local payload = "GET /slow?s=0.15 HTTP/1.1\r\nHost: x\r\n\r\n" ..
                    "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n" ..
                    "POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" ..
                    "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    local out = raw(port, payload, 3)
    local bodies = {}
    for b in out:gmatch("\r\n\r\n([A-Z]+ /%w+ %d+;)") do bodies[#bodies + 1] = b end
    assert.are.same({ "GET /slow 0;", "GET /fast 0;", "POST /post 3;", "GET /last 0;" }, bodies)
    assert.matches("<EOF>$", out)
  end)

  it("answers at most max_pipeline pipelined requests, then closes", function()
    local payload = string.rep("GET /slow?s=0.05 HTTP/1.1\r\nHost: x\r\n\r\n", 12)
    local out = raw(port, payload, 3)
    assert.are.same({ 200, 200, 200, 200, 200, 200, 200, 200 }, statuses(out))
    local _, closes = out:gsub("Connection: close", "")
    assert.are.equal(1, closes)
    assert.matches("Connection: close\r\n\r\nGET /slow 0;<EOF>$", out)
  end)

  it("reads chunked request bodies", function()
    local out = raw(port, "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" ..
      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 2)
    assert.matches("POST /c 11;", out)
  end)

  it("rejects Content-Length with Transfer-Encoding (smuggling) with 400 and closes", function()
    local out = raw(port, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 2)
    assert.are.same({ 400 }, statuses(out))
    assert.matches("Connection: close", out)
    assert.not_matches("smuggled", out)
    assert.matches("<EOF>$", out)
  end)

  it("rejects garbage with 400 and still serves the next client", function()
    local out = raw(port, "THIS IS NOT HTTP\r\n\r\n", 2)
    assert.are.same({ 400 }, statuses(out))
    out = raw(port, "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 2)
    assert.are.same({ 200 }, statuses(out))
  end)

  it("answers 431 to a huge header on a raw connection and closes", function()
    local out = raw(port, "GET / HTTP/1.1\r\nHost: x\r\nX-A: " .. string.rep("a", 10000) .. "\r\n\r\n", 2)
    assert.are.same({ 431 }, statuses(out))
    assert.matches("<EOF>$", out)
  end)

  it("answers a rejected request pipelined behind a slow handler after that handler's answer", function()
    -- the slow handler outlives header_timeout (0.3 s): the rejected head's deadline must not
    -- close the connection under it
    local out = raw(port, "GET /slow?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\nxyz\r\n\r\n", 3)
    assert.are.same({ 200, 400 }, statuses(out))
    assert.matches("GET /slow 0;HTTP/1%.1 400 Bad Request\r\n.*Connection: close\r\n.*<EOF>$", out)
    out = raw(port, "GET /slow?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\nPOST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 3)
    assert.are.same({ 200, 413 }, statuses(out))
    assert.matches("<EOF>$", out)
  end)

  it("applies RFC 9112's rules on Host, header names, versions and HTTP/1.0 framing", function()
    local function one(payload) return raw(port, payload, 2) end
    -- whitespace before the colon, two Hosts, no Host in HTTP/1.1: 400 and close
    for _, head in ipairs { "Host : x\r\n", "Host: a\r\nHost: b\r\n", "X-A: 1\r\n" } do
      local out = one("GET /hdrs HTTP/1.1\r\n" .. head .. "\r\n")
      assert.are.same({ 400 }, statuses(out))
      assert.matches("Connection: close\r\n.*<EOF>$", out)
    end
    assert.are.same({ 200 }, statuses(one("GET /hdrs HTTP/1.0\r\n\r\n")))   -- 1.0 needs no Host
    -- a major version other than 1
    for _, v in ipairs { "2.0", "3.0", "0.9" } do
      assert.matches("^HTTP/1%.1 505 HTTP Version Not Supported\r\n.*<EOF>$", one("GET / HTTP/" .. v .. "\r\nHost: x\r\n\r\n"))
    end
    -- HTTP/1.0 with Transfer-Encoding: answered, then closed whatever it asked (RFC 9112 6.1)
    local out = one("POST /te HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" ..
                    "GET /second HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert.are.same({ 200 }, statuses(out))
    assert.matches("Connection: close\r\n\r\nPOST /te 3;<EOF>$", out)
  end)

  it("keeps trailers apart, trims header values, accepts absolute-form targets", function()
    local out = raw(port, "POST /hdrs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-User: alice \t \r\n\r\n" ..
      "1\r\na\r\n0\r\nX-User: admin\r\nX-Sum: 12 \r\n\r\n" ..
      "GET http://h:81/hdrs?q=1 HTTP/1.1\r\nHost: h:81\r\n\r\n" ..
      "GET HTTP://h?x=2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 3)
    assert.are.same({ 200, 200, 200 }, statuses(out))
    assert.matches("\r\n\r\nhost=x|transfer%-encoding=chunked|x%-user=alice T:x%-sum=12|x%-user=admin Q:;", out)
    assert.matches("\r\n\r\nhost=h:81 T: Q:q=1;", out)
    assert.matches("\r\n\r\nGET / 0;<EOF>$", out)
  end)

  it("counts the whole head against max_header: 32 KB of empty header lines get 431", function()
    local out = raw(port, "GET / HTTP/1.1\r\nHost: x\r\n" .. string.rep("a:\r\n", 8000) .. "\r\n", 2)
    assert.are.same({ 431 }, statuses(out))
  end)

  it("answers 413 from Content-Length alone, before reading the body", function()
    local out = raw(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 2)
    assert.are.same({ 413 }, statuses(out))
  end)

  it("closes a slowloris connection after the header timeout", function()
    -- ten bytes, then nothing for longer than header_timeout (0.3 s): the server hangs up.
    local out = raw(port, "GET / HTTP/1.1\r\nHost: x\r\n", 3, 0.2)
    assert.are.equal("<EOF>", out)
  end)

  it("closes idle keep-alive connections after the idle timeout", function()
    local py = [[
import socket, time, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
s.settimeout(3)
first = s.recv(65536)
t0 = time.time()
rest = s.recv(65536)
print(first.split(b"\r\n")[0].decode(), len(rest), round(time.time() - t0, 1))
]]
    local out = helper.exec({ "python3", "-c", py, tostring(port) }, { timeout = 10 })
    local status, restlen, waited = out:match("^(HTTP/1.1 %d+ %a+) (%d+) ([%d.]+)")
    assert.are.equal("HTTP/1.1 200 OK", status)
    assert.are.equal("0", restlen)            -- EOF, no more data
    assert.is_true(tonumber(waited) >= 0.3 and tonumber(waited) < 2.5)
  end)

  it("answers Expect: 100-continue before the body arrives", function()
    local py = [[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(2)
s.sendall(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
first = s.recv(65536)
s.sendall(b"hello")
rest = b""
while True:
    b = s.recv(65536)
    if not b: break
    rest += b
print(first.decode().strip())
print(rest.decode().split("\r\n\r\n")[1])
]]
    local out = helper.exec({ "python3", "-c", py, tostring(port) }, { timeout = 10 })
    assert.are.equal("HTTP/1.1 100 Continue\nPOST /e 5;\n", out)
  end)

  it("sees Host and Expect fields whose names and values arrive split across reads", function()
    -- each piece is its own read: names and values are cut in the middle
    local py = [[
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.settimeout(2)
for piece in sys.argv[2:]:
    s.sendall(piece.encode().replace(b"|", b"\r\n")); time.sleep(0.02)
out = b""
try:
    while True:
        b = s.recv(65536)
        if not b: break
        out += b
except socket.timeout:
    out += b"<TIMEOUT>"
sys.stdout.buffer.write(out)
]]
    local function split(...) return helper.exec({ "python3", "-c", py, tostring(port), ... }, { timeout = 10 }) end
    local out = split("POST /hdrs HTTP/1.1|Ho", "ST: x|Connection: close|EXP", "ect: 100-Con", "tinue  |Content-Length: 2||",
                      "ab")
    assert.matches("^HTTP/1%.1 100 Continue\r\n\r\nHTTP/1%.1 200 OK\r\n", out)
    assert.matches("\r\n\r\nconnection=close|content%-length=2|expect=100%-Continue|host=x T: Q:;$", out)
    assert.are.same({ 400 }, statuses(split("GET /hdrs HTTP/1.1|Host: a|Ho", "st: b|Host: c||")))
  end)

  it("survives a client reset in the middle of a handler's answer (no use after free)", function()
    -- The handler computes while the client resets, so its first write fails (ECONNRESET or
    -- EPIPE) and closes the connection under the write's feet; an ASan build used to report
    -- a heap use-after-free here. The server must go on serving.
    local py = [[
import socket, struct, sys, time
port = int(sys.argv[1])
for path in ("/busy", "/busybig", "/busystream", "/busystream2"):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
    time.sleep(0.05 if path != "/busystream2" else 0.1)
    s.close()
    time.sleep(0.3)
s = socket.create_connection(("127.0.0.1", port)); s.settimeout(3)
s.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
print(s.recv(100).split(b"\r\n")[0].decode())
]]
    local out = helper.exec({ "python3", "-c", py, tostring(port) }, { timeout = 15 })
    assert.are.equal("HTTP/1.1 200 OK\n", out)
  end)

  it("sends the registered reason phrases, none for unregistered codes, and no body with 205", function()
    local codes = { 203, 205, 226, 308, 402, 416, 418, 421, 422, 425, 426, 428, 429, 431, 451, 505, 506, 508, 511, 299 }
    local out = ""
    for first = 1, #codes, 7 do                 -- max_pipeline is 8
      local payload = {}
      for i = first, math.min(first + 6, #codes) do
        local last = i == #codes or i == first + 6
        payload[#payload + 1] = "GET /code?c=" .. codes[i] .. " HTTP/1.1\r\nHost: x\r\n" .. (last and "Connection: close\r\n" or "") .. "\r\n"
      end
      out = out .. raw(port, table.concat(payload), 3)
    end
    local lines = {}
    for l in out:gmatch("(HTTP/1%.1 [^\r]*)\r\n") do lines[#lines + 1] = l end
    assert.are.same({ "HTTP/1.1 203 Non-Authoritative Information", "HTTP/1.1 205 Reset Content",
      "HTTP/1.1 226 IM Used", "HTTP/1.1 308 Permanent Redirect", "HTTP/1.1 402 Payment Required",
      "HTTP/1.1 416 Range Not Satisfiable", "HTTP/1.1 418 I'm a teapot", "HTTP/1.1 421 Misdirected Request",
      "HTTP/1.1 422 Unprocessable Content", "HTTP/1.1 425 Too Early", "HTTP/1.1 426 Upgrade Required",
      "HTTP/1.1 428 Precondition Required", "HTTP/1.1 429 Too Many Requests",
      "HTTP/1.1 431 Request Header Fields Too Large", "HTTP/1.1 451 Unavailable For Legal Reasons",
      "HTTP/1.1 505 HTTP Version Not Supported", "HTTP/1.1 506 Variant Also Negotiates",
      "HTTP/1.1 508 Loop Detected", "HTTP/1.1 511 Network Authentication Required", "HTTP/1.1 299 " }, lines)
    -- 205: Content-Length: 0 and not a byte of body; the next answer follows at once
    assert.matches("HTTP/1%.1 205 Reset Content\r\nDate: [^\r]+\r\nContent%-Length: 0\r\n\r\nHTTP/1%.1 226", out)
  end)

  it("ignores Upgrade (h2c, websocket) and goes on serving the connection", function()
    local out = raw(port, "GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" ..
      "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" ..
      "POST /upbody HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\nabc" ..
      "GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3)
    assert.are.same({ 200, 200, 200 }, statuses(out))
    assert.matches("GET /up 0;.*POST /upbody 3;.*GET /next 0;<EOF>$", out)
    local _, closes = out:gsub("Connection: close", "")
    assert.are.equal(1, closes)
    local py = [[
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); s.settimeout(3)
s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
first = s.recv(4096)
time.sleep(0.2)
s.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
print(first.split(b"\r\n")[0].decode(), s.recv(4096).split(b"\r\n\r\n")[1].decode())
]]
    assert.are.equal("HTTP/1.1 200 OK GET /again 0;\n", helper.exec({ "python3", "-c", py, tostring(port) }, { timeout = 10 }))
  end)

  it("answers CONNECT with Connection: close and closes", function()
    local out = raw(port, "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n", 3)
    assert.are.same({ 200 }, statuses(out))
    assert.matches("Connection: close\r\n\r\nCONNECT h:443 0;<EOF>$", out)
  end)

  it("keeps the answers, its own and pipelined ones, of a handler that fails after finishing", function()
    local out = raw(port, "GET /slow?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n" ..
                          "GET /errafterfinish?n=100 HTTP/1.1\r\nHost: x\r\n\r\n" ..
                          "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3)
    assert.are.same({ 200, 200, 200 }, statuses(out))
    assert.matches("GET /slow 0;.*\r\n\r\n64\r\n" .. string.rep("c", 100) .. "\r\n0\r\n\r\n.*GET /last 0;<EOF>$", out)
    -- a large finished answer the client reads late is not cut short
    local py = [[
import re, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /errafterfinish?n=3000000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
time.sleep(0.5)
s.settimeout(3)
data = b""
while True:
    b = s.recv(1 << 20)
    if not b: break
    data += b
print(max(len(run) for run in re.findall(b"c+", data)), data.endswith(b"\r\n0\r\n\r\n"))
]]
    assert.are.equal("3000000 True\n", helper.exec({ "python3", "-c", py, tostring(port) }, { timeout = 10 }))
  end)

  -- Python helpers for the backpressure specs: a socket with a small receive buffer (so the
  -- kernel holds little of what the server sends) and the server's /bpstate.
  local BP_PY = [[
import socket, sys, time
port = int(sys.argv[1])
def small():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.connect(("127.0.0.1", port)); return s
def state():
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(3)
    s.sendall(b"GET /bpstate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    d = b""
    while True:
        b = s.recv(4096)
        if not b: return d.split(b"\r\n\r\n")[1].decode()
        d += b
def settled():                         # /bpstate once the /bp handler has stopped writing
    for i in range(100):
        st = state().split()
        if st[1] != "writing": return st
        time.sleep(0.05)
    return st
def read_all(s, until):
    s.settimeout(5); d = bytearray()
    while not d.endswith(until):
        b = s.recv(1 << 20)
        if not b: break
        d += b
    return d
]]

  it("makes res:write wait while the client does not read (write_buffer), then sends it all", function()
    local py = BP_PY .. [[
s = small()
s.sendall(b"GET /bp?n=400 HTTP/1.1\r\nHost: x\r\n\r\n")
time.sleep(0.15)                       # not reading (idle_timeout is 0.5 s)
during = int(state().split()[0])
d = read_all(s, b"\r\n0\r\n\r\n")
print(during < 400, d.count(b"b") == 400 * 65536, " ".join(state().split()[:2]))
]]
    assert.are.equal("True True 400 finished\n", helper.exec({ "python3", "-c", py, tostring(port) }, { timeout = 20 }))
  end)

  it("stops reading pipelined requests while their answers pile up unread", function()
    local py = BP_PY .. [[
before = int(state().split()[2])
s = small()
for i in range(3):                     # 6 requests for 8 MB each (max_pipeline is 8)
    s.sendall(b"GET /mb HTTP/1.1\r\nHost: x\r\n\r\n" * 2); time.sleep(0.02)
time.sleep(0.05)                       # not reading for 0.1 s (idle_timeout is 0.5 s)
during = int(state().split()[2]) - before
s.sendall(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
d = read_all(s, b"GET /last 0;")
print(during < 6, d.count(b"HTTP/1.1 200"), int(state().split()[2]) - before)
]]
    assert.are.equal("True 7 6\n", helper.exec({ "python3", "-c", py, tostring(port) }, { timeout = 20 }))
  end)

  it("answers 200 pipelined requests with large bodies, finished out of order, in request order", function()
    -- later slots buffer their answers while earlier handlers sleep; half the answers stream.
    -- Then one more request on the same connection: the server must still be reading it.
    local bport, bstop = child_server([[
local aio = require "aio"
local http = require "aio.http"
local s = http.serve{ handler = function(req, res)
  local i = tonumber(req.path:match("%d+"))
  aio.sleep((i * 7 % 10) * 0.003)
  local body = string.rep(string.format("<%d>", i), 5000)
  if i % 2 == 0 then return 200, body end
  res:write(body:sub(1, 10000)); res:write(body:sub(10001)); res:finish()
end }
print(s:port()); io.stdout:flush()
]])
    local py = [[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); s.settimeout(5)
buf = b""
def need(pred):
    global buf
    while True:
        r = pred(buf)
        if r is not None: return r
        b = s.recv(1 << 20)
        if not b: raise EOFError
        buf += b
def until(sep):
    global buf
    i = need(lambda d: d.find(sep) if sep in d else None)
    out, buf = buf[:i], buf[i + len(sep):]
    return out
def take(k):
    global buf
    need(lambda d: 0 if len(d) >= k else None)
    out, buf = buf[:k], buf[k:]
    return out
def response():
    head = until(b"\r\n\r\n")
    fields = dict(l.split(b": ", 1) for l in head.split(b"\r\n")[1:])
    if b"Content-Length" in fields: return take(int(fields[b"Content-Length"]))
    body = b""
    while True:
        size = int(until(b"\r\n"), 16); body += take(size); take(2)
        if size == 0: return body
n = 200
s.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n)))
bad = [i for i in range(n) if response() != (b"<%d>" % i) * 5000]
s.sendall(b"GET /7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
print(len(bad), bad[:3], response() == b"<7>" * 5000)
]]
    local out = helper.exec({ "python3", "-c", py, tostring(bport) }, { timeout = 30 })
    bstop()
    assert.are.equal("0 [] True\n", out)
  end)

  it("wakes a writer waiting for its client when the client goes away", function()
    local py = BP_PY .. [[
import struct
s = small()
s.sendall(b"GET /bp?n=400 HTTP/1.1\r\nHost: x\r\n\r\n")
time.sleep(0.15)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
st = settled()
print(int(st[0]) < 400, st[1])
]]
    assert.are.equal("True cancelled\n", helper.exec({ "python3", "-c", py, tostring(port) }, { timeout = 20 }))
  end)

  it("keeps a slow but steady reader of a large answer (only a stalled one is closed)", function()
    -- 8 MB read 64 KB at a time with pauses: well over idle_timeout (0.5 s) in all, while each
    -- of the server's queued pieces moves in far less
    local py = BP_PY .. [[
s = small()
s.sendall(b"GET /mb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
s.settimeout(5); n = 0; t0 = time.time()
while True:
    b = s.recv(65536)
    if not b: break
    n += len(b)
    time.sleep(0.008)
print(n > 8000000, time.time() - t0 > 0.5)
]]
    assert.are.equal("True True\n", helper.exec({ "python3", "-c", py, tostring(port) }, { timeout = 20 }))
  end)

  it("answers a client that shut down its sending side (half-close) before closing", function()
    local py = [[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); s.settimeout(3)
s.sendall(sys.argv[2].encode())
s.shutdown(socket.SHUT_WR)
d = b""
while True:
    b = s.recv(65536)
    if not b: break
    d += b
print(d.decode())
]]
    local out = helper.exec({ "python3", "-c", py, tostring(port),
      "GET /slow?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\nPOST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab" ..
      "GET /partial HTTP/1.1\r\nHo" }, { timeout = 10 })
    assert.are.same({ 200, 200 }, statuses(out))
    assert.matches("GET /slow 0;HTTP/1%.1 200 OK.*\r\n\r\nPOST /two 2;\n$", out)   -- then EOF
    out = helper.exec({ "python3", "-c", py, tostring(port), "GET /slow?s=0.2 HTTP/1.0\r\n\r\n" }, { timeout = 10 })
    assert.matches("^HTTP/1%.1 200 OK.*GET /slow 0;\n$", out)
  end)

  it("cancels the handlers of a client that resets the connection", function()
    local py = BP_PY .. [[
import struct
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
time.sleep(0.1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
for i in range(100):
    st = state().split()[3]
    if st != "sleeping": break
    time.sleep(0.02)
print(st)
]]
    assert.are.equal("cancelled\n", helper.exec({ "python3", "-c", py, tostring(port) }, { timeout = 10 }))
  end)

  it("closes a connection whose client stops reading for idle_timeout (its writer is cancelled)", function()
    local py = BP_PY .. [[
s = small()
s.sendall(b"GET /bp?n=400 HTTP/1.1\r\nHost: x\r\n\r\n")
st = settled()                         # never reads; idle_timeout is 0.5 s
print(int(st[0]) < 400, st[1])
]]
    assert.are.equal("True cancelled\n", helper.exec({ "python3", "-c", py, tostring(port) }, { timeout = 20 }))
  end)

  it("sends a 100 Continue owed behind a pending answer once that answer is out, in order", function()
    local py = [[
import re, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); s.settimeout(3)
s.sendall(b"GET /slow?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n"
          b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
d = b""
while b"100 Continue\r\n\r\n" not in d:
    b = s.recv(65536)
    if not b: break
    d += b
s.sendall(b"hello")
while True:
    b = s.recv(65536)
    if not b: break
    d += b
print(" ".join(m.decode() for m in re.findall(rb"HTTP/1\.1 \d+ [A-Za-z]+|[A-Z]+ /\w+ \d+;", d)))
]]
    local out = helper.exec({ "python3", "-c", py, tostring(port) }, { timeout = 10 })
    assert.are.equal("HTTP/1.1 200 OK GET /slow 0; HTTP/1.1 100 Continue HTTP/1.1 200 OK POST /e 5;\n", out)
  end)

  it("answers HTTP/1.0 and closes unless asked to keep alive", function()
    local out = raw(port, "GET /ten HTTP/1.0\r\n\r\n", 2)
    assert.are.same({ 200 }, statuses(out))
    assert.matches("<EOF>$", out)
    -- 0.2 s of silence, well inside the server's idle_timeout (0.5 s): still open (a wait as
    -- long as idle_timeout raced the server's own close)
    out = raw(port, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0.2)
    assert.matches("Connection: keep%-alive", out)
    assert.matches("<TIMEOUT>$", out)
  end)
end)
