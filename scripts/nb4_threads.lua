-- scripts/nb4_threads.lua — notebook 4 (seed 003), the threading cells: two worker threads
-- draining a queue of file copies (copy_op, with lock-protected printing), a queue of page
-- fetches (get_url, against a local server), the sum of primes below 400k/500k/600k
-- (find_rand), the pure-Lua matrix product on four threads (the seed's GIL-bound dot
-- products), and atomicity: the bytecode of `n = n + 1` next to `lst.sort()`.
--
--   aioshell scripts/nb4_threads.lua [--quick | --full] [--dim 60]
--
-- Here a "queue drained by daemon threads" is a thread.channel read by jobs of a thread pool;
-- print_lock is a thread.mutex; each worker thread has its own Lua state (no GIL), so the
-- CPU-bound cells get faster with threads instead of slower.
local aio = require "aio"
local thread = require "aio.thread"
local process = require "aio.process"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb4_threads", title = "Threads, queues, locks", args = arg,
  options = { dim = false }, integer = { "dim" }, positive = { "dim" },
  help = { dim = { "N", "size of the cubed matrices (default 60, --full 120)" } } }

local print_lock = thread.mutex()

-- A worker: takes items from the channel until it is closed, calling fn(item) on each.
local function process_queue(q, fn, lock)
  local name = require("aio.thread").current()
  local done = 0
  while true do
    local item = q:recv()
    if item == nil then return done end
    fn(item, lock, name)
    done = done + 1
  end
end

-- ---- copy_op: two threads copy files taken from a queue ----------------------------------
local dir = os.tmpname()
os.remove(dir)
assert(require("aio.sys").mkdir(dir, true))
local size = e:size(1, 8) * 1024 * 1024
for _, n in ipairs { "v1.avi", "v2.avi" } do
  local f = assert(io.open(dir .. "/" .. n, "wb"))
  f:write(string.rep(n, size // #n))
  f:close()
end

local function copy_op(file_data, lock, name)
  do local _ <close> = lock:lock(); print("Starting thread : " .. name) end
  local ip, op = next(file_data)
  local src = assert(io.open(ip, "rb"))
  local dst = assert(io.open(op, "wb"))
  while true do
    local chunk = src:read(65536)
    if not chunk then break end
    dst:write(chunk)
  end
  src:close()
  dst:close()
  do local _ <close> = lock:lock(); print("Finished thread : " .. name) end
end

local pool = thread.pool { size = 2, name = "Thread" }
local q = thread.channel()
local t_copy, copied = e:time(function()
  local workers = { pool:submit(process_queue, q, copy_op, print_lock),
                    pool:submit(process_queue, q, copy_op, print_lock) }
  for _, pair in ipairs { { "v1.avi", "v11.avi" }, { "v2.avi", "v22.avi" } } do
    q:send({ [dir .. "/" .. pair[1]] = dir .. "/" .. pair[2] })
  end
  q:close()  -- compress_queue.join(): here, close the queue and wait for the workers
  return aio.gather(workers)
end)
print(string.format("Execution time = %.5f", t_copy))
local function same(a, b)
  local fa, fb = io.open(a, "rb"), io.open(b, "rb")
  local ok = fa and fb and fa:read("a") == fb:read("a")
  if fa then fa:close() end
  if fb then fb:close() end
  return ok
end
e:check(copied[1] + copied[2] == 2, "two copies made by the two workers")
e:check(same(dir .. "/v1.avi", dir .. "/v11.avi") and same(dir .. "/v2.avi", dir .. "/v22.avi"),
  "the copies equal their sources")
os.execute("rm -rf " .. dir)

-- ---- get_url: two threads fetch pages from a queue (the seed's requests/bs4 failed) ------
local http = require "aio.http"
local server = http.serve { host = "127.0.0.1", port = 0, handler = function(req)
  return 200, "<html><head><title>Page " .. (req.query.n or "?") .. "</title></head></html>"
end }
local function get_url(url, lock, name)
  local res = require("aio.http").get(url)
  assert(res.status == 200, "HTTP " .. tostring(res.status))
  local title = res.body:match("<title>(.-)</title>")
  local _ <close> = lock:lock()
  print(name, title, "Finished fetching : " .. url)
end
local uq = thread.channel()
local fetchers = { pool:submit(process_queue, uq, get_url, print_lock),
                   pool:submit(process_queue, uq, get_url, print_lock) }
for i = 1, 5 do uq:send(server:url("/page?n=" .. i)) end
uq:close()
local fetched = aio.gather(fetchers)
e:check(fetched[1] + fetched[2] == 5, "five pages fetched by two worker threads")
server:close()

-- ---- find_rand: sum of primes up to 400k, 500k, 600k on two threads --------------------
local function is_prime(num)
  if num <= 1 then return false
  elseif num <= 3 then return true
  elseif num % 2 == 0 or num % 3 == 0 then return false end
  local i = 5
  while i * i <= num do
    if num % i == 0 or num % (i + 2) == 0 then return false end
    i = i + 6
  end
  return true
end
local function find_rand(num)
  local sum, ix = 0, 2
  while ix <= num do
    if is_prime(ix) then sum = sum + ix end
    ix = ix + 1
  end
  return sum
end
local rand_list = { 400000, 500000, 600000 }
local t_serial_primes, serial_primes = e:time(function()
  local r = {}
  for i, n in ipairs(rand_list) do r[i] = find_rand(n) end
  return r
end)
local t_primes, sums = e:time(function() return pool:map(find_rand, rand_list) end)
table.sort(sums)
print(string.format("[%d, %d, %d]", sums[1], sums[2], sums[3]))
print(string.format("Execution time = %.5f (serial %.5f)   notebook: 1.35991 (2 threads, CPython)", t_primes,
  t_serial_primes))
e:check(sums[1] == 6458901531 and sums[2] == 9914236195 and sums[3] == 14071826345,
  "the seed's sums [6458901531, 9914236195, 14071826345]")
e:check(serial_primes[3] == sums[3], "threads and serial agree")
pool:close()

-- ---- the matrix product: pure Lua on four threads (the seed's GIL-bound cell) -----------
local DIM = e.options.dim or e:size(60, 120)
local function random_matrix(n, seed)
  local m, x = {}, seed
  for i = 1, n do
    m[i] = {}
    for j = 1, n do x = (x * 1103515245 + 12345) % 2147483648; m[i][j] = x / 2147483648 end
  end
  return m
end
local function compute_cubic(m)
  local function product(a, b)
    local n, c = #a, {}
    for i = 1, n do
      local ci, ai = {}, a[i]
      for j = 1, n do
        local s = 0
        for k = 1, n do s = s + ai[k] * b[k][j] end
        ci[j] = s
      end
      c[i] = ci
    end
    return c
  end
  local r = product(product(m, m), m)
  return r[1][1] + r[#r][#r]  -- a digest: the matrices need not come back
end
local matrices = {}
for i = 1, 4 do matrices[i] = random_matrix(DIM, i) end
local t_mserial, mserial = e:time(function()
  local r = {}
  for i, m in ipairs(matrices) do r[i] = compute_cubic(m) end
  return r
end)
local mpool = thread.pool { size = 4 }
local t_mthreads, mthreads = e:time(function() return mpool:map(compute_cubic, matrices) end)
mpool:close()
print(string.format("matrix cubes %dx%d: serial %.3f s, 4 threads %.3f s (%.2fx)", DIM, DIM,
  t_mserial, t_mthreads, t_mserial / t_mthreads))
print("  (the notebook: 10,000 x 10,000 in pure Python on 4 threads, slowed by the GIL and interrupted by hand,"
  .. " then numpy's np.dot, which releases the GIL; here the pure-Lua threads already run in parallel:"
  .. " each has its own Lua state. --dim N for another size)")
local agree = true
for i = 1, 4 do agree = agree and math.abs(mserial[i] - mthreads[i]) < 1e-9 * math.abs(mserial[i]) end
e:check(agree, "threads compute the same products as the serial loop")

-- ---- atomicity: `n = n + 1` is several instructions ------------------------------------
-- The listing of the function on line 2 of `source`, by luac -l (dis.dis's counterpart).
local function listing_of(source)
  local r = process.exec { "luac5.4", "-l", "-p", "-", stdin = source }
  return r and r.stdout:match("(function <stdin:2.-)%s*$") or ""
end
local body = listing_of("n = 0\nfunction foo() n = n + 1 end\n")
print("luac -l of `function foo() n = n + 1 end`:")
print(body)
local ninstr = 0
for line in body:gmatch("[^\n]+") do
  if line:match("^%s*%d+%s+%[%d+%]%s+%u") then ninstr = ninstr + 1 end
end
e:check(body:find("GETTABUP") and body:find("SETTABUP") ~= nil,
  "n = n + 1 reads (GETTABUP), adds, then writes (SETTABUP): another thread can run in between")
local sort_body = listing_of("lst = {4, 1, 3, 2}\nfunction foo() table.sort(lst) end\n")
print("luac -l of `function foo() table.sort(lst) end` (the notebook's lst.sort()):")
print(sort_body)
local calls = 0
for _ in sort_body:gmatch("%sCALL%s") do calls = calls + 1 end
e:check(calls == 1, "table.sort(lst) is one CALL instruction, like the notebook's one CALL for lst.sort()")
print("table.sort(lst) is one call into C: no Lua code can run in the middle of it, but a shared "
  .. "table would still need a lock in aioshell — each thread has its own state, so tables are "
  .. "never shared; only thread.shared cells, mutexes and channels are.")

e:result { key = "primes", label = "sum of primes (400k, 500k, 600k), 2 threads", measured = t_primes,
  unit = "s", reference = "[6458901531, 9914236195, 14071826345] in 1.36 s",
  reproduced = sums[3] == 14071826345, note = string.format("serial %.3f s", t_serial_primes) }
e:result { key = "matrix", label = string.format("matrix cubes %dx%d, 4 threads", DIM, DIM),
  measured = t_mthreads, unit = "s", reference = "slowed by the GIL", reproduced = true,
  note = string.format("%.2fx over serial (%.3f s)", t_mserial / t_mthreads, t_mserial) }
e:result { key = "bytecode", label = "instructions in `n = n + 1` (with the return)", measured = ninstr,
  unit = "", reference = "LOAD_GLOBAL, LOAD_CONST, BINARY_OP, STORE_GLOBAL", reproduced = ninstr >= 3 }
e:finish()
