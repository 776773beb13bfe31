"""The reuse plan: which positions of a kept cache a new prompt takes, table-tested."""

from __future__ import annotations

import itertools

import pytest

from model_runtime.local.reuse import Plan, Span, plan

R = list(range(100, 140))  # forty distinct ids


@pytest.mark.parametrize(
    ("kept", "new", "spans"),
    [
        ([], [], ()),
        ([], [1, 2, 3], (Span(0, 3),)),
        ([1, 2, 3], [1, 2, 3], (Span(0, 2, 0), Span(2, 1))),  # the last is computed anyway
        ([1, 2, 3, 4], [1, 2, 9], (Span(0, 2, 0), Span(2, 1))),
        ([1, 2], [1, 2, 3, 4], (Span(0, 2, 0), Span(2, 2))),
        # the window starts later: what it keeps moves to the front
        (R, R[10:], (Span(0, 29, 10), Span(29, 1))),
        # a line typed above: the rest moves down by its length
        (R, [*R[:5], 1, 2, 3, *R[5:]], (Span(0, 5, 0), Span(5, 3), Span(8, 34, 5), Span(42, 1))),
        # a line deleted: the rest moves up
        (R, R[:5] + R[20:], (Span(0, 5, 0), Span(5, 19, 20), Span(24, 1))),
        # a run shorter than the minimum is computed
        (
            R,
            [*R[:5], 1, *R[20:30], 2],
            (
                Span(0, 5, 0),
                Span(5, 12),
            ),
        ),
        # runs are taken in the kept order only: a later run that appears earlier is computed
        (R, R[20:35] + R[0:15], (Span(0, 15, 20), Span(15, 15))),
    ],
)
def test_plan(kept: list[int], new: list[int], spans: tuple[Span, ...]) -> None:
    result = plan(kept, new)
    assert result.spans == spans
    assert sum(s.length for s in result.spans) == len(new)  # the whole prompt, in order
    assert all(a.start + a.length == b.start for a, b in itertools.pairwise(spans))


def test_counts_and_shift() -> None:
    result = plan(R, [*R[:5], 1, 2, 3, *R[5:]])
    assert (result.taken, result.computed, result.prefix) == (39, 4, 5)
    assert [s.shift for s in result.spans] == [0, 0, 3, 0]
    assert Plan(()).prefix == 0 and plan(R, [7, *R]).prefix == 0


def test_min_run_is_a_parameter() -> None:
    new = [*R[:5], 1, *R[20:26], 2]
    assert plan(R, new, min_run=4).spans == (Span(0, 5, 0), Span(5, 1), Span(6, 6, 20), Span(12, 1))
