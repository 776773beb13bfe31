"""`wisp serve`: run the language server over stdio, or TCP for debugging."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (default)")
    parser.add_argument("--tcp", action="store_true", help="listen on TCP instead, for debugging")
    parser.add_argument(
        "--host", default="127.0.0.1", help="TCP address to bind (default: loopback)"
    )
    parser.add_argument("--port", type=int, default=2087, help="TCP port (default: 2087)")


def run(args: argparse.Namespace) -> int:
    from lsp_server.features import create_server

    server = create_server()
    if args.tcp:
        log.warning("wisp listening on %s:%d", args.host, args.port)
        server.start_tcp(args.host, args.port)
    else:
        server.start_io()
    return 0
