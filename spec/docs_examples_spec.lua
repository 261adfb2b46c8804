-- spec/docs_examples_spec.lua — the documentation's Lua examples run, and print what they say.
--
-- Every ```lua block of README.md, docs/*.md and bench/*/README.md runs as a script in a child
-- aioshell (the binary under test), from an empty temporary directory, and must exit 0 with
-- nothing on stderr. The blocks all start at once, so the file takes as long as the slowest.
--
-- Stated output: a `--> text` comment, at the end of a line or on a line of its own, is a
-- line the block prints. A block's `-->` lines must appear in its output in the order they
-- are written; other lines may come between them (output nobody states, a chart). Any run of
-- whitespace matches any other (print's tabs are written as two spaces), and a final
-- "(remark)" after two or more spaces is a note to the reader, not output. Other comments
-- (`-- ~0.3 s`) are prose and are not checked, so state with `-->` only what every run prints:
-- no times, no addresses.
--
-- A block that cannot run alone has, on the line right before its fence, a marker Markdown
-- does not render, saying why:  <!-- example: fragment: what it lacks -->
-- A block whose stated output depends on when timers fire relative to each other runs on
-- virtual time (aio.clock.virtual() before it), where they fire in order however loaded the
-- machine is:  <!-- example: virtual: why -->
-- docs/building.md (Tests) says the same for whoever writes an example.
local helper = require "spec.helper"

-- Collapses each run of whitespace to one space and trims the ends.
local function normalize(s)
  return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

-- The output lines a block states (its `--> text` comments, remarks dropped), normalized.
local function stated(code)
  local out = {}
  for line in code:gmatch("[^\n]+") do
    local text = line:match("%-%->(.*)$")
    if text then out[#out + 1] = normalize((text:gsub("%s%s+%b()%s*$", ""))) end
  end
  return out
end

-- The first of the stated lines `want` that `out` lacks (in order), or nil when none is missing.
local function missing(want, out)
  local lines = {}
  for line in out:gmatch("[^\n]*") do lines[#lines + 1] = normalize(line) end
  local i = 1
  for _, w in ipairs(want) do
    while lines[i] and lines[i] ~= w do i = i + 1 end
    if not lines[i] then return w end
    i = i + 1
  end
  return nil
end

-- The ```lua blocks of one page, in order: {where = "page:line", code =, marker =, why =}
-- (marker and why from an `<!-- example: marker: why -->` line right before the fence).
local function blocks(path, text)
  local out, fence, cur, prev, n = {}, false, nil, "", 0
  for line in (text .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    if fence and line:match("^%s*```%s*$") then
      if cur then cur.code = table.concat(cur.code, "\n") .. "\n"; out[#out + 1] = cur end
      fence, cur = false, nil
    elseif fence then
      if cur then cur.code[#cur.code + 1] = line end
    elseif line:match("^%s*```") then
      fence = true
      if line:match("^%s*```lua%s*$") then
        local marker, why = prev:match("^%s*<!%-%- example: (%w+):?%s*(.-)%s*%-%->%s*$")
        cur = {where = path .. ":" .. n, code = {}, marker = marker, why = why}
      end
    end
    prev = line
  end
  return out
end

-- Every page's blocks, pages in name order.
local function all_blocks()
  local pages, names, out = helper.doc_pages(), {}, {}
  for path in pairs(pages) do names[#names + 1] = path end
  table.sort(names)
  for _, path in ipairs(names) do
    for _, b in ipairs(blocks(path, pages[path])) do out[#out + 1] = b end
  end
  return out
end

-- Starts one block as a script in a temporary directory of its own; returns the running handle.
local function start(b)
  local dir = helper.tmpdir()
  local f = assert(io.open(dir .. "/example.lua", "w"))
  f:write(b.code)
  f:close()
  local argv = {helper.aioshell, "example.lua"}
  if b.marker == "virtual" then argv = {helper.aioshell, "-e", "require('aio').clock.virtual()", "example.lua"} end
  return helper.spawn(argv, {cwd = dir, timeout = 30})
end

-- Does the block run (no marker, or on virtual time)?
local function runs(b) return b.marker == nil or b.marker == "virtual" end

describe("the docs' Lua examples", function()
  local examples = all_blocks()
  local running = {}
  for i, b in ipairs(examples) do
    if runs(b) then running[i] = start(b) end
  end

  teardown(function()
    for i, h in pairs(running) do h:wait(); running[i] = nil end
    helper.cleanup()
  end)

  it("are found, and every marker is a known one with its reason", function()
    assert.is_true(#examples >= 10, "found only " .. #examples .. " ```lua blocks")
    for _, b in ipairs(examples) do
      if b.marker then
        assert.is_true(b.marker == "fragment" or b.marker == "virtual", b.where .. ": unknown marker")
        assert.is_true(#b.why > 0, b.where .. ": a marker says why")
      end
    end
  end)

  it("state output with -->: spaces match tabs, a final (remark) is not output", function()
    local want = stated('print(1, 2)   --> 1  2   (a note)\n--> done\nx = 1  -- 3\n')
    assert.are.same({"1 2", "done"}, want)
    assert.is_nil(missing(want, "1\t2\nother\ndone\n"))
    assert.are.equal("done", missing(want, "done\n1\t2\n"))
  end)

  for i, b in ipairs(examples) do
    if not runs(b) then
      pending(b.where .. " (" .. b.marker .. ": " .. b.why .. ")")
    else
      it(b.where .. " runs, and prints what its --> comments say", function()
        local out, err, status = running[i]:wait()
        running[i] = nil
        assert.are.equal("", err, b.where .. ": stderr")
        assert.are.equal(0, status, b.where .. ": exit status")
        local lack = missing(stated(b.code), out)
        assert.is_nil(lack, ("%s: no output line %q in order; it printed:\n%s"):format(b.where,
          tostring(lack), out))
      end)
    end
  end
end)
