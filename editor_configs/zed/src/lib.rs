//! Starts `wisp serve` for Zed and hands it the `lsp.wisp` settings.

use zed_extension_api::{self as zed, serde_json, settings::LspSettings, LanguageServerId, Result};

struct Wisp;

fn settings(id: &LanguageServerId, worktree: &zed::Worktree) -> Option<LspSettings> {
    LspSettings::for_worktree(id.as_ref(), worktree).ok()
}

impl zed::Extension for Wisp {
    fn new() -> Self {
        Wisp
    }

    /// `lsp.wisp.binary.path` / `.arguments` when set, else `wisp serve` from the PATH.
    fn language_server_command(
        &mut self,
        id: &LanguageServerId,
        worktree: &zed::Worktree,
    ) -> Result<zed::Command> {
        let binary = settings(id, worktree).and_then(|s| s.binary);
        let command = binary
            .as_ref()
            .and_then(|b| b.path.clone())
            .or_else(|| worktree.which("wisp"))
            .ok_or_else(|| "wisp is not on the PATH; set lsp.wisp.binary.path".to_string())?;
        let args = binary
            .and_then(|b| b.arguments)
            .unwrap_or_else(|| vec!["serve".to_string()]);
        Ok(zed::Command {
            command,
            args,
            env: worktree.shell_env(),
        })
    }

    /// `lsp.wisp.initialization_options`: wisp's settings when it starts.
    fn language_server_initialization_options(
        &mut self,
        id: &LanguageServerId,
        worktree: &zed::Worktree,
    ) -> Result<Option<serde_json::Value>> {
        Ok(settings(id, worktree).and_then(|s| s.initialization_options))
    }

    /// `lsp.wisp.settings`, under the `wisp` section that the server asks for.
    fn language_server_workspace_configuration(
        &mut self,
        id: &LanguageServerId,
        worktree: &zed::Worktree,
    ) -> Result<Option<serde_json::Value>> {
        let values = settings(id, worktree).and_then(|s| s.settings);
        Ok(values.map(|v| serde_json::json!({ "wisp": v })))
    }
}

zed::register_extension!(Wisp);
