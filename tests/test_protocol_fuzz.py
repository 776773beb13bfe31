"""Protocol fuzzing over real stdio: thousands of random, malformed and badly timed messages.

Every request the server can see (a well-framed message with a usable id) must be answered with
a result or a JSON-RPC error; the server must stay up, keep its documents and still complete.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from raw_client import RawClient

pytestmark = pytest.mark.slow

MESSAGES = int(os.environ.get("WISP_FUZZ_MESSAGES", "3000"))
URIS = ["file:///fuzz/a.py", "file:///fuzz/b.ts", "untitled:c"]
POSITION = {"line": 1, "character": 4}
CONTEXT = {"triggerKind": 1}

# Well-formed params for each method wisp serves; the fuzzer breaks them one field at a time.
VALID: dict[str, Any] = {
    "textDocument/inlineCompletion": {
        "textDocument": {"uri": URIS[0]},
        "position": POSITION,
        "context": CONTEXT,
    },
    "textDocument/completion": {"textDocument": {"uri": URIS[0]}, "position": POSITION},
    "wisp/stats": None,
    "workspace/executeCommand": {"command": "wisp.didAccept", "arguments": ["1"]},
    "textDocument/didOpen": {
        "textDocument": {"uri": URIS[0], "languageId": "python", "version": 1, "text": "x = 1\n"}
    },
    "textDocument/didChange": {
        "textDocument": {"uri": URIS[0], "version": 2},
        "contentChanges": [
            {"range": {"start": POSITION, "end": POSITION}, "text": "y"},
        ],
    },
    "textDocument/didClose": {"textDocument": {"uri": URIS[1]}},
    "workspace/didChangeConfiguration": {"settings": {"wisp": {"maxNewTokens": 4}}},
    "textDocument/didShowCompletion": {"item": {"insertText": "x"}},
    "textDocument/didPartiallyAcceptCompletion": {"item": {"insertText": "x"}, "acceptedLength": 1},
    "$/cancelRequest": {"id": 1},
    "$/setTrace": {"value": "off"},
}
NOTIFICATIONS = {
    "textDocument/didOpen",
    "textDocument/didChange",
    "textDocument/didClose",
    "workspace/didChangeConfiguration",
    "textDocument/didShowCompletion",
    "textDocument/didPartiallyAcceptCompletion",
    "$/cancelRequest",
    "$/setTrace",
}
SECRET = "password = 'hunter2-wisp'"  # document text: never in the log at the default level
UNSERVED = ["textDocument/hover", "textDocument/definition", "foo/bar", "", "wisp/nothing"]


def _junk(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            True,
            -1,
            2**63,
            3.5,
            "",
            "x" * rng.choice([1, 1000, 200_000]),
            "😀\U0010ffff\ud7ff",
            [],
            [1, "a", None],
            {},
            {"uri": 5},
            {"line": -3, "character": 2**40},
        ]
    )


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every value inside nested dicts and lists, the containers included."""
    paths = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            paths += _leaves(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            paths += _leaves(inner, (*path, index))
    return paths


def _break(params: Any, rng: random.Random) -> Any:
    """`params` with one value (or the whole) replaced by junk, or one key dropped."""
    broken = copy.deepcopy(params)
    path = rng.choice(_leaves(broken))
    if not path:
        return _junk(rng)
    holder = broken
    for step in path[:-1]:
        holder = holder[step]
    if isinstance(holder, dict) and rng.random() < 0.3:
        del holder[path[-1]]
    else:
        holder[path[-1]] = _junk(rng)
    return broken


def _document(rng: random.Random) -> str:
    lines = ["def f(a, b):", "    return a + b", "x = '😀'", "\t# comment", "", SECRET]
    return "\r\n".join(rng.choice(lines) for _ in range(rng.randint(0, 30)))


class Fuzzer:
    """Sends random messages and remembers which requests need an answer."""

    def __init__(self, client: RawClient, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.expected: set[int | str] = set()
        self.next_id = 10_000
        self.sent = 0
        self.versions = dict.fromkeys(URIS, 1)

    def _id(self) -> int | str:
        self.next_id += 1
        return self.next_id if self.rng.random() < 0.8 else f"s{self.next_id}"

    def request(self, method: str, params: Any) -> None:
        request_id = self._id()
        self.expected.add(request_id)
        self.client.send({"id": request_id, "method": method, "params": params})

    def step(self) -> None:
        rng = self.rng
        self.sent += 1
        kind = rng.random()
        method = rng.choice(sorted(VALID))
        if kind < 0.25:  # the real thing, at a random place in a random document
            self.valid(method)
        elif kind < 0.55:  # the right method, one field broken
            params = _break(VALID[method], rng)
            if method in NOTIFICATIONS:
                self.client.notify(method, params)
            else:
                self.request(method, params)
        elif kind < 0.65:  # methods nobody serves
            self.request(rng.choice(UNSERVED), _junk(rng))
        elif kind < 0.72:  # a notification sent as a request
            self.request(rng.choice(sorted(NOTIFICATIONS)), VALID[method])
        elif kind < 0.80:  # not JSON, not UTF-8, not an object, not JSON-RPC 2.0
            body = rng.choice(
                [b"{", b"\xff\xfe\xfd", b"[]", b"42", b'"x"', b"null", b'{"jsonrpc": "1.0"}']
            )
            self.client.send_body(body)
        elif kind < 0.85:  # ids that are no ids, responses nobody asked for
            bad_id = rng.choice([None, 1.5, [], {}, True])
            self.client.send({"id": bad_id, "method": "wisp/stats"})
            self.client.send({"id": rng.randint(0, 10**6), "result": _junk(rng)})
        elif kind < 0.90:  # huge params
            huge = "y" * rng.choice([100_000, 2_000_000])
            self.client.notify("workspace/didChangeConfiguration", {"settings": {"wisp": huge}})
            self.request(
                "textDocument/inlineCompletion",
                {**VALID["textDocument/inlineCompletion"], "huge": huge},
            )
        else:
            self.edit()

    def valid(self, method: str) -> None:
        if method in ("textDocument/didOpen", "textDocument/didChange", "textDocument/didClose"):
            self.edit()
            return
        params = copy.deepcopy(VALID[method])
        if isinstance(params, dict) and "position" in params:
            params["textDocument"]["uri"] = self.rng.choice(URIS)
            params["position"] = {
                "line": self.rng.randint(0, 40),
                "character": self.rng.choice([0, 3, 10, 500]),
            }
        if method in NOTIFICATIONS:
            self.client.notify(method, params)
        else:
            self.request(method, params)

    def edit(self) -> None:
        uri = self.rng.choice(URIS)
        roll = self.rng.random()
        if roll < 0.3:
            self.versions[uri] += 1
            document = {"uri": uri, "languageId": "python", "version": self.versions[uri]}
            self.client.notify(
                "textDocument/didOpen", {"textDocument": {**document, "text": _document(self.rng)}}
            )
        elif roll < 0.9:
            self.versions[uri] += 1
            start = {"line": self.rng.randint(0, 40), "character": self.rng.randint(0, 80)}
            end = {"line": start["line"] + self.rng.randint(0, 2), "character": 0}
            change = {
                "range": {"start": start, "end": end},
                "text": self.rng.choice(["", "ab", "\n"]),
            }
            self.client.notify(
                "textDocument/didChange",
                {
                    "textDocument": {"uri": uri, "version": self.versions[uri]},
                    "contentChanges": [change],
                },
            )
        else:
            self.client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


def _answered(client: RawClient) -> set[int | str]:
    client.drain()
    return {m["id"] for m in client.seen if "id" in m and "method" not in m}


def _wait_answers(client: RawClient, expected: set[int | str], timeout: float) -> set[int | str]:
    deadline = time.monotonic() + timeout
    while (missing := expected - _answered(client)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return missing


def test_thousands_of_random_messages_all_answered_and_the_server_still_completes(
    x_model: Path, tmp_path: Path
) -> None:
    stderr = tmp_path / "stderr.txt"
    client = RawClient(stderr_path=stderr)
    try:
        # Before initialize: requests are refused with ServerNotInitialized, nothing breaks.
        early = Fuzzer(client, seed=1)
        for _ in range(50):
            early.step()
        missing = _wait_answers(client, early.expected, 30)
        assert not missing, f"unanswered before initialize: {sorted(missing, key=str)[:10]}"
        refused = [m for m in client.seen if m.get("id") in early.expected and "error" in m]
        assert {m["error"]["code"] for m in refused} <= {-32002, -32600}

        client.initialize({"model": str(x_model), "maxNewTokens": 3})
        assert client.wait_status("ready", "error")["state"] == "ready"
        fuzzer = Fuzzer(client, seed=2)
        started = time.monotonic()
        for _ in range(MESSAGES):
            fuzzer.step()
        missing = _wait_answers(client, fuzzer.expected, 120)
        elapsed = time.monotonic() - started
        assert client.process.poll() is None, stderr.read_text(errors="replace")[-3000:]
        assert not missing, f"{len(missing)} of {len(fuzzer.expected)} requests unanswered"

        # State survives: a fresh document still completes with the model's text.
        client.send({"jsonrpc": "2.0", "method": "workspace/didChangeConfiguration",
                     "params": {"settings": {"wisp": {"maxNewTokens": 3}}}})  # fmt: skip
        client.open("file:///fuzz/final.py", "def f():\n    return ")
        answer = client.response(
            client.request(
                "textDocument/inlineCompletion",
                {
                    "textDocument": {"uri": "file:///fuzz/final.py"},
                    "position": {"line": 1, "character": 11},
                    "context": CONTEXT,
                },
            )
        )
        assert [item["insertText"] for item in answer["result"]["items"]] == ["xxx"]

        # After shutdown: requests are refused, then exit is clean.
        client.response(client.request("shutdown"))
        late = Fuzzer(client, seed=3)
        for _ in range(30):
            late.step()
        assert not _wait_answers(client, late.expected, 30)
        client.notify("exit")
        code = client.wait(30)
    finally:
        client.close()
    log = stderr.read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:4000]
    assert "hunter2" not in log
    summary = {"messages": fuzzer.sent + 80, "requests": len(fuzzer.expected), "seconds": elapsed}
    print(json.dumps(summary))


BODY = b'{"jsonrpc": "2.0", "id": "lost", "method": "wisp/stats"}'


@pytest.mark.parametrize(
    "frame",
    [
        b"Content-Length: abc\r\n\r\n" + BODY,  # not a number
        b"Content-Length: 5\r\n\r\n" + BODY,  # too short: the rest reads as garbage
        b"Content-Type: x\r\n\r\n" + BODY,  # no length at all
        b"Content-Length: 999999999999\r\n\r\n" + BODY,  # more than anyone should allocate
        b"garbage without a header\r\n\r\n",
    ],
)
def test_a_broken_frame_costs_only_itself(x_model: Path, frame: bytes) -> None:
    """pygls' own reader lost every later message after the first three of these."""
    client = RawClient()
    try:
        client.initialize({"model": str(x_model)})
        client.send_bytes(frame)
        after = [client.request("wisp/stats") for _ in range(3)]
        for request_id in after:
            assert "result" in client.response(request_id, timeout=10)
        assert client.finish() == 0
    finally:
        client.close()
