"""Settings -> a ready completion engine (runs in a worker thread; the local backend imports
torch, a remote one does not)."""

from __future__ import annotations

from collections.abc import Callable

from lsp_server.settings import Settings
from model_runtime.backend import Backend
from model_runtime.engine import CompletionEngine
from model_runtime.model_source import resolve_model


def load_engine(
    settings: Settings, report: Callable[[str, int], None] | None = None
) -> CompletionEngine:
    """Load the configured model; raises ModelLoadError with a user-facing cause.

    `report(message, percent)` hears of slow first-time work, such as converting a GGUF file.
    """
    if settings.backend != "local":
        return CompletionEngine(_remote(settings), settings.engine_options())
    from model_runtime.local import LoadOptions, load_backend

    backend = load_backend(
        LoadOptions(
            source=resolve_model(settings.model),
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
