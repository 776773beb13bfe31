"""`wisp complete`: one completion of a file at a position, through the server's pipeline."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from lsprotocol import types


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="the source file")
    parser.add_argument("--line", type=int, required=True, help="zero-based line of the cursor")
    parser.add_argument(
        "--character", type=int, required=True, help="zero-based UTF-16 column of the cursor"
    )
    parser.add_argument("--json", action="store_true", help="print items and timings as JSON")
    parser.add_argument(
        "--model", help="name from `wisp models`, GGUF file, folder or hub id (default: bundled)"
    )
    parser.add_argument("--settings", help="JSON object of wisp settings, as an editor sends them")


def run(args: argparse.Namespace) -> int:
    from lsp_server.commands.inputs import InputError, cli_settings, read_source
    from lsp_server.loading import load_engine
    from lsp_server.positions import offset_at
    from model_runtime.backend import ModelLoadError
    from model_runtime.engine import CompletionRequest

    try:
        text = read_source(args.path)
        raw, settings = cli_settings(args.settings, args.model)
    except InputError as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 2
    if "maxLatencyMs" not in raw:
        # One answer asked for on the command line: no keystroke is waiting for it, and a
        # large model's first prefill takes seconds (an editor's first request leans on the
        # server's idle prefill instead).
        settings = replace(settings, max_latency_ms=0)
    try:
        engine = load_engine(settings)
    except ModelLoadError as exc:
        print(f"wisp: cannot load the model: {exc}", file=sys.stderr)
        return 1
    position = types.Position(line=max(args.line, 0), character=max(args.character, 0))
    offset = offset_at(text, position, types.PositionEncodingKind.Utf16).offset
    result = engine.complete(CompletionRequest(text, offset, args.path.name))
    if args.json:
        items = [
            {"text": s.text, "score": round(s.score, 4), "confidence": round(s.confidence, 4)}
            for s in result.suggestions
        ]
        timings = {k: round(v, 2) for k, v in result.timings_ms.items()}
        print(json.dumps({"items": items, "timings_ms": timings}, ensure_ascii=False))
    else:
        for suggestion in result.suggestions:
            print(suggestion.text)
    return 0
