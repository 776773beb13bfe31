"""`wisp serve`: run the language server over stdio, or TCP for debugging."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import sys

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (default)")
    parser.add_argument("--tcp", action="store_true", help="listen on TCP instead, for debugging")
    parser.add_argument(
        "--host", default="127.0.0.1", help="TCP address to bind (default: loopback)"
    )
    parser.add_argument("--port", type=int, default=2087, help="TCP port (default: 2087)")


# How long exit waits for a running completion to reach its next cancellation check.
WORKER_GRACE_S = 1.0


def run(args: argparse.Namespace) -> int:
    from model_runtime.allocator import map_large_blocks

    map_large_blocks()  # before the imports and the model: freed memory goes back (`allocator`)
    from lsp_server.features import create_server

    server = create_server()
    if args.tcp:
        if _is_loopback(args.host):
            log.warning("wisp listening on %s:%d (this machine only)", args.host, args.port)
        else:
            log.warning(
                "wisp listening on %s:%d, reachable from other machines: anyone who can connect "
                "sees the code your editor sends and can run the model; use --host 127.0.0.1 "
                "unless you mean it",
                args.host,
                args.port,
            )
        server.start_tcp(args.host, args.port)
    else:
        server.start_io()
    # LSP: exit code 0 after a `shutdown` request, 1 when the client went away without one.
    code = 0 if server.shutdown_requested else 1
    if not server.scheduler.close(WORKER_GRACE_S):
        log.info("exiting while the model is still computing")
    _exit_now(code)
    return code  # not reached


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _exit_now(code: int) -> None:
    """End the process without finalizing the interpreter.

    A completion may still be inside one long torch call (a prefill cannot be interrupted) on
    the model thread, and a model may still be loading on another. Finalizing the interpreter
    under them aborts the process from C++ ("terminate called without an active exception");
    nothing is left to save, so flush what was written and leave.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # the client has closed its end
            stream.flush()
    os._exit(code)
