"""The remote backend against a scripted server: retries, failures, cancel, TLS, keys, reuse."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from model_runtime.backend import (
    BackendUnavailable,
    GenerationRequest,
    ModelLoadError,
    SamplingParams,
)
from model_runtime.engine import CompletionEngine, CompletionRequest, EngineOptions
from model_runtime.remote import RemoteBackend, RemoteOptions, load_remote
from model_runtime.remote.apis import Api
from tests.remote_stub import die_after, raw_lines, sse, status, stub_server

PARAMS = SamplingParams(max_new_tokens=16, num_candidates=1, seed=0)


def _backend(url: str, api: Api = "openai", **kw) -> RemoteBackend:
    return load_remote(RemoteOptions(api, url, **{"model": "stub-model", **kw}))


def _ask(backend: RemoteBackend, budget_ms: float | None = 3000, **kw) -> list[str]:
    request = GenerationRequest("x = ", PARAMS, time_budget_ms=budget_ms, **kw)
    result = backend.generate(request, threading.Event())
    return [c.text for c in result.candidates]


def test_a_stream_becomes_a_scored_candidate_on_a_kept_connection() -> None:
    with stub_server(default=sse(["1", " + ", "2"])) as (url, record, _):
        backend = _backend(url)
        request = GenerationRequest("x = ", PARAMS, cache_key="a.py")
        result = backend.generate(request, threading.Event())
        again = backend.generate(request, threading.Event())
    [candidate] = result.candidates
    assert candidate.text == "1 + 2" and candidate.stop_reason == "eos"
    assert candidate.scored and candidate.logprobs == [-0.1, -0.1, -0.1]
    assert backend.decode(candidate.token_ids) == "1 + 2"
    assert [c.text for c in again.candidates] == ["1 + 2"]
    assert result.timings_ms["server"] > 0
    assert len(record.connections) == 1  # keep-alive: one connection for both
    assert record.bodies[0]["prompt"] == "x = " and record.bodies[0]["stream"] is True


def test_one_line_closes_the_stream_at_the_line_break() -> None:
    pieces = ["foo()", "\n", "bar()", *[f"\nline{i}" for i in range(200)]]
    with stub_server(default=sse(pieces, pause_s=0.01)) as (url, record, _):
        texts = _ask(_backend(url), single_line=True)
        time.sleep(0.1)
    assert texts == ["foo()\n"]  # trimming cuts the break; the stream stopped on it
    assert record.hung_up == 1 and record.chunks < 50


def test_429_and_5xx_are_retried_within_the_budget() -> None:
    script = [status(429, "busy", {"Retry-After": "0"}), status(503, "loading"), sse(["ok"])]
    with stub_server(script) as (url, record, _):
        assert _ask(_backend(url)) == ["ok"]
    assert len(record.bodies) == 3


def test_a_server_that_keeps_failing_costs_one_empty_answer_within_the_budget() -> None:
    with (
        stub_server(default=status(500, "out of memory")) as (url, record, _),
        pytest.raises(BackendUnavailable, match=r"500 .*out of memory"),
    ):
        _ask(_backend(url), budget_ms=400)
    assert 2 <= len(record.bodies) <= 4  # backoff 50, 100, 200 ms: the budget ends the tries


@pytest.mark.parametrize(
    ("behaviour", "says"),
    [
        (status(401, "Invalid API key"), "401 .*Invalid API key"),
        (status(404, "model not found"), "404"),
        (raw_lines("data: {oops"), "not JSON"),
        (raw_lines('data: {"error": {"message": "prompt too long"}}'), "prompt too long"),
        (raw_lines('data: {"object": "x"}'), "without `choices`"),
    ],
)
def test_errors_are_not_retried_and_say_why(behaviour, says: str) -> None:
    with (
        stub_server([behaviour, sse(["never"])]) as (url, record, _),
        pytest.raises(BackendUnavailable, match=says),
    ):
        _ask(_backend(url))
    assert len(record.bodies) == 1


def test_a_server_that_dies_mid_stream_then_recovers() -> None:
    with stub_server([die_after(["par"]), sse(["tial"])]) as (url, record, _):
        assert _ask(_backend(url)) == ["tial"]  # retried on a new connection, within budget
    assert len(record.bodies) == 2


def test_nothing_listening_fails_fast_and_the_next_request_tries_again() -> None:
    with stub_server(default=sse(["up"])) as (url, _, _):
        pass  # the server is gone: its port refuses connections
    backend = _backend(url)
    with pytest.raises(BackendUnavailable, match="connection refused"):
        _ask(backend)
    with stub_server(default=sse(["back"])) as (new_url, _, _):
        backend.client.endpoint = type(backend.client.endpoint).parse(new_url)
        assert _ask(backend) == ["back"]


def test_cancel_closes_a_stream_that_is_waiting_for_the_server() -> None:
    with stub_server(default=sse(["a"] * 100, pause_s=0.05)) as (url, record, _):
        backend = _backend(url)
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        request = GenerationRequest("x = ", SamplingParams(max_new_tokens=500), time_budget_ms=None)
        result = backend.generate(request, cancel)
        time.sleep(0.1)
    assert [c.stop_reason for c in result.candidates] == ["cancelled"]
    assert record.hung_up == 1 and record.chunks < 100


def test_the_deadline_returns_what_has_arrived() -> None:
    with stub_server(default=sse(["a"] * 100, pause_s=0.02)) as (url, _, _):
        request = GenerationRequest("x = ", SamplingParams(max_new_tokens=500), time_budget_ms=300)
        [candidate] = _backend(url).generate(request, threading.Event()).candidates
    assert candidate.stop_reason == "deadline" and 3 <= len(candidate.text) < 100


def test_logprobs_refused_are_dropped_once_and_ranking_goes_on_without() -> None:
    script = [status(400, "logprobs is not supported for models created with logits_all=False")]
    with stub_server(script, default=sse(["42"])) as (url, record, _):
        backend = _backend(url)
        [first] = backend.generate(GenerationRequest("x = ", PARAMS), threading.Event()).candidates
        _ask(backend)
    assert first.text == "42" and not first.scored  # not asked again, so none came
    assert [("logprobs" in b) for b in record.bodies] == [True, False, False]


def test_an_empty_stream_to_a_logprobs_request_is_taken_as_a_refusal() -> None:
    # llama-cpp-python without logits_all starts the stream, then ends it with no chunk at all
    with stub_server([raw_lines()], default=sse(["7"])) as (url, record, _):
        backend = _backend(url)
        [candidate] = backend.generate(
            GenerationRequest("x = ", PARAMS), threading.Event()
        ).candidates
    assert candidate.text == "7" and not backend.logprobs
    assert [("logprobs" in b) for b in record.bodies] == [True, False]


def test_without_logprobs_candidates_are_unscored_and_the_engine_still_shows_them() -> None:
    with stub_server(default=sse(["total = a + b"])) as (url, _, _):
        backend = _backend(url)
        backend.logprobs = False
        engine = CompletionEngine(backend, EngineOptions(multiline="never"))
        result = engine.complete(CompletionRequest("def f(a, b):\n    ", 17, "f.py"))
    assert [s.text for s in result.suggestions] == ["total = a + b"]


def test_the_api_key_comes_from_the_environment_and_never_reaches_the_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WISP_TEST_KEY", "sk-secret-123")
    caplog.set_level(logging.DEBUG)
    with stub_server([status(401, "Invalid API key")], default=sse(["y"])) as (url, record, _):
        backend = _backend(url, api_key_env="WISP_TEST_KEY")
        with pytest.raises(BackendUnavailable) as failure:
            _ask(backend)
        assert _ask(backend) == ["y"]
    assert record.headers[0]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in caplog.text and "sk-secret" not in str(failure.value)
    assert "sk-secret" not in backend.name


def test_a_missing_key_variable_or_bad_endpoint_fails_at_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WISP_NO_SUCH_KEY", raising=False)
    with pytest.raises(ModelLoadError, match=r"\$WISP_NO_SUCH_KEY"):
        load_remote(RemoteOptions("openai", "http://127.0.0.1:9", api_key_env="WISP_NO_SUCH_KEY"))
    with pytest.raises(ModelLoadError, match="http:// or https://"):
        load_remote(RemoteOptions("openai", "ftp://host/v1"))
    with pytest.raises(ModelLoadError, match="remoteModel"):
        load_remote(RemoteOptions("ollama", "http://127.0.0.1:9"))


def test_the_model_name_is_asked_of_the_server_and_picks_the_template() -> None:
    with stub_server() as (url, _, _):
        backend = load_remote(RemoteOptions("openai", url))
    assert backend.model == "stub-model" and backend.template.name == "prefix-only"
    named = load_remote(RemoteOptions("openai", "http://127.0.0.1:9", model="starcoder2-3b"))
    assert named.template.name == "starcoder2"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_is_verified_by_default(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with stub_server(default=sse(["secure"]), tls=certificate) as (url, _, _):
        with pytest.raises(BackendUnavailable, match="not trusted"):
            _ask(_backend(url))
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the user trusts it
        assert _ask(_backend(url)) == ["secure"]


def test_the_remote_path_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys\n"
        "from lsp_server.settings import Settings\n"
        "from lsp_server.loading import load_engine\n"
        "load_engine(Settings(backend='llamacpp', endpoint='http://127.0.0.1:9'))\n"
        "import lsp_server.server, lsp_server.features\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_several_choices_stream_interleaved_and_finish_apart() -> None:
    def chunk(index: int, text: str, finish: str | None = None) -> str:
        choice = {"index": index, "text": text, "finish_reason": finish}
        return "data: " + json.dumps({"choices": [choice]}) + "\n"

    lines = [chunk(0, "a = "), chunk(1, "b"), chunk(0, "1", "stop"), chunk(1, " = 2\nc")]
    with stub_server([raw_lines(*lines, "data: [DONE]")]) as (url, record, _):
        backend = _backend(url)
        backend.logprobs = False
        params = SamplingParams(max_new_tokens=16, num_candidates=2, temperature=0.5)
        request = GenerationRequest("x", params, single_line=True)
        result = backend.generate(request, threading.Event())
    assert [(c.text, c.stop_reason) for c in result.candidates] == [
        ("a = 1", "eos"),
        ("b = 2\nc", "newline"),
    ]
    assert record.bodies[0]["n"] == 2 and record.bodies[0]["temperature"] == 0.5


def test_llamacpp_infill_sends_the_parts_and_reads_its_own_stream() -> None:
    chunks = [
        {"content": "a", "stop": False, "completion_probabilities": [{"logprob": -0.5}]},
        {"content": " + b", "stop": False, "completion_probabilities": [{"logprob": -0.25}]},
        {"content": "", "stop": True, "timings": {"prompt_ms": 3, "predicted_ms": 9}},
    ]
    lines = ["data: " + json.dumps(chunk) for chunk in chunks]
    with stub_server([raw_lines(*lines)]) as (url, record, _):
        backend = load_remote(RemoteOptions("llamacpp", url.removesuffix("/v1")))
        engine = CompletionEngine(backend, EngineOptions(multiline="never"))
        text = "def add(a, b):\n    return \n\nprint(add(1, 2))\n"
        result = engine.complete(CompletionRequest(text, text.index("\n\n"), "add.py"))
    assert record.paths == ["/infill"]
    assert record.bodies[0]["input_prefix"] == "def add(a, b):\n    return "
    assert record.bodies[0]["input_suffix"].startswith("\n\nprint(add(1, 2))")
    assert [s.text for s in result.suggestions] == ["a + b"]
    assert result.suggestions[0].score == pytest.approx(-0.375)  # the tokens' mean
    assert result.timings_ms["server_reported"] == 12.0
    assert backend.template.uses_suffix  # the server writes the FIM prompt


def test_ollama_generate_streams_json_lines() -> None:
    lines = [
        json.dumps({"response": "total", "done": False}),
        json.dumps({"response": " = a + b", "done": False}),
        json.dumps({"response": "", "done": True, "done_reason": "stop", "total_duration": 5e6}),
    ]
    with stub_server([raw_lines(*lines)]) as (url, record, _):
        options = RemoteOptions("ollama", url.removesuffix("/v1"), model="qwen2.5-coder:1.5b")
        backend = load_remote(options)
        engine = CompletionEngine(backend, EngineOptions(multiline="never"))
        result = engine.complete(CompletionRequest("def f(a, b):\n    ", 17, "f.py"))
    assert record.paths == ["/api/generate"] and backend.template.name == "qwen2.5-coder"
    assert record.bodies[0]["model"] == "qwen2.5-coder:1.5b"
    assert record.bodies[0]["prompt"] == "def f(a, b):\n    " and "suffix" in record.bodies[0]
    assert [s.text for s in result.suggestions] == ["total = a + b"]
    assert result.timings_ms["server_reported"] == 5.0
