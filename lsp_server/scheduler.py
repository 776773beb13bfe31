"""One model, one request at a time: a worker thread that takes the newest request first."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class _Job:
    run: Callable[[threading.Event], Any]
    cancel: threading.Event
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


class Scheduler:
    """Runs jobs on a single worker thread, newest first; a newer job for a key cancels the older.

    After a burst of keystrokes only the last request of each document is still wanted, and of
    those the newest is the one the user looks at, so pending jobs form a stack, not a queue.
    """

    def __init__(self) -> None:
        self._active: dict[str, threading.Event] = {}
        self._pending: list[_Job] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="wisp-model", daemon=True)
        self._thread.start()

    async def run(
        self, key: str, job: Callable[[threading.Event], T], debounce_s: float = 0.0
    ) -> T | None:
        """Run `job(cancel)` on the worker; None when a newer job for `key` replaced it first.

        With `debounce_s`, the job waits that long before it queues, so a keystroke that follows
        quickly replaces it before it costs anything. The job must check `cancel` as it goes: a
        thread cannot be interrupted from outside, so `$/cancelRequest` (which cancels this
        coroutine) and supersession only set the flag.
        """
        self.cancel(key)
        cancel = threading.Event()
        self._active[key] = cancel
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        try:
            if debounce_s > 0:
                await asyncio.sleep(debounce_s)
            if cancel.is_set():
                return None
            with self._wake:
                self._pending.append(_Job(job, cancel, future, loop))
                self._wake.notify()
            return await future
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            if self._active.get(key) is cancel:
                del self._active[key]

    def cancel(self, key: str) -> None:
        """Cancel the running or waiting job for `key`, if any."""
        if (event := self._active.get(key)) is not None:
            event.set()

    def cancel_all(self) -> None:
        for event in list(self._active.values()):
            event.set()

    def shutdown(self) -> None:
        """Cancel everything and stop taking jobs; the running job ends at its next check."""
        self.cancel_all()
        with self._wake:
            self._closed = True
            self._wake.notify()

    def close(self, timeout: float) -> bool:
        """`shutdown`, then wait up to `timeout` s for the worker; whether it has stopped."""
        self.shutdown()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    dropped, self._pending = self._pending, []
                else:
                    dropped, job = [], self._pending.pop()
            for stale in dropped:
                _settle(stale, None)
            if self._closed:
                return
            if job.cancel.is_set():  # superseded while it waited: skip it outright
                _settle(job, None)
                continue
            try:
                _settle(job, job.run(job.cancel))
            except BaseException as exc:  # the caller gets it; the worker lives on
                _settle(job, exc)


def _settle(job: _Job, outcome: Any) -> None:
    def deliver() -> None:
        if job.future.done():
            return
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        job.loop.call_soon_threadsafe(deliver)
