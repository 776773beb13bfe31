"""`wisp bench`: replay realistic typing through `wisp serve` and report latency figures."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lsp_server.bench.script import Session
    from lsp_server.settings import Settings

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "server.py"


def replay_arguments(parser: argparse.ArgumentParser, pause_scale: float) -> None:
    """The options `bench` and `soak` share: what to type, with which model, where to report."""
    parser.add_argument(
        "--file", type=Path, default=DEFAULT_FILE, help="source file to type (default: wisp's own)"
    )
    parser.add_argument(
        "--model", help="name from `wisp models`, GGUF file, folder or hub id (default: bundled)"
    )
    parser.add_argument("--settings", help="JSON object of wisp settings, as an editor sends them")
    parser.add_argument("--documents", type=int, default=4, help="documents opened (cold starts)")
    parser.add_argument("--holes", type=int, default=3, help="lines typed per document")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pause-scale",
        type=float,
        default=pause_scale,
        help=f"scale the pauses between keys (0: none; default {pause_scale:g})",
    )
    parser.add_argument("--json", type=Path, dest="json_out", help="write the figures here")
    parser.add_argument("--plot", type=Path, help="write a plot of the figures here (PNG)")
    parser.add_argument(
        "--server-log", type=Path, help="the server logs here in full, each answer's timings too"
    )


def read_plan(args: argparse.Namespace) -> tuple[list[Session], dict[str, Any], Settings]:
    """The typing plan and the settings from the shared options; InputError for bad ones."""
    from lsp_server.bench.script import sessions
    from lsp_server.commands.inputs import cli_settings, read_source

    text = read_source(args.file)
    raw, settings = cli_settings(args.settings, args.model)
    return sessions(text, args.file.name, args.documents, args.holes, args.seed), raw, settings


def configure(parser: argparse.ArgumentParser) -> None:
    replay_arguments(parser, pause_scale=1.0)
    parser.add_argument(
        "--follow-rate",
        type=float,
        default=0.3,
        help="chance of typing along a wrong suggestion for a few keys, then deleting them",
    )
    parser.add_argument(
        "--open-pause",
        type=float,
        default=0.0,
        help="seconds between opening a document and going to its first line (default 0)",
    )
    parser.add_argument(
        "--against",
        choices=("llama.cpp",),
        help="replay the same typing through llama.cpp's server on the same GGUF, side by side",
    )
    parser.add_argument(
        "--speed",
        action="store_true",
        help="only measure prefill and decode tokens/s (of llama.cpp too with --against)",
    )
    parser.add_argument("--speed-tokens", type=int, default=600, help="prompt tokens for --speed")
    parser.add_argument("--speed-steps", type=int, default=32, help="decode steps for --speed")
    parser.add_argument(
        "--speed-rows",
        type=int,
        default=4,
        help="--speed also times decode steps of this many rows (candidates); 1: not",
    )
    parser.add_argument(
        "--llama-python",
        help="the Python with llama-cpp-python[server] (default: $WISP_LLAMA_SERVER_PYTHON, "
        "the venv of .ci/install-llama-server, or this one)",
    )


def run(args: argparse.Namespace) -> int:
    from lsp_server.bench.against import AgainstError
    from lsp_server.commands.inputs import InputError

    try:
        plan, raw, settings = read_plan(args)
    except InputError as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 2
    if args.speed:
        return _speed(args, settings)
    try:
        summary, samples = _measure(args, plan, raw, settings, "bench")
        by_engine = {"wisp": samples}
        if args.against:
            summary, by_engine["llama.cpp"] = _against(args, plan, raw, settings, summary)
    except (RuntimeError, AgainstError) as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 1
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.plot:
        return _plot(by_engine, args.plot, f"wisp bench: {args.file.name}")
    return 0


def _speed(args: argparse.Namespace, settings: Settings, runs: int = 3) -> int:
    """Speed lines of the local model and, with --against, of llama.cpp on the same file."""
    from lsp_server.bench import against
    from lsp_server.bench.speed import llama_speed, speed_line, wisp_speed
    from lsp_server.loading import load_engine
    from model_runtime.backend import ModelLoadError
    from model_runtime.models.names import resolve

    if settings.backend != "local":
        print("wisp: --speed measures the local runtime: leave `backend` unset", file=sys.stderr)
        return 2
    tokens, steps = args.speed_tokens, args.speed_steps
    threads = settings.threads or len(os.sched_getaffinity(0))
    try:
        backend = load_engine(settings).backend
        text = args.file.read_text("utf-8")
        figures = {"wisp": wisp_speed(backend, text, tokens, steps, runs, args.speed_rows)}
        print(speed_line("wisp", figures["wisp"]))
        if args.against:
            gguf = Path(resolve(settings.model).source)
            python = against.llama_python(args.llama_python)
            llama = llama_speed(python, gguf, args.file, tokens, steps, runs, threads)
            figures["llama.cpp"] = llama
            print(speed_line("llama.cpp", llama))
    except (ModelLoadError, against.AgainstError) as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 1
    if args.json_out:
        args.json_out.write_text(json.dumps({**figures, "threads": threads}, indent=2) + "\n")
    return 0


def _plot(by_engine: dict[str, list[tuple[str, float]]], out: Path, title: str) -> int:
    """One figure of every engine's latency per kind; 1 when matplotlib is missing."""
    from lsp_server.bench.report import plot

    try:
        plot(by_engine, out, f"{title} ({' and '.join(by_engine)})")
    except RuntimeError as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 1
    return 0


def _measure(
    args: argparse.Namespace,
    plan: list[Session],
    raw: dict[str, Any],
    settings: Settings,
    label: str,
) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """Replay `plan` through `wisp serve`; print and return the figures and the samples."""
    from tqdm import tqdm

    from lsp_server.bench.replay import replay
    from lsp_server.bench.report import summarize, table
    from lsp_server.bench.throughput import throughput
    from model_runtime.backend import ModelLoadError

    holes = sum(len(s.holes) for s in plan)
    with tqdm(total=holes, desc=label, unit="line", file=sys.stderr) as bar:
        recording = asyncio.run(
            replay(
                plan,
                raw,
                args.seed,
                args.pause_scale,
                args.follow_rate,
                bar.update,
                open_pause_s=args.open_pause,
                server_log=args.server_log,
            )
        )
    speeds: dict[str, float | None] = {"prefill_tokens_per_s": None, "decode_tokens_per_s": None}
    if settings.backend == "local":  # a serving engine's speeds are its own to report
        try:
            speeds.update(throughput(settings, args.file.read_text(encoding="utf-8")))
        except ModelLoadError as exc:
            print(f"wisp: cannot load the model: {exc}", file=sys.stderr)
    summary = summarize(recording, speeds)
    summary["file"] = str(args.file)
    summary["open_pause_s"] = args.open_pause
    summary["settings"] = raw
    print(table(summary))
    return summary, recording.samples


def _against(
    args: argparse.Namespace,
    plan: list[Session],
    raw: dict[str, Any],
    settings: Settings,
    local: dict[str, Any],
) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """The same replay through llama.cpp's server: both summaries side by side, its samples."""
    from lsp_server.bench import against
    from lsp_server.settings import parse_settings
    from model_runtime.models.names import resolve

    if settings.backend != "local":
        raise against.AgainstError("--against compares the local runtime: leave `backend` unset")
    gguf = Path(resolve(settings.model).source)
    if gguf.suffix.lower() != ".gguf" or not gguf.is_file():
        raise against.AgainstError(f"--against needs the model as a GGUF file, not {gguf}")
    python = against.llama_python(args.llama_python)
    threads = settings.threads or len(os.sched_getaffinity(0))
    with against.llama_server(python, gguf, threads) as (endpoint, process):
        remote_raw = against.remote_settings(raw, endpoint)
        remote, samples = _measure(
            args, plan, remote_raw, parse_settings(remote_raw)[0], "llama.cpp"
        )
        remote["server_peak_rss_mb"] = against.peak_rss_mb(process.pid)
    print(against.side_by_side(local, remote))
    return {"local": local, "llama.cpp": remote, "llama_server_threads": threads}, samples
