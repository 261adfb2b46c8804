-- Client throughput for aioshell: N keep-alive GETs, C at a time, one aio.http client.
-- aioshell bench/http/client.lua URL N C  -> "RESULT requests seconds bad"
local aio = require "aio"
local http = require "aio.http"
local url, n, c = arg[1], tonumber(arg[2]), tonumber(arg[3])
local client = http.client { max_connections = c }
local bad = 0
local function worker(k)
  for _ = 1, k do
    local r = client:get(url)
    if r.status ~= 200 then bad = bad + 1 end
  end
end
local t0 = aio.now()
local tasks = {}
for i = 1, c do tasks[i] = aio.spawn(worker, n // c + (i <= n % c and 1 or 0)) end
aio.gather(tasks)
print("RESULT", n, aio.now() - t0, bad)
client:close()
