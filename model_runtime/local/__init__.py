"""The local backend: a causal LM run in-process with torch and transformers.

This package is the only part of the runtime that imports torch or transformers: loading
(`loading`, `gguf`), the lean forward pass (`fast_llama`), its load-time checks (`probes`), its
packed weights and C kernels (`packed`) with the mapped file let go as they are packed
(`pages`), the decode loop (`generation`) and the key/value caches (`kv_cache`).
"""

from model_runtime.local.generation import (
    IDLE_PREFILL_CHUNK,
    PREFILL_CHUNK,
    TransformersBackend,
)
from model_runtime.local.loading import DEFAULT_THREADS, LoadOptions, load_backend, set_threads

__all__ = [
    "DEFAULT_THREADS",
    "IDLE_PREFILL_CHUNK",
    "PREFILL_CHUNK",
    "LoadOptions",
    "TransformersBackend",
    "load_backend",
    "set_threads",
]
