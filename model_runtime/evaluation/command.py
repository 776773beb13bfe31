"""`wisp eval`: score the completion pipeline on fill-in-the-middle tasks.

Imports torch and transformers only inside `run`, so building the CLI parser stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_runtime.crossfile import CrossFileOptions, OpenDocument
from model_runtime.evaluation.datasets import DATASETS, SANTACODER_LANGUAGES
from model_runtime.evaluation.holes import HOLE_KINDS
from model_runtime.gate import DEFAULT_MIN_CONFIDENCE

if TYPE_CHECKING:
    from model_runtime.backend import Backend

MULTILINE_HELP = (
    "one line or a block (default: what the dataset asks for: 'never' for single-line "
    "humaneval, santacoder-fim and repo holes, whose middle is one line, since 'auto' offers a "
    "block on an empty line; 'always' for multi-line humaneval; 'auto' for random spans)"
)
DATASET_SETTINGS = {
    "humaneval-infilling": (),
    "santacoder-fim": ("language",),
    "repo": ("seed", "ext", "holes", "open"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of `wisp eval`."""
    parser.add_argument("--dataset", choices=DATASETS, required=True, help="benchmark to run")
    parser.add_argument(
        "--path", type=Path, required=True, help="the benchmark's .jsonl(.gz), or for repo a folder"
    )
    parser.add_argument(
        "--limit", type=_positive_int, help="first N tasks (repo: N holes, default 100)"
    )
    parser.add_argument(
        "--language", choices=tuple(SANTACODER_LANGUAGES), help="santacoder-fim: only this one"
    )
    parser.add_argument("--seed", type=int, default=0, help="repo: picks files, lines and cuts")
    parser.add_argument("--ext", default="py", help="repo: extension of the files to cut")
    parser.add_argument(
        "--holes",
        choices=HOLE_KINDS,
        default="random",
        help="repo: random lines; lines using a name another file of the tree defines "
        "(cross-file, cut at or before it); or lines using none (single-file)",
    )
    parser.add_argument(
        "--open",
        choices=("none", "tree"),
        default="none",
        help="repo: documents open besides the task's own: none, or every other file of the tree",
    )
    parser.add_argument(
        "--cross-file-tokens",
        type=int,
        default=CrossFileOptions().tokens,
        help="token budget of the context from other open documents (0: off; default the "
        "crossFileTokens setting's)",
    )
    parser.add_argument(
        "--cross-file-sources",
        type=_sources,
        default=CrossFileOptions().sources,
        help="the sources of that context, comma-separated (default: "
        f"{','.join(CrossFileOptions().sources)})",
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="after each task, time one more keystroke (the answer's first character) with the "
        "result cache bypassed: the warm p50 and the prompt tokens reused",
    )
    parser.add_argument(
        "--model", help="name from `wisp models`, GGUF file, folder or hub id (default: bundled)"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--quantization",
        choices=("auto", "none", "bf16", "q4", "q8", "int8", "int4"),
        default="auto",
    )
    parser.add_argument(
        "--max-new-tokens", type=_positive_int, default=128, help="generation budget per task"
    )
    parser.add_argument(
        "--context-tokens", type=_positive_int, default=1024, help="prompt budget per task"
    )
    parser.add_argument("--multiline", choices=("auto", "always", "never"), help=MULTILINE_HELP)
    parser.add_argument(
        "--num-candidates", type=_positive_int, default=1, help="candidates per task, ranked"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.2,
        help="sampling temperature of the candidates after the first (default 0.2, the setting's)",
    )
    parser.add_argument(
        "--no-healing",
        dest="healing",
        action="store_false",
        help="token healing off (to measure what it does)",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="ranking and trimming off: the first candidate, cut only at stop tokens",
    )
    parser.add_argument(
        "--min-confidence",
        type=_fraction,
        default=DEFAULT_MIN_CONFIDENCE,
        help="the gate to report on: share shown and scores of what is shown "
        f"(default {DEFAULT_MIN_CONFIDENCE}, the setting's default); scores above it are ungated",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds each test program may run"
    )
    parser.add_argument("--json", type=Path, help="write the summary to this file")
    parser.add_argument("--samples", type=Path, help="write one JSON line per task to this file")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from model_runtime.backend import ModelLoadError, SamplingParams
    from model_runtime.engine import EngineOptions
    from model_runtime.evaluation.datasets import load_tasks
    from model_runtime.evaluation.report import format_summary, summarize
    from model_runtime.evaluation.runner import engine_completer, evaluate
    from model_runtime.models.names import resolve

    try:
        tasks = load_tasks(
            args.dataset, args.path, args.limit, args.language, args.seed, args.ext, args.holes
        )
    except (OSError, ValueError, KeyError) as exc:
        print(f"wisp: cannot read {args.path}: {exc}", file=sys.stderr)
        return 2
    if not tasks:
        print(f"wisp: {args.path} holds no {args.dataset} tasks", file=sys.stderr)
        return 2
    try:
        model = resolve(args.model).source
        backend = _load_backend(model, args.device, args.quantization)
    except ModelLoadError as exc:
        print(f"wisp: cannot load the model: {exc}", file=sys.stderr)
        return 1
    sampling = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        num_candidates=args.num_candidates,
        temperature=args.temperature,
        seed=0,
    )
    options = EngineOptions(
        sampling=sampling,
        context_tokens=args.context_tokens,
        raw=args.raw,
        healing=args.healing,
        cross_file=CrossFileOptions(tokens=args.cross_file_tokens, sources=args.cross_file_sources),
    )
    complete = engine_completer(backend, options, args.multiline, _open_documents(args))
    progress = tqdm(tasks, desc=args.dataset, unit="task", file=sys.stderr)
    samples = list(evaluate(progress, complete, args.timeout, complete.warm if args.warm else None))
    modes = args.multiline or ",".join(sorted({t.multiline for t in tasks}))
    gate = None if args.raw else args.min_confidence
    summary = summarize(args.dataset, samples, model, _settings(args, modes), gate)
    _write_outputs(args, summary, samples)
    print(format_summary(summary))
    return 0


def _write_outputs(args: argparse.Namespace, summary: dict[str, Any], samples: list[Any]) -> None:
    """The summary to --json and one line per task to --samples, where asked for."""
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if args.samples:
        lines = (json.dumps(asdict(s), ensure_ascii=False) + "\n" for s in samples)
        args.samples.write_text("".join(lines), encoding="utf-8")


def _open_documents(args: argparse.Namespace) -> list[OpenDocument]:
    """The documents open besides each task's own: with `--open tree`, the tree's files."""
    from model_runtime.context import language_for_path
    from model_runtime.evaluation.datasets import read_tree

    if args.dataset != "repo" or args.open == "none":
        return []
    return [
        OpenDocument(f.path, f.text, language_for_path(f.path))
        for f in read_tree(args.path, args.ext)
    ]


def _load_backend(model: str, device: str, quantization: str) -> Backend:
    from model_runtime.local import LoadOptions, load_backend

    return load_backend(LoadOptions(source=model, device=device, quantization=quantization))


def _settings(args: argparse.Namespace, multiline: str) -> dict[str, Any]:
    """The options this run used, as JSON values."""
    common = (
        "limit",
        "device",
        "quantization",
        "max_new_tokens",
        "context_tokens",
        "num_candidates",
        "temperature",
        "healing",
        "raw",
        "timeout",
        "cross_file_tokens",
        "cross_file_sources",
        "warm",
    )
    names = (*common, *DATASET_SETTINGS[args.dataset])
    return {"path": str(args.path), **{n: getattr(args, n) for n in names}, "multiline": multiline}


def _sources(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = set(names) - set(CrossFileOptions().sources)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown sources: {', '.join(sorted(unknown))}")
    return names


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
