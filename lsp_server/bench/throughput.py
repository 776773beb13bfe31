"""Prefill and decode speed of the configured model, measured in-process on the engine."""

from __future__ import annotations

import threading
from dataclasses import replace

from lsp_server.loading import load_engine
from lsp_server.settings import Settings
from model_runtime.backend import GenerationRequest
from model_runtime.context import cursor_context
from model_runtime.engine import code_budget
from model_runtime.prompt import build_prompt


def throughput(settings: Settings, text: str, runs: int = 8) -> dict[str, float]:
    """Tokens per second for cold prefills of `text` and for unconstrained decoding after them.

    Each run renders the prompt under another file name: its first tokens differ, so no kept
    cache applies and the whole prompt is computed.
    """
    engine = load_engine(settings)
    backend, opts = engine.backend, engine.options
    params = replace(opts.sampling, num_candidates=1)
    prefill_tokens = prefill_ms = steps = decode_ms = 0.0
    for run in range(runs):
        offset = len(text) * (run + 1) // (runs + 1)
        path = f"throughput{run}.py"
        ctx = cursor_context(text, offset, path)
        prompt = build_prompt(ctx, backend.template, backend, code_budget(backend, opts, path))
        result = backend.generate(
            GenerationRequest(prompt.text, params, backend.template.stop_tokens, cache_key=path),
            threading.Event(),
        )
        prefill_tokens += result.prompt_tokens - result.timings_ms.get("reused_tokens", 0)
        prefill_ms += result.timings_ms.get("prefill", 0.0)
        steps += result.timings_ms.get("steps", 0)
        decode_ms += result.timings_ms.get("decode", 0.0)
    return {
        "prefill_tokens_per_s": round(prefill_tokens / prefill_ms * 1000, 1) if prefill_ms else 0.0,
        "decode_tokens_per_s": round(steps / decode_ms * 1000, 1) if decode_ms else 0.0,
    }
