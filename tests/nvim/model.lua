-- Driven by tests/test_neovim.py on Neovim 0.7 and 0.12: choose the served model with the
-- shipped module's :WispModel, as a user does, with `vim.ui.select` replaced by a stub that
-- picks $WISP_PICK from the list shown; open the list again and cancel; pick $WISP_DOWNLOAD,
-- which cannot be downloaded offline; then switch back with `:WispModel $WISP_MODEL`. What
-- happened goes to $WISP_OUT as JSON. Other inputs come from the environment (see the test).

local out = { errors = {}, statuses = {}, messages = {}, notes = {}, selects = {} }


local driver = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":h") .. "/driver.lua")
local wait_for, env, wisp_client = driver.wait_for, driver.env, driver.wisp_client
local finish -- writes the report and quits


-- Wait until the module's `status` names `model` (any model when nil) as ready; each status
-- seen meanwhile goes to the report.
local function wait_until_serving(model, timeout_ms)
  local wisp = require("wisp")
  wait_for("wisp/status ready with " .. (model or "a model"), timeout_ms, function()
    local status = wisp.status
    if status ~= nil and status ~= out.statuses[#out.statuses] then
      table.insert(out.statuses, status)
    end
    if status ~= nil and status.state == "error" then
      error("the model did not load: " .. vim.inspect(status))
    end
    return status ~= nil
      and status.state == "ready"
      and (model == nil or status.model == model)
  end)
  return wisp.status.model
end

-- vim.ui.select as a user sees it: the prompt and each line shown go to the report; then it
-- chooses the first line naming `pick`, or cancels when none does.
local function select_stub(pick)
  return function(items, opts, on_choice)
    local shown = { prompt = opts.prompt, labels = vim.tbl_map(opts.format_item, items) }
    table.insert(out.selects, shown)
    for i, label in ipairs(shown.labels) do
      if label:find(pick, 1, true) then
        shown.picked = label
        return on_choice(items[i], i)
      end
    end
    on_choice(nil, nil)
  end
end

local function choose_model(pick)
  local before = #out.selects
  vim.ui.select = select_stub(pick)
  vim.cmd("WispModel")
  wait_for("the model list", 30000, function()
    return #out.selects > before
  end)
end

local function configuration_answer(client)
  local handler = client.handlers["workspace/configuration"]
  local params = { items = { { section = "wisp" } } }
  return handler(nil, params, { method = "workspace/configuration", client_id = client.id })[1]
end

local function run()
  vim.opt.runtimepath:prepend(env("WISP_NVIM_PLUGIN"))
  vim.cmd("filetype on")
  local notify = vim.notify
  vim.notify = function(message, level, ...)
    table.insert(out.notes, { message = message, level = level })
    return notify(message, level, ...)
  end
  local recorders = driver.recorders(out)
  recorders.handlers["wisp/status"] = nil -- the module's own handler keeps `status`
  require("wisp").setup(vim.tbl_extend("error", {
    cmd = { env("WISP_PYTHON"), "-m", "lsp_server.cli", "serve", "-v", "--log-file", env("WISP_LOG") },
    settings = { model = env("WISP_MODEL"), maxNewTokens = 4 },
  }, recorders))

  vim.cmd("edit " .. vim.fn.fnameescape(env("WISP_FILE")))
  local bufnr = vim.api.nvim_get_current_buf()
  local client
  wait_for("wisp to attach", 10000, function()
    client = wisp_client(bufnr)
    return client ~= nil
  end)
  out.first = wait_until_serving(nil, 90000)
  -- No list yet: completing asks the server for one.
  out.completions = vim.fn.getcompletion("WispModel ollama:", "cmdline")

  choose_model(env("WISP_PICK"))
  out.picked = wait_until_serving(env("WISP_PICK"), 90000)
  out.configuration = configuration_answer(client)
  choose_model("(a line no model has)")

  choose_model("download " .. env("WISP_DOWNLOAD") .. ",")
  wait_for("the download to fail", 60000, function()
    for _, note in ipairs(out.notes) do
      if note.level == vim.log.levels.ERROR then
        return true
      end
    end
    return false
  end)
  out.after_download = vim.deepcopy(require("wisp").status)

  vim.cmd("WispModel " .. env("WISP_MODEL"))
  out.back = wait_until_serving(out.first, 90000)
  out.configuration_back = configuration_answer(client)

  vim.lsp.stop_client(client.id)
  wait_for("the server to exit", 10000, function()
    return out.exit ~= nil
  end)
end

finish = driver.write_and_quit(out)

driver.start(run, out, finish)
