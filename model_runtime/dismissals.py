"""Suggestions the user typed over: not offered again at the same place for a while.

The engine tells the memory what it offered in each document; on that document's next request
the memory sees what the user typed where the offer was made. Typing that no offered text begins
with (and that does not begin with it: that would be accepting it) dismisses those texts at that
place. A place is the document, the cursor's line before the cursor and the line above it, blank
space normalised, so coming back to the same spot finds the dismissal.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from model_runtime.context import CursorContext

# Typing more than this since the offer is other work, not a reply to it.
MAX_TYPED = 200

Place = tuple[str, str, str]


class HasText(Protocol):
    @property
    def text(self) -> str: ...


S = TypeVar("S", bound=HasText)


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def place_of(ctx: CursorContext) -> Place:
    """Where the cursor is, as far as dismissals go."""
    before = ctx.prefix[: len(ctx.prefix) - len(ctx.line_prefix)]
    above = next((line for line in reversed(before.split("\n")) if line.strip()), "")
    return ctx.path, _squeeze(ctx.line_prefix), _squeeze(above)


def contradicts(offered: str, typed: str) -> bool:
    """Whether typing `typed` where `offered` was shown turns it down.

    Spaces and tabs before either do not count: a separator typed ahead of a suggestion that did
    not start with one (`value =`, a space, then `xxx`) is on the way to it, not away from it.
    """
    offered, typed = offered.lstrip(" \t"), typed.lstrip(" \t")
    return bool(typed) and not offered.startswith(typed) and not typed.startswith(offered)


@dataclass(frozen=True)
class _Offer:
    prefix: str
    suffix: str
    place: Place
    texts: tuple[str, ...]


class DismissalMemory:
    """What was offered per document, and what was dismissed where, for `ttl_s` seconds.

    Bounded (`size` dismissals, the oldest go first) and thread-safe.
    """

    def __init__(
        self, ttl_s: float = 600.0, size: int = 256, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s, self.size, self.clock = ttl_s, size, clock
        self._offers: OrderedDict[str, _Offer] = OrderedDict()
        self._dismissed: OrderedDict[tuple[Place, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def offered(self, ctx: CursorContext, suggestions: Sequence[HasText]) -> None:
        """Remember what this document was last offered, and where."""
        with self._lock:
            self._offers.pop(ctx.path, None)
            if suggestions:
                texts = tuple(s.text for s in suggestions)
                self._offers[ctx.path] = _Offer(ctx.prefix, ctx.suffix, place_of(ctx), texts)
                while len(self._offers) > self.size:
                    self._offers.popitem(last=False)

    def screen(self, ctx: CursorContext, suggestions: list[S]) -> list[S]:
        """Note what the user typed since the last offer, then drop what is dismissed here."""
        with self._lock:
            self._observe(ctx)
            now, place = self.clock(), place_of(ctx)
            for key in [k for k, until in self._dismissed.items() if until <= now]:
                del self._dismissed[key]
            return [s for s in suggestions if (place, _squeeze(s.text)) not in self._dismissed]

    def _observe(self, ctx: CursorContext) -> None:
        offer = self._offers.get(ctx.path)
        if offer is None or not ctx.suffix.endswith(offer.suffix):
            return
        typed = ctx.prefix[len(offer.prefix) :]
        if not ctx.prefix.startswith(offer.prefix) or not 0 < len(typed) <= MAX_TYPED:
            return
        kept = tuple(t for t in offer.texts if not contradicts(t, typed))
        for text in offer.texts:
            if text not in kept:
                self._dismiss(offer.place, text)
        self._offers[ctx.path] = _Offer(offer.prefix, offer.suffix, offer.place, kept)

    def _dismiss(self, place: Place, text: str) -> None:
        key = (place, _squeeze(text))
        self._dismissed.pop(key, None)
        self._dismissed[key] = self.clock() + self.ttl_s
        while len(self._dismissed) > self.size:
            self._dismissed.popitem(last=False)
