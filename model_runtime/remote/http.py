"""A small streaming HTTP client (standard library only) that can be interrupted at any time.

One POST at a time per client; its answer is read line by line. A cancel event or a deadline
closes the socket from a watcher thread, so a read blocked on a silent server returns at once.
One idle keep-alive connection is kept for the next request (TLS handshakes are not free); a
kept connection that the server has since closed is replaced once, silently. Certificates are
verified against the system's store (`SSL_CERT_FILE` names another, as OpenSSL reads it).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from model_runtime.remote.apis import error_message

MAX_LINE = 1 << 20  # a stream line longer than this is not a completion chunk
MAX_ERROR_BODY = 1 << 16
WATCH_INTERVAL_S = 0.005  # how often the watcher looks at the cancel event


class RemoteError(Exception):
    """A request that did not get a usable answer; `retryable` when trying again may help."""

    def __init__(self, message: str, retryable: bool = False, retry_after_s: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Interrupted(Exception):
    """The stream was closed on purpose: cancelled, or out of time."""


@dataclass(frozen=True)
class Endpoint:
    """A base URL, split: `https://host:port/base`."""

    scheme: str
    host: str
    port: int
    base: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint must be an http:// or https:// URL, got {url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"endpoint {url!r} has a port that is not a number") from None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.base}"


class StreamingClient:
    """POSTs JSON to one endpoint and yields the answer's lines as they arrive."""

    def __init__(
        self,
        endpoint: Endpoint,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._tls = tls
        self._idle: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _connect(self, timeout_s: float | None = None) -> http.client.HTTPConnection:
        e, timeout = self.endpoint, timeout_s or self.timeout_s
        if e.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            return http.client.HTTPSConnection(e.host, e.port, timeout=timeout, context=self._tls)
        return http.client.HTTPConnection(e.host, e.port, timeout=timeout)

    def get_json(self, path: str, timeout_s: float | None = None) -> Any:
        """A GET answered with JSON (used once at load, to learn the served model's name)."""
        conn = self._connect(timeout_s)
        try:
            conn.request("GET", self.endpoint.base + path, headers=self._headers)
            response = conn.getresponse()
            body = response.read(MAX_ERROR_BODY)
            if response.status != 200:
                raise _status_error(response, body)
            return json.loads(body)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise RemoteError(describe(exc, self.endpoint)) from None
        finally:
            conn.close()

    @contextmanager
    def stream(
        self, path: str, body: Mapping[str, Any], cancel: threading.Event, deadline: float | None
    ) -> Iterator[Iterator[str]]:
        """POST `body` and give an iterator over the answer's lines.

        Raises RemoteError (unreachable, refused, HTTP error status, cut off mid-answer) or
        Interrupted (cancel set, deadline passed). Leaving the block early closes the stream.
        """
        with self._lock:
            watch = _Watch(cancel, deadline)
            watcher = threading.Thread(target=watch.run, daemon=True)
            watcher.start()
            opened: tuple[http.client.HTTPConnection, http.client.HTTPResponse] | None = None
            reader: _Lines | None = None
            try:
                opened = self._open(path, json.dumps(body).encode(), watch)
                reader = _Lines(opened[1], self.endpoint, watch)
                yield iter(reader)
            finally:
                watch.done.set()
                watcher.join()
                if opened is not None:
                    conn, response = opened
                    reusable = reader is not None and reader.ended and not response.will_close
                    if reusable and not watch.reason:
                        self._idle = conn
                    else:
                        conn.close()

    def _open(
        self, path: str, payload: bytes, watch: _Watch
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """A connection with the answer's status and headers read; the idle one if it works."""
        reused, self._idle = self._idle, None
        for conn in ([reused] if reused is not None else []) + [None]:
            fresh = conn is None
            conn = watch.conn = conn or self._connect()
            try:
                conn.request("POST", self.endpoint.base + path, payload, self._headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if watch.reason:
                    raise Interrupted(watch.reason) from None
                dropped = isinstance(exc, _DROPPED)
                if dropped and not fresh:
                    continue  # the server closed the kept connection meanwhile
                raise RemoteError(describe(exc, self.endpoint), retryable=dropped) from None
            if response.status != 200:
                body = response.read(MAX_ERROR_BODY)
                conn.close()
                raise _status_error(response, body)
            return conn, response
        raise AssertionError("unreachable")  # the loop returns or raises on a fresh connection

    def close(self) -> None:
        with self._lock:
            if self._idle is not None:
                self._idle.close()
                self._idle = None


_DROPPED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class _Watch:
    """Closes the current connection's socket once `cancel` is set or `deadline` passes."""

    def __init__(self, cancel: threading.Event, deadline: float | None) -> None:
        self.cancel, self.deadline = cancel, deadline
        self.done = threading.Event()
        self.conn: http.client.HTTPConnection | None = None
        self.reason = ""  # "cancelled" or "deadline" once it has closed the stream

    def run(self) -> None:
        while not self.done.wait(WATCH_INTERVAL_S):
            if self.cancel.is_set():
                self.reason = "cancelled"
            elif self.deadline is not None and time.perf_counter() >= self.deadline:
                self.reason = "deadline"
            else:
                continue
            sock = self.conn.sock if self.conn is not None else None
            if sock is not None:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return


class _Lines:
    """The lines of an answer; `ended` once the server finished it."""

    def __init__(
        self, response: http.client.HTTPResponse, endpoint: Endpoint, watch: _Watch
    ) -> None:
        self.response, self.endpoint, self.watch = response, endpoint, watch
        self.ended = False

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                raw = self.response.readline(MAX_LINE)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if self.watch.reason:
                    raise Interrupted(self.watch.reason) from None
                raise RemoteError(
                    f"the answer broke off: {describe(exc, self.endpoint)}", retryable=True
                ) from None
            if self.watch.reason:
                raise Interrupted(self.watch.reason)
            if not raw:
                self.ended = True
                return
            yield raw.decode("utf-8", errors="replace")


def _status_error(response: http.client.HTTPResponse, body: bytes) -> RemoteError:
    try:
        detail = error_message(json.loads(body))
    except ValueError:
        detail = body.decode("utf-8", errors="replace").strip()[:200]
    status = response.status
    retry_after = response.getheader("Retry-After")
    wait = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
    message = f"the server answered {status} {response.reason}" + (f": {detail}" if detail else "")
    return RemoteError(message, retryable=status == 429 or status >= 500, retry_after_s=wait)


def describe(exc: BaseException, endpoint: Endpoint) -> str:
    """One line for the status bar: what went wrong talking to `endpoint`."""
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing is listening at {endpoint} (connection refused)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"{endpoint} did not answer in time"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{endpoint}: TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {endpoint.host}"
    if isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError):
        return f"{endpoint} closed the connection"
    return f"{endpoint}: {str(exc).strip() or type(exc).__name__}"
