-- spec/codec_spec.lua — the value codec shared by thread pools and processes: round trips
-- (aio.codec.roundtrip encodes and decodes in the same state) and every refusal message.
local codec = require "aio.codec"
local thread = require "aio.thread"

local rt = codec.roundtrip

describe("codec round trips", function()
  it("keeps nil, booleans, integers and floats apart", function()
    local a, b, c, d, e, f = rt(nil, true, false, 3, 3.0, -0.0)
    assert.is_nil(a)
    assert.is_true(b)
    assert.is_false(c)
    assert.equal("integer", math.type(d))
    assert.equal("float", math.type(e))
    assert.equal(3, d)
    assert.equal(-math.huge, 1 / f)  -- the sign of -0.0 survives
  end)

  it("keeps integer extremes and special floats", function()
    assert.equal(math.maxinteger, rt(math.maxinteger))
    assert.equal(math.mininteger, rt(math.mininteger))
    assert.equal(math.huge, rt(math.huge))
    local nan = rt(0 / 0)
    assert.is_true(nan ~= nan)
  end)

  it("keeps trailing nils in the count", function()
    assert.equal(4, select("#", rt(1, nil, 2, nil)))
  end)

  it("is binary-safe for strings", function()
    local s = "a\0b\255\n" .. string.rep("x", 100000)
    assert.equal(s, rt(s))
  end)

  it("copies nested tables with cycles and shared references", function()
    local shared = {v = 1}
    local t = {1, 2, 3, nested = {deep = {deeper = "yes"}}, a = shared, b = shared}
    t.self = t
    t[shared] = "table key"
    local u = rt(t)
    assert.are_not.equal(t, u)
    assert.equal(u, u.self)
    assert.equal(u.a, u.b)
    assert.equal("yes", u.nested.deep.deeper)
    assert.equal(3, #u)
    assert.equal("table key", u[u.a])
  end)

  it("copies metatables", function()
    local mt = {__index = function(_, k) return k .. "!" end}
    local o = rt(setmetatable({}, mt))
    assert.equal("hi!", o.hi)
  end)

  it("keeps registered metatables by name", function()
    local mt = debug.getregistry()["aio.error"]
    local e = setmetatable({message = "m"}, mt)
    local copy = rt(e)
    assert.equal(mt, getmetatable(copy))
    assert.are_not.equal(e, copy)
  end)

  it("makes the header tables' metatable in a worker that never loaded aio.http", function()
    local http = require "aio.http"
    local srv = http.serve { port = 0, handler = function() return 200, "x", { ["X-Case"] = "any" } end }
    local headers = http.get("http://127.0.0.1:" .. srv:port() .. "/").headers
    srv:close()
    local pool = thread.pool(1)
    local a, b, plain = pool:submit(function(h)
      return h["X-Case"], h["x-case"], package.loaded["aio.http"] == nil
    end, headers):await()
    pool:close()
    assert.equal("any", a)
    assert.equal("any", b)
    assert.is_true(plain)
  end)

  it("sends functions with upvalues copied by value", function()
    local k = 10
    local function add(n) return n + k end
    local g = rt(add)
    assert.equal(11, g(1))
    k = 20
    assert.equal(11, g(1))  -- a copy: later changes do not reach it
    assert.equal(21, add(1))
  end)

  it("sends recursive local functions", function()
    local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
    assert.equal(120, rt(fact)(5))
  end)

  it("maps _ENV and _G to the receiver's globals", function()
    local f = rt(function() return _G, string.format("%d", 7) end)
    local g, s = f()
    assert.equal(_G, g)
    assert.equal("7", s)
    assert.equal(_G, rt(_G))
  end)

  it("sends plain C functions", function()
    assert.equal(4.0, rt(math.sqrt)(16))
    assert.equal(print, rt(print))
  end)

  it("sends shareable objects by reference", function()
    local cell = thread.shared(1)
    local copy = rt({c = cell}).c
    copy:add(41)
    assert.equal(42, cell:get())
  end)

  it("measures encoded sizes", function()
    assert.is_true(codec.size(string.rep("x", 1000)) > 1000)
    assert.is_true(codec.size(1, 2, 3) < 16)
  end)
end)

describe("codec refusals name the path", function()
  local function refusal(...)
    local ok, err = pcall(rt, ...)
    assert.is_false(ok)
    return err
  end

  it("refuses open files", function()
    local err = refusal(1, {conn = io.stdout})
    assert.matches("^cannot send args%[2%]%.conn %(userdata: FILE%*%)", err)
    assert.matches("open it in the worker", err)
  end)

  it("refuses coroutines", function()
    assert.matches("^cannot send args%[1%]%.list%[2%] %(coroutine%)",
      refusal({list = {1, coroutine.create(print)}}))
  end)

  it("refuses C functions with upvalues", function()
    local gm = string.gmatch("a", "a")  -- a C closure
    assert.matches("^cannot send args%[1%] %(C function with upvalues%)", refusal(gm))
  end)

  it("names upvalues", function()
    local conn = io.stderr
    local err = refusal(function() return conn end)
    assert.matches("^cannot send args%[1%]<upvalue conn> %(userdata: FILE%*%)", err)
  end)

  it("names metatables and odd keys", function()
    assert.matches("^cannot send args%[1%]<metatable>%.__index %(coroutine%)",
      refusal(setmetatable({}, {__index = coroutine.create(print)})))
    assert.matches('^cannot send args%[1%]%["a key"%] %(coroutine%)',
      refusal({["a key"] = coroutine.create(print)}))
    assert.matches("^cannot send args%[1%]<a key> %(coroutine%)",
      refusal({[coroutine.create(print)] = 1}))
  end)

  it("refuses light userdata and foreign userdata", function()
    local err = refusal(1, 2, {x = {y = io.stdin}})
    assert.matches("^cannot send args%[3%]%.x%.y", err)
  end)

  it("refuses values nested too deeply and shortens the path", function()
    local deep = {}
    local cur = deep
    for _ = 1, 300 do cur.n = {}; cur = cur.n end
    local err = refusal(deep)
    assert.matches("nested more than 200 levels deep", err)
    assert.is_true(#err < 200)
  end)

  -- A copy of a loop's lock or queue in a worker shares nothing with the original: a lock
  -- "acquired" there excluded nobody, an item taken there stayed in the loop's queue.
  it("refuses the loop's sync objects (aio.lock, queue, event, semaphore, condition), naming the way", function()
    local aio = require "aio"
    for _, c in ipairs {
      { aio.lock(), "aio.lock", "thread.mutex" }, { aio.queue(2), "aio.queue", "thread.channel" },
      { aio.priority_queue(), "aio.queue", "process.queue" }, { aio.event(), "aio.event", "thread.channel" },
      { aio.semaphore(2), "aio.semaphore", "process.semaphore" }, { aio.condition(), "aio.condition", "thread.mutex" },
    } do
      local err = refusal(1, { q = c[1] })
      assert.matches("^cannot send args%[2%]%.q %(" .. c[2]:gsub("%.", "%%.") .. "%); it belongs to this loop", err)
      assert.truthy(err:find(c[3], 1, true), err)
    end
    local pool = thread.pool(1)
    local q = aio.queue()
    q:put_nowait(1)
    local ok, err = pcall(pool.run, pool, function(x) return x:get_nowait() end, q)
    pool:close()
    assert.is_false(ok)
    assert.matches("cannot send args%[1%] %(aio%.queue%)", tostring(err))
    assert.equal(1, q:size())
  end)

  it("refuses thread-only objects at a process boundary", function()
    local ok, err = pcall(codec.size, thread.shared(1), "process")
    assert.is_false(ok)
    assert.matches("^cannot send args%[1%] %(userdata: aio.thread.shared%); it lives in this process", err)
  end)
end)
