"""`wisp soak`: the typing replay for many rounds in one server; memory and latency drift."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from lsp_server.commands.bench import read_plan, replay_arguments


def configure(parser: argparse.ArgumentParser) -> None:
    replay_arguments(parser, pause_scale=0.0)
    parser.add_argument("--rounds", type=int, default=10, help="times the replay runs (default 10)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lsp_server.bench.soak import drift, plot_soak, soak, soak_table
    from lsp_server.commands.inputs import InputError

    try:
        plan, raw, _ = read_plan(args)
    except InputError as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 2
    if args.rounds < 2:
        print("wisp: --rounds must be at least 2 (the first is the warm-up)", file=sys.stderr)
        return 2
    lines = args.rounds * sum(len(s.holes) for s in plan)
    with tqdm(total=lines, desc="soak", unit="line", file=sys.stderr) as bar:
        try:
            rows, recording = asyncio.run(
                soak(
                    plan,
                    raw,
                    args.rounds,
                    args.seed,
                    args.pause_scale,
                    bar.update,
                    server_log=args.server_log,
                )
            )
        except RuntimeError as exc:
            print(f"wisp: {exc}", file=sys.stderr)
            return 1
    summary = drift(rows)
    summary["peak_rss_mb"] = recording.peak_rss_mb
    print(soak_table(rows, summary))
    if args.json_out:
        args.json_out.write_text(json.dumps({"rounds": rows, **summary}, indent=2) + "\n")
    if args.plot:
        plot_soak(rows, args.plot, f"wisp soak: {args.file.name}, {summary['requests']} requests")
    return 0
