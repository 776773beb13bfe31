"""Local completion metrics: requests, latency and cache hits, what became of each item, and
the work done ahead of requests (idle prefill).

Everything stays in this process's memory; nothing is written or sent anywhere. The counts start
at zero when the server starts.
"""

from __future__ import annotations

import itertools
import math
import threading
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Literal

LATENCY_WINDOW = 1000  # latency percentiles cover this many of the most recent requests
TRACKED_LANGUAGES = 64  # languages counted apart; the rest count together as "other"
TRACKED_ITEMS = 4096  # items remembered for acceptance events; older ids are forgotten

Event = Literal["shown", "accepted", "partially_accepted"]


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank `p`th percentile (0 < p <= 100), or None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class _Tally:
    """Counts for one language, or for all of them."""

    requests: int = 0
    cancelled: int = 0
    cache_hits: int = 0
    engine_ms_total: float = 0.0
    items: int = 0
    shown: int = 0
    accepted: int = 0
    partially_accepted: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    # a serving engine's time per request (remote backends): the HTTP request, sent to last byte
    server_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    # per such request: its time in wisp (arrival to answer) over the engine's time for it
    server_overheads: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def summary(self) -> dict[str, Any]:
        recent = list(self.latencies)
        p50, p95 = percentile(recent, 50), percentile(recent, 95)
        served = list(self.server_latencies)
        server_p50, server_p95 = percentile(served, 50), percentile(served, 95)
        overhead = percentile(list(self.server_overheads), 50)
        return {
            "requests": self.requests,
            "cancelled": self.cancelled,
            "items": self.items,
            "shown": self.shown,
            "accepted": self.accepted,
            "partially_accepted": self.partially_accepted,
            "acceptance_rate": _ratio(self.accepted, self.shown),
            "latency_ms": {
                "p50": None if p50 is None else round(p50, 1),
                "p95": None if p95 is None else round(p95, 1),
            },
            "cache_hit_rate": _ratio(self.cache_hits, self.requests),
            "engine_ms_total": round(self.engine_ms_total, 1),
            "server_latency_ms": {
                "p50": None if server_p50 is None else round(server_p50, 1),
                "p95": None if server_p95 is None else round(server_p95, 1),
            },
            "server_overhead_p50": None if overhead is None else round(overhead, 3),
        }


@dataclass
class _IdlePrefills:
    """Work on prompts before they were asked (idle prefill): not requests, counted apart.
    Runs that found the cache or the answer ready already are not counted."""

    runs: int = 0
    preempted: int = 0  # stopped by a request (or a newer idle prefill) before it finished
    positions: int = 0
    ms_total: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "preempted": self.preempted,
            "positions": self.positions,
            "ms_total": round(self.ms_total, 1),
        }


@dataclass
class _ModelWork:
    """The local model's speed on the requests it answered, from their own timings: prompt
    positions computed (not reused) over prefill time, forward passes over decode time."""

    prefilled: int = 0
    prefill_ms: float = 0.0
    passes: int = 0
    decode_ms: float = 0.0

    def add(self, timings: dict[str, float]) -> None:
        self.prefilled += int(timings.get("prompt_tokens", 0) - timings.get("reused_tokens", 0))
        self.prefill_ms += timings.get("prefill", 0.0)
        self.passes += int(timings.get("forward_passes", 0))
        self.decode_ms += timings.get("decode", 0.0)

    def summary(self) -> dict[str, Any]:
        def rate(count: float, ms: float) -> float | None:
            return round(count / ms * 1000, 1) if ms > 0 else None

        return {
            "prefilled_tokens": self.prefilled,
            "prefill_tokens_per_s": rate(self.prefilled, self.prefill_ms),
            "forward_passes": self.passes,
            "decode_tokens_per_s": rate(self.passes, self.decode_ms),
        }


@dataclass
class _Item:
    language: str
    shown: bool = False
    accepted: bool = False
    partially_accepted: bool = False


class Stats:
    """Thread-safe collector: the request path records, LSP handlers report user actions.

    Items get ids from `issue`; events name an item by id and count once per item. An item
    accepted (fully or partly) without a `shown` event counts as shown then, so the acceptance
    rate never passes 1.
    """

    def __init__(self, tracked_items: int = TRACKED_ITEMS) -> None:
        self._lock = threading.Lock()
        self._total = _Tally()
        self._idle_prefills = _IdlePrefills()
        self._model = _ModelWork()
        self._by_language: dict[str, _Tally] = {}
        self._items: OrderedDict[str, _Item] = OrderedDict()
        self._tracked = tracked_items
        self._prefix = uuid.uuid4().hex[:8]  # ids from an earlier server never match
        self._counter = itertools.count(1)

    def _tallies(self, language: str) -> tuple[_Tally, _Tally]:
        name = language or "unknown"
        if name not in self._by_language and len(self._by_language) >= TRACKED_LANGUAGES:
            name = "other"  # a client inventing language ids must not grow this without end
        return self._total, self._by_language.setdefault(name, _Tally())

    def record_request(
        self,
        language: str,
        latency_ms: float,
        engine_ms: float,
        cache_hit: bool,
        server_ms: float | None = None,
    ) -> None:
        """One answered completion request: time in the server, time in the engine, cache hit,
        and the serving engine's time when a remote backend answered it."""
        with self._lock:
            for tally in self._tallies(language):
                tally.requests += 1
                tally.latencies.append(latency_ms)
                if server_ms:
                    tally.server_latencies.append(server_ms)
                    tally.server_overheads.append(latency_ms / server_ms)
                tally.engine_ms_total += engine_ms
                tally.cache_hits += cache_hit

    def record_model_work(self, timings: dict[str, float]) -> None:
        """The timings of a request the local model answered (see `_ModelWork`)."""
        with self._lock:
            self._model.add(timings)

    def record_cancelled(self, language: str, engine_ms: float = 0.0) -> None:
        """A request cancelled or superseded before it produced suggestions, and the engine
        time it took anyway."""
        with self._lock:
            for tally in self._tallies(language):
                tally.cancelled += 1
                tally.engine_ms_total += engine_ms

    def record_idle_prefill(self, positions: int, preempted: bool, ms: float) -> None:
        """An idle prefill that ran: the positions it computed, whether a request (or a newer
        idle prefill) stopped it, and its time on the model thread."""
        with self._lock:
            self._idle_prefills.runs += 1
            self._idle_prefills.preempted += preempted
            self._idle_prefills.positions += positions
            self._idle_prefills.ms_total += ms

    def issue(self, language: str, count: int, shown: int = 0) -> list[str]:
        """Ids for `count` items about to be sent; the first `shown` of them count as shown."""
        if count == 0:
            return []
        with self._lock:
            ids = []
            for rank in range(count):
                item_id = f"{self._prefix}-{next(self._counter)}"
                self._items[item_id] = _Item(language)
                ids.append(item_id)
                if rank < shown:
                    self._mark(item_id, "shown")
            for tally in self._tallies(language):
                tally.items += count
            while len(self._items) > self._tracked:
                self._items.popitem(last=False)
            return ids

    def shown(self, item_id: str) -> bool:
        """The client displayed the item; False for an unknown id."""
        return self._event(item_id, "shown")

    def accepted(self, item_id: str) -> bool:
        """The user accepted the whole item; False for an unknown id."""
        return self._event(item_id, "accepted")

    def partially_accepted(self, item_id: str) -> bool:
        """The user accepted part of the item (a word, a line); False for an unknown id."""
        return self._event(item_id, "partially_accepted")

    def _event(self, item_id: str, event: Event) -> bool:
        with self._lock:
            if item_id not in self._items:
                return False
            if event != "shown":
                self._mark(item_id, "shown")
            self._mark(item_id, event)
            return True

    def _mark(self, item_id: str, event: Event) -> None:
        """Set `event` on the item and count it, once per item. The caller holds the lock."""
        item = self._items[item_id]
        if getattr(item, event):
            return
        setattr(item, event, True)
        for tally in self._tallies(item.language):
            setattr(tally, event, getattr(tally, event) + 1)

    def snapshot(self) -> dict[str, Any]:
        """Totals, and the same figures per language: what `wisp/stats` answers."""
        with self._lock:
            return {
                **self._total.summary(),
                "idle_prefill": self._idle_prefills.summary(),
                "model": self._model.summary(),
                "per_language": {
                    language: tally.summary()
                    for language, tally in sorted(self._by_language.items())
                },
            }
