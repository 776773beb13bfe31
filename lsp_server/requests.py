"""From an LSP request to suggestions: find the document and cursor, run the engine."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from lsprotocol import types
from pygls.workspace import TextDocument

from lsp_server.positions import offset_at, position_at, units
from lsp_server.server import WispServer
from model_runtime.context import cursor_context
from model_runtime.crossfile import OpenDocument
from model_runtime.engine import CompletionEngine, CompletionRequest, CompletionResult
from model_runtime.lexical import completes_at
from model_runtime.postprocess import Suggestion

log = logging.getLogger(__name__)

# How far past `maxLatencyMs` a request may go before it is given up as hung: the deadline is
# checked between steps, and one prefill chunk of a long prompt on a slow machine takes seconds.
WATCHDOG_GRACE_S = 10.0
# Bounds on what other open documents cost a request: how many, and how large each may be.
MAX_OPEN_DOCUMENTS = 32
MAX_OPEN_CHARS = 500_000


@dataclass
class Found:
    """Suggestions at a cursor, with the cursor as the client should see it (clamped)."""

    cursor: types.Position
    suggestions: list[Suggestion] = field(default_factory=list)
    replaced_units: list[int] = field(default_factory=list)
    language: str = ""


async def suggest(
    ls: WispServer, uri: str, position: types.Position, invoked: bool = True
) -> Found:
    """Suggestions for `uri` at `position`; empty (with a logged reason) when there are none.

    `invoked`: the user asked explicitly (rather than typing), which the `commentsAndStrings`
    setting may require inside comments and strings.
    """
    started = time.perf_counter()
    nothing = Found(position)
    doc = ls.workspace.text_documents.get(unquote(uri))  # pygls keys documents unquoted
    if doc is None:
        log.info("no completion: %s was never opened", uri)
        return nothing
    language = language_of(doc)
    if not ls.settings.language_enabled(language):
        log.info("no completion: language %s is disabled", language)
        return nothing
    engine = ls.engine
    if engine is None:
        log.info("no completion: the model is %s", ls.model_state)
        return nothing
    encoding = str(ls.workspace.position_encoding or types.PositionEncodingKind.Utf16)
    text = doc.source
    located = offset_at(text, position, encoding)
    if located.clamped:
        log.info(
            "position %s:%s is past the end; using %s",
            position.line,
            position.character,
            located.offset,
        )
    cursor = position_at(text, located.offset, encoding)
    request = engine_request(ls, doc, text, located.offset)
    policy = ls.settings.comments_and_strings
    if not completes_at(text, located.offset, request.language, policy, invoked):
        log.info("no completion: inside a comment or string (commentsAndStrings=%s)", policy)
        return Found(cursor, language=request.language)
    result = engine.lookup(request)  # cached or typed through: no model, no waiting
    if result is not None:
        ls.scheduler.cancel(uri)  # the user has moved on from any request still running
    else:
        try:
            result = await _run_watched(ls, engine, uri, request)
        except Exception as exc:  # a model that fails or hangs costs one empty answer
            ls.note_fault(exc)
            return Found(cursor, language=request.language)
        ls.note_recovered()
    if result is None or result.cancelled:
        log.info("no completion: request for %s was superseded or cancelled", uri)
        engine_ms = result.timings_ms.get("total", 0.0) if result is not None else 0.0
        ls.stats.record_cancelled(request.language, engine_ms)
        return Found(cursor, language=request.language)
    latency_ms = (time.perf_counter() - started) * 1000
    engine_ms = result.timings_ms.get("total", 0.0)
    server_ms = result.timings_ms.get("server") if result.source == "model" else None
    ls.stats.record_request(
        request.language, latency_ms, engine_ms, result.source != "model", server_ms
    )
    if result.source == "model" and server_ms is None:
        ls.stats.record_model_work(result.timings_ms)
    log.debug(
        "completion at %s:%d:%d from %s in %.0f ms, timings %s",
        uri,
        cursor.line,
        cursor.character,
        result.source,
        latency_ms,
        result.timings_ms,
    )
    line_suffix = cursor_context(text, located.offset).line_suffix
    replaced = [units(line_suffix[: s.replace], encoding) for s in result.suggestions]
    return Found(cursor, result.suggestions, replaced, request.language)


def engine_request(ls: WispServer, doc: TextDocument, text: str, offset: int) -> CompletionRequest:
    """The engine's request at `offset` of `doc` (whose text is `text`), with the other open
    documents and the places edited last."""
    return CompletionRequest(
        text,
        offset,
        display_path(ls, doc.path),
        language_of(doc),
        _open_documents(ls, doc),
        ls.recent_edits.ranges(),
    )


async def _run_watched(
    ls: WispServer, engine: CompletionEngine, uri: str, request: CompletionRequest
) -> CompletionResult | None:
    """The engine's answer, run on the model thread; TimeoutError if it outlives its budget.

    The engine stops decoding at `maxLatencyMs`, but only between steps: a single forward pass
    that never returns (a wedged kernel, a machine swapping) would leave the editor waiting.
    """
    debounce_s = ls.settings.debounce_ms / 1000
    job = ls.scheduler.run(uri, lambda cancel: engine.complete(request, cancel), debounce_s)
    budget_ms = ls.settings.max_latency_ms
    if not budget_ms:
        return await job
    limit_s = debounce_s + budget_ms / 1000 + WATCHDOG_GRACE_S
    try:
        return await asyncio.wait_for(job, limit_s)
    except TimeoutError:
        raise TimeoutError(f"the model did not answer within {limit_s:.1f} s") from None


def _open_documents(ls: WispServer, current: TextDocument) -> tuple[OpenDocument, ...]:
    """The other open documents (the last `MAX_OPEN_DOCUMENTS` opened, none over
    `MAX_OPEN_CHARS`), for the context beyond the current one."""
    if not ls.settings.cross_file_tokens:
        return ()
    others = [
        OpenDocument(display_path(ls, doc.path), doc.source, language_of(doc))
        for doc in list(ls.workspace.text_documents.values())[-MAX_OPEN_DOCUMENTS - 1 :]
        if doc is not current and len(doc.source) <= MAX_OPEN_CHARS
    ]
    return tuple(others[-MAX_OPEN_DOCUMENTS:])


def language_of(doc: TextDocument) -> str:
    # pygls keeps whatever `languageId` the client sent, string or not.
    return doc.language_id if isinstance(doc.language_id, str) else ""


def display_path(ls: WispServer, path: str | None) -> str:
    """The document's path relative to the workspace root, as models saw paths in training."""
    if not path:
        return ""
    root = ls.workspace.root_path
    if root:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return Path(path).name
