-- Driven by tests/test_neovim_inline.py: Neovim 0.12's own inline completion
-- (vim.lsp.inline_completion: ghost text) against `wisp serve`, attached through the shipped Lua
-- module and used through its keys as a user types. $WISP_SCENARIO names what to do; what
-- happened goes to $WISP_OUT as JSON, written on :qa! once the server has exited (its exit code
-- is in the report). Other inputs come from the environment (see the test).
--
-- The run is a coroutine that yields to Neovim's main loop while it waits, so that typed keys,
-- mappings, autocommands and LSP answers are processed as they are for a user.

local out = { errors = {}, statuses = {}, messages = {} }


local driver = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":h") .. "/driver.lua")
local wait_for, env, wisp_client = driver.wait_for, driver.env, driver.wisp_client
local finish -- quits Neovim

-- Let the main loop run for `ms`: for checks that something does not happen.
local function idle(ms)
  local done_at = vim.uv.now() + ms
  wait_for("time to pass", ms + 5000, function()
    return vim.uv.now() >= done_at
  end)
end

-- Queue keys as typed, with mappings; the main loop runs them while we wait.
local function press(text)
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(text, true, false, true), "mt", false)
end

local function lines(bufnr)
  return vim.api.nvim_buf_get_lines(bufnr, 0, -1, true)
end

local function mode_is(mode)
  return function()
    return vim.api.nvim_get_mode().mode == mode
  end
end

-- The ghost text on show, as the module finds it (an extmark in Neovim's namespace):
-- { row, col (0-based, bytes), text (the inline part and the virtual lines under it, joined
-- with "\n"), hint (Neovim's " (i/n)" after next/previous, or nil), marks }; nil when none.
local function ghost(bufnr)
  local namespace = vim.api.nvim_get_namespaces()["nvim.lsp.inline_completion"]
  if not namespace then
    return nil
  end
  local marks = vim.api.nvim_buf_get_extmarks(bufnr, namespace, 0, -1, { details = true })
  if #marks == 0 then
    return nil
  end
  local _, row, col, details = unpack(marks[1])
  local first, hint = {}, nil
  for _, chunk in ipairs(details.virt_text or {}) do
    if chunk[2] == "ComplHintMore" then
      hint = chunk[1]
    else
      table.insert(first, chunk[1])
    end
  end
  local text = { table.concat(first) }
  for _, virt_line in ipairs(details.virt_lines or {}) do
    local parts = vim.tbl_map(function(chunk)
      return chunk[1]
    end, virt_line)
    table.insert(text, table.concat(parts))
  end
  return { row = row, col = col, text = table.concat(text, "\n"), hint = hint, marks = #marks }
end

local GHOST_TIMEOUT_MS = tonumber(os.getenv("WISP_GHOST_TIMEOUT_MS") or "90000")

local function wait_for_ghost(bufnr, what)
  local shown
  wait_for(what or "ghost text", GHOST_TIMEOUT_MS, function()
    shown = ghost(bufnr)
    return shown ~= nil
  end)
  return shown
end

-- Wait for the shown candidate to differ from `before` (the keymaps schedule their work).
local function wait_for_change(bufnr, before, what)
  local shown
  wait_for(what, 5000, function()
    shown = ghost(bufnr)
    return shown ~= nil and not vim.deep_equal(shown, before)
  end)
  return shown
end

local function stats(client, bufnr)
  local response, err = client:request_sync("wisp/stats", vim.empty_dict(), 10000, bufnr)
  if not response or response.err then
    error("wisp/stats failed: " .. vim.inspect(err or response.err))
  end
  return response.result
end

local function pending_completions(client)
  local count = 0
  for _, request in pairs(client.requests) do
    if request.type == "pending" and request.method == "textDocument/inlineCompletion" then
      count = count + 1
    end
  end
  return count
end

-- Open `name` (in the working directory) holding `text`; wait for wisp and its model.
local function open(name, text)
  vim.cmd("edit " .. vim.fn.fnameescape(name))
  local bufnr = vim.api.nvim_get_current_buf()
  vim.api.nvim_buf_set_lines(bufnr, 0, -1, true, text)
  local client
  wait_for("wisp to attach", 10000, function()
    client = wisp_client(bufnr)
    return client ~= nil
  end)
  wait_for("wisp/status ready", 120000, function()
    local last = out.statuses[#out.statuses]
    return last ~= nil and (last.state == "ready" or last.state == "error")
  end)
  if out.statuses[#out.statuses].state ~= "ready" then
    error("the model did not load: " .. vim.inspect(out.statuses[#out.statuses]))
  end
  out.filetype = vim.bo[bufnr].filetype
  out.enabled = vim.lsp.inline_completion.is_enabled({ bufnr = bufnr })
  out.keymaps = {}
  for _, map in ipairs(vim.api.nvim_buf_get_keymap(bufnr, "i")) do
    if map.desc and vim.startswith(map.desc, "wisp: ") then
      out.keymaps[map.desc:sub(7)] = map.lhs
    end
  end
  return bufnr, client
end

local function leave_insert()
  press("<Esc>")
  wait_for("normal mode", 5000, mode_is("n"))
end

-- Accept what is shown with the module's accept key; wait for the buffer to change.
local function accept(bufnr, before)
  press("<M-l>")
  wait_for("the accepted text", 10000, function()
    return ghost(bufnr) == nil and not vim.deep_equal(lines(bufnr), before)
  end)
  return lines(bufnr)
end

-- From normal mode, type `keys` (ending in insert mode), wait for ghost text, accept it:
-- { typed, cursor, shown, accepted, cursor_after, mode } (lines, cursors as { row, col }).
local function accept_after(bufnr, keys)
  press(keys)
  wait_for("insert mode", 5000, mode_is("i"))
  local step = { typed = lines(bufnr), cursor = vim.api.nvim_win_get_cursor(0) }
  step.shown = wait_for_ghost(bufnr)
  step.accepted = accept(bufnr, step.typed)
  step.cursor_after = vim.api.nvim_win_get_cursor(0)
  step.mode = vim.api.nvim_get_mode().mode
  leave_insert()
  return step
end

local scenarios = {}

-- A model that always writes `x`: show, accept, count the acceptance, dismiss, quit.
function scenarios.basics()
  local bufnr, client = open("demo.py", { "value = " })
  out.accept = accept_after(bufnr, "A") -- entering insert mode asks for a suggestion
  -- The accept command runs after the insertion: wait for the server to have counted it.
  wait_for("the acceptance to be counted", 10000, function()
    out.stats = stats(client, bufnr)
    return out.stats.accepted > 0
  end)

  -- Typing asks again; the dismiss key hides the suggestion, and it stays hidden.
  press("A + ")
  out.dismiss = { shown = wait_for_ghost(bufnr, "ghost text after typing") }
  press("<C-]>")
  wait_for("the dismissed ghost text to go", 5000, function()
    return ghost(bufnr) == nil
  end)
  idle(1000) -- longer than Neovim's 200 ms debounce and the x model's answer
  out.dismiss.after = {
    ghost = ghost(bufnr) or vim.NIL,
    lines = lines(bufnr),
    mode = vim.api.nvim_get_mode().mode,
  }
  -- Dismissing hid this suggestion only: the next key brings one back.
  press("x")
  out.dismiss.next_key = wait_for_ghost(bufnr, "ghost text after the next key")
  out.final_stats = stats(client, bufnr)
  leave_insert()
end

-- The bundled model: the new line after a block opener, then one at the top level; several
-- candidates to step through; last, :qa! while the server works on a request.
function scenarios.bundled()
  local bufnr, client = open("add.py", { "def add(a, b):" })
  out.opener = accept_after(bufnr, "A<CR>") -- the indent plugin puts the cursor in column 4
  -- Two blank lines after a function: the bundled model writes the `__main__` guard in fp32,
  -- bf16 and 4-bit blocks (with half-float caches) alike. (After imports alone, and after a
  -- `main` that only passes, it was a near tie with a line that wisp cuts, which rounding
  -- tipped either way.)
  local top = { "import os", "import sys", "", "", "def main():", "    print(os.getcwd())", "", "" }
  vim.api.nvim_buf_set_lines(bufnr, 0, -1, true, top)
  out.top_level = accept_after(bufnr, "Go") -- after two blank lines: column 0

  require("wisp").configure({ numCandidates = 3, temperature = 1.0, maxNewTokens = 12 })
  out.candidates = {}
  -- A new function each time: an answer whose samples came out equal is not asked again.
  for _, opener in ipairs({ "def greet(name):", "def greet_all(names):", "def farewell(name):" }) do
    vim.api.nvim_buf_set_lines(bufnr, 0, -1, true, { opener })
    press("A<CR>")
    wait_for("insert mode", 5000, mode_is("i"))
    local step = { first = wait_for_ghost(bufnr) }
    table.insert(out.candidates, step)
    press("<M-]>")
    step.next = wait_for_change(bufnr, step.first, "the next candidate")
    if step.next.hint ~= " (1/1)" then
      press("<M-[>")
      step.prev = wait_for_change(bufnr, step.next, "the previous candidate")
      press("<M-]>")
      step.next_again = wait_for_change(bufnr, step.prev, "the next candidate again")
      step.accepted = accept(bufnr, { opener, "    " })
      leave_insert()
      break
    end
    leave_insert()
  end
  out.stats = stats(client, bufnr)

  -- A long file and several long candidates: the answer takes a while. Quit while it is due.
  require("wisp").configure({ numCandidates = 3, maxNewTokens = 128 })
  local long = {}
  for i = 1, 150 do
    vim.list_extend(long, { "def f" .. i .. "(a, b):", "    return a * " .. i .. " + b", "" })
  end
  vim.api.nvim_buf_set_lines(bufnr, 0, -1, true, long)
  press("Go")
  wait_for("a request in flight", 10000, function()
    return pending_completions(client) > 0
  end)
  idle(300) -- the server reads it and starts on it
end

local function run()
  vim.opt.runtimepath:prepend(env("WISP_NVIM_PLUGIN"))
  vim.cmd("filetype plugin indent on")
  vim.o.expandtab = true
  vim.o.shiftwidth = 4
  vim.o.softtabstop = 4
  local settings = vim.json.decode(env("WISP_SETTINGS"))
  require("wisp").setup(vim.tbl_extend("error", {
    cmd = {
      env("WISP_PYTHON"), "-m", "lsp_server.cli", "serve", "-vv", "--log-file", env("WISP_LOG"),
    },
    settings = next(settings) and settings or vim.empty_dict(),
  }, driver.recorders(out)))
  local scenario = scenarios[env("WISP_SCENARIO")]
  if not scenario then
    error("no scenario " .. env("WISP_SCENARIO"))
  end
  scenario()
end

-- On :qa!, stop the server and wait for it to exit before Neovim does, then write the report,
-- so that it holds the exit code. (Neovim's own VimLeavePre handler sends `shutdown` and
-- `exit` too, but does not wait; it may also run after this one, as vim.lsp loads later.)
vim.api.nvim_create_autocmd("VimLeavePre", {
  callback = function()
    local clients = vim.lsp.get_clients({ name = "wisp" })
    out.pending_at_exit = 0
    for _, client in ipairs(clients) do
      out.pending_at_exit = out.pending_at_exit + pending_completions(client)
      client:stop()
    end
    if #clients > 0 then
      vim.wait(20000, function()
        return out.exit ~= nil
      end, 20)
    end
    pcall(function()
      vim.fn.writefile({ vim.json.encode(out) }, env("WISP_OUT"))
    end)
  end,
})

finish = function()
  -- Outside the coroutine, as a user's :qa! would be.
  vim.schedule(function()
    vim.cmd("qa!")
  end)
end

driver.start(run, out, finish)
