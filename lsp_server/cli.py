"""The `wisp` command line: one subcommand per job, each defined in the module that does it."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from lsp_server import __version__

# Libraries that log at import time about things wisp does not use (torchao's optional CUDA
# kernels on a CPU machine, torch's pytree deprecations): shown only with -vv.
IMPORT_NOISE = ("torchao", "torch.utils._pytree")

# name -> module with `configure(parser)` and `run(args) -> int`; imported only when used.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("lsp_server.commands.serve", "run the language server (stdio by default)"),
    "complete": ("lsp_server.commands.complete", "complete one file at one position"),
    "models": ("lsp_server.commands.models", "list the models on this machine and to download"),
    "pull": ("lsp_server.commands.pull", "download a known-good completion model"),
    "train": ("model_runtime.training.command", "train a fill-in-the-middle code model"),
    "eval": ("model_runtime.evaluation.command", "evaluate completions on FIM benchmarks"),
    "bench": ("lsp_server.commands.bench", "replay typing through the server; latency figures"),
    "soak": ("lsp_server.commands.soak", "replay typing for many rounds; memory and latency drift"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wisp", description="Local AI code completion over LSP.")
    parser.add_argument("--version", action="version", version=f"wisp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
        sub_parser.add_argument("--log-file", help="write logs to this file instead of stderr")
        sub_parser.set_defaults(module=module_name)
        _load(module_name).configure(sub_parser)
    return parser


def _load(module_name: str):
    return importlib.import_module(module_name)


def setup_logging(verbose: int, log_file: str | None) -> None:
    """Logs go to stderr or a file, never stdout: stdout carries the protocol."""
    level = logging.WARNING - 10 * min(verbose, 2)
    handler: logging.Handler = (
        logging.FileHandler(log_file, encoding="utf-8")
        if log_file
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # pygls logs every message it sends at info level: only with -vv, as is import-time noise.
    # Set both ways, so that a second call (tests, embedding) does not keep the first's levels.
    quiet = verbose < 2
    logging.getLogger("pygls").setLevel(logging.WARNING if quiet else logging.NOTSET)
    for name in IMPORT_NOISE:
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.NOTSET)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.log_file)
    return int(_load(args.module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
