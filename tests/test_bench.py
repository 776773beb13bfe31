"""`wisp bench`: the simulated typing, the figures, and a real run against a tiny model."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lsp_server.bench.replay import Recording
from lsp_server.bench.report import latency_block, percentile, plot, summarize, table
from lsp_server.bench.script import (
    MAX_TYPED,
    follow_ghost_text,
    keystrokes,
    pick_holes,
    sessions,
    with_holes_emptied,
)

SOURCE = "\n".join(
    f"    value_{i} = compute_something({i}, other={i * 2})" if i % 3 else "" for i in range(60)
)


def test_holes_are_real_lines_far_apart() -> None:
    holes = pick_holes(SOURCE, 4, random.Random(1))
    lines = SOURCE.split("\n")
    assert len(holes) == 4
    for hole in holes:
        assert lines[hole.line] == hole.indent + lines[hole.line].lstrip()
        assert lines[hole.line].lstrip().startswith(hole.content)
        assert len(hole.content) <= MAX_TYPED and hole.indent == "    "
    numbers = sorted(h.line for h in holes)
    assert all(b - a >= 10 for a, b in itertools.pairwise(numbers))


def test_emptied_holes_keep_indentation_and_line_count() -> None:
    holes = pick_holes(SOURCE, 2, random.Random(2))
    text = with_holes_emptied(SOURCE, holes)
    lines = text.split("\n")
    assert len(lines) == len(SOURCE.split("\n"))
    assert all(lines[h.line] == "    " for h in holes)


def test_each_document_has_its_own_name_and_holes() -> None:
    plan = sessions(SOURCE, "demo.py", 3, 2, seed=0)
    assert [s.name for s in plan] == ["bench0_demo.py", "bench1_demo.py", "bench2_demo.py"]
    assert len({tuple(h.line for h in s.holes) for s in plan}) > 1


def test_keystrokes_type_the_content_with_corrected_typos() -> None:
    content = "result = compute_something(value, other)"
    lengths = []
    for seed in range(10):
        strokes = keystrokes(content, random.Random(seed))
        typed: list[str] = []
        for stroke in strokes:
            if stroke.char == "\b":
                typed.pop()
            else:
                typed.append(stroke.char)
        assert "".join(typed) == content
        assert all(0 < s.pause_s < 1 for s in strokes)
        lengths.append(len(strokes))
    assert max(lengths) > len(content)  # typos happen, and get fixed
    assert all(s.pause_s == 0 for s in keystrokes(content, random.Random(0), pause_scale=0))


@pytest.mark.parametrize(
    ("shown", "expected"), [("range(10)", "ran"), ("ab", "ab"), ("x\ny", "x"), ("", "")]
)
def test_follow_ghost_text(shown: str, expected: str) -> None:
    assert follow_ghost_text(shown) == expected


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([1.0], 95, 1.0), ([1.0, 2.0, 3.0, 4.0, 5.0], 50, 3.0), ([0.0, 10.0], 95, 9.5)],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_latency_block_and_summary() -> None:
    assert latency_block([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None, "n": 0}
    recording = Recording(
        samples=[("cold", 200.0), ("warm", 40.0), ("warm", 60.0), ("typed_through", 2.0)],
        stats_before={"engine_ms_total": 100.0},
        stats_after={
            "engine_ms_total": 380.0,
            "model": {"prefill_tokens_per_s": 700.0, "decode_tokens_per_s": 180.0},
        },
        peak_rss_mb=321.0,
    )
    summary = summarize(recording, {"prefill_tokens_per_s": 1.0, "decode_tokens_per_s": 2.0})
    assert summary["warm"] == {"p50_ms": 50.0, "p95_ms": 59.0, "p99_ms": 59.8, "n": 2}
    assert summary["jump"]["n"] == 0 and summary["cold"]["p50_ms"] == 200.0
    assert summary["warm_p50_over_cold_p50"] == 0.25
    assert summary["first"]["n"] == 0 and summary["first_over_cold_p50"] is None
    assert summary["overhead_ratio"] == pytest.approx(302 / 280, abs=1e-3)
    assert summary["peak_rss_mb"] == 321.0
    assert summary["served_decode_tokens_per_s"] == 180.0
    assert summary["served_prefill_tokens_per_s"] == 700.0
    assert "typed_through" in table(summary) and "served_decode_tokens_per_s" in table(summary)
    assert summarize(Recording(samples=[("warm", 1.0)]), {})["overhead_ratio"] is None
    assert summary["server_p50_ms"] is None and summary["warm_p50_over_server_p50"] is None


def test_jumps_are_grouped_by_how_far_the_cursor_moved() -> None:
    recording = Recording(jumps=[(-30, 10.0), (-5, 30.0), (12, 50.0), (39, 70.0), (40, 90.0)])
    blocks = summarize(recording, {})["jump_by_distance"]
    assert {k: (b["n"], b["p50_ms"]) for k, b in blocks.items()} == {
        "up": (2, 20.0),
        "down_near": (2, 60.0),
        "down_far": (1, 90.0),
    }
    assert "jump down far" in table(summarize(recording, {}))


def test_summary_against_a_serving_engine() -> None:
    after = {"engine_ms_total": 1.0, "server_latency_ms": {"p50": 40.0, "p95": 90.0}}
    recording = Recording(
        samples=[("warm", 42.0), ("warm", 46.0)],
        stats_after={**after, "server_overhead_p50": 1.04},
    )
    summary = summarize(recording, {})
    assert summary["server_p50_ms"] == 40.0
    assert summary["warm_p50_over_server_p50"] == 1.1
    assert summary["server_overhead_p50"] == 1.04
    assert "warm_p50_over_server_p50" in table(summary)


@pytest.mark.slow
def test_bench_runs_against_the_real_server(x_model: Path, tmp_path: Path) -> None:
    done, summary = _replay_command(
        "bench", x_model, tmp_path, "--documents", "2", "--holes", "2", "--pause-scale", "0"
    )
    for kind in ("cold", "warm", "jump", "typed_through"):
        assert set(summary[kind]) == {"p50_ms", "p95_ms", "p99_ms", "n"}
    assert summary["first"]["n"] == summary["cold"]["n"] == 1 and summary["jump"]["n"] == 2
    assert sum(block["n"] for block in summary["jump_by_distance"].values()) == 2
    assert summary["first_over_cold_p50"] > 0
    # the x model suggests "xxxx": only a typed "x" follows it, which the bench does on purpose
    assert summary["warm"]["n"] > 20 and summary["typed_through"]["n"] > 0
    assert summary["decode_tokens_per_s"] > 0 and summary["prefill_tokens_per_s"] > 0
    assert summary["overhead_ratio"] is not None and summary["overhead_ratio"] >= 1.0
    assert summary["peak_rss_mb"] > 50
    assert "p50 ms" in done.stdout


def test_speed_line_of_the_local_model(random_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    command = [sys.executable, "-m", "lsp_server.cli", "bench", "--speed", "--model"]
    command += [str(random_model), "--speed-tokens", "40", "--speed-steps", "3", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())["wisp"]
    assert figures["prefill_tokens"] == 40 and figures["decode_tokens_per_s"] > 0
    assert figures["rows"] == 4 and figures["rows_step_ms"] > 0 and figures["rows_over_one"] > 0
    assert done.stdout.startswith("wisp ") and "tok/s" in done.stdout
    assert "ms for 4 rows" in done.stdout
    remote = [*command, "--settings", '{"backend": "openai", "endpoint": "http://127.0.0.1:9"}']
    refused = subprocess.run(remote, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "local runtime" in refused.stderr


@pytest.mark.slow
def test_soak_reports_rounds_memory_and_drift(x_model: Path, tmp_path: Path) -> None:
    done, report = _replay_command(
        "soak", x_model, tmp_path, "--rounds", "3", "--documents", "2", "--holes", "1"
    )
    assert [row["round"] for row in report["rounds"]] == [1, 2, 3]
    assert all(row["requests"] > 5 and row["rss_mb"] > 50 for row in report["rounds"])
    assert report["requests"] == sum(row["requests"] for row in report["rounds"])
    assert report["rss_growth_after_warmup_pct"] is not None
    assert "RSS growth after round 1" in done.stdout


def _replay_command(
    command: str, model: Path, tmp_path: Path, *options: str
) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Run `wisp bench` or `wisp soak` on a small file; its JSON report (its plot is checked)."""
    out, picture = tmp_path / f"{command}.json", tmp_path / f"{command}.png"
    source = tmp_path / "demo.py"
    source.write_text(SOURCE + "\n")
    settings = json.dumps({"model": str(model), "maxNewTokens": 4})
    done = subprocess.run(
        [
            *(sys.executable, "-m", "lsp_server.cli", command, "--file", str(source)),
            *("--settings", settings, *options, "--json", str(out), "--plot", str(picture)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return done, json.loads(out.read_text())


@pytest.mark.parametrize("engines", [("wisp",), ("wisp", "llama.cpp")])
def test_plot_draws_every_engine_in_one_figure(engines: tuple[str, ...], tmp_path: Path) -> None:
    rng = random.Random(0)
    typical = {"cold": 1500.0, "warm": 3.0, "jump": 1500.0, "typed_through": 3.0}
    samples = {
        engine: [
            (kind, ms * rng.uniform(0.5, 4.0)) for kind, ms in typical.items() for _ in range(20)
        ]
        for engine in engines
    }
    out = tmp_path / "latency-by-kind.png"
    plot(samples, out, "synthetic replay")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.iterdir()) == [out]  # one file, whatever the number of engines


def test_side_by_side_table_and_remote_settings() -> None:
    from lsp_server.bench.against import remote_settings, side_by_side

    block = {"p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": 30.0, "n": 3}
    empty = {"p50_ms": None, "p95_ms": None, "p99_ms": None, "n": 0}
    local = {kind: block for kind in ("cold", "warm", "jump", "typed_through", "cache")}
    llama = {**local, "warm": {**block, "p50_ms": 40.0}, "jump": empty, "ready_ms": 900.0}
    table_text = side_by_side(local, llama)
    assert "warm p50_ms" in table_text and "0.25" in table_text  # 10 / 40
    jump = next(line for line in table_text.splitlines() if line.startswith("jump p50_ms"))
    assert jump.split()[-2:] == ["-", "-"]
    settings = remote_settings({"maxNewTokens": 16, "remoteOptions": {"top_k": 1}}, "http://h/v1")
    assert settings == {
        "maxNewTokens": 16,
        "backend": "openai",
        "endpoint": "http://h/v1",
        "remoteOptions": {"repeat_penalty": 1.0, "top_k": 1},
    }


def test_against_needs_a_llama_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lsp_server.bench import against

    monkeypatch.delenv(against.LLAMA_PYTHON_ENV, raising=False)
    monkeypatch.setattr(against, "DEFAULT_LLAMA_PYTHON", tmp_path / "missing" / "python")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # not importable here
    with pytest.raises(against.AgainstError, match="llama-cpp-python"):
        against.llama_python(None)
    assert against.llama_python(sys.executable) == sys.executable
