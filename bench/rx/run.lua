-- bench/rx/run.lua — aio.rx against RxPY 3 (Debian's python3-rx) on the same workloads, in one
-- run, with ratios. Synchronous workloads only: they measure the cost of the machinery (one
-- pcall per value per operator here, RxPY's observer objects there), not any clock.
--
--   bench/rx/run.sh [N] [ROUNDS]        (N values per workload, default 100000; median of 3)
local rx = require "aio.rx"
local sys = require "aio.sys"
local cjson = require "cjson"

local N = tonumber(arg[1]) or 100000
local ROUNDS = tonumber(arg[2]) or 3
local here = (arg[0]:match("^(.*)/[^/]*$") or ".")

-- The workloads: each builds and runs one chain, and checks its own result.
local WORKLOADS = {
  { "pipeline", "range(N) → map → filter → scan → count", function()
    local n
    rx.range(1, N):map(function(x) return x * 2 end):filter(function(x) return x % 3 == 0 end)
      :scan(function(a, b) return a + b end):count():subscribe(function(v) n = v end)
    assert(n == N // 3, n)
  end },
  { "subject_fanout", "subject, 10 subscribers, N/10 values", function()
    local s, c = rx.subject(), 0
    for _ = 1, 10 do s:subscribe(function() c = c + 1 end) end
    for i = 1, N // 10 do s:on_next(i) end
    assert(c == N // 10 * 10, c)
  end },
  { "group_merge", "group_by(x % 10) → merge_all → count, N/10 values", function()
    local n
    rx.range(0, N // 10 - 1):group_by(function(x) return x % 10 end):merge_all():count()
      :subscribe(function(v) n = v end)
    assert(n == N // 10, n)
  end },
  { "sliding_window", "buffer_with_count(10, 1) → count, N/10 values", function()
    local n
    rx.range(0, N // 10 - 1):buffer_with_count(10, 1):count():subscribe(function(v) n = v end)
    assert(n == N // 10, n)
  end },
  { "take_of_huge", "range(10^9) → take(5): the source must stop", function()
    local out = {}
    rx.range(0, 10 ^ 9 // 1):take(5):subscribe(function(v) out[#out + 1] = v end)
    assert(#out == 5)
  end },
}

-- Median of a list.
local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

local ours = {}
for _, w in ipairs(WORKLOADS) do
  local times = {}
  for r = 1, ROUNDS do
    collectgarbage()
    local t = sys.clock()
    w[3]()
    times[r] = sys.clock() - t
  end
  ours[w[1]] = median(times)
end

local p = io.popen(string.format("/usr/bin/python3 %s/peers/rxpy.py %d %d 2>&1", here, N, ROUNDS))
local raw = p:read("a")
p:close()
local ok, peer = pcall(cjson.decode, raw)
if not ok then peer = { error = raw } end

print(string.format("aio.rx vs RxPY %s — N = %d, median of %d rounds", peer.error and "(missing)" or "3",
  N, ROUNDS))
print()
print("| workload | aio.rx s | RxPY s | RxPY / aio.rx |")
print("|---|---|---|---|")
for _, w in ipairs(WORKLOADS) do
  local a, b = ours[w[1]], peer[w[1]]
  print(string.format("| %s (%s) | %.4f | %s | %s |", w[1], w[2], a, b and string.format("%.4f", b) or "–",
    b and string.format("%.1fx", b / math.max(a, 1e-6)) or "–"))
end
if peer.error then print() print("RxPY: " .. peer.error) end
