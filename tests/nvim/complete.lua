-- Driven by tests/test_neovim.py: edit a Python file with wisp attached through the shipped
-- Lua module, accept completions with Neovim's own apply_text_edits, and write what happened
-- to $WISP_OUT as JSON. Inputs come from the environment (see the test).

local out = { errors = {}, statuses = {}, messages = {}, steps = {} }

local function env(name)
  local value = os.getenv(name)
  if not value then
    error("environment variable " .. name .. " is not set")
  end
  return value
end

local function wait_for(what, timeout_ms, condition)
  if not vim.wait(timeout_ms, condition, 20) then
    error("timed out after " .. timeout_ms .. " ms waiting for " .. what)
  end
end

local function wisp_client(bufnr)
  local clients = (vim.lsp.get_clients or vim.lsp.get_active_clients)()
  for _, client in pairs(clients) do
    if client.name == "wisp" and vim.lsp.buf_is_attached(bufnr, client.id) then
      return client
    end
  end
end

local function type_keys(keys)
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(keys, true, false, true), "nx", false)
end

-- Request completion at the end of line `row` (1-based), apply the first item's textEdit.
local function complete_at_end_of(client, bufnr, row)
  local line = vim.api.nvim_buf_get_lines(bufnr, row - 1, row, true)[1]
  vim.api.nvim_win_set_cursor(0, { row, #line })
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  local responses, err =
    vim.lsp.buf_request_sync(bufnr, "textDocument/completion", params, 30000)
  if not responses then
    error("textDocument/completion failed: " .. tostring(err))
  end
  local response = responses[client.id]
  local failure = response.err or response.error -- `error` before Neovim 0.8
  if failure then
    error("textDocument/completion answered an error: " .. vim.inspect(failure))
  end
  local items = response.result.items or response.result
  if not (items[1] and items[1].textEdit) then
    error("no completion item with a textEdit: " .. vim.inspect(response.result))
  end
  vim.lsp.util.apply_text_edits({ items[1].textEdit }, bufnr, "utf-16")
  table.insert(out.steps, {
    position = params.position,
    edit_start = items[1].textEdit.range.start,
    label = items[1].label,
    new_text = items[1].textEdit.newText,
    line = vim.api.nvim_buf_get_lines(bufnr, row - 1, row, true)[1],
  })
end

local function run()
  vim.opt.runtimepath:prepend(env("WISP_NVIM_PLUGIN"))
  -- The cursor may rest after the line's last character, where insert mode would put it.
  vim.o.virtualedit = "onemore"
  vim.cmd("filetype on")
  require("wisp").setup({
    cmd = { env("WISP_PYTHON"), "-m", "lsp_server.cli", "serve", "-v", "--log-file", env("WISP_LOG") },
    settings = { model = env("WISP_MODEL"), maxNewTokens = 4 },
    handlers = {
      ["wisp/status"] = function(_, result)
        table.insert(out.statuses, result)
      end,
      ["window/showMessage"] = function(_, result)
        table.insert(out.messages, result)
      end,
    },
    on_exit = function(code, signal)
      out.exit = { code = code, signal = signal }
    end,
  })

  vim.cmd("edit " .. vim.fn.fnameescape(env("WISP_FILE")))
  local bufnr = vim.api.nvim_get_current_buf()
  out.filetype = vim.bo[bufnr].filetype
  local client
  wait_for("wisp to attach", 10000, function()
    client = wisp_client(bufnr)
    return client ~= nil
  end)
  wait_for("wisp/status ready", 90000, function()
    local last = out.statuses[#out.statuses]
    return last ~= nil and (last.state == "ready" or last.state == "error")
  end)
  if out.statuses[#out.statuses].state ~= "ready" then
    error("the model did not load: " .. vim.inspect(out.statuses[#out.statuses]))
  end

  complete_at_end_of(client, bufnr, 1)
  type_keys("A + <Esc>")
  complete_at_end_of(client, bufnr, 1)
  type_keys("ototal = <Esc>")
  complete_at_end_of(client, bufnr, 2)
  out.lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, true)

  vim.lsp.stop_client(client.id)
  wait_for("the server to exit", 10000, function()
    return out.exit ~= nil
  end)
end

local ok, problem = xpcall(run, debug.traceback)
if not ok then
  table.insert(out.errors, problem)
end
-- Quit even if the report cannot be written: the test then fails on the missing file.
pcall(function()
  vim.fn.writefile({ vim.fn.json_encode(out) }, env("WISP_OUT"))
end)
vim.cmd("qa!")
