"""Drafts for speculative decoding, looked up in the prompt and the answer so far (pure).

Code repeats itself: names, call shapes, whole lines. When the last few tokens of the answer
appeared before, the tokens that followed them then are a cheap guess at what follows now.
The decode loop checks such a draft in one forward pass and keeps the part the model agrees
with, so greedy answers stay exactly what they would be without drafts.
"""

from __future__ import annotations

from collections.abc import Sequence

# How many of the last tokens must match an earlier place before its continuation is proposed.
MATCH_TOKENS = 3


class DraftIndex:
    """Where each run of `MATCH_TOKENS` tokens last occurred in a growing token sequence."""

    def __init__(self, ids: Sequence[int], match: int = MATCH_TOKENS) -> None:
        self.ids: list[int] = []
        self.match = match
        self._last: dict[tuple[int, ...], int] = {}  # n-gram -> position just after it
        self._previous: dict[tuple[int, ...], int] = {}
        self.extend(ids)

    def extend(self, ids: Sequence[int]) -> None:
        for token in ids:
            self.ids.append(token)
            if len(self.ids) >= self.match:
                key = tuple(self.ids[-self.match :])
                if key in self._last:
                    self._previous[key] = self._last[key]
                self._last[key] = len(self.ids)

    def propose(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the last earlier occurrence of the current tail."""
        if limit <= 0 or len(self.ids) < self.match:
            return []
        key = tuple(self.ids[-self.match :])
        # The tail itself is the latest occurrence; the one before it is the earlier place.
        start = self._previous.get(key) if self._last.get(key) == len(self.ids) else None
        if start is None:
            return []
        return self.ids[start : min(start + limit, len(self.ids))]


def accepted_length(draft: Sequence[int], predicted: Sequence[int]) -> int:
    """How many draft tokens the model's own choices (`predicted[i]` after draft[:i]) confirm."""
    count = 0
    for proposed, chosen in zip(draft, predicted, strict=False):
        if proposed != chosen:
            break
        count += 1
    return count
