-- aio.console — routes a Lua state's console output (print, io.write while io.output() is
-- stdout, io.stdout:write, io.stderr:write) through one writer function. The REPL installs it
-- on the main state (the writer prints above the line being edited); every thread-pool worker,
-- process-pool worker and process.fork child on its own state (the writer is
-- aio.repl_c.console_write, which hands the text to the REPL when a prompt is shown, sends it to
-- the parent process from a forked worker while the REPL edits lines, and writes it at once
-- otherwise).
local M = {}
local tostring = tostring  -- the original, as print uses it even if the global is replaced

-- io.write's conversions: integers %d, floats %.14g, strings as they are.
local function write_args(fname, ...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do
    local v = select(i, ...)
    if math.type(v) == "integer" then parts[i] = ("%d"):format(v)
    elseif math.type(v) == "float" then parts[i] = ("%.14g"):format(v)
    elseif type(v) == "string" then parts[i] = v
    else
      require("aio.argcheck").typeerror(v, "string", i, fname, 3)  -- loaded only on a mistake
    end
  end
  return table.concat(parts)
end

-- install(writer [, std_print]) -> remove, wrapped_print: from now on console output calls
-- writer(text, to_stderr, is_print). A global print other than std_print (the standard one;
-- one the user installed) is left alone. remove() puts the originals back, except where
-- something else replaced a wrapper meanwhile.
function M.install(writer, std_print)
  local stdout, stderr = io.stdout, io.stderr
  local fmethods = getmetatable(stdout).__index
  local saved = { print = print, io_write = io.write, fwrite = fmethods.write }
  local wrapped_print = function(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    writer(table.concat(parts, "\t") .. "\n", false, true)
  end
  local wrapped_fwrite = function(f, ...)
    if f ~= stdout and f ~= stderr then return saved.fwrite(f, ...) end
    writer(write_args("write", ...), f == stderr, false)
    return f
  end
  local wrapped_iowrite = function(...)
    if io.output() ~= stdout then return saved.io_write(...) end
    writer(write_args("write", ...), false, false)
    return stdout
  end
  io.write, fmethods.write = wrapped_iowrite, wrapped_fwrite
  if std_print == nil or print == std_print then _G.print = wrapped_print end
  local function remove()
    if _G.print == wrapped_print then _G.print = saved.print end
    if io.write == wrapped_iowrite then io.write = saved.io_write end
    if fmethods.write == wrapped_fwrite then fmethods.write = saved.fwrite end
  end
  return remove, wrapped_print
end

return M
