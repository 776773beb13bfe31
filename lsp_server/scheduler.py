"""One model, one request at a time: a worker thread that takes the newest request first,
and, when no request waits, idle work that any request preempts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass
class _Job:
    run: Callable[[threading.Event], Any]
    cancel: threading.Event
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


@dataclass
class _IdleJob:
    key: str
    run: Callable[[threading.Event], object]
    cancel: threading.Event


class Scheduler:
    """Runs jobs on a single worker thread, newest first; a newer job for a key cancels the older.

    After a burst of keystrokes only the last request of each document is still wanted, and of
    those the newest is the one the user looks at, so pending jobs form a stack, not a queue.
    Idle jobs (`run_when_idle`) run only while no job waits, and every job cancels the idle
    one in progress: a request waits at most for the idle job's next check of its flag.
    """

    def __init__(self) -> None:
        self._active: dict[str, threading.Event] = {}
        self._pending: list[_Job] = []
        self._idle: OrderedDict[str, _IdleJob] = OrderedDict()
        self._idle_running: _IdleJob | None = None
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
                self._preempt_idle(key)
                self._wake.notify()
            return await future
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            if self._active.get(key) is cancel:
                del self._active[key]

    def run_when_idle(self, key: str, job: Callable[[threading.Event], object]) -> None:
        """Run `job(cancel)` on the worker once no job from `run` waits; its result is dropped.

        A newer idle job for `key` replaces this one, and any job from `run` cancels it while it
        runs, so it must check `cancel` often. An exception it raises is logged, not raised.
        """
        with self._wake:
            self._cancel_idle(key)
            self._idle[key] = _IdleJob(key, job, threading.Event())
            self._wake.notify()

    def busy(self, key: str) -> bool:
        """Whether a job from `run` for `key` is waiting or running."""
        return key in self._active

    def cancel(self, key: str) -> None:
        """Cancel the running or waiting job for `key`, if any."""
        if (event := self._active.get(key)) is not None:
            event.set()

    def cancel_idle(self, key: str) -> None:
        """Cancel the idle job for `key`, waiting or running, if any."""
        with self._wake:
            self._cancel_idle(key)

    def cancel_all(self) -> None:
        for event in list(self._active.values()):
            event.set()
        with self._wake:
            for key in list(self._idle):
                self._cancel_idle(key)
            if self._idle_running is not None:
                self._idle_running.cancel.set()

    def _cancel_idle(self, key: str) -> None:
        """The caller holds `_wake`."""
        if (waiting := self._idle.pop(key, None)) is not None:
            waiting.cancel.set()
        if self._idle_running is not None and self._idle_running.key == key:
            self._idle_running.cancel.set()

    def _preempt_idle(self, key: str) -> None:
        """A job for `key` was queued: stop the idle job in progress, and drop the waiting idle
        job for the same key (the job leaves the model ready for `key` itself). The caller
        holds `_wake`."""
        if self._idle_running is not None:
            self._idle_running.cancel.set()
        if (waiting := self._idle.pop(key, None)) is not None:
            waiting.cancel.set()

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
            job: _Job | None = None
            with self._wake:
                while not self._pending and not self._idle and not self._closed:
                    self._wake.wait()
                if self._closed:
                    dropped, self._pending = self._pending, []
                    self._idle.clear()
                    break
                if self._pending:
                    job = self._pending.pop()
                else:
                    self._idle_running = idle = self._idle.popitem()[1]
            if job is None:
                self._run_idle(idle)
            elif job.cancel.is_set():  # superseded while it waited: skip it outright
                _settle(job, None)
            else:
                try:
                    _settle(job, job.run(job.cancel))
                except BaseException as exc:  # the caller gets it; the worker lives on
                    _settle(job, exc)
        for stale in dropped:
            _settle(stale, None)

    def _run_idle(self, idle: _IdleJob) -> None:
        try:
            if not idle.cancel.is_set():
                idle.run(idle.cancel)
        except BaseException as exc:  # idle work is optional: it must never stop the worker
            log.warning("idle work for %s failed: %s", idle.key, exc, exc_info=True)
        finally:
            with self._wake:
                self._idle_running = None


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
