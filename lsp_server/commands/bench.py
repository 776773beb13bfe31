"""`wisp bench`: replay realistic typing through `wisp serve` and report latency figures."""

from __future__ import annotations

import argparse
import asyncio
import json
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
        "--model", help="model folder, GGUF file or hub id (default: the bundled model)"
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


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lsp_server.bench.replay import replay
    from lsp_server.bench.report import plot, summarize, table
    from lsp_server.bench.throughput import throughput
    from lsp_server.commands.inputs import InputError
    from model_runtime.backend import ModelLoadError

    try:
        plan, raw, settings = read_plan(args)
    except InputError as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 2
    text = args.file.read_text(encoding="utf-8")
    holes = sum(len(s.holes) for s in plan)
    with tqdm(total=holes, desc="bench", unit="line", file=sys.stderr) as bar:
        try:
            recording = asyncio.run(
                replay(plan, raw, args.seed, args.pause_scale, args.follow_rate, bar.update)
            )
        except RuntimeError as exc:
            print(f"wisp: {exc}", file=sys.stderr)
            return 1
    try:
        speeds: dict[str, float | None] = dict(throughput(settings, text))
    except ModelLoadError as exc:
        print(f"wisp: cannot load the model: {exc}", file=sys.stderr)
        speeds = {"prefill_tokens_per_s": None, "decode_tokens_per_s": None}
    summary = summarize(recording, speeds)
    summary["file"] = str(args.file)
    summary["settings"] = raw
    print(table(summary))
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.plot:
        plot(recording.samples, args.plot, f"wisp bench: {args.file.name}")
    return 0
