"""The gate: what it reads of a suggestion, P(accept) from that, the shipped fit, the fitting."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from model_runtime import gate
from model_runtime.backend import Candidate
from model_runtime.context import CursorContext
from model_runtime.postprocess import Policy, to_suggestions

SCRIPT = Path(__file__).parents[1] / "tools" / "fit_gate.py"


def at(doc: str, language: str = "python") -> CursorContext:
    before, after = doc.split("|")
    return CursorContext(before, after, "f", language)


@pytest.mark.parametrize(
    ("doc", "language", "expected"),
    [
        ("x = |\n", "python", {"mid_line": 0, "empty_line": 0, "mid_word": 0, "python": 1}),
        ("print(|)\n", "python", {"mid_line": 1, "empty_line": 0, "mid_word": 0}),
        ("def f():\n    |\n", "python", {"mid_line": 0, "empty_line": 1, "mid_word": 0}),
        ("    ret|\n", "java", {"mid_word": 1, "empty_line": 0, "java": 1, "python": 0}),
        ("let a_|", "javascript", {"mid_word": 1, "javascript": 1}),
        ("|", "rust", {"empty_line": 1, "python": 0, "java": 0, "javascript": 0}),
    ],
)
def test_where_the_cursor_is(doc: str, language: str, expected: dict[str, int]) -> None:
    values = gate.features([-0.5], "x", 0, (), at(doc, language))
    assert {name: values[name] for name in expected} == expected


def test_log_probabilities_length_and_flags() -> None:
    values = gate.features([-0.1, -30.0, -0.5], "a(b)\nc\n", 2, ("syntax", "unfinished"), at("|"))
    assert values["mean_logprob"] == pytest.approx((-0.1 - 12.0 - 0.5) / 3)  # clipped at -12
    assert (values["min_logprob"], values["first_logprob"]) == (-12.0, -0.1)
    assert values["log_tokens"] == pytest.approx(math.log(4))
    assert values["lines"] == 2
    assert values["log_chars"] == pytest.approx(math.log1p(len("a(b)\nc")))
    assert values["replaces"] == 1
    assert {f for f in gate.FLAGS if values[f]} == {"syntax", "unfinished"}
    assert gate.features([-1.0], "\n" * 40, 0, (), at("|"))["lines"] == 10


def test_a_block_has_its_own_copies_of_the_numbers_that_mean_other_things_there() -> None:
    line = gate.features([-0.5, -1.5], "x = 1", 0, (), at("|"))
    block = gate.features([-0.5, -1.5], "if x:\n    y()", 0, (), at("|"))
    assert (line["block"], line["block_mean_logprob"], line["block_kept_share"]) == (0, 0, 0)
    assert (block["block"], block["block_mean_logprob"], block["block_min_logprob"]) == (
        1,
        -1.0,
        -1.5,
    )
    assert block["block_empty_line"] == block["empty_line"] == 1
    judge = gate.Gate(0.0, {"block_mean_logprob": 1.0}, {"mean_logprob": -2.0})
    unscored_block = gate.features(None, "if x:\n    y()", 0, (), at("|"))
    assert judge.probability(unscored_block) == pytest.approx(1 / (1 + math.exp(2.0)))
    assert judge.probability(gate.features(None, "x", 0, (), at("|"))) == 0.5


def test_without_log_probabilities_their_features_are_left_out() -> None:
    values = gate.features(None, "x", 0, (), at("|"))
    assert not {"mean_logprob", "min_logprob", "first_logprob", "log_tokens"} & set(values)


def test_probability_is_the_logistic_of_the_weighted_sum() -> None:
    judge = gate.Gate(-1.0, {"mean_logprob": 2.0, "syntax": -0.5}, {"mean_logprob": -0.25})
    assert judge.probability({"mean_logprob": -0.5, "syntax": 1.0}) == pytest.approx(
        1 / (1 + math.exp(-(-1.0 - 1.0 - 0.5)))
    )
    # a backend that sent no log-probabilities: the fit's typical value stands in
    assert judge.probability({"syntax": 0.0}) == pytest.approx(1 / (1 + math.exp(1.5)))
    assert judge.probability({"mean_logprob": -1e9}) == pytest.approx(0.0, abs=1e-20)


def test_the_gate_shows_what_it_judges_likely_and_ranks_by_score() -> None:
    judge = gate.Gate(0.0, {"mean_logprob": 1.0}, {})
    ctx = at("x = |\n")
    candidates = [
        Candidate("1", [1], [math.log(0.6)]),
        Candidate("2", [2], [math.log(0.2)]),
    ]
    shown = to_suggestions(candidates, ctx, (), True, Policy(min_confidence=0.3, judge=judge))
    [one] = shown
    assert one.text == "1"
    assert one.confidence == pytest.approx(0.6 / 1.6)  # σ(log 0.6); "2" gets 0.2 / 1.2
    assert one.features["mean_logprob"] == pytest.approx(math.log(0.6))
    everything = to_suggestions(candidates, ctx, (), True, Policy(judge=judge))
    assert [s.text for s in everything] == ["1", "2"]
    strict = Policy(min_confidence=0.4, judge=judge)
    assert to_suggestions(candidates, ctx, (), True, strict) == []


def test_the_shipped_gate() -> None:
    shipped = gate.shipped()
    data = json.loads(gate.GATE_FILE.read_text(encoding="utf-8"))
    assert data["min_confidence"] == gate.DEFAULT_MIN_CONFIDENCE
    every = set(gate.features([-1.0], "x", 0, gate.FLAGS, at("|")))
    assert set(shipped.weights) <= every  # no weight for a feature nobody computes
    assert set(shipped.unscored) <= every
    # what the fit must have learnt, whatever else it did: likelier tokens, likelier accepted
    likely = gate.features([-0.05] * 6, "return x", 0, (), at("def f(x):\n    |\n"))
    unlikely = gate.features([-2.5] * 6, "return x", 0, (), at("def f(x):\n    |\n"))
    assert shipped.probability(likely) > 0.5 > shipped.probability(unlikely)


def _load_script():
    spec = importlib.util.spec_from_file_location("fit_gate", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fit_gate"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_the_fit_recovers_known_weights() -> None:
    fit_gate = _load_script()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2))
    truth = np.array([1.5, -0.7])
    y = rng.random(20000) < 1 / (1 + np.exp(-(x @ truth + 0.3)))
    w, b = fit_gate.fit_logistic(x, y.astype(float), np.ones(20000), l2=0.0)
    assert w == pytest.approx(truth, abs=0.08)
    assert b == pytest.approx(0.3, abs=0.06)


def test_tasks_of_one_problem_fall_in_one_half() -> None:
    fit_gate = _load_script()
    assert fit_gate.problem("SingleLineInfilling/HumanEval/12/L3") == "humaneval-12"
    assert fit_gate.problem("humaneval-HumanEval_12_foo.json-L24") == "humaneval-12"
    assert fit_gate.problem("pkg/mod.py:10:4") == "pkg/mod.py"
    halves = {fit_gate.in_fit_half(f"SingleLineInfilling/HumanEval/{n}/L{k}") for n in range(40)
              for k in range(3)}  # fmt: skip
    assert halves == {True, False}
    assert (
        len({fit_gate.in_fit_half(f"SingleLineInfilling/HumanEval/7/L{k}") for k in range(9)}) == 1
    )


def test_the_threshold_keeps_most_of_the_old_gates_right_answers() -> None:
    fit_gate = _load_script()
    p = np.array([0.9, 0.8, 0.6, 0.3, 0.2, 0.1])
    y = np.array([True, True, True, False, False, True])
    old = np.ones(6, bool)
    # every right answer kept up to 0.1; above that the one at 0.1 goes (3 of 4 = 75%)
    assert fit_gate.choose_threshold([(p, y, old)]) == pytest.approx(0.1)
    result = fit_gate.outcome(p, y, old, 0.25)
    assert (result["right_new"], result["wrong_new"]) == (3, 1)
    assert (result["right_kept"], result["wrong_cut"]) == (0.75, 0.5)
