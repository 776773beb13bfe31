"""The local backend: a causal LM run in-process with torch.

This package is the only part of the runtime that imports torch or transformers. Loading
(`loading`): a GGUF file is read in place (`gguf_file`), its tokenizer built from its metadata
(`gguf_tokenizer`) and its blocks run as stored (`gguf_model`); folders and hub ids go through
transformers. Then the forward pass (`decoder`, a layer's weights in `layers`), its load-time
checks (`probes`), weights in blocks and the C kernels (`blocks`, `kernels/`), the decode loop
(`generation`) and the key/value caches (`kv_cache`).
"""

from model_runtime.local.generation import (
    IDLE_PREFILL_CHUNK,
    PREFILL_CHUNK,
    LocalBackend,
)
from model_runtime.local.loading import DEFAULT_THREADS, LoadOptions, load_backend, set_threads

__all__ = [
    "DEFAULT_THREADS",
    "IDLE_PREFILL_CHUNK",
    "PREFILL_CHUNK",
    "LoadOptions",
    "LocalBackend",
    "load_backend",
    "set_threads",
]
