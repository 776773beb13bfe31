"""Answers without the model: the same context again, or a suggestion the user is typing out.

An answer depends on more than the document: the context from other documents went into its
prompt too. Each entry keeps what it `depends` on (the engine passes the cross-file sources), and
is used only while that is unchanged.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, replace

from model_runtime.context import CursorContext
from model_runtime.postprocess import Suggestion

# Typing further than this into a suggestion is editing, not accepting it character by character.
MAX_TYPED_THROUGH = 256


@dataclass(frozen=True)
class _Entry:
    path: str
    prefix: str
    suffix: str
    suggestions: tuple[Suggestion, ...]
    depends: Hashable


def typed_through(shown: list[Suggestion] | tuple[Suggestion, ...], typed: str) -> list[Suggestion]:
    """What remains of each suggestion after the user typed `typed`, its first characters.

    Suggestions that `typed` does not begin, or that it completes entirely, are dropped.
    """
    return [
        replace(s, text=s.text[len(typed) :])
        for s in shown
        if s.text.startswith(typed) and len(s.text) > len(typed)
    ]


class ResultCache:
    """Recent answers by exact context (LRU), and the typed-through continuation of each.

    Thread-safe: the server reads it on its event loop while the model thread writes it.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, int, int], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def put(
        self, ctx: CursorContext, suggestions: list[Suggestion], depends: Hashable = ()
    ) -> None:
        """Remember the answer at `ctx`, made from `depends` besides the document (an empty
        answer too: asking again gives the same)."""
        if self.size <= 0:
            return
        key = (ctx.path, hash(ctx.prefix), hash(ctx.suffix))
        with self._lock:
            self._entries[key] = _Entry(
                ctx.path, ctx.prefix, ctx.suffix, tuple(suggestions), depends
            )
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def get(
        self, ctx: CursorContext, depends: Hashable = ()
    ) -> tuple[list[Suggestion], bool] | None:
        """(suggestions, typed_through) from memory, or None when the model must answer.

        Only entries made from the same `depends` count. An exact hit returns the stored answer,
        empty or not. Otherwise, when the text after the cursor is unchanged and the text before
        it grew by what a stored suggestion starts with, the rest of that suggestion is the answer.
        """
        with self._lock:
            key = (ctx.path, hash(ctx.prefix), hash(ctx.suffix))
            entry = self._entries.get(key)
            if (
                entry is not None
                and entry.prefix == ctx.prefix
                and entry.suffix == ctx.suffix
                and entry.depends == depends
            ):
                self._entries.move_to_end(key)
                return list(entry.suggestions), False
            for entry in reversed(self._entries.values()):
                grown = len(ctx.prefix) - len(entry.prefix)
                if (
                    0 < grown <= MAX_TYPED_THROUGH
                    and entry.suggestions
                    and entry.path == ctx.path
                    and entry.suffix == ctx.suffix
                    and entry.depends == depends
                    and ctx.prefix.startswith(entry.prefix)
                ):
                    rest = typed_through(entry.suggestions, ctx.prefix[len(entry.prefix) :])
                    if rest:
                        return rest, True
        return None
