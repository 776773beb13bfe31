"""initialize / initialized / configuration / shutdown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lsprotocol import types

from lsp_server.server import WispServer

log = logging.getLogger(__name__)


def register(server: WispServer) -> None:
    @server.feature(types.INITIALIZE)
    def initialize(ls: WispServer, params: types.InitializeParams) -> None:
        # Settings are parsed now; the model loads only after `initialized`, in the background.
        ls.settings_raw = params.initialization_options
        ls.protocol.keep_lsp_lines()

    @server.feature(types.INITIALIZED)
    async def initialized(ls: WispServer, params: types.InitializedParams) -> None:
        raw = ls.settings_raw
        pulled = await _pull_configuration(ls)
        if isinstance(pulled, dict):
            raw = {**raw, **pulled} if isinstance(raw, dict) else pulled
        ls.update_settings(raw)
        if ls.model_state == "idle":
            ls.start_loading()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(
        ls: WispServer, params: types.DidChangeConfigurationParams
    ) -> None:
        settings = params.settings
        if not (isinstance(settings, dict) and "wisp" in settings):
            settings = await _pull_configuration(ls)  # pull-model clients send no values
        if settings is not None:
            ls.update_settings(settings)

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: WispServer, params: None) -> None:
        ls.shutdown_requested = True
        ls.scheduler.shutdown()


async def _pull_configuration(ls: WispServer) -> Any:
    """The client's `wisp` section via workspace/configuration, or None if it has none."""
    workspace = ls.client_capabilities.workspace
    if workspace is None or not workspace.configuration:
        return None
    request = types.ConfigurationParams(items=[types.ConfigurationItem(section="wisp")])
    try:
        result = await asyncio.wait_for(ls.workspace_configuration_async(request), timeout=3)
    except Exception as exc:  # the client may not answer; settings then stay as they are
        log.warning("workspace/configuration failed: %s", exc)
        return None
    return result[0] if result else None
