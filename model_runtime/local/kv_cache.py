"""Key/value caches: the lean forward pass's cache that grows in place (`GrowingKv`), and the
caches of recent prompts, one per document, for prefix reuse (`KvSlots`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from model_runtime.backend import common_prefix_length

# Cache capacity grows to at least 1.5 times what it held, in multiples of this many positions.
GROWTH_STEP = 256


class GrowingKv:
    """Keys and values of every layer in two preallocated tensors, written in place.

    Shape (layers, batch, key/value heads, capacity, head dim); positions past `length` are
    garbage that the next write overwrites, and so are the positions below `shared` of every
    row but the first: there all rows share the first row's (the prompt that candidates decoded
    together share, cached once and read once). It offers the parts of transformers' cache
    interface that the decode loop uses: length, crop, and batch repeat/select.
    """

    is_croppable = True

    def __init__(
        self,
        layers: int,
        batch: int,
        heads: int,
        head_dim: int,
        like: torch.Tensor,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = (layers, batch, heads, 0, head_dim)
        self.keys = torch.empty(shape, dtype=dtype or like.dtype, device=like.device)
        self.values = torch.empty(shape, dtype=dtype or like.dtype, device=like.device)
        self.length = 0
        self.shared = 0

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, max_length: int) -> None:
        """Keep the first `max_length` positions; a negative value drops that many from the end."""
        self.length = max_length if max_length >= 0 else max(0, self.length + max_length)
        self.shared = min(self.shared, self.length)

    def reserve(self, length: int) -> None:
        """Make room for `length` positions, keeping what is cached."""
        capacity = self.keys.shape[3]
        if length <= capacity:
            return
        wanted = max(length, capacity * 3 // 2)
        wanted = -(-wanted // GROWTH_STEP) * GROWTH_STEP
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_empty((*old.shape[:3], wanted, old.shape[4]))
            new[:, :1, :, : self.length] = old[:, :1, :, : self.length]
            new[:, 1:, :, self.shared : self.length] = old[:, 1:, :, self.shared : self.length]
            setattr(self, name, new)

    def append_from(
        self,
        other: GrowingKv,
        start: int,
        length: int,
        turn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Append positions `start`..`start + length` of `other` (same layers and heads), the
        keys passed through `turn` (rotated to where they now are)."""
        end = self.length + length
        self.reserve(end)
        keys = other.keys[:, :, :, start : start + length]
        self.keys[:, :, :, self.length : end] = turn(keys) if turn is not None else keys
        self.values[:, :, :, self.length : end] = other.values[:, :, :, start : start + length]
        self.length = end

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each row `repeats` times. The copies of a single row share its cached positions
        instead of copying them (`shared`)."""
        if self.keys.shape[1] > 1 or repeats == 1:
            self.unshare()
            self.keys = self.keys.repeat_interleave(repeats, dim=1)
            self.values = self.values.repeat_interleave(repeats, dim=1)
            return
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_empty((old.shape[0], repeats, *old.shape[2:]))
            new[:, :1, :, : self.length] = old[:, :, :, : self.length]
            setattr(self, name, new)
        self.shared = self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """The rows `indices`, each with its own copy of every position."""
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old[:, indices].contiguous()
            new[:, :, :, : self.shared] = old[:, :1, :, : self.shared]
            setattr(self, name, new)
        self.shared = 0

    def unshare(self) -> None:
        """Give every row its own copy of the shared positions."""
        if self.shared and self.keys.shape[1] > 1:
            self.keys[:, 1:, :, : self.shared] = self.keys[:, :1, :, : self.shared]
            self.values[:, 1:, :, : self.shared] = self.values[:, :1, :, : self.shared]
        self.shared = 0


def croppable(cache: Any) -> bool:
    """Whether `cache` can be cut back (not a sliding window); transformers 4.x has no flag."""
    return bool(getattr(cache, "is_croppable", hasattr(cache, "crop")))


def crop_to(cache: Any, length: int) -> None:
    """Drop cached positions past `length` (a negative count means the same in every version)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


@dataclass
class KvSlot:
    """A prompt's token ids and the model's key/value cache for exactly those tokens."""

    ids: list[int]
    cache: Any


class KvSlots:
    """The caches of the last prompt of up to `size` documents, least recently used first.

    Used from the model thread; `forget` may come from any thread.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots: OrderedDict[str, KvSlot] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._slots)

    def take(self, ids: list[int], key: str) -> tuple[Any, int]:
        """The cache sharing the longest prefix with `ids`, cut back to it; (None, 0) if none.

        Another document's cache is taken over only when it shares at least half the prompt
        (the same file under two names); otherwise it stays for that document. At least the last
        prompt token is always recomputed: its logits start the answer.
        """
        with self._lock:
            best_key, best = self._best(ids, key)
            if best_key is None:
                return None, 0
            slot = self._slots.pop(best_key)
        keep = min(best, len(ids) - 1)
        if keep <= 0 or not croppable(slot.cache):
            return None, 0
        crop_to(slot.cache, keep)
        return slot.cache, keep

    def peek(self, key: str) -> KvSlot | None:
        """The cache kept for `key`, left in place: the caller reads it, never changes it."""
        with self._lock:
            return self._slots.get(key)

    def shared(self, ids: list[int], key: str) -> int:
        """How many leading tokens of `ids` a kept cache holds (that `take` would consider)."""
        with self._lock:
            return self._best(ids, key)[1]

    def _best(self, ids: list[int], key: str) -> tuple[str | None, int]:
        best_key, best = None, 0
        for other, slot in self._slots.items():
            shared = common_prefix_length(slot.ids, ids)
            if shared > best and (other == key or shared * 2 >= len(ids)):
                best_key, best = other, shared
        return best_key, best

    def keep(self, key: str, ids: list[int], cache: Any) -> None:
        if not self.size:
            return
        with self._lock:
            self._slots[key] = KvSlot(ids, cache)
            self._slots.move_to_end(key)
            while len(self._slots) > self.size:
                self._slots.popitem(last=False)

    def forget(self, key: str) -> None:
        """Drop the cache kept for `key` (its document was closed); one in use stays with it."""
        with self._lock:
            self._slots.pop(key, None)
