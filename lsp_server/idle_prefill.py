"""Work before the request: while the model is idle, build the cache of each open document
(`CompletionEngine.document_request`, `model_runtime/local/documents.py`), so that a request
anywhere in it, after a jump to another line too, computes only what is new.

The document's prompt reaches a budget's worth of code past where the user was last seen: the
position of its last completion request, or the end of its last edit, whichever came later
(typing and pasting leave the cursor there); a document just opened has neither, and its guess
is its end. Most files fit whole.

Nothing here may fail a request: a closed document, a model still loading or failed to load, a
backend that cannot prefill (remote ones) or the setting off mean no prefill, logged at debug.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from urllib.parse import unquote

from lsprotocol import types

from lsp_server.positions import offset_at, position_at
from lsp_server.requests import engine_request, language_of
from lsp_server.server import WispServer
from model_runtime.backend import first_line
from model_runtime.engine import CompletionEngine, CompletionRequest

log = logging.getLogger(__name__)

# Idle work starts only after this long without a request for the model: while the user types,
# the next key's request comes first. On the replay (Intel Xeon) 0.4 s left documents' caches
# unbuilt at most jumps; 0.15 s built them, at 1 ms on the warm p50.
IDLE_DELAY_S = 0.15


def opened(ls: WispServer, uri: str) -> None:
    prefill_soon(ls, uri)


def edited(
    ls: WispServer, uri: str, changes: Sequence[types.TextDocumentContentChangeEvent]
) -> None:
    """After didChange (applied already): the cursor is at the end of the last edit."""
    last = changes[-1] if changes else None
    doc = ls.workspace.text_documents.get(unquote(uri))
    if isinstance(last, types.TextDocumentContentChangePartial) and doc is not None:
        # The text before the edit's start is unchanged by it, so the start is valid here.
        encoding = _encoding(ls)
        end = offset_at(doc.source, last.range.start, encoding).offset + len(last.text)
        ls.cursors.note(uri, position_at(doc.source, end, encoding))
    prefill_soon(ls, uri)


def asked(ls: WispServer, uri: str, cursor: types.Position) -> None:
    """After a completion request at `cursor` was answered."""
    ls.cursors.note(uri, cursor)
    prefill_soon(ls, uri)


def closed(ls: WispServer, uri: str) -> None:
    ls.cursors.forget(uri)
    ls.scheduler.cancel_idle(uri)


def prefill_soon(ls: WispServer, uri: str) -> None:
    """Queue a prefill of `uri` at its guessed cursor, to run while the model has nothing else
    to do; it replaces an earlier one for `uri`, and any request stops it."""
    try:
        _queue(ls, uri)
    except Exception as exc:  # optional work: never a reason for a handler to fail
        log.warning("no idle prefill of %s: %s", uri, first_line(exc), exc_info=True)


def _queue(ls: WispServer, uri: str) -> None:
    engine = ls.engine
    doc = ls.workspace.text_documents.get(unquote(uri))  # pygls keys documents unquoted
    if not ls.settings.prefill_when_idle or engine is None or not engine.prefills:
        log.debug("no idle prefill: off, model %s, or a backend without it", ls.model_state)
        return
    if doc is None or not ls.settings.language_enabled(language_of(doc)):
        log.debug("no idle prefill: %s is closed or its language disabled", uri)
        return
    if ls.scheduler.busy(uri):
        return  # a request for it is on its way and leaves its own prompt's cache
    text = doc.source
    seen = ls.cursors.get(uri)
    offset = len(text) if seen is None else offset_at(text, seen, _encoding(ls)).offset
    request = engine_request(ls, doc, text, offset)
    ls.scheduler.run_when_idle(uri, lambda cancel: _prefill(ls, engine, request, cancel))


def _prefill(
    ls: WispServer, engine: CompletionEngine, request: CompletionRequest, cancel: threading.Event
) -> None:
    """On the model thread: the prefill itself, counted in `wisp/stats`; a failure is logged."""
    if cancel.wait(IDLE_DELAY_S):  # a request came first (or a newer guess replaced this one)
        return
    started = time.perf_counter()
    try:
        positions = engine.prefill(request, cancel)
    except Exception as exc:  # optional work: the request that follows will meet any real fault
        log.warning("idle prefill of %s failed: %s", request.path, first_line(exc))
        return
    elapsed_ms = (time.perf_counter() - started) * 1000
    if positions or cancel.is_set():  # not when the cache or the answer was ready already
        ls.stats.record_idle_prefill(positions, cancel.is_set(), elapsed_ms)
    log.debug("idle prefill of %s: %d positions in %.1f ms", request.path, positions, elapsed_ms)


def _encoding(ls: WispServer) -> str:
    return str(ls.workspace.position_encoding or types.PositionEncodingKind.Utf16)
