-- spec/docs_spec.lua — the documentation keeps up with the code: every function a module
-- exports is named on some page (luv's rule: a registered function without docs fails CI), and
-- every relative link between pages, and to files, resolves.
local helper = require "spec.helper"

local MODULES = {"aio", "aio.sync", "aio.http", "aio.thread", "aio.process", "aio.rx", "aio.sys",
                 "aio.plot", "aio.trace", "aio.codec", "aio.experiment", "aio.flags", "aio.repl"}

-- The exported names of a module that no page mentions (as a whole word).
local function undocumented(modname, text)
  local missing = {}
  for k in pairs(require(modname)) do
    if type(k) == "string" and k:sub(1, 1) ~= "_"
       and not text:find("%f[%w_]" .. k:gsub("%p", "%%%0") .. "%f[^%w_]") then
      missing[#missing + 1] = modname .. "." .. k
    end
  end
  table.sort(missing)
  return missing
end

describe("docs", function()
  local all = helper.doc_pages()

  it("name every function and field the modules export", function()
    local text = table.concat((function()
      local t = {}
      for _, s in pairs(all) do t[#t + 1] = s end
      return t
    end)(), "\n")
    local missing = {}
    for _, m in ipairs(MODULES) do
      for _, name in ipairs(undocumented(m, text)) do missing[#missing + 1] = name end
    end
    assert.are.same({}, missing)
  end)

  it("link to pages and files that exist", function()
    local broken = {}
    for path, text in pairs(all) do
      local dir = path:match("^(.*)/") or "."
      text = text:gsub("```.-```", "")
      for target in text:gmatch("%]%(([^)#]+)[^)]*%)") do
        if not target:match("^%a+:") then
          local f = io.open(helper.root .. "/" .. dir .. "/" .. target, "r")
          if f then f:close() else broken[#broken + 1] = path .. " -> " .. target end
        end
      end
    end
    table.sort(broken)
    assert.are.same({}, broken)
  end)
end)
