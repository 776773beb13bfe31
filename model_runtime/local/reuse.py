"""Which positions of a kept key/value cache a new prompt can take over, and where they go.

A kept cache holds the keys and values of some token ids (a document, an earlier prompt). A new
prompt shares with it a common prefix, taken as it is, and often longer runs further on that
only moved: the window of code before the cursor starts elsewhere, a line was typed above, the
code after the cursor follows the code before it. `plan` lines the new prompt up with the kept
ids, monotonically, and says for each stretch of the prompt either where its cached positions
are or that it must be computed. Moved positions are taken with their keys turned to their new
place (rotary embeddings rotate by the distance moved); their values were computed after other
text than the prompt now has before them, an approximation llama.cpp's `--cache-reuse` makes
too (measured in docs/runtime.md). Pure: no tensors here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

from model_runtime.backend import common_prefix_length

# A moved run shorter than this is computed instead: each gap it leaves costs a forward pass.
MIN_RUN = 12


@dataclass(frozen=True)
class Span:
    """`length` positions of the new prompt from `start`: taken from the kept cache's positions
    from `source`, or computed when `source` is None."""

    start: int
    length: int
    source: int | None = None

    @property
    def shift(self) -> int:
        """How far the taken positions move (0: in place)."""
        return 0 if self.source is None else self.start - self.source


@dataclass(frozen=True)
class Plan:
    """The spans of a new prompt, in order, covering it whole; the last position is computed."""

    spans: tuple[Span, ...]

    @property
    def taken(self) -> int:
        """Positions taken from the kept cache."""
        return sum(s.length for s in self.spans if s.source is not None)

    @property
    def computed(self) -> int:
        return sum(s.length for s in self.spans if s.source is None)

    @property
    def prefix(self) -> int:
        """Positions taken in place from the start: the part that is exact."""
        first = self.spans[0] if self.spans else None
        return first.length if first is not None and first.source == 0 == first.start else 0


def plan(kept: Sequence[int], new: Sequence[int], min_run: int = MIN_RUN) -> Plan:
    """How to build the cache of `new` from the cache of `kept` (see the module docstring).

    The common prefix is taken whole; after it, a run of at least `min_run` ids found at or
    after the kept position reached so far is taken (the first such place), and anything else
    is computed. The last id of `new` is always computed: its logits start the answer.
    """
    end = len(new) - 1  # the last position is computed
    if end < 0:
        return Plan(())
    spans: list[Span] = []
    head = min(common_prefix_length(kept, new), end)
    if head:
        spans.append(Span(0, head, 0))
    places = _places(kept, head, min_run)
    i, j = head, head
    while i < end:
        found = _find(places, tuple(new[i : i + min_run]), j) if end - i >= min_run else None
        if found is None:
            _compute(spans, i, 1)
            i += 1
            continue
        length = min_run
        while (
            i + length < end
            and found + length < len(kept)
            and new[i + length] == kept[found + length]
        ):
            length += 1
        spans.append(Span(i, length, found))
        i, j = i + length, found + length
    _compute(spans, end, 1)
    return Plan(tuple(spans))


def _places(kept: Sequence[int], start: int, size: int) -> dict[tuple[int, ...], list[int]]:
    """Where each run of `size` ids starts in `kept` from `start`, in increasing order."""
    places: dict[tuple[int, ...], list[int]] = {}
    for k in range(start, len(kept) - size + 1):
        places.setdefault(tuple(kept[k : k + size]), []).append(k)
    return places


def _find(places: dict[tuple[int, ...], list[int]], run: tuple[int, ...], after: int) -> int | None:
    starts = places.get(run)
    if not starts:
        return None
    k = bisect_left(starts, after)
    return starts[k] if k < len(starts) else None


def _compute(spans: list[Span], start: int, length: int) -> None:
    last = spans[-1] if spans else None
    if last is not None and last.source is None and last.start + last.length == start:
        spans[-1] = Span(last.start, last.length + length)
    else:
        spans.append(Span(start, length))
