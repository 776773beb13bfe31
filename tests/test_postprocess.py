"""The orchestration: candidates through the filters, the syntax check, ranking and the gate."""

from __future__ import annotations

import math

import pytest

from model_runtime.backend import Candidate
from model_runtime.context import CursorContext, cursor_context
from model_runtime.gate import Gate
from model_runtime.postprocess import Policy, to_suggestions, trim


def cand(text: str, logprob: float = -0.1, stop: str = "eos") -> Candidate:
    return Candidate(text, [ord(c) for c in text], [logprob] * max(len(text), 1), stop)  # type: ignore[arg-type]


def decode(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def at(doc: str, language: str = "python") -> CursorContext:
    before, after = doc.split("|")
    return CursorContext(before, after, "f", language)


def test_ranks_cleans_and_dedupes() -> None:
    ctx = cursor_context("print()\n", 6)
    candidates = [
        Candidate("'a')\nmore", [1, 2], [-2.0, -2.0]),
        Candidate("'b')", [1, 2], [-0.1, -0.3]),
        Candidate("'b')  ", [1, 2, 3], [-0.5, -0.5, -0.5]),
        Candidate("   ", [1], [-0.01]),
        Candidate("", [], []),
    ]
    out = to_suggestions(candidates, ctx, (), one_line=True)
    assert [(s.text, s.replace) for s in out] == [("'b')", 1), ("'a')", 1)]
    assert out[0].score == pytest.approx(-0.2)


def test_same_result_in_other_blank_space_or_with_the_bracket_is_a_duplicate() -> None:
    ctx = at("print(|)\n")
    out = to_suggestions([cand('"hi"'), cand('"hi")', -0.2), cand('"hi"  ')], ctx, (), True)
    assert [(s.text, s.replace) for s in out] == [('"hi"', 0)]


def test_penalties_reorder_candidates() -> None:
    ctx = at("def f():\n    x = g()\n|\n    return x\n")
    loop = cand("    x = g()", -0.1)  # the line above again
    fresh = cand("    y = h(x)", -0.3)
    out = to_suggestions([loop, fresh], ctx, (), True)
    assert [s.text for s in out] == ["    y = h(x)", "    x = g()"]


def test_rejected_candidates_come_last_with_confidence_zero() -> None:
    ctx = at("def f(x):\n|\n    return x\n")
    copy = cand("    return x", -0.01)  # what already follows
    broken = cand("    y = (x", -0.05)
    fine = cand("    y = x", -1.0)
    out = to_suggestions([copy, broken, fine], ctx, (), True)
    assert out[0].text == "    y = x"
    assert {s.text for s in out[1:]} == {"    return x", "    y = (x"}
    assert [s.confidence for s in out[1:]] == [0.0, 0.0]
    even = Gate(0.0, {}, {})  # 0.5 for anything not rejected
    gated = to_suggestions(
        [copy, broken, fine], ctx, (), True, Policy(min_confidence=0.01, judge=even)
    )
    assert [s.text for s in gated] == ["    y = x"]


def test_a_text_that_changes_nothing_is_dropped() -> None:
    assert to_suggestions([cand(")")], at("foo(|)\n"), (), True) == []


def test_multiline_is_trimmed_to_scope_and_scored_on_what_is_kept() -> None:
    ctx = at("def f(x):\n    |\n\ndef g():\n    pass\n")
    text = "y = x * 2\n    return y\n\ndef h():\n    pass"
    candidate = Candidate(text, [ord(c) for c in text], [-0.1] * 22 + [-3.0] * (len(text) - 22))
    out = to_suggestions([candidate], ctx, (), False, Policy(multiline="always"), decode)
    assert [s.text for s in out] == ["y = x * 2\n    return y"]
    assert out[0].score == pytest.approx(-0.1)


def test_syntax_check_cuts_to_the_lines_that_parse() -> None:
    ctx = at("def f(x):\n|\n    return x\n")
    draft = trim(cand("    y = x\n    z = (y"), ctx, (), False, Policy("always"))
    assert draft.text == "    y = x\n    z = (y"  # without the check
    from model_runtime.syntax import syntax_check

    checked = trim(
        cand("    y = x\n    z = (y"), ctx, (), False, Policy("always"), syntax_check(ctx)
    )
    assert (checked.text, checked.flags, checked.kept) == ("    y = x", ("syntax",), 9)


def test_unfinished_candidates_are_penalised() -> None:
    ctx = at("x = |\n")
    draft = trim(cand("compute(a, b", stop="max_tokens"), ctx, (), True, Policy())
    assert "unfinished" in draft.flags
    assert "unfinished" not in trim(cand("compute(a, b)"), ctx, (), True, Policy()).flags


def test_raw_policy_is_the_first_candidate_cut_at_stops_only() -> None:
    ctx = at("print(|)\n")
    candidates = [cand('"hi")  <|end|>junk\nmore', -2.0), cand('"better"', -0.1)]
    out = to_suggestions(candidates, ctx, ("<|end|>",), True, Policy(raw=True, min_confidence=0.9))
    assert [(s.text, s.replace) for s in out] == [('"hi")  ', 0)]
    assert to_suggestions([cand("\nx")], ctx, (), True, Policy(raw=True)) == []


def test_no_candidates_no_suggestions() -> None:
    assert to_suggestions([], at("x = |\n"), (), True) == []


def test_candidates_without_logprobs_are_ranked_and_gated_by_the_checks_alone() -> None:
    ctx = at("def f():\n    x = g()\n|\n    return x\n")

    def unscored(text: str) -> Candidate:
        return Candidate(text, [ord(c) for c in text], [], "eos", scored=False)

    judge = Gate(0.0, {"mean_logprob": 1.0, "copies_previous_line": -2.0}, {"mean_logprob": 1.0})
    policy = Policy(judge=judge)
    out = to_suggestions([unscored("    x = g()"), unscored("    y = h(x)")], ctx, (), True, policy)
    assert [(s.text, s.score, round(s.confidence, 3)) for s in out] == [
        ("    y = h(x)", 0.0, round(1 / (1 + math.exp(-1.0)), 3)),  # nothing against it
        ("    x = g()", -0.7, round(1 / (1 + math.exp(1.0)), 3)),  # copies the line above
    ]
    gated = Policy(min_confidence=0.5, judge=judge)
    assert to_suggestions([unscored("    x = g()")], ctx, (), True, gated) == []
    rejected = to_suggestions([unscored("    y = (x")], ctx, (), True, Policy(min_confidence=0))
    assert [s.confidence for s in rejected] == [0.0]
