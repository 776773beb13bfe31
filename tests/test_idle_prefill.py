"""Prefill before the request: the backend's chunked prefill, the engine's guessed prompt, the
scheduler's idle jobs, and the server queueing them after didOpen, didChange and requests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fake_backend import FakeBackend
from in_process import initialize, send, wired_server
from lsprotocol import types
from remote_stub import sse, stub_server
from tiny_model import build_tiny_model

from lsp_server.documents import Cursors
from lsp_server.scheduler import Scheduler
from lsp_server.server import WispServer
from lsp_server.settings import Settings, parse_settings
from lsp_server.stats import Stats
from model_runtime.backend import GenerationRequest, GenerationResult, SamplingParams
from model_runtime.engine import CompletionEngine, CompletionRequest, EngineOptions
from model_runtime.local import IDLE_PREFILL_CHUNK, LoadOptions, LocalBackend, load_backend
from model_runtime.remote import RemoteOptions, load_remote

CODE = "".join(
    f"def area{i}(width, height):\n    return width * height + {i}\n\n" for i in range(12)
)
PROMPT = f"<|fim_suffix|>\n<|fim_prefix|>{CODE}def pe<|fim_middle|>"
URI = "file:///project/shapes.py"


class CancelAfterChecks(threading.Event):
    """Reads as set from its `checks`+1st look on: a request arriving during a chunk."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0 or super().is_set()


@pytest.fixture(scope="module")
def prefix_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights and the bundled model's `prefix-only` template."""
    return build_tiny_model(
        tmp_path_factory.mktemp("models") / "prefix", fim_template="prefix-only"
    )


def _backend(model: Path, slots: int = 4) -> LocalBackend:
    backend = load_backend(LoadOptions(str(model)))
    backend.slots.size = slots
    if backend.documents is not None:
        backend.documents.settle_s = 0  # no waiting for the user to stop typing
        backend.documents.chunk_ms = None  # chunks of IDLE_PREFILL_CHUNK, whatever they take
    if not slots:
        backend.documents = None
    return backend


def _request(prompt: str = PROMPT, key: str = "doc") -> GenerationRequest:
    return GenerationRequest(prompt, SamplingParams(max_new_tokens=6, seed=0), cache_key=key)


def _same_answers(ours: GenerationResult, theirs: GenerationResult) -> None:
    assert [c.token_ids for c in ours.candidates] == [c.token_ids for c in theirs.candidates]
    for mine, fresh in zip(ours.candidates, theirs.candidates, strict=True):
        assert mine.logprobs == pytest.approx(fresh.logprobs, abs=1e-4)


# The backend


def test_prefill_leaves_the_cache_the_next_request_reuses(random_model: Path) -> None:
    warm, cold = _backend(random_model), _backend(random_model, slots=0)
    positions = warm.prefill(_request(), threading.Event())
    prompt_tokens = len(warm.encode(PROMPT))
    assert positions == prompt_tokens - 1 > IDLE_PREFILL_CHUNK  # in several chunks
    assert warm.prefill(_request(), threading.Event()) == 0  # warm already: nothing to do
    answer = warm.generate(_request(), threading.Event())
    assert answer.timings_ms["reused_tokens"] == prompt_tokens - 1
    _same_answers(answer, cold.generate(_request(), threading.Event()))


def test_a_cancel_stops_prefill_after_the_chunk_in_progress_and_keeps_it(
    random_model: Path,
) -> None:
    warm, cold = _backend(random_model), _backend(random_model, slots=0)
    assert warm.prefill(_request(), CancelAfterChecks(1)) == IDLE_PREFILL_CHUNK
    kept = warm.documents.get("doc")
    assert kept is not None
    assert len(kept.ids) == kept.cache.get_seq_length() == kept.exact == IDLE_PREFILL_CHUNK
    assert warm.prefill(_request(), CancelAfterChecks(0)) == 0  # cancelled before any chunk
    answer = warm.generate(_request(), threading.Event())
    assert answer.timings_ms["reused_tokens"] == IDLE_PREFILL_CHUNK
    _same_answers(answer, cold.generate(_request(), threading.Event()))


def test_prefill_resumes_where_a_cancelled_one_stopped(random_model: Path) -> None:
    backend = _backend(random_model)
    first = backend.prefill(_request(), CancelAfterChecks(2))
    rest = backend.prefill(_request(), threading.Event())
    assert first == 2 * IDLE_PREFILL_CHUNK
    assert first + rest == len(backend.encode(PROMPT)) - 1


def test_without_kept_caches_there_is_nothing_to_prefill(random_model: Path) -> None:
    assert _backend(random_model, slots=0).prefill(_request(), threading.Event()) == 0


# The engine


def _engine(backend: Any, **options: Any) -> CompletionEngine:
    return CompletionEngine(backend, EngineOptions(**options))


def _texts(suggestions: list[Any]) -> list[str]:
    return [s.text for s in suggestions]


def test_the_engine_prefills_the_prompt_its_next_request_starts_with(prefix_model: Path) -> None:
    warm = _engine(_backend(prefix_model))
    cold = _engine(_backend(prefix_model, slots=0))
    assert warm.prefills
    # a just-opened document is guessed at its end; a prefix-only prompt there holds the
    # prompt of any cursor further up
    assert warm.prefill(CompletionRequest(CODE, len(CODE), "shapes.py"), threading.Event()) > 0
    asked = CompletionRequest(CODE, CODE.index("\n", 200) + 1, "shapes.py")
    answer = warm.complete(asked)
    assert answer.timings_ms["reused_tokens"] > 0
    assert answer.timings_ms["reused_tokens"] >= answer.timings_ms["prompt_tokens"] - 3
    assert _texts(answer.suggestions) == _texts(cold.complete(asked).suggestions)


def test_a_cut_prompt_takes_its_code_from_the_document_moved(prefix_model: Path) -> None:
    engine = _engine(_backend(prefix_model), context_tokens=96)  # the document does not fit
    request = CompletionRequest(CODE, len(CODE), "shapes.py")
    assert engine.prefill(request, threading.Event()) > 96  # twice the budget
    typed = CODE + "def pe"
    answer = engine.complete(CompletionRequest(typed, len(typed), "shapes.py"))
    # the window starts later than the document's prompt: what it holds moves to the front
    assert answer.timings_ms["reused_tokens"] >= answer.timings_ms["prompt_tokens"] - 8


def test_a_jump_to_the_first_lines_finds_them_after_a_start_at_the_end(
    prefix_model: Path,
) -> None:
    backend = _backend(prefix_model)
    budget = len(backend.encode(CODE)) // 3  # the file is three budgets long
    engine = _engine(backend, context_tokens=budget)
    # opened at its last line: the document's cache still holds the file from its first line
    assert engine.prefill(CompletionRequest(CODE, len(CODE), "shapes.py"), threading.Event()) > 0
    near_top = CODE.index("\n", 60) + 1
    answer = engine.complete(CompletionRequest(CODE, near_top, "shapes.py"))
    assert answer.timings_ms["reused_tokens"] >= answer.timings_ms["prompt_tokens"] - 3


def test_a_jump_takes_what_the_last_prompt_holds_of_its_window_moved(prefix_model: Path) -> None:
    backend = _backend(prefix_model)
    budget = len(backend.encode(CODE)) // 3
    engine = _engine(backend, context_tokens=budget)
    lines = CODE.split("\n")
    cursor = [len("\n".join(lines[:n])) + 1 for n in (len(lines) * 2 // 3, len(lines) * 5 // 6)]
    engine.complete(CompletionRequest(CODE, cursor[0], "shapes.py"))  # no idle work between
    answer = engine.complete(CompletionRequest(CODE, cursor[1], "shapes.py"))
    # the window moved down by half its length: its first half is the last prompt's second half
    assert answer.timings_ms["reused_tokens"] >= answer.timings_ms["prompt_tokens"] // 3


def test_backends_without_prefill_are_not_asked() -> None:
    fake = FakeBackend(["x"])
    engine = _engine(fake)
    assert not engine.prefills
    assert engine.prefill(CompletionRequest(CODE, len(CODE), "a.py"), threading.Event()) == 0
    assert fake.requests == []


def test_a_remote_backend_is_skipped_without_a_request() -> None:
    with stub_server(default=sse(["x"])) as (url, record, _):
        backend = load_remote(RemoteOptions("openai", url, model="stub-model"))
        engine = _engine(backend)
        assert not engine.prefills
        assert engine.prefill(CompletionRequest(CODE, len(CODE), "a.py"), threading.Event()) == 0
        assert record.paths == []


# The scheduler


@pytest.fixture
async def scheduler() -> AsyncIterator[Scheduler]:
    sched = Scheduler()
    yield sched
    sched.shutdown()


async def test_a_request_preempts_idle_work_at_its_next_check(scheduler: Scheduler) -> None:
    started, order = threading.Event(), []

    def idle(cancel: threading.Event) -> None:
        started.set()
        while not cancel.wait(0.01):  # one "chunk" per wait
            pass
        order.append("idle stopped")

    def request(cancel: threading.Event) -> str:
        order.append("request")
        return "done"

    scheduler.run_when_idle("a.py", idle)
    assert await asyncio.to_thread(started.wait, 5)
    assert await scheduler.run("b.py", request) == "done"
    assert order == ["idle stopped", "request"]


async def occupy(scheduler: Scheduler, order: list[str]) -> tuple[asyncio.Future, threading.Event]:
    """A request for a.py that holds the worker until the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def busy(cancel: threading.Event) -> None:
        started.set()
        release.wait(5)
        order.append("request a")

    request = asyncio.ensure_future(scheduler.run("a.py", busy))
    assert await asyncio.to_thread(started.wait, 5)
    return request, release


async def test_idle_work_waits_for_requests_and_newer_replaces_older(
    scheduler: Scheduler,
) -> None:
    order: list[str] = []
    request, release = await occupy(scheduler, order)
    scheduler.run_when_idle("b.py", lambda cancel: order.append("old b"))
    scheduler.run_when_idle("c.py", lambda cancel: order.append("c"))
    scheduler.run_when_idle("b.py", lambda cancel: order.append("new b"))
    release.set()
    await request
    await scheduler.run("probe", lambda cancel: None)  # behind `busy`, ahead of idle work
    done = threading.Event()
    scheduler.run_when_idle("z.py", lambda cancel: done.set())
    assert await asyncio.to_thread(done.wait, 5)
    assert order == ["request a", "new b", "c"]


async def test_a_request_drops_the_waiting_idle_work_of_its_document(
    scheduler: Scheduler,
) -> None:
    order: list[str] = []
    first, release = await occupy(scheduler, order)
    scheduler.run_when_idle("b.py", lambda cancel: order.append("b"))
    second = asyncio.ensure_future(scheduler.run("b.py", lambda cancel: order.append("request")))
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(first, second)
    done = threading.Event()
    scheduler.run_when_idle("z.py", lambda cancel: done.set())
    assert await asyncio.to_thread(done.wait, 5)
    assert order == ["request a", "request"]


async def test_failing_idle_work_is_logged_and_the_worker_goes_on(
    scheduler: Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    failed = threading.Event()

    def boom(cancel: threading.Event) -> None:
        failed.set()
        raise RuntimeError("boom")

    scheduler.run_when_idle("a.py", boom)
    assert await asyncio.to_thread(failed.wait, 5)
    assert await scheduler.run("a.py", lambda cancel: 7) == 7
    done = threading.Event()
    scheduler.run_when_idle("a.py", lambda cancel: done.set())
    assert await asyncio.to_thread(done.wait, 5)
    assert "idle work for a.py failed: boom" in caplog.text


# The server


class Server:
    """A wisp server driven in process through its protocol, on a given backend."""

    def __init__(self, backend: Any, **settings: Any) -> None:
        self.server: WispServer
        self.server, self.wire = wired_server()
        initialize(self.server)
        self.server.settings = Settings(**{"prefill_when_idle": True, **settings})
        self.server.engine = CompletionEngine(backend, self.server.settings.engine_options())
        self.results: list[GenerationResult] = []
        self.queued: list[str] = []
        self.next_id = 0
        if isinstance(backend, LocalBackend):
            generate = backend.generate

            def spy(request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
                self.results.append(result := generate(request, cancel))
                return result

            backend.generate = spy  # type: ignore[method-assign]
        run_when_idle = self.server.scheduler.run_when_idle

        def queue(key: str, job: Any) -> None:
            self.queued.append(key)
            run_when_idle(key, job)

        self.server.scheduler.run_when_idle = queue  # type: ignore[method-assign]

    def open(self, text: str) -> None:
        item = {"uri": URI, "languageId": "python", "version": 1, "text": text}
        send(self.server, {"method": "textDocument/didOpen", "params": {"textDocument": item}})

    def insert(self, line: int, character: int, text: str, version: int) -> None:
        at = {"line": line, "character": character}
        change = {"range": {"start": at, "end": at}, "text": text}
        params = {"textDocument": {"uri": URI, "version": version}, "contentChanges": [change]}
        send(self.server, {"method": "textDocument/didChange", "params": params})

    async def inline(self, line: int, character: int) -> dict[str, Any]:
        self.next_id += 1
        request_id = self.next_id
        params = {
            "textDocument": {"uri": URI},
            "position": {"line": line, "character": character},
            "context": {"triggerKind": 1},
        }
        send(
            self.server,
            {"id": request_id, "method": "textDocument/inlineCompletion", "params": params},
        )
        async with asyncio.timeout(30):
            while (found := self.wire.answer(request_id)) is None:
                await asyncio.sleep(0.01)
        return found

    def idle_prefill(self) -> dict[str, Any]:
        return self.server.stats.snapshot()["idle_prefill"]

    async def prefilled(self, runs: int = 1) -> dict[str, Any]:
        async with asyncio.timeout(30):
            while self.idle_prefill()["runs"] < runs:
                await asyncio.sleep(0.01)
        return self.idle_prefill()

    def close(self) -> None:
        self.server.scheduler.shutdown()


def _items(answer: dict[str, Any]) -> list[str]:
    return [item["insertText"] for item in answer["result"]["items"]]


async def test_the_first_request_after_opening_reuses_the_idle_prefill(
    prefix_model: Path,
) -> None:
    warm = Server(_backend(prefix_model))
    warm.open(CODE)
    stats = await warm.prefilled()
    assert stats["positions"] > 0 and stats["preempted"] == 0
    answer = await warm.inline(10, 4)
    [generated] = warm.results
    assert generated.timings_ms["reused_tokens"] > 0
    cold = Server(_backend(prefix_model), prefill_when_idle=False)
    cold.open(CODE)
    assert _items(await cold.inline(10, 4)) == _items(answer)
    assert cold.results[0].timings_ms["reused_tokens"] == 0
    assert cold.queued == [] and cold.idle_prefill()["runs"] == 0
    warm.close()
    cold.close()


async def test_an_edit_moves_the_guess_to_where_it_ended(prefix_model: Path) -> None:
    harness = Server(_backend(prefix_model))
    harness.open(CODE)
    opened = (await harness.prefilled())["positions"]
    harness.insert(4, 0, "def perimeter(width, height):\n    return ", version=2)
    cursor = harness.server.cursors.get(URI)
    assert cursor is not None and (cursor.line, cursor.character) == (5, 11)
    assert (await harness.prefilled(2))["positions"] > opened
    await harness.inline(5, 11)
    [generated] = harness.results
    assert generated.timings_ms["reused_tokens"] >= generated.timings_ms["prompt_tokens"] - 3
    harness.close()


async def test_a_request_during_an_idle_prefill_preempts_it(prefix_model: Path) -> None:
    backend = _backend(prefix_model)
    harness = Server(backend)
    entered = threading.Event()
    prefill = backend.prefill

    def held(request: GenerationRequest, cancel: threading.Event) -> int:
        entered.set()
        cancel.wait(10)  # a chunk in progress, as long as it takes the request to arrive
        return prefill(request, cancel)

    backend.prefill = held  # type: ignore[method-assign]
    harness.open(CODE)
    assert await asyncio.to_thread(entered.wait, 5)
    assert "result" in await harness.inline(10, 4)
    stats = await harness.prefilled()
    assert stats["preempted"] == 1 and stats["positions"] == 0  # stopped before a chunk
    harness.close()


async def test_a_remote_backend_or_no_model_queues_nothing() -> None:
    with stub_server(default=sse(["x"])) as (url, _, _):
        harness = Server(load_remote(RemoteOptions("openai", url, model="stub-model")))
        harness.open(CODE)
        await harness.inline(10, 4)
        harness.server.engine = None  # loading, or failed to load
        harness.insert(0, 0, "#", version=2)
        assert harness.queued == [] and harness.idle_prefill()["runs"] == 0
        harness.close()


async def test_a_failing_prefill_is_logged_and_requests_go_on(
    prefix_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = _backend(prefix_model)
    harness = Server(backend)

    def broken(request: GenerationRequest, cancel: threading.Event) -> int:
        raise RuntimeError("out of memory in prefill")

    backend.prefill = broken  # type: ignore[method-assign]
    harness.open(CODE)
    async with asyncio.timeout(30):
        while "out of memory in prefill" not in caplog.text:
            await asyncio.sleep(0.01)
    assert "result" in await harness.inline(10, 4)
    assert harness.wire.statuses() == [] or harness.wire.statuses()[-1]["state"] != "error"
    harness.close()


def test_closing_a_document_forgets_its_cursor() -> None:
    harness = Server(FakeBackend(["x"]))
    harness.open(CODE)
    harness.insert(0, 0, "#", version=2)
    assert harness.server.cursors.get(URI) is not None
    send(harness.server, {"method": "textDocument/didClose",
                          "params": {"textDocument": {"uri": URI}}})  # fmt: skip
    assert harness.server.cursors.get(URI) is None
    harness.close()


async def test_closing_a_document_drops_its_kept_cache_and_no_other(prefix_model: Path) -> None:
    backend = _backend(prefix_model)
    harness = Server(backend, prefill_when_idle=False)
    harness.open(CODE)
    await harness.inline(10, 4)
    other = "file:///other.py"
    item = {"uri": other, "languageId": "python", "version": 1, "text": CODE}
    send(harness.server, {"method": "textDocument/didOpen", "params": {"textDocument": item}})
    backend.generate(_request(key="other.py"), threading.Event())
    backend.prefill(_request(key="other.py"), threading.Event())
    backend.prefill(_request(key="shapes.py"), threading.Event())
    assert set(backend.slots._slots) == set(backend.documents._caches) == {"shapes.py", "other.py"}
    send(harness.server, {"method": "textDocument/didClose",
                          "params": {"textDocument": {"uri": URI}}})  # fmt: skip
    assert set(backend.slots._slots) == set(backend.documents._caches) == {"other.py"}
    harness.close()


def test_forgetting_a_key_leaves_the_others_and_a_missing_one_is_no_error(
    random_model: Path,
) -> None:
    backend = _backend(random_model)
    for key in ("a", "b"):
        backend.generate(_request(key=key), threading.Event())
        backend.prefill(_request(key=key), threading.Event())
    backend.forget("a")
    backend.forget("never-seen")
    assert list(backend.slots._slots) == list(backend.documents._caches) == ["b"]
    engine = _engine(backend)
    engine.forget("b")
    assert len(backend.slots) == len(backend.documents) == 0
    _engine(FakeBackend(["x"])).forget("a.py")  # a backend that keeps nothing: nothing to do


def test_stats_count_idle_prefills_apart_from_requests() -> None:
    stats = Stats()
    assert stats.snapshot()["idle_prefill"] == {
        "runs": 0,
        "preempted": 0,
        "positions": 0,
        "ms_total": 0.0,
    }
    stats.record_idle_prefill(120, preempted=False, ms=30.0)
    stats.record_idle_prefill(64, preempted=True, ms=12.5)
    snap = stats.snapshot()
    assert snap["idle_prefill"] == {"runs": 2, "preempted": 1, "positions": 184, "ms_total": 42.5}
    assert snap["requests"] == 0 and snap["engine_ms_total"] == 0


def test_cursors_remember_the_last_position_of_recent_documents() -> None:
    cursors = Cursors(size=2)
    for uri, line in (("a", 1), ("b", 2), ("a", 3), ("c", 4)):
        cursors.note(uri, types.Position(line=line, character=0))
    assert cursors.get("b") is None  # the least recently seen, forgotten first
    assert cursors.get("a") == types.Position(line=3, character=0)


def test_the_setting_is_a_boolean_on_by_default_that_needs_no_reload() -> None:
    assert Settings().prefill_when_idle
    off, warnings = parse_settings({"prefillWhenIdle": False})
    assert not off.prefill_when_idle and warnings == []
    assert off.load_key() == Settings().load_key()
    kept, warnings = parse_settings({"prefillWhenIdle": "no"}, off)
    assert not kept.prefill_when_idle and "prefillWhenIdle" in warnings[0]


def test_a_failure_while_queueing_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, prefix_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> None:
        raise ValueError("no such document state")

    monkeypatch.setattr("lsp_server.idle_prefill.engine_request", broken)
    harness = Server(_backend(prefix_model))
    harness.open(CODE)
    assert "no idle prefill of file:///project/shapes.py: no such document state" in caplog.text
    assert harness.queued == []
    harness.close()
