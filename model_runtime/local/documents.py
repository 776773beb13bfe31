"""Each open document's key/value cache, kept whole so that a request anywhere in it finds its
prompt cached.

In idle time `LocalBackend.prefill` builds, per document, the cache of the prompt the document
would give with the cursor past its last line (`engine.document_request`): the code before any
cursor is a stretch of it. A request copies what it can use (`assemble`, following a
`reuse.plan`) and leaves the document's cache as it was; a jump to another line then computes
only what is new. After an edit the cache is rebuilt the same way from its old self, cheaply
(what moved is taken, turned to its new place), and then made exact again in idle time, from
the first position that was moved (`DocumentCache.exact`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from model_runtime.local.decoder import Decoder
from model_runtime.local.kv_cache import GrowingKv, KvSlot
from model_runtime.local.reuse import Plan, plan

log = logging.getLogger(__name__)

# Documents whose caches are kept (least recently used dropped): 20-30 KB a position for the
# bundled model and Qwen2.5-Coder-1.5B (half floats), so about 50 MB for 2,000 positions.
DOCUMENTS = 2
# Idle work runs in chunks of positions, a request waiting for the chunk in progress. Each chunk
# widens every weight matrix, so small ones cost nearly what large ones do: on the Intel Xeon the
# bundled model ran 64 positions in 67 ms, 128 in 82 and 256 in 119. Chunks start at
# IDLE_PREFILL_CHUNK positions and halve or double (within MIN_CHUNK..MAX_CHUNK) to take about
# IDLE_CHUNK_MS: a 1.5B model takes ten times as long a position.
IDLE_PREFILL_CHUNK = 128
IDLE_CHUNK_MS = 150.0
MIN_CHUNK, MAX_CHUNK = 16, 256
# Where even the smallest chunk takes this many times IDLE_CHUNK_MS, SLOW_CHUNKS times in a row,
# idle work stops for good: a keystroke would wait seconds for it (Qwen2.5-Coder-7B on two
# cores). One slow chunk is not enough: a build or a test run beside the editor makes any model
# slow for a while.
TOO_SLOW = 4
SLOW_CHUNKS = 3
# A document's cache that still gives this share of its prompt by moving is brought up to an
# edit, and made exact, only once the document was left alone this long: while the user types,
# each key would undo that work, and requests move what they need themselves.
SETTLED = 0.9
SETTLE_S = 1.0
# What a computed span costs beyond its positions, in positions: a forward pass of its own.
SPAN_COST = 4

Forward = Callable[[Sequence[int], GrowingKv], object]  # runs ids after what the cache holds


@dataclass
class DocumentCache:
    """The cache of a document's prompt: `ids` it holds, of the prompt `target` it is built
    toward (all but its last once complete); `exact` leading positions computed after exactly
    the text before them, the rest taken from an earlier version and moved."""

    ids: list[int]
    cache: GrowingKv
    exact: int
    target: list[int]

    @property
    def complete(self) -> bool:
        return len(self.ids) >= len(self.target) - 1


class DocumentCaches:
    """Up to `size` documents' caches, least recently used first, for the lean forward pass
    `decoder`; `run(ids, cache)` appends positions to a cache. `forget` from any thread."""

    def __init__(self, size: int, decoder: Decoder, run: Forward) -> None:
        self.size = size
        self.decoder = decoder
        self.run = run
        self.settle_s = SETTLE_S
        self.chunk = IDLE_PREFILL_CHUNK
        self.chunk_ms: float | None = IDLE_CHUNK_MS  # None: chunks stay as they are
        self.too_slow = False  # the model is too slow for idle work (see TOO_SLOW)
        self._slow = 0  # smallest chunks too slow in a row
        self._caches: OrderedDict[str, DocumentCache] = OrderedDict()
        self._forgotten: dict[str, int] = {}  # times each key was forgotten
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._caches)

    def get(self, key: str) -> DocumentCache | None:
        with self._lock:
            found = self._caches.get(key)
            if found is not None:
                self._caches.move_to_end(key)
            return found

    def keep(self, key: str, document: DocumentCache, forgotten: int | None = None) -> None:
        """Keep `document` for `key`; not when `key` was forgotten since it read `forgotten`
        (`forgotten_count`): a document closed while its idle work ran stays closed."""
        if not self.size:
            return
        with self._lock:
            if forgotten is not None and self._forgotten.get(key, 0) != forgotten:
                return
            self._caches[key] = document
            self._caches.move_to_end(key)
            while len(self._caches) > self.size:
                self._caches.popitem(last=False)

    def forget(self, key: str) -> None:
        with self._lock:
            self._caches.pop(key, None)
            self._forgotten[key] = self._forgotten.get(key, 0) + 1

    def forgotten_count(self, key: str) -> int:
        with self._lock:
            return self._forgotten.get(key, 0)

    def take(
        self,
        ids: list[int],
        key: str,
        otherwise: int,
        cancel: threading.Event,
        chunk: int,
        kept: KvSlot | None = None,
    ) -> tuple[GrowingKv, int] | None:
        """A new cache of `ids` but their last span, built from the document's or from the
        `kept` prompt's (moved: after a jump the window starts elsewhere), whichever leaves
        less to compute, when that is less than `otherwise` positions; with how many positions
        it took."""
        # a plan computes the last position and costs SPAN_COST for at least two spans: where
        # the kept prompt leaves no more than that (a keystroke), it cannot win; skip lining up
        if otherwise <= 1 + 2 * SPAN_COST:
            return None
        document = self.get(key)
        sources = [(document.ids, document.cache)] if document is not None else []
        if kept is not None and isinstance(kept.cache, GrowingKv):
            sources.append((kept.ids, kept.cache))
        best: tuple[int, Plan, GrowingKv] | None = None
        for held, source in sources:
            steps = plan(held, ids)
            cost = steps.computed + SPAN_COST * len(steps.spans)
            log.debug(
                "%s: %d cached positions give %d of %d, %d spans (%d to compute otherwise)",
                key,
                len(held),
                steps.taken,
                len(ids),
                len(steps.spans),
                otherwise,
            )
            if cost < otherwise and (best is None or cost < best[0]):
                best = cost, steps, source
        if best is None:
            return None
        _, steps, source = best
        cache = assemble(steps, ids, source, self.decoder, self.run, cancel, chunk)
        return cache, min(steps.taken, cache.length)

    def prefill(
        self, ids: list[int], key: str, cancel: threading.Event, start: KvSlot | None = None
    ) -> int:
        """Build the document's cache toward the prompt `ids`, then make it exact; returns the
        positions computed.

        A document without one starts from the kept prompt `start` where it can, and a cache
        still being built goes on toward the prompt it began with: at once, whatever was typed
        since (requests take what moved themselves). Bringing a complete cache up to edits,
        and making it exact, waits until the document was left alone for `settle_s`: while
        the user types, each key would undo that work. Work runs in chunks (`self.chunk`
        positions, kept near `chunk_ms`) and stops at a cancel between them, keeping what was
        done.
        """
        computed = 0
        if self.too_slow:
            return 0
        cancel = _Halting(cancel, self)

        def run(part: Sequence[int], cache: GrowingKv) -> None:
            nonlocal computed
            started = time.perf_counter()
            self.run(part, cache)
            computed += len(part)
            if self.chunk_ms is not None and len(part) == self.chunk:
                took = (time.perf_counter() - started) * 1000
                slow = took > TOO_SLOW * self.chunk_ms and self.chunk == MIN_CHUNK
                self._slow = self._slow + 1 if slow else 0
                if self._slow >= SLOW_CHUNKS:
                    log.info("no more idle work: %d positions took %.0f ms", len(part), took)
                    self.too_slow = True
                elif took > 2 * self.chunk_ms:
                    self.chunk = max(MIN_CHUNK, self.chunk // 2)
                elif took < self.chunk_ms / 2:
                    self.chunk = min(MAX_CHUNK, self.chunk * 2)

        forgotten = self.forgotten_count(key)
        document = self.get(key)
        if document is None:
            document = self._begin(ids, start, run, cancel)
        elif not document.complete:
            self._extend(document, run, cancel)
        elif document.target != ids:
            if cancel.wait(self.settle_s):
                return computed
            document = self._rebuild(document, ids, run, cancel) or document
        self.keep(key, document, forgotten)
        if document.exact < len(document.ids) and not cancel.wait(self.settle_s):
            self._refine(document, run, cancel)
        return computed

    def _begin(
        self, ids: list[int], start: KvSlot | None, run: Forward, cancel: threading.Event
    ) -> DocumentCache:
        """A new document's cache, as far as it gets: what the kept prompt gives, the rest run."""
        kept = start if start is not None and isinstance(start.cache, GrowingKv) else None
        steps = plan(kept.ids if kept else [], ids)
        source = kept.cache if kept else self.decoder.new_cache(1)
        cache = assemble(steps, ids, source, self.decoder, run, cancel, self.chunk, len(ids) - 1)
        exact = min(exact_after(steps, len(kept.ids) if kept else 0), cache.length)
        return DocumentCache(ids[: cache.length], cache, exact, ids)

    def _extend(self, document: DocumentCache, run: Forward, cancel: threading.Event) -> None:
        """`document` run further toward its target, in place."""
        cache, target, end = document.cache, document.target, len(document.target) - 1
        exact = document.exact == len(document.ids)  # exact so far: then exact after it
        while cache.length < end and not cancel.is_set():
            run(target[cache.length : min(cache.length + self.chunk, end)], cache)
        document.ids = target[: cache.length]
        if exact:
            document.exact = cache.length

    def _rebuild(
        self, document: DocumentCache, ids: list[int], run: Forward, cancel: threading.Event
    ) -> DocumentCache | None:
        """A complete cache of the prompt `ids` from `document`'s (what moved taken, edits run);
        None when a cancel stopped it before the end."""
        steps = plan(document.ids, ids)
        source = document.cache
        cache = assemble(steps, ids, source, self.decoder, run, cancel, self.chunk, len(ids) - 1)
        if cache.length < len(ids) - 1:
            return None
        return DocumentCache(ids[:-1], cache, exact_after(steps, document.exact), ids)

    def _refine(self, document: DocumentCache, run: Forward, cancel: threading.Event) -> None:
        """The positions of `document` after its exact ones computed again, in place."""
        cache, ids = document.cache, document.ids
        while document.exact < cache.length and not cancel.is_set():
            held, cache.length = cache.length, document.exact
            run(ids[document.exact : min(document.exact + self.chunk, held)], cache)
            document.exact, cache.length = cache.length, held


class _Halting(threading.Event):
    """A request's cancel that also reads as set once idle work proved too slow."""

    def __init__(self, cancel: threading.Event, caches: DocumentCaches) -> None:
        super().__init__()
        self.cancel, self.caches = cancel, caches

    def is_set(self) -> bool:
        return self.cancel.is_set() or self.caches.too_slow

    def wait(self, timeout: float | None = None) -> bool:
        return self.cancel.wait(timeout) or self.caches.too_slow


def assemble(
    plan: Plan,
    ids: Sequence[int],
    source: GrowingKv,
    decoder: Decoder,
    forward: Forward,
    cancel: threading.Event,
    chunk: int,
    end: int | None = None,
) -> GrowingKv:
    """A new cache of `ids[:end]` (default: all but the plan's last span) built by `plan`:
    taken spans copied from `source` with their keys turned by the distance moved, computed
    ones run through `forward` in pieces of at most `chunk`. It stops at a cancel between
    pieces; its `length` says how far it got."""
    cache = decoder.new_cache(1)
    if end is None:
        end = plan.spans[-1].start if plan.spans else 0
    cache.reserve(end)
    for span in plan.spans:
        stop = min(span.start + span.length, end)
        if span.start >= stop:
            break
        if span.source is not None:
            if cancel.is_set():
                break
            turn = partial(decoder.turn_keys, shift=span.shift) if span.shift else None
            cache.append_from(source, span.source, stop - span.start, turn)
            continue
        for start in range(span.start, stop, chunk):
            if cancel.is_set():
                return cache
            forward(ids[start : min(start + chunk, stop)], cache)
    return cache


def exact_after(plan: Plan, source_exact: int) -> int:
    """Leading positions of a cache built by `plan` that are exact: the prefix taken in place
    (as far as the source was exact) and what is computed right after it."""
    exact = min(plan.prefix, source_exact)
    if exact < plan.prefix:
        return exact
    for span in plan.spans[1:] if plan.prefix else plan.spans:
        if span.source is not None:
            break
        exact += span.length
    return exact
