"""One model, one request at a time: a worker thread, and the newest request per document wins."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Scheduler:
    """Runs jobs on a single worker thread; a newer job for the same key cancels the older."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wisp-model")
        self._active: dict[str, threading.Event] = {}

    async def run(self, key: str, job: Callable[[threading.Event], T]) -> T | None:
        """Run `job(cancel)` on the worker; None when a newer job for `key` replaced it first.

        The job must check `cancel` as it goes: a thread cannot be interrupted from outside, so
        `$/cancelRequest` (which cancels this coroutine) and supersession only set the flag.
        """
        if (previous := self._active.get(key)) is not None:
            previous.set()
        cancel = threading.Event()
        self._active[key] = cancel
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, _unless_cancelled, job, cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            if self._active.get(key) is cancel:
                del self._active[key]

    def cancel_all(self) -> None:
        for event in self._active.values():
            event.set()

    def shutdown(self) -> None:
        self.cancel_all()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _unless_cancelled(job: Callable[[threading.Event], T], cancel: threading.Event) -> T | None:
    # Jobs queued behind a long one may be superseded before they start: skip them outright.
    return None if cancel.is_set() else job(cancel)
