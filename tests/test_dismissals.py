"""Dismissal memory: what the user typed over is not offered again at that place for a while."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fake_backend import FakeBackend

from model_runtime.backend import SamplingParams
from model_runtime.context import CursorContext
from model_runtime.dismissals import DismissalMemory, contradicts, place_of
from model_runtime.engine import CompletionEngine, CompletionRequest, EngineOptions


@dataclass(frozen=True)
class Shown:
    text: str


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def at(before: str, after: str = "\n", path: str = "a.py") -> CursorContext:
    return CursorContext(before, after, path, "python")


@pytest.mark.parametrize(
    ("offered", "typed", "dismissed"),
    [
        ("foo()", "b", True),
        ("foo()", "f", False),  # typing it out
        ("foo()", "foo()", False),  # accepted
        ("foo()", "foo() + 1", False),  # accepted, then more
        ("foo()", "", False),
        ("foo()", " ", False),  # a separator first: the user may type it next
        ("foo()", "\t ", False),
        ("foo()", " fo", False),
        ("foo()", " b", True),
        (" foo()", "f", False),  # the offer's own leading space left out
        ("foo()", "\n", True),  # to the next line without it
        ("foo()", "\nfoo()", True),
    ],
)
def test_contradicts(offered: str, typed: str, dismissed: bool) -> None:
    assert contradicts(offered, typed) is dismissed


def memory_after_typing_over(clock: Clock) -> DismissalMemory:
    memory = DismissalMemory(ttl_s=60.0, clock=clock)
    memory.offered(at("x = 1\ny = "), [Shown("foo()"), Shown("bar()")])
    assert memory.screen(at("x = 1\ny = b"), []) == []  # typed `b`: foo() is turned down
    return memory


def test_a_dismissed_text_is_not_offered_again_at_the_same_place() -> None:
    memory = memory_after_typing_over(Clock())
    again = [Shown("foo()"), Shown("bar()"), Shown("baz()")]
    assert memory.screen(at("x = 1\ny = "), again) == [Shown("bar()"), Shown("baz()")]


def test_the_same_place_is_found_again_in_an_edited_document() -> None:
    memory = memory_after_typing_over(Clock())
    moved = at("import os\n\nx = 1\ny =  ")  # lines above changed, blank space differs
    assert memory.screen(moved, [Shown("foo()")]) == []


def test_other_places_and_documents_are_not_affected() -> None:
    memory = memory_after_typing_over(Clock())
    assert memory.screen(at("x = 2\ny = "), [Shown("foo()")]) == [Shown("foo()")]
    assert memory.screen(at("x = 1\ny = ", path="b.py"), [Shown("foo()")]) == [Shown("foo()")]


def test_dismissals_expire() -> None:
    clock = Clock()
    memory = memory_after_typing_over(clock)
    clock.now = 59.0
    assert memory.screen(at("x = 1\ny = "), [Shown("foo()")]) == []
    clock.now = 61.0
    assert memory.screen(at("x = 1\ny = "), [Shown("foo()")]) == [Shown("foo()")]


def test_typing_the_suggestion_out_dismisses_nothing() -> None:
    memory = DismissalMemory(clock=Clock())
    memory.offered(at("y = "), [Shown("foo()")])
    memory.screen(at("y = fo"), [])
    assert memory.screen(at("y = "), [Shown("foo()")]) == [Shown("foo()")]


def test_moving_elsewhere_dismisses_nothing() -> None:
    memory = DismissalMemory(clock=Clock())
    memory.offered(at("y = ", "\nz = 1\n"), [Shown("foo()")])
    memory.screen(at("y = \nz", " = 1\n"), [])  # the cursor went to the next line
    memory.screen(at("q"), [])  # a different document content altogether
    assert memory.screen(at("y = ", "\nz = 1\n"), [Shown("foo()")]) == [Shown("foo()")]


def test_auto_closed_brackets_after_the_cursor_still_count_as_typing_there() -> None:
    memory = DismissalMemory(clock=Clock())
    memory.offered(at("y = "), [Shown("foo()")])
    memory.screen(at("y = (", ")\n"), [])
    assert memory.screen(at("y = "), [Shown("foo()")]) == []


def test_memory_is_bounded() -> None:
    memory = DismissalMemory(size=2, clock=Clock())
    for i in range(3):
        memory.offered(at(f"v{i} = "), [Shown("foo()")])
        memory.screen(at(f"v{i} = 7"), [])
    survivors = [memory.screen(at(f"v{i} = "), [Shown("foo()")]) for i in range(3)]
    assert survivors == [[Shown("foo()")], [], []]  # the oldest dismissal went first


def test_place_is_path_line_and_line_above() -> None:
    assert place_of(at("a = 1\n\n  y  = ")) == ("a.py", "y =", "a = 1")


def test_the_engine_does_not_offer_again_what_was_typed_over() -> None:
    backend = FakeBackend(["foo()", "bar()"])
    sampling = SamplingParams(num_candidates=2)
    engine = CompletionEngine(backend, EngineOptions(sampling=sampling))

    def texts(doc: str) -> list[str]:
        result = engine.complete(CompletionRequest(doc, len(doc), "a.py", "python"))
        return [s.text for s in result.suggestions]

    assert texts("y = ") == ["foo()", "bar()"]
    texts("y = x")  # typed over both
    assert texts("y = ") == []  # from the result cache, screened
    engine.cache.clear()
    assert texts("y = ") == []  # from the model, screened
    assert texts("z = ") == ["foo()", "bar()"]


def test_a_space_typed_before_the_suggestion_keeps_it() -> None:
    """Seen in VS Code on a busy machine: `xxx` shown at `value =`, then the user's space; the
    model's answer after the space (`xxx` again) must be shown, not taken for dismissed."""
    engine = CompletionEngine(FakeBackend(["xxx"]))

    def texts(doc: str) -> list[str]:
        result = engine.complete(CompletionRequest(doc, len(doc), "a.py"))
        return [s.text for s in result.suggestions]

    assert texts("value =") == ["xxx"]
    assert texts("value = ") == ["xxx"]
    assert texts("value = y") == ["xxx"]
    assert texts("value = ") == []  # `y` did turn it down
