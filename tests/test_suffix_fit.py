"""Ranking by the code after the cursor: what a suggestion is scored against, and the reorder."""

from __future__ import annotations

import pytest
from fake_backend import FakeBackend

from model_runtime.backend import SamplingParams
from model_runtime.context import CursorContext
from model_runtime.engine import CompletionEngine, CompletionRequest, EngineOptions
from model_runtime.suffix_fit import CONTINUATION_CHARS, continuation, ranked_score
from model_runtime.templates import get_template


@pytest.mark.parametrize(
    ("suffix", "replace", "expected"),
    [
        ("\n    return total\n", 0, "\n    return total"),
        ("\n\n\n    return total\n\nx = 1\n", 0, "\n    return total\nx = 1"),  # blanks skipped
        (")\n    y = 2\n", 1, "\n    y = 2"),  # the `)` the suggestion replaces is not scored
        ("):\n    pass\n", 0, "):\n    pass"),  # the rest of the line first
        ("   \n", 0, ""),  # only blank space follows
        ("", 0, ""),
    ],
)
def test_continuation(suffix: str, replace: int, expected: str) -> None:
    assert continuation(CursorContext("def f(", suffix), replace) == expected


def test_continuation_is_bounded() -> None:
    suffix = "\n" + "    x = 1\n" * 100
    assert len(continuation(CursorContext("", suffix), 0)) == CONTINUATION_CHARS


def test_ranked_score_adds_the_fit() -> None:
    assert ranked_score(-0.5, None) == -0.5
    assert ranked_score(-0.5, -1.0) < ranked_score(-0.7, -0.1)


def _engine(answers: list[str], template: str) -> tuple[CompletionEngine, FakeBackend]:
    backend = FakeBackend(answers, get_template(template))
    sampling = SamplingParams(num_candidates=len(answers))
    return CompletionEngine(backend, EngineOptions(sampling=sampling)), backend


TEXT = "def f(xs):\n    total = \n    return total\n"
CURSOR = TEXT.index(" \n") + 1


def test_prefix_only_models_rank_by_what_follows() -> None:
    """The fake finds a continuation unlikely after an answer it starts by re-typing."""
    engine, _ = _engine(["return total", "sum(xs)"], "prefix-only")
    result = engine.complete(CompletionRequest(TEXT, CURSOR))
    assert [s.text for s in result.suggestions] == ["sum(xs)", "return total"]


def test_fim_models_are_not_rescored() -> None:
    engine, _ = _engine(["return total", "sum(xs)"], "wisp")
    result = engine.complete(CompletionRequest(TEXT, CURSOR))
    assert [s.text for s in result.suggestions] == ["return total", "sum(xs)"]  # the model's
