"""`wisp bench --speed`: prefill and decode tokens per second of a model, and of llama.cpp on the
same GGUF file: the same prompt's tokens, one pass each, then greedy steps that nothing stops.

llama.cpp's figures come from a short script run by the Python that has llama-cpp-python (its
own venv: it never imports wisp), which prints them as JSON.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

from lsp_server.bench.against import AgainstError

LLAMA_SCRIPT = """
import json, sys, time
from llama_cpp import Llama
path, text_path, tokens, steps, runs, threads = sys.argv[1:7]
tokens, steps, runs, threads = int(tokens), int(steps), int(runs), int(threads)
started = time.perf_counter()
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=4096,
            n_batch=max(512, tokens), verbose=False)
loaded = time.perf_counter() - started
text = open(text_path, encoding="utf-8").read()
ids = llm.tokenize(text.encode(), add_bos=False)
ids = (ids * (tokens // max(1, len(ids)) + 1))[:tokens]
results = []
for _ in range(runs):
    llm.reset()
    started = time.perf_counter()
    llm.eval(ids)
    prefilled = time.perf_counter()
    for _ in range(steps):
        llm.eval([llm.sample(temp=0.0)])
    results.append((prefilled - started, time.perf_counter() - prefilled))
print(json.dumps({"load_s": loaded, "runs": results}))
"""


def wisp_speed(
    backend: Any, text: str, tokens: int, steps: int, runs: int, rows: int = 1
) -> dict[str, float]:
    """Medians over `runs` for the loaded local backend (`LocalBackend.speed`); with `rows` > 1
    also a decode step's time for that many rows (candidates) beside one row's."""
    ids = backend.encode(text)
    ids = (ids * (tokens // max(1, len(ids)) + 1))[:tokens]
    figures = _figures([backend.speed(ids, steps) for _ in range(runs)], tokens, steps)
    if rows > 1:
        decode = statistics.median(backend.speed(ids, steps, rows)[1] for _ in range(runs))
        one = steps / figures["decode_tokens_per_s"]
        figures |= {
            "rows": rows,
            "step_ms": round(1000 * one / steps, 2),
            "rows_step_ms": round(1000 * decode / steps, 2),
            "rows_over_one": round(decode / one, 2),
        }
    return figures


def llama_speed(
    python: str, gguf: Path, text_path: Path, tokens: int, steps: int, runs: int, threads: int
) -> dict[str, float]:
    """The same measure in llama.cpp (through `python`), on the same file and text."""
    command = [python, "-c", LLAMA_SCRIPT, str(gguf), str(text_path)]
    command += [str(tokens), str(steps), str(runs), str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise AgainstError(f"llama.cpp's speed run failed: {last}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    figures = _figures([tuple(run) for run in out["runs"]], tokens, steps)
    return {**figures, "load_s": round(out["load_s"], 2)}


def _figures(runs: list[tuple[float, float]], tokens: int, steps: int) -> dict[str, float]:
    prefill = statistics.median(run[0] for run in runs)
    decode = statistics.median(run[1] for run in runs)
    return {
        "prefill_tokens": tokens,
        "prefill_tokens_per_s": round(tokens / prefill, 1),
        "decode_tokens_per_s": round(steps / decode, 1),
    }


def speed_line(engine: str, figures: dict[str, float]) -> str:
    prefill, decode = figures["prefill_tokens_per_s"], figures["decode_tokens_per_s"]
    tokens = figures["prefill_tokens"]
    line = (
        f"{engine:<10} prefill {prefill:>7.1f} tok/s ({tokens:.0f} tokens)"
        f"   decode {decode:>6.1f} tok/s"
    )
    if "rows" in figures:
        line += (
            f"\n{'':<10} decode step: {figures['step_ms']:.2f} ms for 1 row, "
            f"{figures['rows_step_ms']:.2f} ms for {figures['rows']:.0f} rows "
            f"({figures['rows_over_one']:.2f}x)"
        )
    return line
