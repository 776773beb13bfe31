"""Settings -> a ready completion engine (runs in a worker thread; the local backend imports
torch, a remote one does not)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from lsp_server.settings import Settings
from model_runtime.backend import Backend
from model_runtime.engine import CompletionEngine
from model_runtime.models.names import resolve


def load_engine(
    settings: Settings, report: Callable[[str, int], None] | None = None
) -> CompletionEngine:
    """Load the configured model; raises ModelLoadError with a user-facing cause.

    `report(message, percent)` hears of slow first-time work, such as converting a GGUF file.
    """
    if settings.backend != "local":
        return CompletionEngine(_remote(settings), settings.engine_options())
    from model_runtime.local import LoadOptions, load_backend

    model = resolve(settings.model)
    backend = load_backend(
        LoadOptions(
            source=model.source,
            name=model.name,
            device=settings.device,
            quantization=settings.quantization,
            threads=settings.threads,
            trust_remote_code=settings.trust_remote_code,
            allow_pickle=settings.allow_pickle,
            fim_template=settings.fim_template,
        ),
        report,
    )
    return CompletionEngine(backend, settings.engine_options())


T = TypeVar("T")


async def in_own_thread(work: Callable[[], T]) -> T:
    """`work()` in a thread started for it, which ends when it returns.

    Loading runs torch's parallel operations, and an OpenMP runtime keeps a team of worker
    threads for every thread that ever ran one. A pooled thread (`asyncio.to_thread`) would keep
    its team for good, and with more worker threads than cores libgomp stops spinning between
    parallel regions and puts its threads to sleep: decode steps on the model thread took 16 ms
    instead of 6 on two cores. A thread that ends takes its team with it.
    """
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as exc:  # re-raised in the awaiting task
            future.set_exception(exc)

    threading.Thread(target=run, name="wisp-load", daemon=True).start()
    return await asyncio.wrap_future(future)


def _remote(settings: Settings) -> Backend:
    from model_runtime.remote import RemoteOptions, load_remote

    return load_remote(
        RemoteOptions(
            api=settings.backend,  # type: ignore[arg-type]  # validated by parse_settings
            endpoint=settings.endpoint,
            model=settings.remote_model,
            api_key_env=settings.api_key_env,
            timeout_s=settings.timeout_ms / 1000,
            fim_template=settings.fim_template,
            extra_body=settings.remote_options,
        )
    )
