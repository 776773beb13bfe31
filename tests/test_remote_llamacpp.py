"""The remote backend against a real llama.cpp server (llama-cpp-python's) on loopback.

The server runs the bundled model's GGUF from its own venv, made by .ci/install-llama-server
(a source build, cached). Without that venv these tests are skipped, unless
WISP_REQUIRE_LLAMA_SERVER is set (CI sets it), when they fail instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lsp_server.bench import against
from lsp_server.bench.against import free_port
from model_runtime.backend import BackendUnavailable, GenerationRequest, SamplingParams
from model_runtime.engine import CompletionEngine, CompletionRequest, EngineOptions
from model_runtime.models.names import BUNDLED_MODEL
from model_runtime.remote import RemoteBackend, RemoteOptions, load_remote
from tests.raw_client import RawClient

CACHE = Path(os.environ.get("WISP_CI_CACHE") or Path.home() / ".cache" / "wisp-ci")
SERVER_PYTHON = Path(
    os.environ.get("WISP_LLAMA_SERVER_PYTHON") or CACHE / "llama-server" / "bin" / "python"
)
REQUIRED = bool(os.environ.get("WISP_REQUIRE_LLAMA_SERVER"))
GREEDY = {"repeat_penalty": 1.0}  # llama-cpp-python's default is 1.1, even at temperature 0

CODE = "import math\n\n\ndef circle_area(radius):\n    return "
LONG = SamplingParams(max_new_tokens=300, num_candidates=1, seed=0)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _server_installed() -> None:
    if not SERVER_PYTHON.exists():
        why = f"no llama.cpp server at {SERVER_PYTHON}: run .ci/install-llama-server"
        (pytest.fail if REQUIRED else pytest.skip)(why)


@contextmanager
def llama_server(
    port: int, *extra: str, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m llama_cpp.server` on the bundled GGUF at `port`, up and answering."""
    with against.llama_server(str(SERVER_PYTHON), BUNDLED_MODEL, 2, log, port, extra) as (
        _,
        process,
    ):
        yield process


def _backend(port: int, **kw) -> RemoteBackend:
    options = {"extra_body": GREEDY, "timeout_s": 30.0, **kw}
    return load_remote(RemoteOptions("openai", f"http://127.0.0.1:{port}/v1", **options))


@pytest.fixture(scope="module")
def server_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    with llama_server(port, log=tmp_path_factory.mktemp("llama") / "server.log"):
        yield port


def test_a_completion_from_the_real_server(server_port: int) -> None:
    backend = _backend(server_port)
    assert backend.model == "SmolLM2-135M-Instruct.Q4_1"  # asked of the server
    assert backend.template.name == "prefix-only"
    engine = CompletionEngine(backend, EngineOptions(multiline="never", max_latency_ms=60000))
    result = engine.complete(CompletionRequest(CODE, len(CODE), "area.py"))
    assert result.suggestions and "radius" in result.suggestions[0].text
    # llama-cpp-python 0.3.36 streams per-token log-probabilities even without logits_all
    assert backend.logprobs and 0 < result.suggestions[0].confidence < 1


def test_streaming_stops_at_the_end_of_the_line(server_port: int) -> None:
    backend = _backend(server_port)
    request = GenerationRequest(CODE, LONG, single_line=True)
    [candidate] = backend.generate(request, threading.Event()).candidates
    assert candidate.stop_reason == "newline"
    assert candidate.text.count("\n") == 1 and len(candidate.token_ids) < 300
    # the server dropped the closed stream: the next request is answered in full
    [again] = backend.generate(request, threading.Event()).candidates
    assert again.text == candidate.text


def test_cancel_mid_stream(server_port: int) -> None:
    backend = _backend(server_port)
    cancel = threading.Event()
    seen = threading.Event()
    pieces: list[str] = []
    original = backend._take

    def watch(events, choices, criteria):  # cancel once the first text has arrived
        done = original(events, choices, criteria)
        if choices[0].state.text:
            pieces.append(choices[0].state.text)
            seen.set()
            cancel.set()
        return done

    backend._take = watch  # type: ignore[method-assign]
    request = GenerationRequest("# a long list of names\nnames = [\n", LONG)
    [candidate] = backend.generate(request, cancel).candidates
    assert seen.is_set() and candidate.stop_reason == "cancelled"
    assert len(candidate.token_ids) < 300
    backend._take = original  # type: ignore[method-assign]
    assert backend.generate(GenerationRequest(CODE, LONG, single_line=True), threading.Event())


def test_a_wrong_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("WISP_TEST_RIGHT_KEY", "right-key")
    monkeypatch.setenv("WISP_TEST_WRONG_KEY", "wrong-key")
    with llama_server(port, "--api_key", "right-key", log=tmp_path / "server.log"):
        wrong = _backend(port, model="m", api_key_env="WISP_TEST_WRONG_KEY")
        with pytest.raises(BackendUnavailable, match="401") as failure:
            wrong.generate(GenerationRequest(CODE, LONG, single_line=True), threading.Event())
        assert "wrong-key" not in str(failure.value)
        right = _backend(port, api_key_env="WISP_TEST_RIGHT_KEY")
        [candidate] = right.generate(
            GenerationRequest(CODE, LONG, single_line=True), threading.Event()
        ).candidates
    assert candidate.text.strip()


def _status_after(client: RawClient, count: int) -> list[str]:
    states = [m["params"]["state"] for m in client.notifications("wisp/status")]
    return states[count:]


def _inline(client: RawClient, uri: str, line: int, character: int) -> list[str]:
    answer = client.response(
        client.request(
            "textDocument/inlineCompletion",
            {
                "textDocument": {"uri": uri},
                "position": {"line": line, "character": character},
                "context": {"triggerKind": 1},
            },
        ),
        timeout=60,
    )
    return [item["insertText"] for item in answer["result"]["items"]]


def test_through_wisp_serve_a_killed_server_costs_one_empty_answer(tmp_path: Path) -> None:
    """The editor's view: kill the engine mid-request, then bring it back on the same port."""
    port = free_port()
    settings = {
        "backend": "openai",
        "endpoint": f"http://127.0.0.1:{port}/v1",
        "remoteOptions": GREEDY,
        "maxLatencyMs": 60000,  # a busy 2-core machine must not turn slowness into failures
        "timeoutMs": 60000,
        "multiline": "never",
    }
    log = tmp_path / "server.log"
    with llama_server(port, log=log) as engine:
        client = RawClient(stderr_path=tmp_path / "wisp.log")
        try:
            client.initialize(settings)
            assert client.wait_status("ready", "error", timeout=30)["state"] == "ready"
            lines = CODE.split("\n")
            uri = "file:///w/area.py"
            client.open(uri, CODE)
            assert _inline(client, uri, len(lines) - 1, len(lines[-1]))  # works
            statuses = len(client.notifications("wisp/status"))
            # a long answer (a block of up to 500 tokens) in flight when the engine dies
            longer = {**settings, "multiline": "always", "maxNewTokens": 500}
            client.notify("workspace/didChangeConfiguration", {"settings": {"wisp": longer}})
            client.open("file:///w/list.py", "names = [\n")
            pending = client.request(
                "textDocument/inlineCompletion",
                {
                    "textDocument": {"uri": "file:///w/list.py"},
                    "position": {"line": 1, "character": 0},
                    "context": {"triggerKind": 1},
                },
            )
            time.sleep(0.5)
            engine.send_signal(signal.SIGKILL)
            engine.wait()
            assert client.response(pending, timeout=60)["result"]["items"] == []
            assert _status_after(client, statuses) == ["error"]
            client.notify("workspace/didChangeConfiguration", {"settings": {"wisp": settings}})
        except BaseException:
            client.close()
            raise
    try:
        with llama_server(port, log=log):
            assert _inline(client, uri, len(lines) - 1, len(lines[-1]))  # the first one back
            assert _status_after(client, statuses) == ["error", "ready"]
        assert client.finish() == 0
    finally:
        client.close()
    messages = [m["params"]["message"] for m in client.notifications("wisp/status")]
    assert any("connection refused" in m for m in messages), messages
    assert "Traceback" not in (tmp_path / "wisp.log").read_text()


def test_bench_against_llama_cpp_side_by_side(tmp_path: Path) -> None:
    """`wisp bench --against llama.cpp`: the same replay through both, one JSON."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "lsp_server.cli", "bench", "--documents", "1"),
            *("--holes", "1", "--pause-scale", "0", "--json", str(out)),
            *("--against", "llama.cpp", "--llama-python", str(SERVER_PYTHON)),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    both = json.loads(out.read_text())
    local, llama = both["local"], both["llama.cpp"]
    assert local["first"]["n"] == llama["first"]["n"] == 1
    assert local["warm"]["n"] > 5 and llama["warm"]["n"] > 5
    assert local["decode_tokens_per_s"] > 0 and llama["decode_tokens_per_s"] is None
    assert llama["settings"]["backend"] == "openai" and llama["server_p50_ms"] > 0
    assert llama["server_peak_rss_mb"] > 0 and local["server_p50_ms"] is None
    assert "llama.cpp" in done.stdout and "warm p50_ms" in done.stdout


def test_speed_lines_for_wisp_and_llama_cpp_on_the_same_file(tmp_path: Path) -> None:
    """`wisp bench --speed --against llama.cpp`: one line per engine, both figures positive."""
    out = tmp_path / "speed.json"
    command = [sys.executable, "-m", "lsp_server.cli", "bench", "--speed", "--against"]
    command += ["llama.cpp", "--llama-python", str(SERVER_PYTHON), "--json", str(out)]
    command += ["--speed-tokens", "64", "--speed-steps", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    for engine in ("wisp", "llama.cpp"):
        assert figures[engine]["prefill_tokens"] == 64
        assert figures[engine]["prefill_tokens_per_s"] > 0
        assert figures[engine]["decode_tokens_per_s"] > 0
        assert done.stdout.count(f"{engine} ") == 1
