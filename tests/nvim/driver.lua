-- The coroutine driver the Neovim test scripts share. A script's `run` goes step by step and
-- yields to Neovim's main loop while it waits, so that typed keys, mappings and completion are
-- processed as they are for a user. Load it with
--   local driver = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":h") .. "/driver.lua")
-- then `driver.wait_for(...)` inside `run`, and `driver.start(run, out, finish)` at the end.

local M = {}
local now = (vim.uv or vim.loop).now -- vim.uv from 0.10, vim.loop before
local run_co, out, finish

local function resume()
  local ok, problem = coroutine.resume(run_co)
  if not ok then
    table.insert(out.errors, debug.traceback(run_co, problem))
  end
  if coroutine.status(run_co) == "dead" then
    finish()
  end
end

--- Wait for `condition`, handing control back to the main loop every 20 ms meanwhile.
function M.wait_for(what, timeout_ms, condition)
  local deadline = now() + timeout_ms
  while not condition() do
    if now() > deadline then
      error("timed out after " .. timeout_ms .. " ms waiting for " .. what)
    end
    vim.defer_fn(resume, 20)
    coroutine.yield()
  end
end

--- The environment variable `name`; an error when it is not set (the test sets every input).
function M.env(name)
  local value = os.getenv(name)
  if not value then
    error("environment variable " .. name .. " is not set")
  end
  return value
end

--- The wisp client attached to buffer `bufnr`, or nil.
function M.wisp_client(bufnr)
  local clients = (vim.lsp.get_clients or vim.lsp.get_active_clients)()
  for _, client in pairs(clients) do
    if client.name == "wisp" and vim.lsp.buf_is_attached(bufnr, client.id) then
      return client
    end
  end
end

--- A `finish` that writes `report` to $WISP_OUT as JSON and quits; it quits even when the
--- report cannot be written (the test then fails on the missing file).
function M.write_and_quit(report)
  return function()
    pcall(function()
      vim.fn.writefile({ vim.fn.json_encode(report) }, M.env("WISP_OUT"))
    end)
    vim.cmd("qa!")
  end
end

--- Run `body` as the coroutine; its errors go to `report.errors`, `done()` runs when it ends.
function M.start(body, report, done)
  out, finish = report, done
  _G.wisp_test_started = true
  run_co = coroutine.create(body)
  resume()
end

--- Options for the module's `setup` that record `wisp/status`, messages and the server's exit.
function M.recorders(report)
  return {
    handlers = {
      ["wisp/status"] = function(_, result)
        table.insert(report.statuses, result)
      end,
      ["window/showMessage"] = function(_, result)
        table.insert(report.messages, result)
      end,
    },
    on_exit = function(code, signal)
      report.exit = { code = code, signal = signal }
    end,
  }
end

return M
