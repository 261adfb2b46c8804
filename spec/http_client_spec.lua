-- spec/http_client_spec.lua — aio.http's client (libcurl multi on the loop) against a real
-- server on loopback: responses, structured errors, timeouts, our own FIFO queue, cancellation,
-- keep-alive reuse, redirects, awaiting from tasks and from the top level.
local helper = require "spec.helper"
local aio = require "aio"
local http = require "aio.http"

-- Runs a test body as a task and awaits it.
local function async(fn)
  return function() return aio.spawn(fn):await() end
end

describe("aio.http client", function()
  local srv
  local log                        -- per test: paths in the order the server received them
  local peers                      -- distinct client sockets seen by the server

  before_each(function()
    log, peers = {}, {}
    srv = http.serve {
      max_body = 4 * 1024 * 1024,
      handler = function(req, res)
        log[#log + 1] = req.path .. (req.query.i and ("#" .. req.query.i) or "")
        peers[req.conn:peer() or "?"] = true
        local p = req.path
        if p == "/sleep" then aio.sleep(tonumber(req.query.s)); return 200, "slept" end
        if p == "/status" then return tonumber(req.query.code), "status " .. req.query.code end
        if p == "/redirect" then return 302, "moved", { Location = "/final?from=redirect" } end
        if p == "/loop" then return 302, "again", { Location = "/loop" } end
        if p == "/final" then return 200, "final " .. req.query.from end
        if p == "/headers" then
          return 200, (req.headers["x-token"] or "none") .. "|" .. (req.headers["content-type"] or ""),
            { ["Set-Thing"] = "a" }
        end
        if p == "/echo" then return 200, req.method .. ":" .. req.body end
        if p == "/moved" then return tonumber(req.query.code), "moved", { Location = "/echo" } end
        if p == "/header" then return 200, tostring(req.headers[req.query.name]) end
        if p == "/gzip" then return 200, "not gzip", { ["Content-Encoding"] = "gzip" } end
        if p == "/cut" then res:write("partial"); aio.sleep(0.01); req.conn:abort(); return end
        return 200, "ok"
      end,
    }
  end)

  after_each(function()
    srv:close()
  end)

  local function count(t) local n = 0; for _ in pairs(t) do n = n + 1 end; return n end

  -- The lines of s, as a list.
  local function lines_of(s)
    local t = {}
    for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
    return t
  end

  -- Starts a raw HTTP/1.1 server in another process that logs each request line to a file.
  -- Mode "once" answers the first request of each connection and closes the connection
  -- without a reply at the second (a server's idle close crossing the client's reuse); the
  -- first `hold` connections are answered only once all of them are open. Mode "last" is
  -- "once", but the server is gone (connections refused) when it closes the connection. Mode
  -- "garbage" answers anything with bytes that are not HTTP. Returns its base URL, a function giving
  -- the log's lines, and a function that stops it.
  local function raw_server(mode, hold)
    local py = [[
import os, socket, sys, threading
mode, hold, log = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "a", buffering=1)
barrier = threading.Barrier(hold) if hold > 1 else None
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(16); ls.settimeout(30)
print(ls.getsockname()[1], os.getpid(), flush=True)
def serve(s, first):
    buf, n = b"", 0
    while True:
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d: s.close(); return
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line.lower().startswith(b"content-length:"): length = int(line.split(b":")[1])
        while len(buf) < length: buf += s.recv(65536)
        buf, n = buf[length:], n + 1
        log.write(head.split(b"\r\n")[0].decode() + "\n")
        if mode == "garbage": s.sendall(b"garbage, not http\r\n\r\n"); s.close(); return
        if n >= 2 and mode == "last": ls.close(); s.close(); os._exit(0)
        if n >= 2: s.close(); return
        if first and barrier: barrier.wait(5)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
k = 0
while True:
    c, _ = ls.accept(); k += 1
    threading.Thread(target=serve, args=(c, k <= hold), daemon=True).start()
]]
    local logfile = helper.tmpfile("", ".log")
    local proc = io.popen("python3 -c " .. helper.quote(py) .. " " .. mode .. " " .. (hold or 1)
      .. " " .. helper.quote(logfile), "r")
    local port, pid = proc:read("n", "n")
    local function lines() return lines_of(helper.readfile(logfile) or "") end
    local function stop()
      os.execute("kill " .. pid .. " 2>/dev/null")
      proc:close()
    end
    return "http://127.0.0.1:" .. port, lines, stop
  end

  -- The Lua lines that start, in a helper.run_lua script, a Python listener whose backlog is
  -- full (it answers no SYN, so a client's connect stays pending) and read its port into
  -- `port`; the listener prints the port, then runs the Python `rest`.
  local function full_backlog_listener(rest)
    local py = table.concat({
      "import os, socket, threading, time",
      's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)',
      "fill = []",
      "for i in range(3):",
      "    c = socket.socket(); c.setblocking(False)",
      "    try: c.connect(s.getsockname())",
      "    except BlockingIOError: pass",
      "    fill.append(c)",
      "time.sleep(0.2); print(s.getsockname()[1], flush=True)",
      rest,
    }, "\n")
    local cmd = "python3 -c " .. helper.quote(py)
    return ("local p = io.popen(%q)\nlocal port = p:read('n')\n"):format(cmd)
  end

  -- Counts the entries of list equal to v.
  local function occurrences(list, v)
    local n = 0
    for _, x in ipairs(list) do if x == v then n = n + 1 end end
    return n
  end

  it("gets from the top level (blocking by running the loop)", function()
    local res = http.get(srv:url("/"))
    assert.are.equal(200, res.status)
    assert.are.equal("ok", res.body)
    assert.is_true(res.ok)
    assert.are.equal(srv:url("/"), res.url)
    assert.is_number(res.time)
    assert.are.equal("2", res.headers["content-length"])
  end)

  it("gets from tasks, concurrently", async(function()
    local t0 = aio.now()
    local tasks = {}
    for i = 1, 30 do tasks[i] = aio.spawn(http.get, srv:url("/sleep?s=0.1&i=" .. i)) end
    local results = aio.gather(tasks)
    assert.are.equal(30, #results)
    for _, r in ipairs(results) do assert.are.equal("slept", r.body) end
    assert.is_true(aio.now() - t0 < 1.0, "requests ran one after another")
  end))

  it("treats HTTP errors as responses with ok == false", async(function()
    local r = http.get(srv:url("/status?code=404"))
    assert.are.equal(404, r.status)
    assert.is_false(r.ok)
    assert.are.equal("status 404", r.body)
    r = http.get(srv:url("/status?code=503"))
    assert.are.equal(503, r.status)
    assert.is_false(r.ok)
  end))

  it("sends headers, methods and bodies; reads response headers lower-cased", async(function()
    local r = http.request { url = srv:url("/headers"), headers = { ["X-Token"] = "t0k" } }
    assert.are.equal("t0k|", r.body)
    assert.are.equal("a", r.headers["set-thing"])
    r = http.request { url = srv:url("/headers"), json = { a = 1 } }
    assert.are.equal("none|application/json", r.body)
    r = http.post(srv:url("/echo"), "payload")
    assert.are.equal("POST:payload", r.body)
    r = http.request { method = "DELETE", url = srv:url("/echo") }
    assert.are.equal("DELETE:", r.body)
  end))

  it("raises a structured error when the connection is refused", async(function()
    local port = srv:port()
    srv:close()
    local ok, err = pcall(http.get, "http://127.0.0.1:" .. port .. "/")
    assert.is_false(ok)
    assert.are.equal("refused", err.kind)
    assert.are.equal("http://127.0.0.1:" .. port .. "/", err.url)
    assert.is_true(http.is_error(err))
    assert.matches("^http refused: ", tostring(err))
    srv = http.serve { handler = function() return "x" end }   -- for after_each
  end))

  it("raises a structured error when the host does not resolve", async(function()
    local ok, err = pcall(http.get, "http://no-such-host.invalid/", { timeout = 5 })
    assert.is_false(ok)
    assert.are.equal("dns", err.kind)
  end))

  it("raises kind 'reset' when the server drops the connection mid-response", async(function()
    local ok, err = pcall(http.get, srv:url("/cut"))
    assert.is_false(ok)
    assert.are.equal("reset", err.kind)
    assert.are.equal(200, http.get(srv:url("/")).status)    -- the client recovers
  end))

  it("raises a structured error for a malformed URL", async(function()
    local ok, err = pcall(http.get, "nope://what")
    assert.is_false(ok)
    assert.are.equal("url", err.kind)
  end))

  it("times out with kind 'timeout'", async(function()
    local t0 = aio.now()
    local ok, err = pcall(http.get, srv:url("/sleep?s=2"), { timeout = 0.15 })
    assert.is_false(ok)
    assert.are.equal("timeout", err.kind)
    assert.is_true(aio.now() - t0 < 1.5)
  end))

  it("does not count time spent queued against a request's timeout", async(function()
    -- one connection, three requests of 0.2 s each with a 0.35 s timeout: the last one waits
    -- 0.4 s in our queue, which must not count (tornado's HTTP 599 trap).
    local client = http.client { max_connections = 1 }
    local tasks = {}
    for i = 1, 3 do
      tasks[i] = aio.spawn(client.get, client, srv:url("/sleep?s=0.2&i=" .. i), { timeout = 0.35 })
    end
    local results = aio.gather(tasks)
    for i = 1, 3 do assert.are.equal("slept", results[i].body) end
    assert.is_true(results[3].queued >= 0.3, "the third request should have queued")
    client:close()
  end))

  it("gives each response its start on aio.now()'s clock: started .. started + time is the transfer", async(function()
    -- one connection, three requests: each starts after the one before it ended, and
    -- all lie within [before, after] on the loop clock
    local client = http.client { max_connections = 1 }
    local before = aio.now()
    local tasks = {}
    for i = 1, 3 do tasks[i] = aio.spawn(client.get, client, srv:url("/sleep?s=0.03&i=" .. i)) end
    local results = aio.gather(tasks)
    local after = aio.now()
    for i, r in ipairs(results) do
      assert.is_number(r.started)
      assert.is_true(r.started >= before and r.started + r.time <= after + 1e-6, "request " .. i)
      if i > 1 then
        local prev = results[i - 1]
        assert.is_true(r.started >= prev.started + prev.time - 1e-6, "request " .. i .. " overlaps its predecessor")
      end
    end
    client:close()
  end))

  it("keeps at most max_connections in flight and starts queued requests in FIFO order", async(function()
    local client = http.client { max_connections = 2 }
    local tasks = {}
    for i = 1, 8 do tasks[i] = aio.spawn(client.get, client, srv:url("/sleep?s=0.03&i=" .. i)) end
    aio.sleep(0.01)
    local active, queued = client:stats()
    assert.are.equal(2, active)
    assert.are.equal(6, queued)
    aio.gather(tasks)
    -- arrivals come in pairs (two requests start together); sort within each pair
    local order = {}
    for i, p in ipairs(log) do order[i] = tonumber(p:match("#(%d+)")) end
    for k = 1, #order - 1, 2 do
      if order[k] > order[k + 1] then order[k], order[k + 1] = order[k + 1], order[k] end
    end
    assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8 }, order)
    assert.are.equal(2, count(peers))           -- two connections, each reused
    client:close()
  end))

  it("keeps FIFO order for a request started from a synchronous done callback", async(function()
    -- aio.core.on_done runs its callback while the client collects finished transfers, before
    -- the freed slot is handed to the queue: the new request must go after those waiting.
    local client = http.client { max_connections = 1 }
    local d
    local a = client:start { url = srv:url("/?i=1") }
    local b = client:start { url = srv:url("/?i=2") }
    local c = client:start { url = srv:url("/?i=3") }
    require("aio.core").on_done(a, function() d = client:start { url = srv:url("/?i=4") } end)
    b:await(); c:await()
    while not d do aio.sleep(0) end
    d:await()
    assert.are.same({ "/#1", "/#2", "/#3", "/#4" }, log)
    client:close()
  end))

  it("reuses one keep-alive connection for sequential requests", async(function()
    local client = http.client()
    for i = 1, 25 do assert.are.equal(200, client:get(srv:url("/?i=" .. i)).status) end
    assert.are.equal(1, count(peers))
    client:close()
  end))

  it("reconnects when the server has closed an idle kept-alive connection", async(function()
    local own = http.serve { idle_timeout = 0.05, handler = function() return 200, "fresh" end }
    local client = http.client()
    assert.are.equal("fresh", client:get(own:url("/a")).body)
    aio.sleep(0.2)                 -- the server closes the idle connection; the client sees EOF
    for i = 1, 3 do assert.are.equal("fresh", client:get(own:url("/b" .. i)).body) end
    client:close()
    own:close()
  end))

  it("retries an idempotent request once when its kept-alive connection turns out closed", async(function()
    -- A raw server that resets each connection at its 2nd request, once it has read the head:
    -- what a client meets when the server's idle close crosses its reuse of the connection. The
    -- body is too big for the socket buffers, so the client is still sending when the reset
    -- comes (a send error: curl does not retry those itself).
    local py = [[
import socket, struct
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(8)
import os
print(ls.getsockname()[1], os.getpid(), flush=True)
def head(s, data):
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk: return None, b""
        data += chunk
    h, rest = data.split(b"\r\n\r\n", 1)
    return h, rest
for _ in range(2):
    s, _ = ls.accept()
    buf = b""
    for n in (1, 2):
        h, buf = head(s, buf)
        if h is None: break
        if n == 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            break
        length = 0
        for line in h.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"): length = int(line.split(b":")[1])
        while len(buf) < length: buf += s.recv(1 << 20)
        buf = buf[length:]
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
    s.close()
]]
    local srv_proc = io.popen("python3 -c " .. helper.quote(py), "r")
    local port, pid = srv_proc:read("n", "n")
    local url = "http://127.0.0.1:" .. port .. "/"
    local big = string.rep("x", 16 * 1024 * 1024)
    local client = http.client { max_connections = 1 }
    local put, put_err = pcall(function()
      assert.are.equal("fresh", client:get(url .. "1").body)
      -- reset on connection 1, sent again on connection 2
      return client:request { method = "PUT", url = url .. "2", body = big }.body
    end)
    -- a POST is not idempotent: reset on connection 2, it fails instead of going out twice
    local ok, err = pcall(client.request, client, { method = "POST", url = url .. "3", body = big })
    client:close()
    os.execute("kill " .. pid .. " 2>/dev/null")   -- whatever happened above, the server goes
    srv_proc:close()
    assert.is_true(put, tostring(put_err))
    assert.are.equal("fresh", put_err)
    assert.is_false(ok)
    assert.are.equal("reset", err.kind)
  end))

  it("sends a request that gets a slot before the caller yields; a queued one waits", function()
    -- A raw server in another process says when a request line reaches it. The caller reads
    -- that report with a blocking read, so the loop never runs in between: the request must
    -- connect and go out from inside client:start itself (it used to wait for the next loop
    -- turn, in a batch with every other request of the turn). The second request is over
    -- max_connections and must not go out until the first one's slot is free.
    local py = [[
import socket, sys
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(8)
print(ls.getsockname()[1], flush=True)
ls.settimeout(3)
def request(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk: return None
        data += chunk
    return data.split(b" ")[1].decode()
try:
    s, _ = ls.accept(); s.settimeout(3)
    print("got", request(s), flush=True)
    ls.settimeout(0.3)
    try:
        ls.accept(); print("second connection", flush=True)
    except socket.timeout:
        print("no second connection", flush=True)
    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
    print("then", request(s), flush=True)
    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
    s.recv(1)
except socket.timeout:
    print("timeout", flush=True)
]]
    local srv_proc = io.popen("python3 -c " .. helper.quote(py), "r")
    local port = srv_proc:read("n")
    srv_proc:read("l")
    local client = http.client { max_connections = 1 }
    local first = client:start { url = "http://127.0.0.1:" .. port .. "/1" }
    local second = client:start { url = "http://127.0.0.1:" .. port .. "/2" }
    local got = srv_proc:read("l")          -- blocking: no loop turn has run since start
    local other = srv_proc:read("l")
    local ok, r1, r2 = pcall(function() return first:await(), second:await() end)
    local later = srv_proc:read("l")
    client:close()
    srv_proc:close()
    assert.are.equal("got /1", got)
    assert.are.equal("no second connection", other)
    assert.is_true(ok, tostring(r1))
    assert.are.equal("first", r1.body)
    assert.are.equal("then /2", later)
    assert.are.equal("second", r2.body)
  end)

  it("gives a forked child its own default client, and refuses the parent's in the child", function()
    -- The child used to reuse the parent's default session (curl state and kept-alive
    -- connections): it aborted in libuv, and the parent then read the child's response.
    local out, err, status = helper.run_lua([[
      local aio = require "aio"
      local http = require "aio.http"
      local process = require "aio.process"
      local srv = http.serve { handler = function(req) return 200, "body of " .. req.path end }
      local mine = http.client()
      print(http.get(srv:url("/p1")).body, mine:get(srv:url("/m1")).body)
      local h = process.fork(function()
        local ok, e = pcall(mine.get, mine, srv:url("/nope"))
        return http.get(srv:url("/child")).body, ok, tostring(e):match("forked child") or tostring(e),
          tostring(mine)
      end)
      print(h:join(10))
      print(http.get(srv:url("/p2")).body, mine:get(srv:url("/m2")).body)
      mine:close()
      srv:close()
    ]], { timeout = 20 })
    assert.are.equal(0, status, err)
    assert.are.equal("body of /p1\tbody of /m1\n"
      .. "body of /child\tfalse\tforked child\taio.http.client (of the parent process)\n"
      .. "body of /p2\tbody of /m2\n", out)
  end)

  it("fails every queued request when each one is refused at once (no hang)", function()
    -- Each refusal is seen inside the same curl call that made the connection, so every
    -- completion starts the next request synchronously; after drive's bounded loop the rest
    -- must still be collected on the next loop turn (they used to wait for an event forever).
    local out, err, status = helper.run_lua([[
      local aio = require "aio"
      local http = require "aio.http"
      local srv = http.serve { handler = function() return 200, "x" end }
      local url = srv:url("/")
      srv:close()
      aio.sleep(0.05)
      local client = http.client { max_connections = 1 }
      local fs = {}
      for i = 1, 40 do fs[i] = client:start { url = url .. i } end
      local kinds = {}
      for i = 1, 40 do
        local ok, e = pcall(fs[i].await, fs[i])
        kinds[#kinds + 1] = ok and "ok" or e.kind
      end
      client:close()
      print(#kinds, table.concat(kinds, " "):gsub("refused", ""):match("^%s*$") and "all refused")
    ]], { timeout = 20 })
    assert.are.equal(0, status, err)
    assert.are.equal("40\tall refused\n", out)
  end)

  it("sends a request whose connect completes only later (a listener's backlog full at first)", function()
    -- The client lets curl look at a socket it just opened at once and starts polling it only
    -- afterwards, for what curl then wants: here writability, as the connect is still pending
    -- (the SYN goes unanswered until the listener accepts, and the kernel resends it ~1 s on).
    local out, err, status = helper.run_lua(full_backlog_listener([[
time.sleep(0.3)
def serve(c):
    if c.recv(65536): c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlater"); os._exit(0)
s.settimeout(10)
for i in range(8): threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()]]) .. [[
      local aio = require "aio"
      local http = require "aio.http"
      local client = http.client { max_connections = 1 }
      local t0 = aio.now()
      local r = client:get("http://127.0.0.1:" .. port .. "/")
      print(r.status, r.body, aio.now() - t0 > 0.3)
      client:close()
    ]], { timeout = 20 })
    assert.are.equal(0, status, err)
    assert.are.equal("200\tlater\ttrue\n", out)
  end)

  it("survives closing a client (or a connect timeout) while a connection is being made", function()
    -- A listener whose backlog is full answers no SYN, so the client's connect stays pending.
    -- curl closes such a socket itself (no close callback) when its transfer is removed; the
    -- poll watching it used to be restarted on the closed descriptor, and libuv aborted.
    local out, err, status = helper.run_lua(full_backlog_listener("time.sleep(1)") .. [[
      local aio = require "aio"
      local http = require "aio.http"
      local client = http.client { max_connections = 1 }
      local f = client:start { url = "http://127.0.0.1:" .. port .. "/" }
      aio.sleep(0.05)
      client:close()
      local ok, e = pcall(f.await, f)
      aio.sleep(0.01)              -- a loop turn that polls, before any new descriptor opens
      print(ok, aio.is_cancelled(e))
      -- the same socket fate when curl gives up on the connect itself
      local ok2, e2 = pcall(http.get, "http://127.0.0.1:" .. port .. "/", { connect_timeout = 0.05 })
      aio.sleep(0.01)
      print(ok2, e2.kind)
      -- the client that follows reuses descriptor numbers; it must work as usual
      local srv = http.serve { handler = function() return 200, "after" end }
      print(http.get(srv:url("/")).body)
      srv:close()
    ]], { timeout = 20 })
    assert.are.equal(0, status, err)
    assert.are.equal("false\ttrue\nfalse\ttimeout\nafter\n", out)
  end)

  it("aborts the transfer and frees the slot when the awaiting task is cancelled", async(function()
    local client = http.client { max_connections = 1 }
    local slow = aio.spawn(client.get, client, srv:url("/sleep?s=5"))
    aio.sleep(0.05)
    assert.are.equal(1, (client:stats()))
    slow:cancel()
    local ok, err = pcall(slow.await, slow)
    assert.is_false(ok)
    assert.is_true(aio.is_cancelled(err))
    assert.are.equal(0, (client:stats()))
    local t0 = aio.now()
    assert.are.equal("ok", client:get(srv:url("/")).body)  -- the slot is free again
    assert.is_true(aio.now() - t0 < 1)
    client:close()
  end))

  it("removes a cancelled request from the queue", async(function()
    local client = http.client { max_connections = 1 }
    local first = aio.spawn(client.get, client, srv:url("/sleep?s=0.1&i=1"))
    local second = aio.spawn(client.get, client, srv:url("/sleep?s=0.1&i=2"))
    local third = aio.spawn(client.get, client, srv:url("/sleep?s=0.1&i=3"))
    aio.sleep(0.01)
    assert.are.same({ 1, 2 }, { client:stats() })
    second:cancel()
    aio.sleep(0)
    assert.are.same({ 1, 1 }, { client:stats() })
    first:await(); third:await()
    assert.are.same({ "/sleep#1", "/sleep#3" }, log)
    client:close()
  end))

  it("does not follow redirects unless asked to", async(function()
    local r = http.get(srv:url("/redirect"))
    assert.are.equal(302, r.status)
    assert.are.equal("/final?from=redirect", r.headers.location)
    r = http.get(srv:url("/redirect"), { follow = true })
    assert.are.equal(200, r.status)
    assert.are.equal("final redirect", r.body)
    assert.are.equal(srv:url("/final?from=redirect"), r.url)
    local ok, err = pcall(http.get, srv:url("/loop"), { follow = true, max_redirects = 3 })
    assert.is_false(ok)
    assert.are.equal("redirects", err.kind)
  end))

  it("gives awaiting code a cancellation when the client is closed", async(function()
    local client = http.client()
    local t = aio.spawn(client.get, client, srv:url("/sleep?s=5"))
    aio.sleep(0.05)
    client:close()
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.is_true(aio.is_cancelled(err))
    assert.has_error(function() client:get(srv:url("/")) end)
  end))

  it("works with a futures-and-callbacks style (no coroutine in user code)", function()
    local client = http.client { max_connections = 5 }
    local done = aio.future()
    local n = 0
    for i = 1, 10 do
      client:start({ url = srv:url("/?i=" .. i) }):add_done_callback(function(f)
        n = n + 1
        if n == 10 then done:set_result(n) end
      end)
    end
    assert.are.equal(10, done:await())
    client:close()
  end)

  it("traces requests started with client:start{} too, done or failed", async(function()
    local trace = require "aio.trace"
    local path = helper.tmpfile("", ".json")
    trace.start(path)
    local client = http.client()
    local ok_url, bad_url = srv:url("/sleep?s=0.02&i=start"), "http://127.0.0.1:1/refused"
    local f1, f2 = client:start { url = ok_url }, client:start { url = bad_url }
    assert.are.equal(200, f1:await().status)
    assert.is_false(pcall(f2.await, f2))
    trace.stop()
    client:close()
    local spans = {}
    for _, e in ipairs(require("cjson").decode(helper.readfile(path)).traceEvents) do
      if e.ph == "b" and e.cat == "http" then spans[e.name] = e end
    end
    assert.is_table(spans["GET " .. ok_url], "no span for client:start{}")
    assert.are.equal(200, spans["GET " .. ok_url].args.status)
    assert.is_table(spans["GET " .. bad_url], "no span for a failed client:start{}")
    assert.matches("refused", spans["GET " .. bad_url].args.error)
    helper.cleanup()
  end))

  -- Warms a kept-alive connection to a raw_server of mode, then POSTs on it (the server closes
  -- it without a reply). Returns pcall's results and how many times the POST reached the server.
  local function post_on_dying_connection(mode)
    local base, lines, stop = raw_server(mode)
    local client = http.client()
    local warm = client:get(base .. "/warm").body
    local ok, err = pcall(client.post, client, base .. "/pay", "amount=100")
    client:close()
    stop()
    assert.are.equal("first", warm)
    return ok, err, occurrences(lines(), "POST /pay HTTP/1.1")
  end

  it("never sends a POST twice, even when curl itself would retry it on a new connection", async(function()
    -- curl (7.88) retries a request whose reused connection closed without a reply on a new
    -- connection by itself, for any method ("Connection died, retrying a fresh connect"): the
    -- POST reached the server twice.
    local ok, err, sent = post_on_dying_connection("once")
    assert.is_false(ok, "the POST was answered: it went out twice")
    assert.are.equal("reset", err.kind)
    assert.are.equal(1, sent)
  end))

  it("reports a POST whose connection died as 'reset', even when reconnecting is refused", async(function()
    -- curl's own retry makes its new connection before the client can refuse the second send;
    -- with the server gone, that connect failed and the POST, which had gone out, was reported
    -- as "refused" (which says it never reached the server).
    local ok, err, sent = post_on_dying_connection("last")
    assert.is_false(ok)
    assert.are.equal("reset", err.kind)
    assert.are.equal(1, sent)
  end))

  it("sends an idempotent request at most twice, curl's own retries included", async(function()
    -- Two kept-alive connections, both closed by the server at their next request: curl
    -- retried on the second one, then again on a third connection (a GET sent three times).
    local base, lines, stop = raw_server("once", 2)
    local client = http.client { max_connections = 2 }
    local a, b = client:start { url = base .. "/a" }, client:start { url = base .. "/b" }
    local warm = { a:await().body, b:await().body }
    local ok, err = pcall(client.get, client, base .. "/x")
    client:close()
    stop()
    assert.are.same({ "first", "first" }, warm)
    assert.is_false(ok, "the GET was answered: it went out a third time")
    assert.are.equal("reset", err.kind)
    assert.are.equal(2, occurrences(lines(), "GET /x HTTP/1.1"))
  end))

  it("turns a POST into a GET on 301, 302 and 303 when following redirects", async(function()
    for _, code in ipairs { 301, 302, 303 } do
      local r = http.post(srv:url("/moved?code=" .. code), "form=data", { follow = true })
      assert.are.equal("GET:", r.body, "after " .. code)
    end
    -- 307 keeps the method and the body
    assert.are.equal("POST:form=data", http.post(srv:url("/moved?code=307"), "form=data", { follow = true }).body)
  end))

  it("sends the method asked for, GET with a body included", async(function()
    assert.are.equal("GET:q", http.request { method = "GET", url = srv:url("/echo"), body = "q" }.body)
    assert.are.equal("GET:{\"a\":1}", http.request { method = "GET", url = srv:url("/echo"), json = { a = 1 } }.body)
    assert.are.equal("POST:", http.request { method = "POST", url = srv:url("/echo") }.body)
    assert.are.equal("PATCH:p", http.request { method = "PATCH", url = srv:url("/echo"), body = "p" }.body)
  end))

  it("raises an argument error naming the bad option, and leaks nothing for it", function()
    -- l_request copied method, URL and body before the checks that raise: 10 KB per bad call.
    local out, err, status = helper.run_lua([[
      local http = require "aio.http"
      local c = http.client {}
      local function rss() return tonumber(io.open("/proc/self/statm"):read("a"):match("%d+ (%d+)")) * 4 end
      local body = string.rep("x", 10000)
      local bad = {
        { headers = { ["X-Flag"] = true } }, { timeout = "soon" }, { max_redirects = 1.5 },
        { headers = { ["X Bad"] = "v" } }, { method = "GET\r\nX: y" }, { connect_timeout = -1 },
      }
      for i = 1, 300 do for _, t in ipairs(bad) do t.url = "http://127.0.0.1:9/"; t.body = body; pcall(c.start, c, t) end end
      collectgarbage(); collectgarbage()
      local r0 = rss()
      for i = 1, 3000 do for _, t in ipairs(bad) do pcall(c.start, c, t) end end
      collectgarbage(); collectgarbage()
      print(rss() - r0 < 20000 and "no leak" or ("grew " .. (rss() - r0) .. " KB"))
      local function message(ok, e) return (tostring(e):gsub("^.-: http", "http")) end
      for _, t in ipairs(bad) do print(message(pcall(c.start, c, t))) end
      print(message(pcall(http.client, { max_connections = 0 })))
      print(message(pcall(http.client, { timeout = 0 / 0 })))
      c:close()
    ]], { timeout = 60 })
    assert.are.equal(0, status, err)
    assert.are.same({
      "no leak",
      "http request: bad header 'X-Flag' (a string value expected, got boolean)",
      "http request: bad option 'timeout' (a number of seconds >= 0 expected, got string)",
      "http request: bad option 'max_redirects' (an integer from 0 to 2147483647 expected, got 1.5)",
      "http request: bad header name 'X Bad' (an HTTP token expected)",
      "http request: bad option 'method' (not an HTTP token)",
      "http request: bad option 'connect_timeout' (a number of seconds >= 0 expected, got -1)",
      "http.client: bad option 'max_connections' (an integer from 1 to 2147483647 expected, got 0)",
    }, { table.unpack(lines_of(out), 1, 8) })
    assert.matches("http.client: bad option 'timeout' %(a number of seconds >= 0 expected, got %-?nan%)", out)
  end)

  it("refuses CR, LF and NUL in the URL and header values, and methods or names that are not tokens", async(function()
    local function fails(t, what)
      t.url = t.url or srv:url("/echo")
      local ok, e = pcall(http.request, t)
      assert.is_false(ok, what .. " went out")
      assert.is_string(e, what)
      assert.matches("http request: bad ", e, 1, true)
    end
    fails({ headers = { ["X-Name"] = "bob\r\nX-Admin: true" } }, "CRLF in a header value")
    fails({ headers = { ["X-Name"] = "a\0b" } }, "NUL in a header value")
    fails({ headers = { ["X-Na me"] = "a" } }, "a space in a header name")
    fails({ method = "GET /ok HTTP/1.1\r\nHost: a\r\n\r\nDELETE" }, "CRLF in the method")
    fails({ method = "PU\0T" }, "NUL in the method")
    fails({ url = srv:url("/echo\0/../admin") }, "NUL in the URL")
    fails({ url = srv:url("/echo\r\nX-Admin: true") }, "CRLF in the URL")
    assert.are.equal(0, #log, "a refused request reached the server")
    -- an empty value is sent empty (curl drops "Name:"; "Name;" sends it)
    assert.are.equal("", http.request { url = srv:url("/header?name=x-empty"), headers = { ["X-Empty"] = "" } }.body)
    assert.are.equal("7", http.request { url = srv:url("/header?name=x-n"), headers = { ["X-N"] = 7 } }.body)
  end))

  it("fetches only http and https URLs", async(function()
    local ok, err = pcall(http.get, "file:///etc/passwd")
    assert.is_false(ok, "a file:// URL was read")
    assert.are.equal("url", err.kind)
    ok, err = pcall(http.get, "dict://127.0.0.1:" .. srv:port() .. "/x")
    assert.is_false(ok)
    assert.are.equal("url", err.kind)
    local own = http.serve { handler = function() return 302, "", { Location = "file:///etc/passwd" } end }
    ok, err = pcall(http.get, own:url("/"), { follow = true })
    own:close()
    assert.is_false(ok)
    assert.are.equal("url", err.kind)
  end))

  it("reports a reply that is not HTTP, or a bad encoding, as kind 'protocol'", async(function()
    local base, _, stop = raw_server("garbage")
    local ok, err = pcall(http.get, base .. "/")
    stop()
    assert.is_false(ok)
    assert.are.equal("protocol", err.kind)
    ok, err = pcall(http.get, srv:url("/gzip"))
    assert.is_false(ok)
    assert.are.equal("protocol", err.kind)
  end))

  it("rounds a timeout up to whole milliseconds; 0 and math.huge mean none, a negative one raises", async(function()
    local ok, err = pcall(http.get, srv:url("/sleep?s=1"), { timeout = 0.0005 })
    assert.is_false(ok, "a 0.5 ms timeout meant no timeout")
    assert.are.equal("timeout", err.kind)
    local client = http.client { timeout = 0.05 }
    assert.are.equal("slept", client:get(srv:url("/sleep?s=0.1"), { timeout = 0 }).body)
    assert.are.equal("slept", client:get(srv:url("/sleep?s=0.1"), { timeout = math.huge }).body)
    ok, err = pcall(client.get, client, srv:url("/sleep?s=0.1"))
    assert.are.equal("timeout", err.kind)
    client:close()
    for _, bad in ipairs { -1, 0 / 0, -math.huge, "soon" } do
      ok, err = pcall(http.get, srv:url("/"), { timeout = bad })
      assert.is_false(ok)
      assert.matches("bad option 'timeout'", err, 1, true)
      ok, err = pcall(http.client, { connect_timeout = bad })
      assert.is_false(ok)
      assert.matches("bad option 'connect_timeout'", err, 1, true)
    end
  end))

  it("applies a request's own timeout on a reused handle and the client's again after it", async(function()
    -- a handle carries the client's timeout: a request with its own sets it, and the handle
    -- goes back to the client's before the next request
    local client = http.client { timeout = 0.05, max_connections = 1 }
    assert.are.equal("slept", client:get(srv:url("/sleep?s=0.1"), { timeout = 0.5 }).body)
    local ok, err = pcall(client.get, client, srv:url("/sleep?s=0.1"))
    assert.are.equal("timeout", ok or err.kind)
    client:close()
    client = http.client { timeout = 0.5, max_connections = 1 }
    ok, err = pcall(client.get, client, srv:url("/sleep?s=0.1"), { timeout = 0.05 })
    assert.are.equal("timeout", ok or err.kind)
    assert.are.equal("slept", client:get(srv:url("/sleep?s=0.1")).body)
    assert.are.equal("slept", client:get(srv:url("/sleep?s=0.1")).body)
    client:close()
  end))

  it("sends no Expect: 100-continue with a large body", async(function()
    -- curl (7.88) asks for it before a body over 1 MiB, then waits a second for a server that
    -- ignores it, as most do
    local big = string.rep("x", 2 * 1024 * 1024)
    assert.are.equal("nil", http.post(srv:url("/header?name=expect"), big).body)
    assert.are.equal("nil", http.request { method = "PUT", url = srv:url("/header?name=expect"), body = big }.body)
    -- unless the caller asks for it
    assert.are.equal("100-continue", http.request { method = "PUT", url = srv:url("/header?name=expect"),
      body = big, headers = { Expect = "100-continue" } }.body)
  end))

  it("replaces a closed default client; a closed client still has a tostring", async(function()
    assert.are.equal(200, http.get(srv:url("/")).status)
    do local c <close> = http.default_client() end
    assert.are.equal(200, http.get(srv:url("/")).status)
    local c = http.client()
    c:close()
    assert.are.equal("aio.http.client (closed)", tostring(c))
  end))

  it("converts a non-ASCII host name to punycode", async(function()
    local ok, err = pcall(http.get, "http://bücher.invalid/", { timeout = 5 })
    assert.is_false(ok)
    assert.are.equal("dns", err.kind)       -- the name went to the resolver, not rejected
    assert.are.equal("http://xn--bcher-kva.invalid/", err.url)
    assert.are.equal("C", os.setlocale(nil, "ctype"))   -- the process locale is untouched
  end))

  it("gives a URL it parsed to curl for its own request only (a reused handle gets the next URL)", async(function()
    -- a non-ASCII URL is parsed here and handed to curl parsed; the one easy handle then
    -- serves plain requests, whose URL must win over the parsed one of the request before
    local client = http.client { max_connections = 1 }
    for _, path in ipairs { "/ü", "/plain", "/ü", "/redirect" } do
      local r = client:get(srv:url(path), { follow = path == "/redirect" })
      assert.are.equal(200, r.status)
    end
    assert.are.same({ "/ü", "/plain", "/ü", "/redirect", "/final" }, log)
    client:close()
  end))

  it("gives a GET's own headers, redirects and timeouts to that request only (a reused handle)", async(function()
    -- one easy handle serves every request; a GET's own options are set back on it afterwards
    local client = http.client { max_connections = 1 }
    local function get(path, opts) return client:get(srv:url(path), opts) end
    assert.are.equal("t0k|", get("/headers", { headers = { ["X-Token"] = "t0k" } }).body)
    assert.are.equal("none|", get("/headers").body)
    assert.are.equal(200, get("/redirect", { follow = true, max_redirects = 2 }).status)
    assert.are.equal(302, get("/redirect").status)
    local ok, err = pcall(get, "/sleep?s=0.2", { timeout = 0.05 })
    assert.are.equal("timeout", ok or err.kind)
    assert.are.equal("slept", get("/sleep?s=0.2").body)
    assert.are.equal("POST:x", client:post(srv:url("/echo"), "x").body)
    assert.are.equal("none|", get("/headers").body)
    assert.are.equal("GET:", get("/echo").body)
    client:close()
  end))

  describe("with max_per_host", function()
    it("does not count the wait for a host's slot against the timeout", async(function()
      local client = http.client { max_connections = 10, max_per_host = 1, timeout = 0.4 }
      local fs = {}
      for i = 1, 3 do fs[i] = client:start { url = srv:url("/sleep?s=0.2&i=" .. i) } end
      assert.are.same({ 1, 2 }, { client:stats() })          -- the other two wait in our queue
      for i = 1, 3 do
        local ok, r = pcall(fs[i].await, fs[i])
        assert.is_true(ok, "request " .. i .. ": " .. tostring(r))
        assert.are.equal("slept", r.body)
      end
      assert.are.same({ "/sleep#1", "/sleep#2", "/sleep#3" }, log)
      client:close()
    end))

    it("lets a request to an idle host start while a busy host's requests wait", async(function()
      local gate = aio.future()
      local inside, most = 0, 0
      local busy = http.serve { handler = function()
        inside = inside + 1
        most = math.max(most, inside)
        gate:await()
        inside = inside - 1
        return 200, "busy"
      end }
      local watchdog = aio.spawn(function() aio.sleep(5); if not gate:done() then gate:set_result(true) end end)
      local client = http.client { max_connections = 2, max_per_host = 1 }
      local order = {}
      local function note(name) return function() order[#order + 1] = name end end
      local a1 = client:start { url = busy:url("/1") }
      local a2 = client:start { url = busy:url("/2") }
      local b = client:start { url = srv:url("/") }             -- another host: another port
      a1:add_done_callback(note("a1")); a2:add_done_callback(note("a2")); b:add_done_callback(note("b"))
      local ok = pcall(b.await, b)
      if not gate:done() then gate:set_result(true) end
      a1:await(); a2:await()
      watchdog:cancel()
      client:close()
      busy:close()
      assert.is_true(ok)
      assert.are.same({ "b", "a1", "a2" }, order)
      assert.are.equal(1, most, "curl was given two requests for one host")
    end))

    -- The client hands curl its parsed URL (CURLOPT_CURLU); curl 7.88 kept a reused handle's
    -- previous URL string, and res.url named the first request's URL on every later one.
    it("reports each response's own url on a reused connection", async(function()
      local client = http.client { max_per_host = 1 }
      for _, path in ipairs { "/a", "/b", "/c?x=1" } do
        local res = client:get(srv:url(path))
        assert.are.equal(srv:url(path), res.url)
      end
      client:close()
    end))

    it("frees a host's slot when a request is cancelled, queued or active", async(function()
      local client = http.client { max_connections = 4, max_per_host = 1 }
      local f1 = client:start { url = srv:url("/sleep?s=5&i=1") }
      local f2 = client:start { url = srv:url("/sleep?s=5&i=2") }
      local f3 = client:start { url = srv:url("/sleep?s=0.01&i=3") }
      assert.are.same({ 1, 2 }, { client:stats() })
      f2:cancel()                                              -- queued
      assert.are.same({ 1, 1 }, { client:stats() })
      f1:cancel()                                              -- active: f3 takes the slot
      assert.are.same({ 1, 0 }, { client:stats() })
      assert.are.equal("slept", f3:await().body)
      assert.are.same({ 0, 0 }, { client:stats() })
      assert.are.equal("ok", client:get(srv:url("/")).body)
      client:close()
    end))
  end)

  it("records requests and tasks as trace-event spans with aio.trace", async(function()
    local trace = require "aio.trace"
    local path = helper.tmpfile("", ".json")
    trace.start(path)
    local t = aio.spawn(function() return http.get(srv:url("/sleep?s=0.02")).status end)
    t:set_name("fetcher")
    assert.are.equal(200, t:await())
    assert.is_true(trace.stop() > 0)
    local doc = require("cjson").decode(helper.readfile(path))
    local begins, ends = {}, {}
    for _, e in ipairs(doc.traceEvents) do
      if e.ph == "b" then begins[e.id] = e elseif e.ph == "e" then ends[e.id] = e end
    end
    local saw_get, saw_task, saw_server = false, false, false
    for id, b in pairs(begins) do
      assert.is_table(ends[id], "span without an end: " .. b.name)
      assert.is_true(ends[id].ts >= b.ts)
      if b.name == "GET " .. srv:url("/sleep?s=0.02") then
        saw_get = true
        assert.are.equal(200, b.args.status)
        assert.is_true(ends[id].ts - b.ts >= 20000)     -- microseconds
      end
      if b.cat == "task" and b.name == "task fetcher" then saw_task = true end
      if b.cat == "http.server" then saw_server = true end
    end
    assert.is_true(saw_get, "no span for the request")
    assert.is_true(saw_task, "no span for the task")
    assert.is_true(saw_server, "no span for the server side")
    helper.cleanup()
  end))
  -- The proxy variables stay curl's to read (the client only tells curl "no proxy" itself when
  -- none is set): a request goes through the proxy they name, or straight to its host where
  -- no_proxy says so or the variable is one curl ignores. Each case runs in a child with only
  -- the variables given.
  describe("proxy environment variables", function()
    local process = require "aio.process"

    -- GETs url from a child aioshell with environment env: "status|body", or the error kind.
    local function child_get(url, env)
      local code = ([[
        local ok, r = pcall(require("aio.http").get, %q)
        io.write(ok and (r.status .. "|" .. r.body) or r.kind)]]):format(url)
      return assert(process.exec { helper.aioshell, "-e", code, env = env }).stdout
    end

    -- Runs fn(proxy_url) with a server that answers as a proxy would: with the target it got.
    local function with_proxy(fn)
      local proxy = http.serve { handler = function(req) return 200, "via proxy " .. req.target end }
      local ok, err = pcall(fn, proxy:url())
      proxy:close()
      assert(ok, err)
    end

    it("http_proxy and ALL_PROXY send the request to the proxy", async(function()
      with_proxy(function(proxy)
        assert.are.equal("200|via proxy http://proxied.invalid/p?x=1",
                         child_get("http://proxied.invalid/p?x=1", { http_proxy = proxy }))
        assert.are.equal("200|via proxy http://proxied.invalid/q",
                         child_get("http://proxied.invalid/q", { ALL_PROXY = proxy }))
      end)
    end))

    it("no_proxy, an empty http_proxy and HTTP_PROXY in capitals leave the request direct", async(function()
      with_proxy(function(proxy)
        assert.are.equal("dns", child_get("http://proxied.invalid/p",
                                          { http_proxy = proxy, no_proxy = "proxied.invalid" }))
        assert.are.equal("dns", child_get("http://proxied.invalid/p", { http_proxy = "" }))
        assert.are.equal("dns", child_get("http://proxied.invalid/p", { HTTP_PROXY = proxy }))
        assert.are.equal("200|ok", child_get(srv:url("/"), { all_proxy = "" }))
      end)
    end))
  end)
end)
