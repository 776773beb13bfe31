"""`wisp train`: train a fill-in-the-middle code model and save it in transformers format.

Imports torch and transformers only inside `run`, so building the CLI parser stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PRESET_NAMES = ("cpu", "gpu", "tiny")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of `wisp train`."""
    parser.add_argument(
        "--corpus", type=Path, help="folder of *.py files (default: this Python's standard library)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for model and checkpoint")
    parser.add_argument("--preset", choices=PRESET_NAMES, default="cpu", help="model size")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="wall-clock budget (default 60)")
    budget.add_argument("--tokens", type=int, help="token budget; the schedule follows tokens")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seq-len", type=int, help="override the preset's sequence length")
    parser.add_argument("--batch-size", type=int, help="override the preset's batch size")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--fim-rate", type=float, help="share of FIM examples (default 0.9)")


def run(args: argparse.Namespace) -> int:
    from .session import train_command

    return train_command(args)
