"""Drive `wisp serve` over stdio like an editor whose user types, and time every answer."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from lsp_server.bench.script import Session, follow_ghost_text, keystrokes
from lsp_server.positions import position_at

UTF16 = types.PositionEncodingKind.Utf16


@dataclass
class Recording:
    """Every timed request as (kind, ms), and what the server said about itself."""

    samples: list[tuple[str, float]] = field(default_factory=list)
    jumps: list[tuple[int, float]] = field(default_factory=list)  # (lines moved, ms) per jump
    stats_before: dict[str, Any] | None = None
    stats_after: dict[str, Any] | None = None
    peak_rss_mb: float | None = None
    ready_ms: float | None = None  # from `initialized` to the model's `ready` status


class _Document:
    """The client's copy of one open document and its cursor."""

    def __init__(self, client: LanguageClient, uri: str, text: str) -> None:
        self.client, self.uri, self.text, self.version = client, uri, text, 1
        self.offset = 0
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=text
                )
            )
        )

    def cursor(self) -> types.Position:
        return position_at(self.text, self.offset, UTF16)

    def type(self, char: str) -> None:
        """Insert `char` at the cursor, or delete the character before it for "\\b"."""
        at = self.cursor()
        if char == "\b":
            self.offset -= 1
            start, new_text = position_at(self.text, self.offset, UTF16), ""
            self.text = self.text[: self.offset] + self.text[self.offset + 1 :]
        else:
            start, new_text = at, char
            self.text = self.text[: self.offset] + char + self.text[self.offset :]
            self.offset += len(char)
        self.version += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri=self.uri, version=self.version
                ),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=start, end=at), text=new_text
                    )
                ],
            )
        )

    async def complete(self) -> tuple[str, float]:
        """The top inline suggestion ("" for none) and how long the server took."""
        started = time.perf_counter()
        result = await self.client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=self.uri),
                position=self.cursor(),
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Automatic
                ),
            )
        )
        elapsed = (time.perf_counter() - started) * 1000
        items = result.items if isinstance(result, types.InlineCompletionList) else result or []
        text = items[0].insert_text if items else ""
        return (text if isinstance(text, str) else text.value), elapsed


async def replay(
    sessions: list[Session],
    settings: dict[str, Any],
    seed: int,
    pause_scale: float,
    follow_rate: float,
    on_line: Callable[[], None] = lambda: None,
    open_pause_s: float = 0.0,
    server_log: Path | None = None,
) -> Recording:
    """Start the server, replay every session in turn, and shut the server down."""
    async with serving(settings, server_log) as (client, recording):
        rng = random.Random(seed)
        for session in sessions:
            await replay_session(
                client, session, rng, pause_scale, follow_rate, recording, on_line, open_pause_s
            )
    return recording


@asynccontextmanager
async def serving(
    settings: dict[str, Any], server_log: Path | None = None
) -> AsyncIterator[tuple[LanguageClient, Recording]]:
    """`wisp serve` started, initialized and ready; its stats and peak RSS recorded at the end.
    With `server_log`, the server logs there in full (`-vv`): each answer's timings."""
    client = LanguageClient("wisp-bench", "1")
    ready = asyncio.Event()
    failure: list[str] = []

    @client.feature("wisp/status")
    def on_status(params: Any) -> None:
        state = getattr(params, "state", None)
        if state == "ready":
            ready.set()
        elif state == "error":
            failure.append(str(getattr(params, "message", "")))
            ready.set()

    logging = ["-vv", "--log-file", str(server_log)] if server_log else []
    await client.start_io(sys.executable, "-m", "lsp_server.cli", "serve", *logging)
    recording = Recording()
    try:
        await client.initialize_async(
            types.InitializeParams(
                capabilities=types.ClientCapabilities(),
                initialization_options=settings,
                root_uri=None,
            )
        )
        client.initialized(types.InitializedParams())
        asked = time.perf_counter()
        await asyncio.wait_for(ready.wait(), timeout=900)  # a first start converts a GGUF file
        recording.ready_ms = round((time.perf_counter() - asked) * 1000, 1)
        if failure:
            raise RuntimeError(f"the server could not load the model: {failure[0]}")
        recording.stats_before = await _stats(client)
        yield client, recording
        recording.stats_after = await _stats(client)
        recording.peak_rss_mb = _peak_rss_mb(client)
        await client.shutdown_async(None)
        client.exit(None)
    finally:
        await client.stop()


async def replay_session(
    client: LanguageClient,
    session: Session,
    rng: random.Random,
    pause_scale: float,
    follow_rate: float,
    recording: Recording,
    on_line: Callable[[], None],
    open_pause_s: float = 0.0,
) -> None:
    """Type every hole of `session` into a freshly opened document; close it at the end.

    `open_pause_s` is the time the developer looks at the opened document before going to
    the first line (0: at once).
    """
    doc = _Document(client, f"file:///bench/{session.name}", session.text)
    await asyncio.sleep(open_pause_s)
    seen: set[tuple[str, int]] = set()
    last_ms = 0.0

    async def ask(kind: str) -> str:
        nonlocal last_ms
        known = (doc.text, doc.offset) in seen
        seen.add((doc.text, doc.offset))
        shown, last_ms = await doc.complete()
        recording.samples.append(("cache" if known and kind == "warm" else kind, last_ms))
        return shown

    async def press(char: str, pause_s: float, shown: str) -> str:
        # the pause runs from the key before; the answer to it took part of it already
        await asyncio.sleep(max(0.0, pause_s - last_ms / 1000))
        along = char != "\b" and shown.startswith(char)
        doc.type(char)
        return await ask("typed_through" if along else "warm")

    for number, hole in enumerate(session.holes):
        lines = doc.text.split("\n")  # typing never adds lines, so hole numbers stay valid
        doc.offset = sum(len(line) + 1 for line in lines[: hole.line]) + len(hole.indent)
        if number:
            shown = await ask("jump")
            recording.jumps.append((hole.line - session.holes[number - 1].line, last_ms))
        else:  # the session's first request after the model was ready is apart from the rest
            shown = await ask("cold" if recording.samples else "first")
        for stroke in keystrokes(hole.content, rng, pause_scale):
            typed_here = doc.text[: doc.offset].split("\n")[-1].lstrip()
            expected = hole.content[len(typed_here) :]
            if shown and not expected.startswith(shown[:1]) and rng.random() < follow_rate:
                # the developer types along the ghost text for a moment, then takes it back
                along = follow_ghost_text(shown)
                for char in along:
                    shown = await press(char, 0.12 * pause_scale, shown)
                for _ in along:
                    shown = await press("\b", 0.15 * pause_scale, shown)
            shown = await press(stroke.char, stroke.pause_s, shown)
        on_line()
    client.text_document_did_close(
        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=doc.uri))
    )


async def _stats(client: LanguageClient) -> dict[str, Any] | None:
    """The server's own counters (`wisp/stats`), or None when it does not answer them."""
    try:
        result = await asyncio.wait_for(client.protocol.send_request_async("wisp/stats", None), 10)
    except Exception:  # an older server, or one without stats: the report says n/a
        return None
    return _as_dict(result)


def _as_dict(value: Any) -> Any:
    if isinstance(value, list):
        return [_as_dict(v) for v in value]
    if hasattr(value, "_asdict"):
        return {k: _as_dict(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: _as_dict(v) for k, v in value.items()}
    return value


def _peak_rss_mb(client: LanguageClient) -> float | None:
    """The server process's peak resident memory, from /proc (Linux); None elsewhere."""
    return server_memory_mb(client, "VmHWM")


def server_memory_mb(client: LanguageClient, field: str = "VmRSS") -> float | None:
    """A memory figure of the server process from /proc (Linux): VmRSS now, VmHWM the peak."""
    server = getattr(client, "_server", None)
    if server is None:
        return None
    try:
        status = Path(f"/proc/{server.pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None
