-- Driven by tests/test_neovim.py: edit a Python file with wisp attached through the shipped
-- Lua module, accept completions with Neovim's own apply_text_edits and with its completion
-- menu (through the module's keymaps and 'omnifunc'), read `wisp/stats`, change a setting,
-- and write what happened to $WISP_OUT as JSON. Inputs come from the environment (see the test).
--
-- The run is a coroutine that yields to Neovim's main loop while it waits, so that typed keys,
-- mappings and insert-mode completion are processed as they are for a user.

local out = { errors = {}, statuses = {}, messages = {}, steps = {} }


local driver = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":h") .. "/driver.lua")
local wait_for, env, wisp_client = driver.wait_for, driver.env, driver.wisp_client
local finish -- writes the report and quits


local function keys(text)
  return vim.api.nvim_replace_termcodes(text, true, false, true)
end

-- Type at once, without mappings (plain editing).
local function type_keys(text)
  vim.api.nvim_feedkeys(keys(text), "nx", false)
end

-- Queue keys as typed, with mappings; the main loop runs them while we wait.
local function press(text)
  vim.api.nvim_feedkeys(keys(text), "mt", false)
end

local function completion_at_end_of(client, bufnr, row)
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
  return params, response.result.items or response.result
end

-- Request completion at the end of line `row` (1-based), apply the first item's textEdit.
local function complete_at_end_of(client, bufnr, row)
  local params, items = completion_at_end_of(client, bufnr, row)
  if not (items[1] and items[1].textEdit) then
    error("no completion item with a textEdit: " .. vim.inspect(items))
  end
  vim.lsp.util.apply_text_edits({ items[1].textEdit }, bufnr, "utf-16")
  table.insert(out.steps, {
    position = params.position,
    edit_start = items[1].textEdit.range.start,
    label = items[1].label,
    new_text = items[1].textEdit.newText,
    command = items[1].command,
    line = vim.api.nvim_buf_get_lines(bufnr, row - 1, row, true)[1],
  })
end

local function wisp_keymaps(bufnr)
  local found = {}
  for _, map in ipairs(vim.api.nvim_buf_get_keymap(bufnr, "i")) do
    if map.desc and vim.startswith(map.desc, "wisp: ") then
      found[map.desc:sub(7)] = map.lhs
    end
  end
  return found
end

-- The completion menu, as a user drives it: the module's accept key asks for suggestions
-- (<C-x><C-o>), the same key again takes the selected one (<C-y>); CompleteDone then runs the
-- item's accept command. Headless Neovim draws no menu, but the completion state is real.
local function accept_from_menu(bufnr, accept_key)
  press("<Esc>A" .. accept_key)
  wait_for("menu items", 30000, function()
    return #vim.fn.complete_info({ "items" }).items > 0
  end)
  out.menu_items = vim.tbl_map(function(item)
    return item.word
  end, vim.fn.complete_info({ "items" }).items)
  press(accept_key .. "<Esc>")
  wait_for("normal mode", 5000, function()
    return vim.api.nvim_get_mode().mode == "n"
  end)
end

local function fetch_stats()
  local answer
  require("wisp").stats(function(err, result)
    answer = { err = err, result = result }
  end)
  wait_for("wisp/stats", 10000, function()
    return answer ~= nil
  end)
  if answer.err then
    error("wisp/stats failed: " .. vim.inspect(answer.err))
  end
  return answer.result
end

local function run()
  vim.opt.runtimepath:prepend(env("WISP_NVIM_PLUGIN"))
  -- The cursor may rest after the line's last character, where insert mode would put it.
  vim.o.virtualedit = "onemore"
  vim.cmd("filetype on")
  local accept_key = "<M-l>"
  require("wisp").setup(vim.tbl_extend("error", {
    cmd = { env("WISP_PYTHON"), "-m", "lsp_server.cli", "serve", "-v", "--log-file", env("WISP_LOG") },
    settings = { model = env("WISP_MODEL"), maxNewTokens = 4 },
    keymaps = { accept = accept_key, prev = false }, -- the rest keep their defaults
  }, driver.recorders(out)))

  vim.cmd("edit " .. vim.fn.fnameescape(env("WISP_FILE")))
  local bufnr = vim.api.nvim_get_current_buf()
  out.filetype = vim.bo[bufnr].filetype
  local client
  wait_for("wisp to attach", 10000, function()
    client = wisp_client(bufnr)
    return client ~= nil
  end)
  out.keymaps = wisp_keymaps(bufnr)
  out.tab_mapping = vim.fn.maparg("<Tab>", "i")
  out.omnifunc = vim.bo[bufnr].omnifunc
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
  type_keys("ocount = <Esc>")
  accept_from_menu(bufnr, accept_key)
  out.stats = fetch_stats()

  -- A comment: asking explicitly completes there by default, not once the setting says never.
  type_keys("o# note <Esc>")
  local _, asked = completion_at_end_of(client, bufnr, 4)
  out.comment_items = { default = #asked }
  if not require("wisp").configure({ commentsAndStrings = "never" }) then
    error("configure found no wisp client")
  end
  local _, refused = completion_at_end_of(client, bufnr, 4)
  out.comment_items.never = #refused
  out.lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, true)

  vim.lsp.stop_client(client.id)
  wait_for("the server to exit", 10000, function()
    return out.exit ~= nil
  end)
end

finish = driver.write_and_quit(out)

driver.start(run, out, finish)
