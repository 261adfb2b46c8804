-- A minimal aioshell server for the client-throughput bench: GET / -> "Hello, World!".
-- aioshell bench/http/hello_server.lua PORT [N]  (N: close after N answers, for a fixed workload)
local http = require "aio.http"
local limit, served = tonumber(arg[2]), 0
local s
s = http.serve { port = tonumber(arg[1]) or 0, handler = function()
  served = served + 1
  if served == limit then s:close() end
  return 200, "Hello, World!"
end }
print("Listening on port: " .. s:port())
io.stdout:flush()
