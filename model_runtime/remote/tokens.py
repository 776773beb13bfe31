"""An estimate of the served model's tokens, for budgets, with no tokenizer on the laptop.

A remote backend has no tokenizer to count with, and asking the server for one costs a round
trip per keystroke. Prompts are fitted to a budget with this stand-in instead: it splits text
about where byte-level BPE tokenizers do (words of up to six letters, up to three digits, runs
of up to four spaces, one character of anything else), which counts code within a few percent
of real tokenizers and rather over than under, so a fitted prompt stays inside the budget.

Ids round-trip exactly: a piece of one character is its code point; longer pieces are interned
in a bounded table (once it is full, new pieces are spelled one character per id).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

_PIECE = re.compile(r"[^\W\d_]{1,6}|\d{1,3}|[ \t]{1,4}|\r\n|.", re.DOTALL)
_FIRST_INTERNED = 0x110000  # past the last code point
MAX_INTERNED = 200_000


class EstimatingTokenizer:
    """`encode`/`decode` over estimated tokens: thread-safe, deterministic within a process."""

    def __init__(self, capacity: int = MAX_INTERNED) -> None:
        self._capacity = capacity
        self._ids: dict[str, int] = {}
        self._pieces: list[str] = []
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _PIECE.findall(text):
            ids.extend(self.ids_of(piece))
        return ids

    def ids_of(self, piece: str) -> list[int]:
        """The ids that spell `piece` as one token if it can be interned, else per character."""
        if len(piece) == 1:
            return [ord(piece)]
        known = self._ids.get(piece)
        if known is not None:
            return [known]
        with self._lock:
            if (known := self._ids.get(piece)) is not None:
                return [known]
            if len(self._pieces) >= self._capacity:
                return [ord(c) for c in piece]
            new = _FIRST_INTERNED + len(self._pieces)
            self._pieces.append(piece)
            self._ids[piece] = new
            return [new]

    def decode(self, ids: Sequence[int]) -> str:
        pieces = self._pieces
        return "".join(
            chr(i) if i < _FIRST_INTERNED else pieces[i - _FIRST_INTERNED]
            for i in ids
            if 0 <= i < _FIRST_INTERNED + len(pieces)
        )
