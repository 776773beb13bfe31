"""The `wisp` command line: `complete` and `serve --tcp`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lsp_server.cli import main


def test_complete_json(x_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "demo.py"
    source.write_text("def f():\n    return \n")
    settings = json.dumps({"maxNewTokens": 3})
    argv = ["complete", str(source), "--line", "1", "--character", "11", "--json"]
    assert main([*argv, "--model", str(x_model), "--settings", settings]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [item["text"] for item in out["items"]] == ["xxx"]
    assert isinstance(out["items"][0]["score"], float)
    assert 0 < out["items"][0]["confidence"] <= 1  # the gate's P(accept)
    assert {"prompt", "prefill", "decode", "total"} <= set(out["timings_ms"])


def test_complete_plain_text(
    x_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "demo.py"
    source.write_text("x = ")
    argv = ["complete", str(source), "--line", "0", "--character", "4", "--model", str(x_model)]
    assert main([*argv, "--settings", '{"maxNewTokens": 2}']) == 0
    assert capsys.readouterr().out == "xx\n"


def test_complete_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "demo.py"
    source.write_text("x = ")
    argv = ["complete", str(source), "--line", "0", "--character", "4"]
    assert main([*argv, "--model", str(tmp_path / "absent")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_complete_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["complete", str(tmp_path / "nope.py"), "--line", "0", "--character", "0"]) == 2
    assert "cannot read" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_message(sock: socket.socket) -> dict:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    header, body = data.split(b"\r\n\r\n", 1)
    length = int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)
    return json.loads(body[:length])


@pytest.mark.slow
def test_serve_over_tcp_on_loopback() -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "lsp_server.cli", "serve", "--tcp", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not listen"
                time.sleep(0.2)
        with sock:
            body = json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
            ).encode()
            sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            reply = _read_message(sock)
        assert reply["id"] == 1
        assert reply["result"]["serverInfo"]["name"] == "wisp"
        assert "inlineCompletionProvider" in reply["result"]["capabilities"]
        assert _listening_addresses(port) in ([], ["127.0.0.1"])  # [] where /proc has no net
    finally:
        server.terminate()
        stdout, stderr = server.communicate(timeout=10)
    assert stdout == b""  # logs never go to stdout
    assert b"(this machine only)" in stderr


def _listening_addresses(port: int) -> list[str]:
    """IPv4 addresses listening on `port`, from /proc/net/tcp (Linux)."""
    table = Path("/proc/net/tcp")
    if not table.exists():
        return []
    found = []
    for row in table.read_text().splitlines()[1:]:
        local, state = row.split()[1], row.split()[3]
        address, _, hex_port = local.partition(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.mark.slow
def test_serve_on_every_interface_says_so() -> None:
    port = _free_port()
    command = [sys.executable, "-m", "lsp_server.cli", "serve", "--tcp", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--host", "0.0.0.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
    finally:
        server.terminate()
        server.communicate(timeout=10)
    assert b"0.0.0.0" in line and b"reachable from other machines" in line


@pytest.mark.parametrize("settings", ["{not json", "[1, 2]"])
def test_complete_bad_settings_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: str
) -> None:
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    argv = ["complete", str(source), "--line", "0", "--character", "4", "--settings", settings]
    assert main(argv) == 2
    assert "--settings" in capsys.readouterr().err
