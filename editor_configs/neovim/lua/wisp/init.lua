--- wisp for Neovim: start `wisp serve` for editing buffers and attach it.
---
--- Uses the newest client API this Neovim has: vim.lsp.config/enable (0.11+),
--- vim.lsp.start (0.8+), or vim.lsp.start_client with buf_attach_client (0.7).
--- Suggestions show as ghost text where Neovim has vim.lsp.inline_completion (0.12+), else in
--- the completion menu through 'omnifunc'.
local M = {}

--- The last `wisp/status` notification: { state = "loading"|"ready"|"error", message = ... }.
M.status = nil

local ACCEPT_COMMAND = "wisp.didAccept"

local defaults = {
  cmd = { "wisp", "serve" },
  settings = {}, -- sent as initializationOptions, camelCase keys: { model = ..., maxNewTokens = ... }
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

local function wisp_client(bufnr)
  for _, client in pairs((vim.lsp.get_clients or vim.lsp.get_active_clients)()) do
    if client.name == "wisp" and vim.lsp.buf_is_attached(bufnr, client.id) then
      return client
    end
  end
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
    -- An empty Lua table would go out as the JSON list `[]`, which the server rejects.
    init_options = next(opts.settings) and opts.settings or vim.empty_dict(),
    handlers = vim.tbl_extend("force", { ["wisp/status"] = record_status }, opts.handlers),
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

--- Change settings while running (camelCase keys), e.g. { commentsAndStrings = "never" }.
--- Returns false when wisp is not attached to the buffer.
function M.configure(settings, bufnr)
  local client = wisp_client(bufnr or vim.api.nvim_get_current_buf())
  if not client then
    return false
  end
  notify(client, "workspace/didChangeConfiguration", { settings = { wisp = settings } })
  return true
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
  if opts.keymaps then -- keys not named keep their defaults
    opts.keymaps = vim.tbl_extend("force", defaults.keymaps, opts.keymaps)
  end
  opts.root_dir = opts.root_dir or vim.fn.getcwd()
  local config = client_config(opts)
  vim.api.nvim_create_user_command("WispStats", show_stats, { desc = "wisp: local figures" })

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
