"""The wisp language server: its state, and the glue between settings, model and handlers."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import uuid
from collections.abc import Coroutine
from typing import Any, BinaryIO, Literal

from lsprotocol import types
from pygls.exceptions import FeatureRequestError
from pygls.io_ import StdinAsyncReader, StdoutWriter
from pygls.lsp.server import LanguageServer

from lsp_server import __version__
from lsp_server.documents import Cursors
from lsp_server.framing import serve_frames
from lsp_server.protocol import WispProtocol
from lsp_server.scheduler import Scheduler
from lsp_server.settings import Settings, parse_settings
from lsp_server.stats import Stats
from model_runtime.backend import BackendUnavailable, ModelLoadError, first_line
from model_runtime.crossfile import RecentEdits
from model_runtime.engine import CompletionEngine
from model_runtime.models.names import BUNDLED_NAME

log = logging.getLogger(__name__)

ModelState = Literal["idle", "loading", "ready", "error"]
STATUS_NOTIFICATION = "wisp/status"


class WispServer(LanguageServer):
    """Holds the settings, the loaded engine and the model's state for one editor session."""

    protocol: WispProtocol

    def __init__(self) -> None:
        super().__init__(
            "wisp",
            __version__,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            protocol_cls=WispProtocol,
        )
        self.settings = Settings()
        self.settings_raw: Any = None  # initializationOptions, applied once initialized
        self.engine: CompletionEngine | None = None
        self.model_state: ModelState = "idle"
        self.model_name = ""  # the model loaded, or loading: named in every status
        self.scheduler = Scheduler()
        self.stats = Stats()
        self.recent_edits = RecentEdits()  # from didChange, for the context beyond a document
        self.cursors = Cursors()  # where each document's next request will likely be
        self._loaded_key: tuple[Any, ...] | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.shutdown_requested = False
        self._faulted = False  # the last completion failed

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` in the background, keeping a reference until it finishes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve over stdio with wisp's frame reader (see `lsp_server.framing`)."""
        self._stop_event = stop = threading.Event()
        reader = StdinAsyncReader(stdin or sys.stdin.buffer, self.thread_pool)
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        try:
            asyncio.run(serve_frames(stop, reader, self.protocol, self.report_server_error))
        except BrokenPipeError:
            log.error("the client closed the connection; stopping")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Errors no request is waiting on: logged, never a pop-up (the user cannot act on them).

        A body that is not JSON is answered with a parse error, as JSON-RPC asks.
        """
        if isinstance(error, json.JSONDecodeError | UnicodeDecodeError):
            self.protocol.answer_parse_error(f"the message is not JSON: {error}")
            return
        if source is FeatureRequestError:  # answered with the error, and logged by pygls
            return
        log.warning("%s: %s", getattr(source, "__name__", source), first_line(error))

    def tell_user(self, kind: types.MessageType, message: str) -> None:
        """Show `message` in the editor and write it to the editor's log and ours."""
        log.log(logging.ERROR if kind == types.MessageType.Error else logging.WARNING, message)
        text = f"wisp: {message}"
        self.window_show_message(types.ShowMessageParams(type=kind, message=text))
        self.window_log_message(types.LogMessageParams(type=kind, message=text))

    def publish_status(self, state: ModelState, message: str) -> None:
        self.model_state = state
        status = {"state": state, "message": message, "model": self.model_name}
        self.protocol.notify(STATUS_NOTIFICATION, status)

    def note_fault(self, exc: BaseException) -> None:
        """A completion failed or hung: logged, shown on `wisp/status`; the next one tries again."""
        reason = first_line(exc)
        expected = isinstance(exc, TimeoutError | BackendUnavailable)  # no traceback to show
        log.error("completion failed: %s", reason, exc_info=not expected)
        self._faulted = True
        self.publish_status("error", f"completion failed: {reason}")

    def note_recovered(self) -> None:
        """A completion worked after one that failed: the status says ready again."""
        if self._faulted and self.engine is not None:
            self._faulted = False
            self.publish_status("ready", f"model {self.engine.backend.name} ready")

    def update_settings(self, raw: Any) -> None:
        """Take new settings (invalid parts fall back, with a warning) and reload if needed."""
        self.settings, warnings = parse_settings(raw, self.settings)
        for warning in warnings:
            self.tell_user(types.MessageType.Warning, warning)
        if self.engine is not None:
            self.engine.options = self.settings.engine_options()
        if self.settings.load_key() != self._loaded_key:
            self.start_loading()

    def start_loading(self) -> None:
        """(Re)load the model in the background; a newer load supersedes an unfinished one."""
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        self._loaded_key = self.settings.load_key()
        self._load_task = self.spawn(self._load(self.settings))

    async def _load(self, settings: Settings) -> None:
        # heavy imports stay off the start-up path
        from lsp_server.loading import in_own_thread, load_engine

        self.engine = None
        self.model_name = _model_name(settings)
        progress = await self.begin_progress("Loading model")
        self.publish_status("loading", f"loading {self.model_name}")
        loop = asyncio.get_running_loop()

        def report(message: str, percent: int) -> None:  # from the loading thread
            loop.call_soon_threadsafe(self._report_loading, progress, message, percent)

        try:
            engine = await in_own_thread(lambda: load_engine(settings, report))
        except ModelLoadError as exc:
            self.tell_user(types.MessageType.Error, f"cannot load the model: {exc}")
            self.publish_status("error", str(exc))
            return
        finally:
            self.end_progress(progress)
        self.engine = engine
        self.model_name = engine.backend.name
        self.publish_status("ready", f"model {engine.backend.name} ready")

    def _report_loading(self, token: str | None, message: str, percent: int) -> None:
        """Slow first-time work (converting a GGUF file): on the progress bar and the status."""
        self.report_progress(token, message, percent)
        self.publish_status("loading", message)

    def report_progress(self, token: str | None, message: str, percent: int) -> None:
        if token is not None:
            self.work_done_progress.report(
                token, types.WorkDoneProgressReport(message=message, percentage=percent)
            )

    async def begin_progress(self, title: str) -> str | None:
        """A progress bar in the editor (None when the client shows none)."""
        caps = self.client_capabilities.window
        if caps is None or not caps.work_done_progress:
            return None
        token = f"wisp-{uuid.uuid4()}"
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), timeout=5)
        except Exception:  # a client that does not answer must not stall loading
            log.warning("client did not accept a progress token")
            return None
        self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=f"wisp: {title}"))
        return token

    def end_progress(self, token: str | None) -> None:
        if token is not None:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message="done"))


def _model_name(settings: Settings) -> str:
    """The model `settings` name, before it is loaded (a loaded backend names itself)."""
    if settings.backend != "local":
        return settings.remote_model or f"the model at {settings.endpoint or settings.backend}"
    return settings.model or BUNDLED_NAME
