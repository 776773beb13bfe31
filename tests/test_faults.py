"""Faults inside the server: a model that raises, hangs or meets huge or binary documents.

Each costs one empty answer with a logged reason and a `wisp/status` change; the next request
works. Driven in process through the protocol, with scripted backends in place of a model.
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import pytest
from fake_backend import FakeBackend
from in_process import initialize, send, wired_server

from lsp_server.settings import Settings
from model_runtime.backend import GenerationRequest, GenerationResult
from model_runtime.engine import CompletionEngine

URI = "file:///project/a.py"


class Faulty(FakeBackend):
    """Answers `x`, but raises or blocks while `fault` says so."""

    def __init__(self) -> None:
        super().__init__(["x"])
        self.fault: BaseException | None = None
        self.release = threading.Event()
        self.blocking = False

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
        if self.blocking:
            self.release.wait(30)  # ignores `cancel`, as a wedged kernel would
        if self.fault is not None:
            raise self.fault
        return super().generate(request, cancel)


class Harness:
    def __init__(self, backend: Faulty, **settings: Any) -> None:
        self.server, self.wire = wired_server()
        self.backend = backend
        self.next_id = 0
        initialize(self.server)
        self.server.settings = Settings(**settings)
        self.server.engine = CompletionEngine(backend, self.server.settings.engine_options())

    def send(self, message: dict[str, Any]) -> None:
        send(self.server, message)

    def open(self, text: str) -> None:
        item = {"uri": URI, "languageId": "python", "version": 1, "text": text}
        self.send({"method": "textDocument/didOpen", "params": {"textDocument": item}})

    async def inline(self, line: int, character: int, timeout: float = 30, uri: str = URI) -> Any:
        self.next_id += 1
        request_id = self.next_id
        position = {"line": line, "character": character}
        params = {"textDocument": {"uri": uri}, "position": position, "context": {"triggerKind": 1}}
        self.send({"id": request_id, "method": "textDocument/inlineCompletion", "params": params})
        async with asyncio.timeout(timeout):
            while (found := self.wire.answer(request_id)) is None:
                await asyncio.sleep(0.01)
            return found


def texts(answer: dict[str, Any]) -> list[str]:
    return [item["insertText"] for item in answer["result"]["items"]]


@pytest.mark.parametrize(
    "fault",
    [
        RuntimeError("boom in a kernel"),
        MemoryError("DefaultCPUAllocator: not enough memory"),  # a prompt that does not fit
        ValueError("bad shape"),
    ],
)
async def test_a_backend_that_raises_costs_one_empty_answer(
    fault: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    harness = Harness(Faulty())
    harness.open("def f():\n    return ")
    harness.backend.fault = fault
    answer = await harness.inline(1, 11)
    assert "error" not in answer and texts(answer) == []
    assert harness.wire.statuses()[-1]["state"] == "error"
    assert str(fault) in harness.wire.statuses()[-1]["message"]
    assert str(fault) in caplog.text
    harness.backend.fault = None
    harness.send({"method": "textDocument/didChange", "params": {
        "textDocument": {"uri": URI, "version": 2},
        "contentChanges": [{"text": "def g():\n    return "}]}})  # fmt: skip
    assert texts(await harness.inline(1, 11)) == ["x"]
    assert harness.wire.statuses()[-1]["state"] == "ready"
    harness.server.scheduler.shutdown()


async def test_a_backend_that_hangs_is_given_up_and_the_server_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("lsp_server.requests.WATCHDOG_GRACE_S", 0.2)
    harness = Harness(Faulty(), max_latency_ms=100)
    harness.open("def f():\n    return ")
    harness.backend.blocking = True
    answer = await harness.inline(1, 11)
    assert texts(answer) == []
    assert not harness.backend.release.is_set()  # answered while the model was still stuck
    assert "did not answer" in harness.wire.statuses()[-1]["message"]
    harness.backend.blocking = False
    harness.backend.release.set()
    assert texts(await harness.inline(1, 11)) == ["x"]
    assert harness.wire.statuses()[-1]["state"] == "ready"
    harness.server.scheduler.shutdown()


@pytest.mark.parametrize("uri", ["file:///project/my%20file.py", "file:///c%3A/project/a.py"])
async def test_percent_encoded_uris_are_the_same_document(uri: str) -> None:
    """VS Code percent-encodes spaces and drive colons; pygls keys its documents unquoted.

    Before: every completion in such a file answered empty ("never opened").
    """
    harness = Harness(Faulty())
    item = {"uri": uri, "languageId": "python", "version": 1, "text": "def f():\n    return "}
    harness.send({"method": "textDocument/didOpen", "params": {"textDocument": item}})
    at = {"line": 1, "character": 11}
    harness.send({"method": "textDocument/didChange", "params": {
        "textDocument": {"uri": uri, "version": 2},
        "contentChanges": [{"range": {"start": at, "end": at}, "text": "1 + "}]}})  # fmt: skip
    assert harness.server.workspace.get_text_document(uri).source == "def f():\n    return 1 + "
    assert texts(await harness.inline(1, 15, uri=uri)) == ["x"]
    harness.server.scheduler.shutdown()


@pytest.mark.parametrize(
    "text",
    [
        "x = 1\n" * 800_000 + "def f():\n    return ",  # 4.8 MB
        bytes(range(256)).decode("latin-1") * 2000 + "\ndef f():\n    return ",  # a binary file
        "\x00" * 100_000 + "\ndef f():\n    return ",
    ],
    ids=["multi-MB", "binary", "NULs"],
)
async def test_huge_and_binary_documents_complete_with_a_bounded_prompt(text: str) -> None:
    backend = Faulty()
    harness = Harness(backend, context_tokens=256)
    harness.open(text)
    last = len(re.findall(r"\r\n|\r|\n", text))  # LSP's line breaks
    assert texts(await harness.inline(last, 11)) == ["x"]
    assert len(backend.requests[-1].prompt) < 256 * 8  # characters are tokens here
    harness.server.scheduler.shutdown()
