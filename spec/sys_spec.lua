-- spec/sys_spec.lua — aio.sys: readings are present, in range and consistent with each other.
local sys = require "aio.sys"
local aio = require "aio"

describe("aio.sys", function()
  it("cpu_times has the kernel's counters, aggregate and per cpu, growing over time", function()
    local a = sys.cpu_times()
    for _, k in ipairs { "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal" } do
      assert.is_number(a[k], k)
      assert.is_true(a[k] >= 0, k)
    end
    assert.equal(sys.cpu_count() >= 1 and true, #a >= 1)
    local x = 0
    for i = 1, 2e6 do x = x + i end  -- burn a little CPU so some counter moves
    local b = sys.cpu_times()
    local ta = a.user + a.system + a.idle + a.nice
    local tb = b.user + b.system + b.idle + b.nice
    assert.is_true(tb >= ta)
  end)

  it("cpu_percent over an interval is a percentage, and per cpu gives one per cpu", function()
    local p = sys.cpu_percent(0.05)
    assert.is_number(p)
    assert.is_true(p >= 0 and p <= 100)
    local per = sys.cpu_percent(0.05, { percpu = true })
    assert.equal(#sys.cpu_times(), #per)
    for _, v in ipairs(per) do assert.is_true(v >= 0 and v <= 100) end
  end)

  it("cpu_percent sees a busy loop on this process's core", function()
    sys.cpu_percent()
    local t = sys.clock()
    while sys.clock() - t < 0.3 do end
    local p = sys.cpu_percent()
    -- One of the machine's cores was fully busy: at least 1/ncpu of the total, less slack.
    assert.is_true(p >= 100 / sys.cpu_count() * 0.6, "cpu_percent " .. p)
  end)

  it("cpu_percent without an interval compares with the previous call", function()
    sys.cpu_percent()
    aio.sleep(0.05)
    local p = sys.cpu_percent()
    assert.is_true(p >= 0 and p <= 100)
  end)

  it("memory: total > available > 0 and used + available == total", function()
    local m = sys.memory()
    assert.is_true(m.total > 0)
    assert.is_true(m.available > 0 and m.available <= m.total)
    assert.equal(m.total, m.used + m.available)
    assert.is_true(m.percent >= 0 and m.percent <= 100)
  end)

  it("memory: constrained is a real cgroup limit or absent, never the kernel's 'unlimited'", function()
    -- cgroup v1 with no limit reports LONG_MAX rounded down to a page (9223372036854771712)
    local c = sys.memory().constrained
    assert.is_true(c == nil or (math.type(c) == "integer" and c > 0 and c < 1 << 62), tostring(c))
  end)

  it("loadavg gives three non-negative numbers", function()
    local a, b, c = sys.loadavg()
    for _, v in ipairs { a, b, c } do assert.is_true(v >= 0) end
  end)

  it("rss grows when this process allocates and rusage reports it", function()
    local before = sys.rss()
    assert.is_true(before > 1024 * 1024)
    local keep = {}
    for i = 1, 2e5 do keep[i] = { i } end
    local after = sys.rss()
    assert.is_true(after > before, ("rss %d -> %d"):format(before, after))
    local ru = sys.rusage()
    assert.is_true(ru.maxrss >= after * 0.5)
    assert.is_true(ru.utime > 0)
    keep = nil
  end)

  it("process_time counts CPU, not sleeping", function()
    local c0 = sys.process_time()
    aio.sleep(0.1)
    local slept = sys.process_time() - c0
    -- Spin until 50 ms of CPU were used (bounded: the machine is shared, so wall time varies).
    local c1, t = sys.process_time(), sys.clock()
    while sys.process_time() - c1 < 0.05 and sys.clock() - t < 5 do end
    local busy = sys.process_time() - c1
    assert.is_true(slept < 0.05, "slept " .. slept)
    assert.is_true(busy >= 0.05 and sys.clock() - t < 5, "busy " .. busy)
  end)

  it("hrtime is monotonic nanoseconds and clock is the same in seconds", function()
    local a = sys.hrtime()
    local c = sys.clock()
    local b = sys.hrtime()
    assert.equal("integer", math.type(a))
    assert.is_true(b >= a)
    assert.is_true(math.abs(c - a / 1e9) < 0.01)
  end)

  it("time is the epoch in seconds", function()
    -- bracketed by os.time on both sides: a clock step between the calls (seen on this VM)
    -- moves both bounds with it
    local t0 = os.time()
    local t = sys.time()
    local t1 = os.time()
    assert.is_true(t >= math.min(t0, t1) - 1 and t <= math.max(t0, t1) + 1, t .. " " .. t0 .. " " .. t1)
  end)

  it("measure reports wall and cpu of a function and passes its results", function()
    local m, r = sys.measure(function(x) return x * 2 end, 21)
    assert.equal(42, r)
    assert.is_true(m.wall >= 0 and m.cpu >= 0)
  end)

  it("isatty and tty_size on a pipe", function()
    local p = io.popen(string.format("%s -e 'local s=require\"aio.sys\" print(s.isatty(1), s.tty_size(1))'",
      require("spec.helper").aioshell))
    local out = p:read("a")
    p:close()
    assert.equal("false\tnil\tnot a terminal\n", out)
  end)

  it("pid, uptime, cpu_count, human_bytes", function()
    assert.is_true(sys.pid() > 1)
    assert.is_true(sys.uptime() > 0)
    assert.is_true(sys.cpu_count() >= 1)
    assert.equal("1.5 KiB", sys.human_bytes(1536))
    assert.equal("12 B", sys.human_bytes(12))
  end)
  it("rlimit reads and sets the soft nofile limit, and refuses one above the hard limit", function()
    local helper = require "spec.helper"
    -- in a child, so this process keeps its limits; ulimit -S leaves the hard limit as it is
    local code = [[
      local sys = require "aio.sys"
      local soft, hard = sys.rlimit("nofile")
      print(soft, hard)
      print(sys.rlimit("nofile", 300))
      if hard ~= math.huge then print(sys.rlimit("nofile", hard + 1)) else print("nil", "unlimited") end
      print(pcall(sys.rlimit, "bogus"))
      print(pcall(sys.rlimit, "nofile", -1))
    ]]
    local out, err, status = helper.exec({ "bash", "-c", 'ulimit -Sn 256 && exec "$0" "$@"', helper.aioshell,
      "-e", code })
    assert.equal(0, status, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    local soft, hard = lines[1]:match("^(%S+)\t(%S+)$")
    assert.equal("256", soft)
    assert.equal("300\t" .. hard, lines[2])
    if hard ~= "inf" then
      assert.equal(string.format("nil\trlimit nofile: %d is above the hard limit %s\t22", tonumber(hard) + 1, hard),
        lines[3])
    end
    assert.matches("^false\t.*invalid option 'bogus'", lines[4])
    assert.matches("^false\t.*non%-negative integer", lines[5])
  end)

  -- FDSIZE: a chunk returning FDSize from /proc/self/status, the size of the kernel's descriptor
  -- table, which grows only as descriptors are opened (64 at first). run_nofile_2000(code) runs
  -- code, with fdsize() defined, under a soft nofile limit of 2000 -> out, err, status.
  local FDSIZE = [[
    local f = assert(io.open("/proc/self/status"))
    local n = f:read("a"):match("FDSize:%s*(%d+)")
    f:close()
    return tonumber(n)
  ]]
  local function run_nofile_2000(code)
    local helper = require "spec.helper"
    local with_fdsize = ("local FDSIZE = %q\nlocal fdsize = load(FDSIZE)\n"):format(FDSIZE) .. code
    return helper.exec({ "bash", "-c", 'ulimit -Sn 2000 && exec "$0" "$@"', helper.aioshell,
      "-e", with_fdsize })
  end

  it("the descriptor table is grown to the soft nofile limit when the loop is made and when the limit is raised",
    function()
    -- aioshell grows it to the soft limit up front, while it has one thread (see sys.c: each
    -- growth in a threaded process stalls).
    local out, err, status = run_nofile_2000([[
      local before = fdsize()
      local sys = require "aio.sys"
      require("aio").sleep(0)  -- the loop is made by now
      local made = fdsize()
      local _, hard = sys.rlimit("nofile")
      local target = math.min(6000, hard)
      assert(sys.rlimit("nofile", target))
      print(before, made, target, fdsize())
    ]])
    -- (a child's table starts as large as its parent's open descriptors needed: 256 here)
    assert.equal(0, status, err)
    local before, made, target, raised = out:match("^(%d+)\t(%d+)\t(%d+)\t(%d+)\n$")
    assert.is_true(tonumber(before) < 2000, out)
    assert.is_true(tonumber(made) >= 2000, out)
    assert.is_true(tonumber(raised) >= tonumber(target), out)
  end)

  it("a forked child's descriptor table is grown too (a fork copies only what is open)", function()
    local out, err, status = run_nofile_2000([[
      local process = require "aio.process"
      local forked = process.fork(function() return fdsize() end):join()
      local pool = process.pool(1)
      local worker = pool:submit(function(src) return load(src)() end, FDSIZE):await()
      pool:close()
      print(fdsize(), forked, worker)
    ]])
    assert.equal(0, status, err)
    local parent, forked, worker = out:match("^(%d+)\t(%d+)\t(%d+)\n$")
    assert.is_true(tonumber(parent) >= 2000, out)
    assert.is_true(tonumber(forked) >= 2000, out)
    assert.is_true(tonumber(worker) >= 2000, out)
  end)

  -- The CPUs /proc lists for the calling thread ("0-1,3" -> {0, 1, 3}).
  local function proc_cpus()
    local f = assert(io.open("/proc/thread-self/status"))
    local list = f:read("a"):match("Cpus_allowed_list:%s*([%d,%-]+)")
    f:close()
    local cpus = {}
    for a, b in list:gmatch("(%d+)%-?(%d*)") do
      for c = tonumber(a), tonumber(b ~= "" and b or a) do cpus[#cpus + 1] = c end
    end
    return cpus
  end

  it("affinity lists the calling thread's CPUs and pins that thread, not the others", function()
    local all = sys.affinity()
    assert.is_true(#all >= 1)
    assert.same(proc_cpus(), all)
    local ok, pinned = pcall(function()
      local got = sys.affinity({ all[#all] })
      return { got, proc_cpus() }
    end)
    sys.affinity(all)                               -- restored before any assertion
    assert.is_true(ok, pinned)
    assert.same({ { all[#all] }, { all[#all] } }, pinned)
    assert.same(all, sys.affinity())
    -- a pool job pins its own worker thread; this thread keeps its CPUs
    local pool = require("aio.thread").pool { size = 1 }
    local in_worker = pool:run(function(cpu)
      local s = require "aio.sys"
      return s.affinity({ cpu })
    end, all[1])
    pool:close()
    assert.same({ all[1] }, in_worker)
    assert.same(all, sys.affinity())
  end)

  it("affinity: a CPU that cannot be used is fail, message, errno; a bad list raises", function()
    local before = sys.affinity()
    local r, msg, code = sys.affinity({ 1023 })     -- in range, but no such CPU here
    assert.is_nil(r)
    assert.matches("^affinity: ", msg)
    assert.is_number(code)
    assert.same(before, sys.affinity())             -- unchanged
    for _, bad in ipairs { {}, { -1 }, { 1.5 }, { "x" }, "0" } do
      assert.has_error(function() sys.affinity(bad) end)
    end
  end)

  it("mkdir creates a directory, with parents like mkdir -p, and reports failures", function()
    local helper = require "spec.helper"
    local dir = helper.tmpdir()
    local odd = dir .. "/it's a \"dir\"; $(touch x)"
    assert.is_true(sys.mkdir(odd .. "/a//b/", true))
    local f = io.open(odd .. "/a/b/file", "w")
    assert.is_truthy(f)
    f:close()
    assert.is_true(sys.mkdir(odd .. "/a", true))         -- exists: fine with parents
    local ok, msg, code = sys.mkdir(odd .. "/a")         -- exists: an error without
    assert.is_nil(ok)
    assert.equal("mkdir " .. odd .. "/a: File exists", msg)
    assert.equal(17, code)
    ok, msg = sys.mkdir(odd .. "/a/b/file/sub", true)    -- a file in the way
    assert.is_nil(ok)
    assert.equal("mkdir " .. odd .. "/a/b/file: Not a directory", msg)
    assert.is_nil(io.open(dir .. "/x"))                  -- no shell ran
    helper.cleanup()
  end)
end)
