"""The result cache: exact hits, typed-through continuations, and what must miss."""

from __future__ import annotations

import pytest

from model_runtime.context import CursorContext
from model_runtime.postprocess import Suggestion
from model_runtime.result_cache import MAX_TYPED_THROUGH, ResultCache, typed_through


def sug(*texts: str) -> list[Suggestion]:
    return [
        Suggestion(t, -0.1 * i, replace=1 if t.endswith(")") else 0) for i, t in enumerate(texts)
    ]


@pytest.mark.parametrize(
    ("shown", "typed", "expected"),
    [
        (["range(10)"], "r", ["ange(10)"]),
        (["range(10)"], "range(1", ["0)"]),
        (["range(10)"], "range(10)", []),  # typed it all: nothing left to show
        (["range(10)"], "len(", []),  # typed something else
        (["range(10)", "len(x)"], "ra", ["nge(10)"]),  # only the ones still matching
        (["a\n    b"], "a\n", ["    b"]),  # through a line break
    ],
)
def test_typed_through(shown: list[str], typed: str, expected: list[str]) -> None:
    assert [s.text for s in typed_through(sug(*shown), typed)] == expected


def test_typed_through_keeps_score_and_replace() -> None:
    [rest] = typed_through([Suggestion("foo(x)", -0.5, replace=1)], "foo")
    assert rest == Suggestion("(x)", -0.5, replace=1)


def ctx(prefix: str, suffix: str = "\n", path: str = "a.py") -> CursorContext:
    return CursorContext(prefix, suffix, path)


@pytest.mark.parametrize(
    ("stored", "asked", "expected"),
    [
        (ctx("x = "), ctx("x = "), (["range(3)"], False)),
        (ctx("x = "), ctx("x = ra"), (["nge(3)"], True)),
        (ctx("x = "), ctx("x = q"), None),  # diverged
        (ctx("x = "), ctx("x ="), None),  # deleted a character
        (ctx("x = "), ctx("x = ra", suffix="\ny\n"), None),  # text after the cursor changed
        (ctx("x = "), ctx("x = ra", path="b.py"), None),  # another file
    ],
)
def test_lookup(
    stored: CursorContext,
    asked: CursorContext,
    expected: tuple[list[str], bool] | None,
) -> None:
    cache = ResultCache()
    cache.put(stored, sug("range(3)"))
    hit = cache.get(asked)
    assert (None if hit is None else ([s.text for s in hit[0]], hit[1])) == expected


def test_typing_far_into_a_suggestion_is_not_typed_through() -> None:
    cache = ResultCache()
    cache.put(ctx("s = '"), sug("a" * (MAX_TYPED_THROUGH + 10)))
    assert cache.get(ctx("s = '" + "a" * MAX_TYPED_THROUGH)) is not None
    assert cache.get(ctx("s = '" + "a" * (MAX_TYPED_THROUGH + 1))) is None


def test_empty_answers_are_remembered_but_not_typed_through() -> None:
    cache = ResultCache()
    cache.put(ctx("x = "), [])
    assert cache.get(ctx("x = ")) == ([], False)
    assert cache.get(ctx("x = 1")) is None


def test_newest_entry_wins_and_size_is_bounded() -> None:
    cache = ResultCache(size=2)
    cache.put(ctx("a"), sug("bc"))
    cache.put(ctx("a", suffix="\nz"), sug("zz"))
    cache.put(ctx("q"), sug("rs"))
    assert cache.get(ctx("a")) is None  # evicted, oldest first
    assert cache.get(ctx("q")) == (sug("rs"), False)
    cache.clear()
    assert cache.get(ctx("q")) is None


def test_size_zero_disables_the_cache() -> None:
    cache = ResultCache(size=0)
    cache.put(ctx("a"), sug("b"))
    assert cache.get(ctx("a")) is None


def test_entries_are_used_only_with_what_they_depend_on() -> None:
    cache = ResultCache()
    cache.put(ctx("x = "), sug("range(3)"), depends=("m.py", 1))
    assert cache.get(ctx("x = "), ("m.py", 1)) == (sug("range(3)"), False)
    assert cache.get(ctx("x = ra"), ("m.py", 1)) is not None
    assert cache.get(ctx("x = "), ("m.py", 2)) is None
    assert cache.get(ctx("x = ra"), ("m.py", 2)) is None
    assert cache.get(ctx("x = ")) is None
