"""Choosing the model from the editor: `workspace/executeCommand` `wisp.models` lists what this
machine has and what can be downloaded; `wisp.pull [name]` downloads one, with a progress bar.

The editor switches models by changing the `model` setting (`workspace/didChangeConfiguration`):
the server reloads without a restart, and `wisp/status` names the model.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams

from lsp_server.server import WispServer

log = logging.getLogger(__name__)

MODELS_COMMAND = "wisp.models"
PULL_COMMAND = "wisp.pull"
REQUEST_FAILED = -32803  # LSP's code for a request that was valid but failed


def register(server: WispServer) -> None:
    @server.command(MODELS_COMMAND)
    async def models(ls: WispServer, *arguments: Any) -> dict[str, Any]:
        return await asyncio.to_thread(model_list, ls.settings.model, ls.model_name)

    @server.command(PULL_COMMAND)
    async def pull(ls: WispServer, *arguments: Any) -> dict[str, Any]:
        name = arguments[0] if arguments else None
        if not isinstance(name, str) or not name:
            raise JsonRpcInvalidParams(f"{PULL_COMMAND} takes the name of a model to download")
        return await _pull(ls, name)


def model_list(setting: str | None, loaded: str) -> dict[str, Any]:
    """What `wisp.models` answers: the models found, the downloadable ones, the current one."""
    from model_runtime.models.listing import find_models, pullable

    extra = []
    if setting and Path(setting).expanduser().is_file():
        extra.append(Path(setting).expanduser())  # a file outside every store
    entries = find_models(extra)
    return {
        "current": setting,
        "loaded": loaded,
        "models": [entry.wire() for entry in entries],
        "pullable": pullable(entries),
    }


async def _pull(ls: WispServer, name: str) -> dict[str, Any]:
    from model_runtime.models.pull import PullError, pull

    token = await ls.begin_progress(f"Downloading {name}")
    loop = asyncio.get_running_loop()
    shown = -1

    def progress(done: int, total: int) -> None:  # from the download's thread
        nonlocal shown
        percent = int(100 * done / total) if total else 0
        if percent != shown:
            shown = percent
            message = f"{done / 1e6:.0f} of {total / 1e6:.0f} MB"
            loop.call_soon_threadsafe(ls.report_progress, token, message, percent)

    try:
        path = await asyncio.to_thread(pull, name, progress)
    except PullError as exc:
        log.error("pulling %s failed: %s", name, exc)
        raise JsonRpcException(str(exc), code=REQUEST_FAILED) from exc
    finally:
        ls.end_progress(token)
    return {"name": name, "path": str(path)}
