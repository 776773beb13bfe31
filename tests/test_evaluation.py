"""`wisp eval`: metrics, hole cutting, test execution, dataset placement, and the command."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from lsp_server.cli import main
from model_runtime.context import cursor_context
from model_runtime.evaluation.datasets import load_tasks, read_jsonl
from model_runtime.evaluation.execution import program_for, run_python
from model_runtime.evaluation.holes import SourceFile, cut_holes, cut_range
from model_runtime.evaluation.metrics import (
    edit_similarity,
    exact_match,
    levenshtein,
    scored_part,
)
from model_runtime.evaluation.report import gate
from model_runtime.evaluation.runner import Sample, Scores, score

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HUMANEVAL = DATA / "human-eval-infilling" / "HumanEval-SingleLineInfilling.jsonl.gz"
SANTACODER = DATA / "santacoder-fim" / "santacoder-fim-task.jsonl.gz"


def needs(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.is_file(), reason=f"benchmark data missing: {path}")


@pytest.mark.parametrize(
    ("a", "b", "distance", "similarity"),
    [
        ("", "", 0, 100.0),
        ("abc", "abc", 0, 100.0),
        ("abc", "", 3, 0.0),
        ("", "abc", 3, 0.0),
        ("abc", "abd", 1, 100 * (1 - 1 / 3)),
        ("flaw", "lawn", 2, 50.0),
        ("kitten", "sitting", 3, 100 * (1 - 3 / 7)),
        ("return x", "return y", 1, 87.5),
    ],
)
def test_edit_distance_and_similarity(a: str, b: str, distance: int, similarity: float) -> None:
    assert levenshtein(a, b) == levenshtein(b, a) == distance
    assert edit_similarity(a, b) == pytest.approx(similarity)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("x = 1", "x = 1", 100.0),
        ("  x = 1  ", "x = 1", 100.0),
        ("x=1", "x = 1", 0.0),
        ("", "x", 0.0),
        ("", "", 100.0),
    ],
)
def test_exact_match(prediction: str, reference: str, expected: float) -> None:
    assert exact_match(prediction, reference) == expected


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        ("a\nb", "a", "a"),
        ("a\nb", "a\nc", "a\nb"),
        ("", "a", ""),
    ],
)
def test_scored_part_is_the_first_line_for_one_line_references(
    completion: str, reference: str, expected: str
) -> None:
    assert scored_part(completion, reference) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("x", range(0, 1)),
        ("    return x", range(4, 12)),
        ("\tif a:  \r", range(1, 6)),
    ],
)
def test_cut_range_starts_after_the_indentation(line: str, expected: range) -> None:
    assert cut_range(line) == expected


FILES = [
    SourceFile(
        "a.py", "import os\n\n\ndef f(x):\n    if x:\n        return os.sep\n    return x\n"
    ),
    SourceFile("pkg/b.py", "class C:\r\n\tdef g(self):\r\n\t\tpass  \r\n"),
    SourceFile("empty.py", "\n   \n"),
]


def test_holes_are_deterministic_for_a_seed() -> None:
    assert cut_holes(FILES, 6, seed=1) == cut_holes(FILES, 6, seed=1)
    assert cut_holes(FILES, 6, seed=1) != cut_holes(FILES, 6, seed=2)


def test_holes_rebuild_the_file_and_never_cut_inside_indentation() -> None:
    texts = {f.path: f.text for f in FILES}
    tasks = cut_holes(FILES, 100, seed=0)
    assert len(tasks) == 8  # every non-blank line once, and no more
    assert len({t.task_id.rsplit(":", 1)[0] for t in tasks}) == 8
    for task in tasks:
        assert task.prefix + task.reference + task.suffix == texts[task.path]
        ctx = cursor_context(task.prefix + task.suffix, len(task.prefix))
        line = ctx.line_prefix + ctx.line_suffix
        indentation = len(line) - len(line.lstrip())
        assert len(ctx.line_prefix) >= indentation
        assert task.reference.strip() and task.reference == task.reference.rstrip()
        assert not ctx.line_suffix.strip()  # the hole is the rest of the line
        assert task.language == "python"


def test_execution_passes_fails_and_times_out() -> None:
    assert run_python("assert sum([1, 2]) == 3\n", timeout_s=10).outcome == "passed"
    failed = run_python("assert 1 == 2\n", timeout_s=10)
    assert failed.outcome == "failed"
    assert "AssertionError" in failed.stderr_tail
    assert run_python("while True:\n    pass\n", timeout_s=0.5).outcome == "timeout"


@pytest.mark.parametrize(
    ("variant", "mode"),
    [("SingleLine", "never"), ("MultiLine", "always"), ("RandomSpan", "auto")],
)
def test_humaneval_tasks_rebuild_the_benchmark_program(variant: str, mode: str) -> None:
    path = HUMANEVAL.with_name(f"HumanEval-{variant}Infilling.jsonl.gz")
    if not path.is_file():
        pytest.skip(f"benchmark data missing: {path}")
    records = list(read_jsonl(path))
    tasks = load_tasks("humaneval-infilling", path)
    assert len(tasks) == len(records)
    for record, task in zip(records, tasks, strict=True):
        original = record["prompt"] + record["canonical_solution"] + record["suffix"]
        assert task.prefix + task.reference + task.suffix == original
        assert task.multiline == mode
    if variant == "SingleLine":
        assert all("\n" not in task.reference for task in tasks)


# 112 is a line whose removal still passes the tests: it belongs to the floor.
@needs(HUMANEVAL)
@pytest.mark.parametrize("index", [0, 5, 112])
def test_canonical_middles_pass_and_empty_ones_score_as_an_empty_middle(index: int) -> None:
    record = list(read_jsonl(HUMANEVAL))[index]
    task = load_tasks("humaneval-infilling", HUMANEVAL, limit=index + 1)[index]
    assert score(task, task.reference, 0, timeout_s=10) == Scores(100.0, 100.0, True)
    empty_middle = program_for(task, record["prompt"] + record["suffix"])
    assert empty_middle is not None
    floor = score(task, "", 0, timeout_s=10)
    assert (floor.exact_match, floor.edit_similarity) == (0.0, 0.0)
    assert floor.passed == run_python(empty_middle, timeout_s=10).passed == (index == 112)


@needs(SANTACODER)
def test_santacoder_cursor_sits_on_the_empty_middle_line() -> None:
    tasks = load_tasks("santacoder-fim", SANTACODER, limit=20, language="py")
    assert len(tasks) == 20
    for task in tasks:
        ast.parse(task.prefix + task.reference + task.suffix)
        ctx = cursor_context(task.prefix + task.suffix, len(task.prefix))
        assert (ctx.line_prefix, ctx.line_suffix) == ("", "")
        assert task.language == "python"


def run_eval(model: Path, tmp_path: Path, *args: str) -> tuple[dict, list[dict]]:
    summary_path, samples_path = tmp_path / "summary.json", tmp_path / "samples.jsonl"
    argv = ["eval", *args, "--model", str(model), "--max-new-tokens", "4", "--device", "cpu"]
    assert main([*argv, "--json", str(summary_path), "--samples", str(samples_path)]) == 0
    samples = [json.loads(line) for line in samples_path.read_text().splitlines()]
    return json.loads(summary_path.read_text()), samples


SUMMARY_KEYS = {
    "dataset",
    "n",
    "exact_match",
    "edit_similarity",
    "floor",
    "mean_latency_ms",
    "p50_latency_ms",
    "model",
    "settings",
    "gate",
}


@needs(HUMANEVAL)
def test_eval_humaneval_end_to_end(
    x_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--dataset", "humaneval-infilling", "--path", str(HUMANEVAL), "--limit", "5"]
    summary, samples = run_eval(x_model, tmp_path, *args)
    assert set(summary) == SUMMARY_KEYS | {"pass_at_1"}
    assert summary["n"] == len(samples) == 5
    assert set(summary["floor"]) == {"exact_match", "edit_similarity", "pass_at_1"}
    assert summary["settings"]["multiline"] == "never"
    assert all(s["completion"] == "xxxx" for s in samples)
    assert "pass@1" in capsys.readouterr().out


@needs(SANTACODER)
def test_eval_santacoder_end_to_end(x_model: Path, tmp_path: Path) -> None:
    args = ["--dataset", "santacoder-fim", "--path", str(SANTACODER), "--limit", "5"]
    summary, samples = run_eval(x_model, tmp_path, *args, "--language", "java")
    assert set(summary) == SUMMARY_KEYS
    assert summary["n"] == len(samples) == 5
    assert summary["settings"]["language"] == "java"
    assert summary["exact_match"] == summary["floor"]["exact_match"] == 0.0


def test_eval_repo_end_to_end(x_model: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for file in FILES:
        (tree / file.path).parent.mkdir(parents=True, exist_ok=True)
        (tree / file.path).write_text(file.text, encoding="utf-8", newline="")
    args = ["--dataset", "repo", "--path", str(tree), "--limit", "5", "--seed", "3"]
    summary, samples = run_eval(x_model, tmp_path, *args)
    assert set(summary) == SUMMARY_KEYS
    assert summary["n"] == len(samples) == 5
    assert summary["settings"]["seed"] == 3


def test_eval_cross_file_holes_with_the_tree_open(x_model: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg/shapes.py").write_text("def area(r):\n    return 3 * r * r\n")
    (tree / "pkg/main.py").write_text(
        "from pkg.shapes import area\n\n\ndef total(rs):\n    return sum(area(r) for r in rs)\n"
    )
    args = ["--dataset", "repo", "--path", str(tree), "--holes", "cross-file", "--open", "tree"]
    summary, samples = run_eval(x_model, tmp_path, *args, "--warm")
    assert set(summary) == SUMMARY_KEYS | {"warm_p50_ms", "warm_reused_tokens_mean"}
    assert summary["settings"]["holes"] == "cross-file" and summary["settings"]["open"] == "tree"
    assert summary["n"] == len(samples) == 2  # the two lines of main.py that use `area`
    assert all("area" in s["reference"] and s["warm_latency_ms"] > 0 for s in samples)


def test_eval_raw_turns_ranking_and_trimming_off(x_model: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for file in FILES:
        (tree / file.path).parent.mkdir(parents=True, exist_ok=True)
        (tree / file.path).write_text(file.text, encoding="utf-8", newline="")
    args = ["--dataset", "repo", "--path", str(tree), "--limit", "5", "--raw"]
    summary, samples = run_eval(x_model, tmp_path, *args)
    assert set(summary) == SUMMARY_KEYS - {"gate"}  # no gate without ranking
    assert summary["settings"]["raw"] is True
    assert all(s["completion"] == "xxxx" for s in samples)


def test_gate_summary_counts_hidden_answers_as_empty() -> None:
    hit, miss = Scores(100.0, 100.0, None), Scores(0.0, 40.0, None)
    floor = Scores(0.0, 0.0, None)
    samples = [
        Sample("a", "x", "x", hit, floor, 1.0, 0.9),
        Sample("b", "y", "x", miss, floor, 1.0, 0.01),
        Sample("c", "", "x", floor, floor, 1.0, None),
    ]
    g = gate(samples, 0.5)
    assert g["shown"] == pytest.approx(100 / 3, abs=0.01)
    assert g["of_shown"] == {"exact_match": 100.0, "edit_similarity": 100.0}
    assert g["all_tasks"]["edit_similarity"] == pytest.approx(100 / 3, abs=0.01)


def test_eval_reports_a_missing_dataset(x_model: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl.gz"
    argv = ["eval", "--dataset", "santacoder-fim", "--path", str(missing), "--model", str(x_model)]
    assert main(argv) == 2
