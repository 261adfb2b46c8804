-- The crawler for aioshell in the peers' shape: BASE_URL N C (C = 0: unbounded gather).
-- aioshell bench/http/crawl.lua BASE_URL N C  -> "RESULT bytes seconds bad"
-- (scripts/crawler.lua does the same with a table; this keeps the bench's output uniform.)
local aio = require "aio"
local http = require "aio.http"
local base, n, c = arg[1], tonumber(arg[2]), tonumber(arg[3])
if c == 0 then c = n end
local letters = "abcdefghijklmnopqrstuvwxyz"
local function sample10()
  local a = {}
  for i = 1, 26 do a[i] = letters:sub(i, i) end
  for i = 1, 10 do local j = math.random(i, 26); a[i], a[j] = a[j], a[i] end
  return table.concat(a, "", 1, 10)
end
local urls = {}
for i = 1, n do urls[i] = base .. sample10() end
local client = http.client { max_connections = c }
local t0 = aio.now()
local futures = {}
for i, url in ipairs(urls) do futures[i] = client:start { url = url } end
local size, bad = 0, 0
for f in aio.as_completed(futures) do
  local r = f:result()
  size = size + #r.body
  if r.status ~= 200 then bad = bad + 1 end
end
-- Closing the connections counts, as it does in scripts/crawler.lua and for the aiohttp peer
-- (its session closes inside asyncio.run): 2-3 ms at 100 connections, 20-30 ms at 1000.
client:close()
print("RESULT", size, aio.now() - t0, bad)
