"""Settings -> a ready completion engine (runs in a worker thread; imports torch)."""

from __future__ import annotations

from lsp_server.settings import Settings
from model_runtime.engine import CompletionEngine
from model_runtime.model_source import resolve_model


def load_engine(settings: Settings) -> CompletionEngine:
    """Load the configured model; raises ModelLoadError with a user-facing cause."""
    from model_runtime.transformers_backend import LoadOptions, load_backend

    backend = load_backend(
        LoadOptions(
            source=resolve_model(settings.model),
            device=settings.device,
            quantization=settings.quantization,
            threads=settings.threads,
            trust_remote_code=settings.trust_remote_code,
            fim_template=settings.fim_template,
        )
    )
    return CompletionEngine(backend, settings.engine_options())
