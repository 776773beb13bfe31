"""A loopback HTTP server standing in for the Hugging Face hub in `wisp pull`'s tests.

It answers what huggingface_hub 2.x asks for a file: `HEAD /{repo}/resolve/{revision}/{file}`
answers as the hub does for an LFS file, a 302 to a CDN address carrying `X-Repo-Commit`,
`X-Linked-Etag` (the sha256) and `X-Linked-Size`; `GET` of the same redirects there too. The CDN
is this server under the name `localhost` (the hub is `127.0.0.1`), so the client sees another
host, as it does with the real CDN, and downloads from the address it was given. The CDN honours
`Range` with 206 answers.

It can cut the first download after some bytes, or serve corrupted bytes of the right size, and it
records every request with its `Range` header.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass(frozen=True)
class Seen:
    """One request the stub answered."""

    method: str
    path: str
    range: str | None


@dataclass
class Hub:
    """The files served (`(repo, file) -> bytes`), what to do to them, and what was asked."""

    files: dict[tuple[str, str], bytes]
    url: str = ""
    cut_first_get_after: int | None = None  # bytes sent before the first download is cut
    corrupt: bool = False  # serve the right size with one byte changed
    seen: list[Seen] = field(default_factory=list)
    cut: bool = False  # whether the cut happened

    def gets(self) -> list[Seen]:
        """The downloads asked for, in order."""
        return [s for s in self.seen if s.method == "GET" and s.path.startswith("/cdn/")]

    def by_sha(self, sha: str) -> bytes | None:
        return next((d for d in self.files.values() if hashlib.sha256(d).hexdigest() == sha), None)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: Hub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        hub = self.server.hub
        hub.seen.append(Seen(self.command, self.path, self.headers.get("Range")))
        if self.path.startswith("/cdn/"):
            self._cdn(self.path.removeprefix("/cdn/"), body)
        else:
            self._resolve(unquote(self.path))

    def _resolve(self, path: str) -> None:
        repo_part, marker, rest = path.lstrip("/").partition("/resolve/")
        revision, _, file = rest.partition("/")
        repos = {repo for repo, _ in self.server.hub.files}
        if not marker or repo_part not in repos:
            return self._empty(404, {"X-Error-Code": "RepoNotFound"})
        if revision not in ("main", COMMIT):
            return self._empty(404, {"X-Error-Code": "RevisionNotFound"})
        data = self.server.hub.files.get((repo_part, file))
        if data is None:
            return self._empty(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
        sha = hashlib.sha256(data).hexdigest()
        port = self.server.server_address[1]
        self._empty(
            302,
            {
                "Location": f"http://localhost:{port}/cdn/{sha}",
                "X-Repo-Commit": COMMIT,
                "ETag": '"' + hashlib.sha1(sha.encode()).hexdigest() + '"',  # the pointer's
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(data)),
            },
        )

    def _cdn(self, sha: str, body: bool) -> None:
        hub = self.server.hub
        data = hub.by_sha(sha)
        if data is None:
            return self._empty(404, {})
        if hub.corrupt:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        start = _range_start(self.headers.get("Range"))
        if start >= len(data) > 0:
            return self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{sha}"')
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        if hub.cut_first_get_after is not None and not hub.cut:
            hub.cut = True
            self.wfile.write(data[start : start + hub.cut_first_get_after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(data[start:])

    def _empty(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _range_start(header: str | None) -> int:
    """The first byte of `bytes=N-` (all a downloader resuming asks for); 0 without one."""
    if not header or not header.startswith("bytes="):
        return 0
    return int(header.removeprefix("bytes=").split("-", 1)[0] or 0)


@contextmanager
def serve(files: dict[tuple[str, str], bytes]) -> Iterator[Hub]:
    """A stub hub on a free loopback port serving `files` while the block runs."""
    hub = Hub(files)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.hub = hub
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
