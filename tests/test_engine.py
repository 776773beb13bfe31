"""The pipeline from document and cursor to suggestions, on a scripted backend."""

from __future__ import annotations

import threading

from fake_backend import FakeBackend

from model_runtime.backend import SamplingParams
from model_runtime.engine import CompletionEngine, CompletionRequest, EngineOptions


def options(max_new_tokens: int = 48, num_candidates: int = 1, **rest: object) -> EngineOptions:
    sampling = SamplingParams(max_new_tokens=max_new_tokens, num_candidates=num_candidates)
    return EngineOptions(sampling=sampling, **rest)  # type: ignore[arg-type]


def complete(answers: list[str], text: str, offset: int, **opts: object) -> list[tuple[str, int]]:
    engine = CompletionEngine(FakeBackend(answers), options(**opts))  # type: ignore[arg-type]
    result = engine.complete(CompletionRequest(text, offset))
    return [(s.text, s.replace) for s in result.suggestions]


def test_single_line_mid_line() -> None:
    text = "print()\n"
    assert complete(["'hi')\nprint('again')"], text, 6) == [("'hi')", 1)]


def test_multiline_on_an_empty_line() -> None:
    text = "def f():\n    \n"
    assert complete(["return 1\n    # done\n\n"], text, 13) == [("return 1\n    # done", 0)]


def test_multiline_never() -> None:
    text = "def f():\n    \n"
    assert complete(["return 1\n    # done"], text, 13, multiline="never") == [("return 1", 0)]


def test_candidates_are_ranked_and_deduplicated() -> None:
    got = complete(["a", "b", "a"], "x = \n", 4, num_candidates=3)
    assert got == [("a", 0), ("b", 0)]


def test_prompt_uses_template_path_and_budget() -> None:
    backend = FakeBackend(["1"])
    engine = CompletionEngine(backend, options(context_tokens=64))
    text = "".join(f"line{i}\n" for i in range(100)) + "x = "
    engine.complete(CompletionRequest(text, len(text), path="pkg/a.py"))
    request = backend.requests[0]
    assert request.prompt.startswith("<|file_sep|>pkg/a.py\n<|fim_suffix|>")
    assert request.prompt.endswith("x = <|fim_middle|>")
    assert len(request.prompt) < 64 + 60
    assert request.single_line


def test_cancelled_before_start_returns_nothing() -> None:
    cancel = threading.Event()
    cancel.set()
    engine = CompletionEngine(FakeBackend(["a"]))
    result = engine.complete(CompletionRequest("x = ", 4), cancel)
    assert result.cancelled and result.suggestions == []


def test_timings_are_reported() -> None:
    engine = CompletionEngine(FakeBackend(["a"]))
    result = engine.complete(CompletionRequest("x = ", 4))
    assert {"prompt", "total"} <= set(result.timings_ms)


def test_prompt_is_capped_by_the_model_window() -> None:
    backend = FakeBackend(["1"])
    backend.context_window = 200
    engine = CompletionEngine(backend, options(context_tokens=1024, max_new_tokens=50))
    text = "".join(f"line{i}\n" for i in range(100))
    engine.complete(CompletionRequest(text, len(text)))
    assert len(backend.encode(backend.requests[0].prompt)) + 50 <= 200


def test_same_context_comes_from_the_cache() -> None:
    backend = FakeBackend(["range(3)"])
    engine = CompletionEngine(backend, options())
    first = engine.complete(CompletionRequest("x = \n", 4))
    again = engine.complete(CompletionRequest("x = \n", 4))
    assert first.source == "model" and again.source == "cache"
    assert again.suggestions == first.suggestions and len(backend.requests) == 1


def test_typing_a_suggestion_out_needs_no_model() -> None:
    backend = FakeBackend(["range(3)"])
    engine = CompletionEngine(backend, options())
    engine.complete(CompletionRequest("x = \n", 4))
    assert engine.lookup(CompletionRequest("x = ran\n", 7)) is not None
    result = engine.complete(CompletionRequest("x = ran\n", 7))
    assert result.source == "typed_through" and [s.text for s in result.suggestions] == ["ge(3)"]
    assert len(backend.requests) == 1
    other = engine.complete(CompletionRequest("x = len\n", 7))
    assert other.source == "model" and len(backend.requests) == 2


def test_new_options_empty_the_cache() -> None:
    backend = FakeBackend(["range(3)"])
    engine = CompletionEngine(backend, options())
    engine.complete(CompletionRequest("x = \n", 4))
    engine.options = options(max_new_tokens=8)
    assert engine.lookup(CompletionRequest("x = \n", 4)) is None


def test_document_key_and_time_budget_reach_the_backend() -> None:
    backend = FakeBackend(["1"])
    engine = CompletionEngine(backend, options(max_latency_ms=500.0))
    engine.complete(CompletionRequest("x = \n", 4, path="src/a.py"))
    [request] = backend.requests
    assert request.cache_key == "src/a.py"
    assert request.time_budget_ms is not None and 0 < request.time_budget_ms <= 500


def test_a_block_request_carries_the_block_cuts_and_a_line_request_none() -> None:
    body = "def f(x):\n    y = 1\n    \n    return y\n"
    fake = FakeBackend(["z = 2\n    w = 3\n"])
    engine = CompletionEngine(fake, EngineOptions())
    engine.complete(CompletionRequest(body, body.index("    \n") + 4, "a.py"))
    cut = fake.requests[-1].block_cut
    assert cut is not None and cut("z = 2\n    w = 3\n") == "z = 2"  # one statement there
    engine.complete(CompletionRequest("x = fo\n", 6, "a.py"))  # mid-line: the line only
    assert fake.requests[-1].block_cut is None
    raw = CompletionEngine(fake, EngineOptions(raw=True))
    raw.complete(CompletionRequest(body, body.index("    \n") + 4, "b.py"))
    assert fake.requests[-1].block_cut is None  # nothing is cut
