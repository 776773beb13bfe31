"""`wisp models`: the models this machine has, what each is, and the ones `wisp pull` fetches."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", type=Path, help="GGUF files to describe as well")
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def run(args: argparse.Namespace) -> int:
    from model_runtime.models.listing import find_models, pullable

    entries = find_models(args.files)
    downloads = pullable(entries)
    if args.json:
        print(json.dumps({"models": [e.wire() for e in entries], "pullable": downloads}, indent=2))
        return 0
    print("Models on this machine (NAME is the `model` setting):")
    for entry in entries:
        print(f"  {entry.name or '(empty: the bundled model)'}")
        details = [
            entry.source, _size(entry.size_bytes), entry.architecture, ",".join(entry.types[:3]),
            "fill-in-the-middle" if entry.fim else "no FIM tokens",
            "native" if entry.native else "through transformers",
        ]  # fmt: skip
        print(f"      {' · '.join(d for d in details if d)}")
        if entry.note:
            print(f"      {entry.note}")
    print("\nTo download (`wisp pull NAME`, then use NAME as the model):")
    for item in downloads:
        state = "pulled" if item["pulled"] else f"about {_size(item['sizeBytes'])}"
        print(f"  {item['name']:<26} {state:<14} {item['note']}")
    return 0


def _size(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"
