-- scripts/nb4_fetch.lua — notebook 4 (seed 003), the aiohttp cells, against a local server
-- (this machine has no internet, and a benchmark must not hit other people's sites):
--   fetch  — GET a page; print status, content-type and the first 15 characters of the body;
--   scrape — scrape_all_titles: one GET per movie id (57 ids), all gathered concurrently; the
--            server waits --delay seconds per page, so the whole scrape takes about one delay,
--            not 57 of them.
--
--   aioshell scripts/nb4_fetch.lua [--quick | --full] [--delay S]
local aio = require "aio"
local http = require "aio.http"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb4_fetch", title = "aiohttp-style fetch and scrape", args = arg,
  options = { delay = false }, positive = { "delay" }, duration = { delay = "s" },
  help = { delay = { "S", "each page's latency in seconds (default 0.1, --full 0.5)" } } }
local DELAY = e.options.delay or e:size(0.1, 0.5)

local movies_list = { 'tt2935510', 'tt7131622', 'tt5463162', 'tt4758646', 'tt3640424', 'tt6024606',
  'tt1596363', 'tt3707106', 'tt2713180', 'tt2193215', 'tt2024544', 'tt0816711', 'tt1764234',
  'tt1402488', 'tt1210166', 'tt0478304', 'tt1001526', 'tt0361748', 'tt0421715', 'tt0887883',
  'tt0443680', 'tt0496806', 'tt0449467', 'tt0356910', 'tt0349903', 'tt0332452', 'tt0165982',
  'tt0270288', 'tt0240772', 'tt0266987', 'tt0236493', 'tt0208092', 'tt0137523', 'tt0120601',
  'tt0119643', 'tt0120102', 'tt0118972', 'tt0117665', 'tt0114746', 'tt0114369', 'tt0110322',
  'tt0110148', 'tt0109783', 'tt0108399', 'tt0107302', 'tt0105265', 'tt0104009', 'tt0104567',
  'tt0103074', 'tt0101268', 'tt0097478', 'tt0097136', 'tt0118930', 'tt0093407', 'tt0093638',
  'tt0093640', 'tt0093231' }

-- The local stand-in for python.org and imdb.com: an HTML page per path, after DELAY for titles.
local served = 0
local server = http.serve {
  host = "127.0.0.1", port = 0,
  handler = function(req)
    served = served + 1
    local id = req.path:match("^/title/(tt%d+)/fullcredits$")
    if id then
      aio.sleep(DELAY)
      return 200, "<!doctype html><html><head><title>" .. id .. " full credits</title></head>" ..
        "<body>cast of " .. id .. "</body></html>", { ["Content-Type"] = "text/html; charset=utf-8" }
    elseif req.path == "/" then
      return 200, "<!doctype html>\n<html><head><title>Welcome to Python.org</title></head></html>",
        { ["Content-Type"] = "text/html; charset=utf-8" }
    end
    return 404, "not found\n"
  end,
}

-- async with session.get(url) as response: status, content-type, text().
local response = http.get(server:url("/"))
print("Status:", response.status)
print("Content-type:", response.headers["content-type"])
local html = response.body
print("Body:", html:sub(1, 15), "...")
e:check(response.status == 200, "fetch: status 200")
e:check(response.headers["content-type"] == "text/html; charset=utf-8", "fetch: content-type text/html; charset=utf-8")
e:check(html:sub(1, 15) == "<!doctype html>", "fetch: the body starts with '<!doctype html>'")

-- scrape_all_titles: one request per id, gathered.
local function get_html_by_movie_id_new(movie_id)
  local r = http.get(server:url("/title/" .. movie_id .. "/fullcredits"))
  return r
end
local function scrape_all_titles(list)
  local tasks = {}
  for _, movie_id in ipairs(list) do tasks[#tasks + 1] = aio.spawn(get_html_by_movie_id_new, movie_id) end
  return aio.gather(tasks)
end

local elapsed, result = e:time(scrape_all_titles, movies_list)
print(string.format("Executed in %0.2f seconds.", elapsed))
local ok200, titled = 0, 0
for i, r in ipairs(result) do
  if r.status == 200 then ok200 = ok200 + 1 end
  if r.body:find(movies_list[i], 1, true) then titled = titled + 1 end
end
e:check(#result == #movies_list and ok200 == #movies_list, "scrape: %d pages, all 200 (%d)", #movies_list, ok200)
e:check(titled == #movies_list, "scrape: results come back in input order (page i names id i)")
e:check(elapsed < DELAY * 4 + 0.3, "scrape: concurrent — %.2f s for %d pages of %.2f s each (serial: %.1f s)",
  elapsed, #movies_list, DELAY, DELAY * #movies_list)
server:close()

e:result { key = "fetch", label = "fetch: status / content-type / body prefix", measured = string.format("%d %s",
  response.status, html:sub(1, 15)), reference = "Status: 200 · text/html; charset=utf-8 · <!doctype html>",
  reproduced = response.status == 200 and html:sub(1, 15) == "<!doctype html>" }
e:result { key = "scrape", label = string.format("scrape %d titles, gathered", #movies_list), measured = elapsed,
  unit = "s", expected = DELAY, reference = "concurrent (seed ran against imdb.com; no figure kept)",
  reproduced = elapsed < DELAY * 4 + 0.3, note = string.format("%.2f s per page; serial would be %.1f s",
    DELAY, DELAY * #movies_list) }
e:finish()
