-- A minimal aioshell server for the client-throughput bench: GET / -> "Hello, World!".
-- aioshell bench/http/hello_server.lua PORT
local http = require "aio.http"
local s = http.serve { port = tonumber(arg[1]) or 0, handler = function() return 200, "Hello, World!" end }
print("Listening on port: " .. s:port())
io.stdout:flush()
