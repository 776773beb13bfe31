"""What became of the suggestions, and the local figures: acceptance events and `wisp/stats`.

- `workspace/executeCommand` `wisp.didAccept [itemId]`: the command every item carries;
- `textDocument/didShowCompletion {item}` and
  `textDocument/didPartiallyAcceptCompletion {item, acceptedLength}`: the notifications that
  the Copilot language server made common; the item is the one wisp sent, command included;
- `wisp/stats` request, also `workspace/executeCommand` `wisp.stats`: `Stats.snapshot()`.
"""

from __future__ import annotations

import logging
from typing import Any

from lsp_server.items import ACCEPT_COMMAND
from lsp_server.server import WispServer

log = logging.getLogger(__name__)

STATS_REQUEST = "wisp/stats"
STATS_COMMAND = "wisp.stats"
DID_SHOW = "textDocument/didShowCompletion"
DID_PARTIALLY_ACCEPT = "textDocument/didPartiallyAcceptCompletion"


def item_id(params: Any) -> str | None:
    """The id in `params.item.command.arguments[0]` (custom params arrive as named tuples)."""
    command = getattr(getattr(params, "item", None), "command", None)
    arguments = getattr(command, "arguments", None)
    if getattr(command, "command", None) != ACCEPT_COMMAND or not arguments:
        return None
    first = arguments[0]
    return first if isinstance(first, str) else None


def _unknown(event: str, params: Any) -> None:
    log.debug("%s for an unknown or expired item: %s", event, params)


def register(server: WispServer) -> None:
    @server.command(ACCEPT_COMMAND)
    def did_accept(ls: WispServer, *arguments: Any) -> None:
        accepted = arguments[0] if arguments else None
        if not (isinstance(accepted, str) and ls.stats.accepted(accepted)):
            _unknown(ACCEPT_COMMAND, arguments)

    @server.feature(DID_SHOW)
    def did_show(ls: WispServer, params: Any) -> None:
        shown = item_id(params)
        if shown is None or not ls.stats.shown(shown):
            _unknown(DID_SHOW, params)

    @server.feature(DID_PARTIALLY_ACCEPT)
    def did_partially_accept(ls: WispServer, params: Any) -> None:
        partial = item_id(params)
        if partial is None or not ls.stats.partially_accepted(partial):
            _unknown(DID_PARTIALLY_ACCEPT, params)

    @server.feature(STATS_REQUEST)
    def stats(ls: WispServer, params: Any) -> dict[str, Any]:
        return ls.stats.snapshot()

    @server.command(STATS_COMMAND)
    def stats_command(ls: WispServer, *arguments: Any) -> dict[str, Any]:
        return ls.stats.snapshot()
