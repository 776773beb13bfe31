"""textDocument/inlineCompletion and textDocument/completion."""

from __future__ import annotations

from lsprotocol import types

from lsp_server import idle_prefill
from lsp_server.items import completion_items, inline_items
from lsp_server.requests import suggest
from lsp_server.server import WispServer


def register(server: WispServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: WispServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        found = await suggest(ls, params.text_document.uri, params.position, invoked)
        idle_prefill.asked(ls, params.text_document.uri, found.cursor)
        ids = ls.stats.issue(found.language, len(found.suggestions))
        return inline_items(found.suggestions, found.cursor, found.replaced_units, ids)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    async def completion(ls: WispServer, params: types.CompletionParams) -> types.CompletionList:
        if ls.client_capabilities.text_document is not None and (
            ls.client_capabilities.text_document.inline_completion is not None
        ):
            # The client shows ghost text already; the same text in its menu would be noise.
            return types.CompletionList(is_incomplete=False, items=[])
        # wisp registers no trigger characters: any request without one was asked for.
        invoked = params.context is None or (
            params.context.trigger_kind != types.CompletionTriggerKind.TriggerCharacter
        )
        found = await suggest(ls, params.text_document.uri, params.position, invoked)
        idle_prefill.asked(ls, params.text_document.uri, found.cursor)
        # A menu shows its first item as soon as it opens; no client reports that.
        ids = ls.stats.issue(found.language, len(found.suggestions), shown=1)
        return completion_items(
            found.suggestions, found.cursor, found.replaced_units, found.language, ids
        )
