"""Known-good completion models that `wisp pull NAME` downloads: base (not instruct) models with
fill-in-the-middle tokens, in the files llama.cpp's `--fim-qwen-*` presets and llama.vim use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pullable:
    """One file on the hub, under a short name."""

    name: str
    repo: str
    file: str
    about_bytes: int  # the file's size, rounded: shown before the hub is asked
    note: str


def _entry(size: str, kind: str, repo: str, file: str, about_mb: int, note: str) -> Pullable:
    return Pullable(f"qwen2.5-coder-{size}-{kind}", repo, file, about_mb * 1_000_000, note)


# Q8_0: the files of llama.cpp's presets (ggml-org); Q4_K_M: a quarter smaller, a little worse.
CATALOG: tuple[Pullable, ...] = (
    _entry("0.5b", "q8_0", "ggml-org/Qwen2.5-Coder-0.5B-Q8_0-GGUF",
           "qwen2.5-coder-0.5b-q8_0.gguf", 531, "fastest; weakest"),
    _entry("1.5b", "q8_0", "ggml-org/Qwen2.5-Coder-1.5B-Q8_0-GGUF",
           "qwen2.5-coder-1.5b-q8_0.gguf", 1_646, "llama.cpp's default for completion"),
    _entry("3b", "q8_0", "ggml-org/Qwen2.5-Coder-3B-Q8_0-GGUF",
           "qwen2.5-coder-3b-q8_0.gguf", 3_290, "better; about twice the 1.5B's time"),
    _entry("7b", "q8_0", "ggml-org/Qwen2.5-Coder-7B-Q8_0-GGUF",
           "qwen2.5-coder-7b-q8_0.gguf", 8_100, "best; wants 16 GB of memory"),
    _entry("0.5b", "q4_k_m", "bartowski/Qwen2.5-Coder-0.5B-GGUF",
           "Qwen2.5-Coder-0.5B-Q4_K_M.gguf", 398, "smallest"),
    _entry("1.5b", "q4_k_m", "bartowski/Qwen2.5-Coder-1.5B-GGUF",
           "Qwen2.5-Coder-1.5B-Q4_K_M.gguf", 986, "a good first choice on a laptop"),
    _entry("3b", "q4_k_m", "bartowski/Qwen2.5-Coder-3B-GGUF",
           "Qwen2.5-Coder-3B-Q4_K_M.gguf", 1_930, "better, still light"),
    _entry("7b", "q4_k_m", "bartowski/Qwen2.5-Coder-7B-GGUF",
           "Qwen2.5-Coder-7B-Q4_K_M.gguf", 4_680, "best that fits in 8 GB"),
)  # fmt: skip

BY_NAME = {entry.name: entry for entry in CATALOG}


def find(name: str) -> Pullable | None:
    """The catalog entry called `name` (case does not matter), or None."""
    return BY_NAME.get(name.lower())
