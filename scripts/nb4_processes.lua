-- scripts/nb4_processes.lua — notebook 4 (seed 003), the multiprocessing cells: Pipe, Manager
-- (a shared dict and list), doubler with pids and names, the Lock-protected printer, logging
-- from processes, the creator/consumer Queue with a sentinel, and Pool.map.
--
--   aioshell scripts/nb4_processes.lua [--quick | --full]
--
-- process.fork children inherit this Lua state (closures need no pickling); the Manager's
-- server process is replaced by process.dict / process.array in shared memory (OpenResty's
-- shared dict is the model: no extra process, every operation atomic). Output of the children
-- is collected through a pipe so the checks can read it; it is also printed.
local aio = require "aio"
local process = require "aio.process"
local experiment = require "aio.experiment"
local e = experiment.new { name = "nb4_processes", title = "Processes", args = arg, options = {} }

-- ---- Pipe: the child sends [42, None, 'hello'] ------------------------------------------
local parent_conn, child_conn = process.pipe()
local p = process.fork(function(conn)
  conn:send({ 42, nil, "hello", n = 3 })
  conn:close()
end, child_conn)
local got = parent_conn:recv()
local pipe_seen = string.format("[%s, %s, '%s']", tostring(got[1]), got[2] == nil and "None" or "?", got[3])
print(pipe_seen)
p:join()
e:check(got[1] == 42 and got[2] == nil and got[3] == "hello" and got.n == 3,
  "Pipe: [42, None, 'hello'] arrives with its hole (n = 3)")

-- ---- Manager: a shared dict and list modified by a child -----------------------------------
local d = process.dict()
local l = process.array({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 })
local function f(dd, ll)
  dd:set(1, "1")
  dd:set("2", 2)
  dd:set(0.25, false)  -- None: a dict cannot hold nil (nil deletes), false stands in
  local n = #ll
  for i = 1, n // 2 do  -- l.reverse()
    local a, b = ll[i], ll[n - i + 1]
    ll[i], ll[n - i + 1] = b, a
  end
end
process.fork(f, d, l):join()
local keys = d:keys()
table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
local function repr(v) return type(v) == "string" and ("'" .. v .. "'") or tostring(v) end
local parts = {}
for _, k in ipairs(keys) do parts[#parts + 1] = repr(k) .. ": " .. repr(d:get(k)) end
print("{" .. table.concat(parts, ", ") .. "}")
print("[" .. table.concat(l:totable(), ", ") .. "]")
e:check(d:get(1) == "1" and d:get("2") == 2 and d:get(0.25) == false,
  "Manager dict: {1: '1', '2': 2, 0.25: None} (False here)")
e:check(table.concat(l:totable(), ",") == "9,8,7,6,5,4,3,2,1,0", "Manager list reversed by the child")

-- ---- doubler: five processes and a named one, with pids and names -------------------------
local out_r, out_w = process.pipe()
local function doubler(number, out)
  local result = number * 2
  local me = process.current()
  local line = string.format("%d doubled to %d by: %s (pid %d)", number, result, me.name, me.pid)
  print(line)
  out:send(line)
end
local numbers = { 5, 10, 15, 20, 25 }
local procs = {}
for i, number in ipairs(numbers) do procs[i] = process.fork(doubler, number, out_w) end
procs[#procs + 1] = process.spawn { target = doubler, name = "Test", args = { 2, out_w } }
for _, proc in ipairs(procs) do proc:join() end
local lines = {}
for _ = 1, #procs do lines[#lines + 1] = out_r:recv() end
local by_test = false
for _, line in ipairs(lines) do if line:match("^2 doubled to 4 by: Test %(pid %d+%)$") then by_test = true end end
e:check(#lines == 6 and by_test, "six doublers ran, one of them named 'Test'")
local pids = {}
for _, proc in ipairs(procs) do pids[proc.pid] = true end
local distinct = 0
for _ in pairs(pids) do distinct = distinct + 1 end
e:check(distinct == 6, "each doubler ran in its own process (6 pids)")

-- ---- printer with a Lock, and logging from the processes -----------------------------------
local lock = process.lock()
local function printer(item, lk, out)
  local name = process.current().name
  io.stderr:write(string.format("[INFO/%s] child process calling self.run()\n", name))
  do
    local _ <close> = lk:acquire()
    print(item)
    out:send(tostring(item))
  end
  io.stderr:write(string.format("[INFO/%s] process shutting down\n", name))
  io.stderr:write(string.format("[INFO/%s] process exiting with exitcode 0\n", name))
end
local items = { "tango", "foxtrot", 10 }
local printers = {}
for i, item in ipairs(items) do printers[i] = process.fork(printer, item, lock, out_w) end
local codes = {}
for i, pr in ipairs(printers) do pr:join(); codes[i] = pr.exitcode end
local printed = {}
for _ = 1, #items do printed[#printed + 1] = out_r:recv() end
table.sort(printed)
e:check(table.concat(printed, ",") == "10,foxtrot,tango", "the three printers printed under the lock")
e:check(codes[1] == 0 and codes[2] == 0 and codes[3] == 0, "every printer exited with exitcode 0")

-- ---- creator / consumer with a Queue and a sentinel ----------------------------------------
local sentinel = -1
local q = process.queue()
local function creator(data, qq)
  print("Creating data and putting it on the queue")
  for _, item in ipairs(data) do
    print(string.format("putting in %d", item))
    qq:put(item)
  end
end
local function my_consumer(qq, out)
  local processed_all = {}
  while true do
    local data = qq:get()
    print(string.format("data found to be processed: %d", data))
    local processed = data * 2
    print(processed)
    processed_all[#processed_all + 1] = processed
    if data == sentinel then break end
  end
  out:send(processed_all)
end
local data = { 5, 10, 13, -1 }
local p1 = process.fork(creator, data, q)
local p2 = process.fork(my_consumer, q, out_w)
p1:join()
p2:join()
local processed = out_r:recv()
e:check(table.concat(processed, ",") == "10,20,26,-2", "the consumer doubled 5, 10, 13 and stopped at the sentinel")

-- ---- Pool.map ------------------------------------------------------------------------------
local pool = process.pool { size = 3 }
local r = pool:map(function(number) return number * 2 end, { 5, 10, 20 })
print("[" .. table.concat(r, ", ") .. "]")
pool:close()
e:check(table.concat(r, ",") == "10,20,40", "Pool.map(doubler, [5, 10, 20]) = [10, 20, 40]")

e:result { key = "pipe", label = "Pipe", measured = pipe_seen, unit = "",
  reference = "[42, None, 'hello']", reproduced = got[1] == 42 and got[3] == "hello" }
e:result { key = "manager", label = "Manager dict and list (process.dict, process.array)",
  measured = #d, unit = "keys", reference = "{1: '1', '2': 2, 0.25: None} · [9, ..., 0]",
  reproduced = d:get("2") == 2 }
e:result { key = "pool_map", label = "Pool.map(doubler)", measured = "[" .. table.concat(r, ", ") .. "]", unit = "",
  reference = "[10, 20, 40]", reproduced = table.concat(r, ",") == "10,20,40" }
e:finish()
