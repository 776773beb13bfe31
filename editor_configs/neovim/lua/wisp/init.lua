--- wisp for Neovim: start `wisp serve` for editing buffers and attach it.
---
--- Uses the newest client API this Neovim has: vim.lsp.config/enable (0.11+),
--- vim.lsp.start (0.8+), or vim.lsp.start_client with buf_attach_client (0.7).
--- Suggestions show as ghost text where Neovim has vim.lsp.inline_completion (0.12+), else in
--- the completion menu through 'omnifunc'.
local M = {}

--- The last `wisp/status` notification:
--- { state = "loading"|"ready"|"error", message = ..., model = the model loaded or loading }.
M.status = nil

local ACCEPT_COMMAND = "wisp.didAccept"

-- wisp's settings as this Neovim holds them: `setup` fills the table, `configure` changes it.
-- The server gets them when it starts, with each change, and when it asks
-- (`workspace/configuration`), so a restarted server keeps what was chosen since.
local settings = {}

-- The last `wisp.models` answer, for `:WispModel` to complete names from.
local last_models = nil

local defaults = {
  cmd = { "wisp", "serve" },
  settings = {}, -- wisp's settings, camelCase keys: { model = ..., maxNewTokens = ... }
  filetypes = nil, -- nil: every filetype
  root_dir = nil, -- nil: the current directory when setup runs
  handlers = {}, -- merged over the defaults below; same signature as vim.lsp.handlers
  on_attach = nil, -- function(client, bufnr)
  on_exit = nil, -- function(code, signal, client_id)
  inline_completion = true, -- ghost text where Neovim has vim.lsp.inline_completion (0.12+)
  -- Insert-mode keys, buffer-local; each falls back to its own key when it has nothing to do.
  -- Set one to false to leave that key alone, or `keymaps = false` for none.
  keymaps = {
    accept = "<M-l>", -- accept the suggestion (menu: confirm the item, or ask for suggestions)
    next = "<M-]>", -- next suggestion
    prev = "<M-[>", -- previous suggestion
    dismiss = "<C-]>", -- hide the suggestion (menu: close it)
  },
}

local function record_status(_, result)
  M.status = result
end

local function has_ghost_text()
  return vim.lsp.inline_completion ~= nil
end

-- Client methods are called with `:` from 0.11 on; the `.` form is deprecated there.
local method_calls = vim.fn.has("nvim-0.11") == 1

local function request(client, method, params, handler, bufnr)
  if method_calls then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

local function notify(client, method, params)
  if method_calls then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

local function request_sync(client, method, params, timeout_ms)
  if method_calls then
    return client:request_sync(method, params, timeout_ms)
  end
  return client.request_sync(method, params, timeout_ms)
end

local function wisp_clients()
  local found = {}
  for _, client in pairs((vim.lsp.get_clients or vim.lsp.get_active_clients)()) do
    if client.name == "wisp" then
      table.insert(found, client)
    end
  end
  return found
end

local function wisp_client(bufnr)
  for _, client in ipairs(wisp_clients()) do
    if vim.lsp.buf_is_attached(bufnr, client.id) then
      return client
    end
  end
end

--- The settings as they go out: an empty Lua table would be the JSON list `[]`, which the
--- server rejects.
local function settings_message()
  return next(settings) and settings or vim.empty_dict()
end

--- Answers the server's `workspace/configuration` request from the module's settings.
local function answer_configuration(_, params)
  local answers = {}
  for i, item in ipairs(params.items or {}) do
    if item.section == "wisp" then
      answers[i] = settings_message()
    elseif item.section == nil or item.section == "" then
      answers[i] = { wisp = settings_message() }
    else
      answers[i] = vim.NIL
    end
  end
  return answers
end

-- Key actions. Each returns the keys to type instead: its own key when it has nothing to do.

local function completing()
  return vim.fn.complete_info({ "mode" }).mode ~= ""
end

local function ghost_visible(bufnr)
  local namespace = vim.api.nvim_get_namespaces()["nvim.lsp.inline_completion"]
  return namespace ~= nil
    and #vim.api.nvim_buf_get_extmarks(bufnr, namespace, 0, -1, { limit = 1 }) > 0
end

local menu_actions = {
  accept = function(key)
    if completing() then
      return "<C-y>"
    end
    return vim.bo.omnifunc ~= "" and "<C-x><C-o>" or key -- nothing to accept yet: ask
  end,
  next = function(key)
    return completing() and "<C-n>" or key
  end,
  prev = function(key)
    return completing() and "<C-p>" or key
  end,
  dismiss = function(key)
    return completing() and "<C-e>" or key
  end,
}

-- The inline completion API edits the buffer and its marks, which an expression mapping may
-- not do: the work is scheduled and the mapping types nothing.
local ghost_actions = {
  accept = function(key)
    return vim.lsp.inline_completion.get() and "" or key
  end,
  next = function(key, bufnr)
    if not ghost_visible(bufnr) then
      return key
    end
    vim.schedule(function()
      vim.lsp.inline_completion.select({ bufnr = bufnr, count = 1 })
    end)
    return ""
  end,
  prev = function(key, bufnr)
    if not ghost_visible(bufnr) then
      return key
    end
    vim.schedule(function()
      vim.lsp.inline_completion.select({ bufnr = bufnr, count = -1 })
    end)
    return ""
  end,
  dismiss = function(key, bufnr)
    if not ghost_visible(bufnr) then
      return key
    end
    vim.schedule(function()
      -- There is no "hide" in the API; turning it off and on again for the buffer clears it.
      vim.lsp.inline_completion.enable(false, { bufnr = bufnr })
      vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    end)
    return ""
  end,
}

local function set_keymaps(keymaps, bufnr, ghost)
  if not keymaps then
    return
  end
  local actions = ghost and ghost_actions or menu_actions
  for name, lhs in pairs(keymaps) do
    if lhs and actions[name] then
      vim.keymap.set("i", lhs, function()
        return actions[name](lhs, bufnr)
      end, { buffer = bufnr, expr = true, desc = "wisp: " .. name })
    end
  end
end

--- Menu completions carry wisp's accept command too, but 'omnifunc' does not run it: run it
--- when the completed item came from wisp, so that acceptances are counted.
local function count_menu_acceptances(client, bufnr)
  vim.api.nvim_create_autocmd("CompleteDone", {
    group = vim.api.nvim_create_augroup("wisp_accept_" .. bufnr, { clear = true }),
    buffer = bufnr,
    callback = function()
      local item = vim.tbl_get(vim.v.completed_item, "user_data", "nvim", "lsp", "completion_item")
      local command = item and item.command
      if type(command) == "table" and command.command == ACCEPT_COMMAND then
        request(client, "workspace/executeCommand", command, function() end, bufnr)
      end
    end,
  })
end

local function wants(opts, bufnr)
  local filetype = vim.bo[bufnr].filetype
  if filetype == "" or vim.bo[bufnr].buftype ~= "" then
    return false
  end
  return opts.filetypes == nil or vim.tbl_contains(opts.filetypes, filetype)
end

local function client_config(opts)
  return {
    name = "wisp",
    cmd = opts.cmd,
    root_dir = opts.root_dir,
    -- The settings as they are when the server starts, not as they were at setup.
    before_init = function(params)
      params.initializationOptions = settings_message()
    end,
    handlers = vim.tbl_extend("force", {
      ["wisp/status"] = record_status,
      ["workspace/configuration"] = answer_configuration,
    }, opts.handlers),
    on_exit = opts.on_exit,
    on_attach = function(client, bufnr)
      local ghost = opts.inline_completion and has_ghost_text()
      if ghost then
        vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
      else
        if vim.bo[bufnr].omnifunc == "" then
          -- Without ghost text, <C-x><C-o> shows the suggestions as a completion menu.
          vim.bo[bufnr].omnifunc = "v:lua.vim.lsp.omnifunc"
        end
        count_menu_acceptances(client, bufnr)
      end
      set_keymaps(opts.keymaps, bufnr, ghost)
      if opts.on_attach then
        opts.on_attach(client, bufnr)
      end
    end,
  }
end

--- An attach(bufnr) for Neovim 0.8+ (vim.lsp.start reuses a client by name and root).
local function attacher_08(config)
  return function(bufnr)
    vim.lsp.start(config, { bufnr = bufnr })
  end
end

--- An attach(bufnr) for Neovim 0.7: one client, started on first use, attached per buffer.
local function attacher_07(config)
  local client_id = nil
  return function(bufnr)
    if not (client_id and vim.lsp.get_client_by_id(client_id)) then
      client_id = vim.lsp.start_client(config)
    end
    if client_id then
      vim.lsp.buf_attach_client(bufnr, client_id)
    end
  end
end

--- Ask the server for its local figures (`wisp/stats`): `callback(err, stats)`.
function M.stats(callback, bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local client = wisp_client(bufnr)
  if not client then
    return callback("wisp is not attached to this buffer", nil)
  end
  request(client, "wisp/stats", vim.empty_dict(), function(err, result)
    callback(err, result)
  end, bufnr)
end

--- Change settings while running (camelCase keys), e.g. { commentsAndStrings = "never" };
--- `vim.NIL` puts a setting back to its default. The others stay as they are. Returns false
--- when no wisp server is running (the next one to start gets the changed settings).
function M.configure(changes)
  settings = vim.tbl_extend("force", settings, changes)
  local clients = wisp_clients()
  for _, client in ipairs(clients) do
    notify(client, "workspace/didChangeConfiguration", { settings = { wisp = settings_message() } })
  end
  return #clients > 0
end

-- Choosing the model: the server lists the models it finds and the ones it can download
-- (`wisp.models`), downloads one (`wisp.pull`), and loads whatever the `model` setting names.

-- A JSON null in an answer is nil in some Neovim versions, vim.NIL in others: make it nil.
local function without_nulls(value)
  if value == vim.NIL then
    return nil
  elseif type(value) == "table" then
    for key, item in pairs(value) do
      value[key] = without_nulls(item)
    end
  end
  return value
end

local function execute(client, command, arguments, callback)
  local params = { command = command, arguments = arguments }
  request(client, "workspace/executeCommand", params, function(err, result)
    callback(err, without_nulls(result))
  end)
end

local function any_client()
  return wisp_client(vim.api.nvim_get_current_buf()) or wisp_clients()[1]
end

--- Ask the server for the models it can serve (`wisp.models`): `callback(err, list)` with
--- list = { current = setting, models = { { name, source, sizeBytes, architecture, fim, ... } },
--- pullable = { { name, sizeBytes, note, pulled } } }.
function M.models(callback)
  local client = any_client()
  if not client then
    return callback("wisp is not running", nil)
  end
  execute(client, "wisp.models", nil, function(err, result)
    if not err then
      last_models = result
    end
    callback(err, result)
  end)
end

--- Serve the model `name`, as `wisp.models` names it (nil: the bundled one). Returns false
--- when no wisp server is running.
function M.set_model(name)
  if name == nil or name == vim.NIL or name == "" then
    return M.configure({ model = vim.NIL })
  end
  return M.configure({ model = name })
end

local function size_text(bytes)
  if not bytes or bytes <= 0 then
    return "?"
  elseif bytes >= 1e9 then
    return string.format("%.1f GB", bytes / 1e9)
  elseif bytes >= 1e6 then
    return string.format("%d MB", math.floor(bytes / 1e6 + 0.5))
  end
  return string.format("%d KB", math.max(1, math.floor(bytes / 1e3 + 0.5)))
end

-- "* name  size  architecture main-type": `*` marks the current one, `[no FIM]` one that
-- completes from the code before the cursor only; an unreadable file shows why instead.
local function local_label(model, current)
  local name = model.name or ("bundled: " .. vim.fn.fnamemodify(model.path, ":t:r"))
  local parts = { (model.name == current and "* " or "  ") .. name, size_text(model.sizeBytes) }
  local architecture = model.architecture or ""
  if architecture == "" then
    table.insert(parts, model.note)
  else
    table.insert(parts, vim.trim(architecture .. " " .. ((model.types or {})[1] or "")))
    if not model.fim then
      table.insert(parts, "[no FIM]")
    end
  end
  return table.concat(parts, "  ")
end

--- What `:WispModel` offers: the local models, then the catalog's models not downloaded yet.
local function model_choices(list)
  local choices = {}
  for _, model in ipairs(list.models or {}) do
    table.insert(choices, { name = model.name, label = local_label(model, list.current) })
  end
  for _, item in ipairs(list.pullable or {}) do
    if not item.pulled then
      local size = size_text(item.sizeBytes)
      local label = string.format("  download %s, about %s: %s", item.name, size, item.note)
      table.insert(choices, { name = item.name, label = label, pull = item })
    end
  end
  return choices
end

local function report_error(what, err)
  local text = type(err) == "table" and err.message or vim.inspect(err)
  vim.notify("wisp: " .. what .. ": " .. text, vim.log.levels.ERROR)
end

local function use_model(name)
  local what = name or "the bundled model"
  if M.set_model(name) then
    vim.notify("wisp: loading " .. what)
  else
    vim.notify("wisp is not running; it will load " .. what .. " when it starts")
  end
end

local function pull_then_use(item)
  local client = any_client()
  if not client then
    return report_error("cannot download " .. item.name, "wisp is not running")
  end
  vim.notify(string.format("wisp: downloading %s (about %s)", item.name, size_text(item.sizeBytes)))
  execute(client, "wisp.pull", { item.name }, function(err, result)
    if err then
      return report_error("cannot download " .. item.name, err)
    end
    use_model(result.name or item.name)
  end)
end

--- Pick the model from the list the server finds (`vim.ui.select`); a model not downloaded
--- yet is downloaded first.
function M.choose_model()
  M.models(function(err, list)
    if err then
      return report_error("cannot list the models", err)
    end
    local choices = model_choices(list)
    vim.ui.select(choices, {
      prompt = "wisp model (* current):",
      kind = "wisp.model",
      format_item = function(choice)
        return choice.label
      end,
    }, function(choice)
      if choice and choice.pull then
        pull_then_use(choice.pull)
      elseif choice then
        use_model(choice.name)
      end
    end)
  end)
end

--- `:WispModel` completion: the names of the last list (asked for now if there is none yet).
local function complete_model_names(lead)
  local client = any_client()
  if not last_models and client then
    local params = { command = "wisp.models" }
    local answer = request_sync(client, "workspace/executeCommand", params, 3000)
    last_models = answer and not answer.err and without_nulls(answer.result) or nil
  end
  local names = {}
  for _, choice in ipairs(last_models and model_choices(last_models) or {}) do
    if choice.name and vim.startswith(choice.name, lead) then
      table.insert(names, choice.name)
    end
  end
  return names
end

local function model_command(args)
  if args.args == "" then
    M.choose_model()
  else
    use_model(args.args)
  end
end

local function show_stats()
  M.stats(function(err, stats)
    if err then
      vim.notify("wisp: " .. vim.inspect(err), vim.log.levels.ERROR)
    else
      vim.notify("wisp stats (kept on this machine):\n" .. vim.inspect(stats))
    end
  end)
end

--- Start wisp for matching buffers, those open now and those opened later.
function M.setup(user)
  local opts = vim.tbl_extend("force", defaults, user or {})
  settings = vim.tbl_extend("force", {}, opts.settings) -- the caller's table stays as it was
  if opts.keymaps then -- keys not named keep their defaults
    opts.keymaps = vim.tbl_extend("force", defaults.keymaps, opts.keymaps)
  end
  opts.root_dir = opts.root_dir or vim.fn.getcwd()
  local config = client_config(opts)
  vim.api.nvim_create_user_command("WispStats", show_stats, { desc = "wisp: local figures" })
  vim.api.nvim_create_user_command("WispModel", model_command, {
    nargs = "?",
    complete = complete_model_names,
    desc = "wisp: choose the model",
  })

  if vim.lsp.config and vim.lsp.enable then
    config.filetypes = opts.filetypes
    vim.lsp.config("wisp", config)
    vim.lsp.enable("wisp")
    return
  end

  local attach = vim.lsp.start and attacher_08(config) or attacher_07(config)
  local function maybe_attach(bufnr)
    if wants(opts, bufnr) then
      attach(bufnr)
    end
  end
  vim.api.nvim_create_autocmd("FileType", {
    group = vim.api.nvim_create_augroup("wisp", { clear = true }),
    callback = function(args)
      maybe_attach(args.buf)
    end,
  })
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) then
      maybe_attach(bufnr)
    end
  end
end

return M
