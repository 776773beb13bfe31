"""Start `wisp serve` as a subprocess and drive it with pytest-lsp's client."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

SERVER = [sys.executable, "-m", "lsp_server.cli", "serve"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class Session:
    """A started server, its client, and the `wisp/status` notifications seen so far."""

    def __init__(self, client: LanguageClient) -> None:
        self.client = client
        self.statuses: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

        @client.feature("wisp/status")
        def on_status(params: Any) -> None:
            model = getattr(params, "model", None)
            self.statuses.append({"state": params.state, "message": params.message, "model": model})
            self._changed.set()

    async def wait_state(self, *states: str, timeout: float = 120) -> dict[str, Any]:
        """The first status in `states` (waiting for it to arrive)."""
        async with asyncio.timeout(timeout):
            while True:
                for status in self.statuses:
                    if status["state"] in states:
                        return status
                self._changed.clear()
                await self._changed.wait()

    def open(self, uri: str, text: str, language: str = "python", version: int = 1) -> None:
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id=language, version=version, text=text
                )
            )
        )

    def insert(self, uri: str, line: int, character: int, text: str, version: int) -> None:
        """An incremental change inserting `text` at a position."""
        at = types.Position(line=line, character=character)
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=at, end=at), text=text
                    )
                ],
            )
        )

    async def inline(self, uri: str, line: int, character: int) -> types.InlineCompletionList:
        result = await self.client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=line, character=character),
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Automatic
                ),
            )
        )
        assert isinstance(result, types.InlineCompletionList)
        return result


async def start(
    init_options: Any = None,
    client_spec: str = "visual-studio-code",
    encodings: list[str] | None = None,
    inline_capable: bool = False,
    env: dict[str, str] | None = None,
) -> tuple[Session, types.InitializeResult]:
    server_env = {**ENV, **(env or {})}
    client = await ClientServerConfig(server_command=SERVER, server_env=server_env).start()
    assert isinstance(client, LanguageClient)
    session = Session(client)
    capabilities = client_capabilities(client_spec)
    if encodings is not None:
        capabilities.general = types.GeneralClientCapabilities(position_encodings=encodings)
    if inline_capable and capabilities.text_document is not None:
        capabilities.text_document.inline_completion = types.InlineCompletionClientCapabilities()
    result = await client.initialize_session(
        types.InitializeParams(capabilities=capabilities, initialization_options=init_options)
    )
    return session, result


async def stop(session: Session) -> int | None:
    await session.client.shutdown_session()
    await session.client.stop()
    server = session.client._server
    return None if server is None else server.returncode
