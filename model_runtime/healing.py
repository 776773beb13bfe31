"""Token healing: which tokens may start an answer when the prompt's last token is backed off.

Tokenizers merge what a user types with what follows it: `"\\n    "` is one token in SmolLM2's
vocabulary, but `"\\n    return"` is `"\\n   "` + `" return"`. A prompt that ends on such a
token tells the model something it never saw in training ("the next token starts after four
spaces and a newline token"), and it writes a comment or top-level code. Healing drops the
prompt's last token and lets the answer start only with tokens that re-type the dropped text
(the `lead`), in as many steps as it takes; the lead is then cut from the answer.

Pure: token texts are bytes, looked up in a table built once per model.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Protocol

# Text before the cursor encoded to find its last token: enough that the last token is the one
# a full encoding would end with (pre-tokenizers split at word and space boundaries).
_TAIL_CHARS = 64


class Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


@cache
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: the printable character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


def byte_level_bytes(token: str) -> bytes | None:
    """The bytes a byte-level BPE token (GPT-2, StarCoder, Qwen) stands for; None if not one."""
    try:
        return bytes(map(_byte_level_alphabet().__getitem__, token))
    except KeyError:
        return None


def sentencepiece_bytes(token: str) -> bytes:
    """The bytes of a SentencePiece token: `▁` is a space, `<0x0A>` one byte."""
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        try:
            return bytes([int(token[3:5], 16)])
        except ValueError:
            pass
    return token.replace("▁", " ").encode("utf-8")


def vocab_bytes(vocab: Mapping[str, int], special: Iterable[str] = ()) -> list[bytes]:
    """Each token id's bytes (b"" for special tokens), from a tokenizer's vocabulary."""
    skip = set(special)
    size = max(vocab.values(), default=-1) + 1
    pieces = [b""] * size
    spaced = sum("▁" in token for token in vocab)
    byte_level = sum(("Ġ" in token or "Ċ" in token) for token in vocab) >= spaced
    for token, index in vocab.items():
        if token in skip:
            continue
        piece = byte_level_bytes(token) if byte_level else sentencepiece_bytes(token)
        pieces[index] = piece or b""
    return pieces


@dataclass(frozen=True)
class TokenTable:
    """Every token's bytes, and the same sorted, for prefix queries over the whole vocabulary."""

    pieces: tuple[bytes, ...]
    _sorted: list[bytes] = field(init=False, repr=False, compare=False)
    _ids: list[int] = field(init=False, repr=False, compare=False)
    _by_piece: dict[bytes, list[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pieces = self.pieces
        order = sorted((i for i, p in enumerate(pieces) if p), key=pieces.__getitem__)
        by_piece: dict[bytes, list[int]] = {}
        for index in order:
            by_piece.setdefault(pieces[index], []).append(index)
        object.__setattr__(self, "_sorted", [pieces[i] for i in order])
        object.__setattr__(self, "_ids", order)
        object.__setattr__(self, "_by_piece", by_piece)

    def _starting_with(self, head: bytes) -> range:
        """Positions in the sorted pieces of those that start with `head` (two bisections)."""
        low = bisect.bisect_left(self._sorted, head)
        stem = head.rstrip(b"\xff")
        if not stem:
            return range(low, len(self._sorted))
        above = stem[:-1] + bytes([stem[-1] + 1])  # the first byte string past every extension
        return range(low, bisect.bisect_left(self._sorted, above))

    def extendable(self, piece: bytes) -> bool:
        """Whether a longer token starts with `piece`: the text after it could merge into it."""
        after = bisect.bisect_right(self._sorted, piece)
        return bool(piece) and after < len(self._sorted) and self._sorted[after].startswith(piece)

    def allowed(self, lead: bytes) -> list[int]:
        """Tokens that keep an answer on course to start with `lead`.

        Those that start with all of it, and those that are a (non-empty) part of its start:
        after one of those, the rest of `lead` is still to come.
        """
        ids = [self._ids[k] for k in self._starting_with(lead)]
        for end in range(1, len(lead)):
            ids.extend(self._by_piece.get(lead[:end], ()))
        return ids

    def piece(self, token: int) -> bytes:
        return self.pieces[token] if 0 <= token < len(self.pieces) else b""


def remaining_lead(lead: bytes, token: bytes) -> bytes:
    """What of `lead` is still to come after `token` (an allowed token)."""
    return b"" if token.startswith(lead) else lead[len(token) :]


def split_lead(prefix: str, tokenizer: Encoder, table: TokenTable) -> tuple[str, str]:
    """`prefix` without its last token, and that token's text, when healing it can help.

    It can when the last token is an ordinary one that a longer token extends (blank space and
    newline with indentation, a partial word, `.`, an operator); otherwise nothing is backed off.
    """
    ids = tokenizer.encode(prefix[-_TAIL_CHARS:])
    if not ids:
        return prefix, ""
    piece = table.piece(ids[-1])
    if not table.extendable(piece):
        return prefix, ""
    try:
        lead = piece.decode("utf-8")
    except UnicodeDecodeError:  # part of a character: leave it to the tokenizer
        return prefix, ""
    if not prefix.endswith(lead):
        return prefix, ""
    return prefix[: len(prefix) - len(lead)], lead
