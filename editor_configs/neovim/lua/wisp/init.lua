--- wisp for Neovim: start `wisp serve` for editing buffers and attach it.
---
--- Uses the newest client API this Neovim has: vim.lsp.config/enable (0.11+),
--- vim.lsp.start (0.8+), or vim.lsp.start_client with buf_attach_client (0.7).
local M = {}

--- The last `wisp/status` notification: { state = "loading"|"ready"|"error", message = ... }.
M.status = nil

local defaults = {
  cmd = { "wisp", "serve" },
  settings = {}, -- sent as initializationOptions, camelCase keys: { model = ..., maxNewTokens = ... }
  filetypes = nil, -- nil: every filetype
  root_dir = nil, -- nil: the current directory when setup runs
  handlers = {}, -- merged over the defaults below; same signature as vim.lsp.handlers
  on_attach = nil, -- function(client, bufnr)
  on_exit = nil, -- function(code, signal, client_id)
  inline_completion = true, -- ghost text where Neovim has vim.lsp.inline_completion (0.12+)
}

local function record_status(_, result)
  M.status = result
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
      if opts.inline_completion and vim.lsp.inline_completion then
        vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
      elseif vim.bo[bufnr].omnifunc == "" then
        -- Without ghost text, <C-x><C-o> shows the suggestions as a completion menu.
        vim.bo[bufnr].omnifunc = "v:lua.vim.lsp.omnifunc"
      end
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

--- Start wisp for matching buffers, those open now and those opened later.
function M.setup(user)
  local opts = vim.tbl_extend("force", defaults, user or {})
  opts.root_dir = opts.root_dir or vim.fn.getcwd()
  local config = client_config(opts)

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
