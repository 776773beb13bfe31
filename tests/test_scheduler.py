"""The model's work queue: newest first, supersession, debounce, cancellation, errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from lsp_server.scheduler import Scheduler


@pytest.fixture
async def scheduler() -> AsyncIterator[Scheduler]:
    sched = Scheduler()
    yield sched
    sched.shutdown()


def blocker(started: threading.Event, release: threading.Event, order: list[str], name: str):
    def job(cancel: threading.Event) -> str:
        started.set()
        release.wait(5)
        order.append(name)
        return name

    return job


def recorder(order: list[str], name: str):
    def job(cancel: threading.Event) -> str:
        order.append(name)
        return name

    return job


async def test_newest_waiting_job_runs_first(scheduler: Scheduler) -> None:
    started, release, order = threading.Event(), threading.Event(), []
    busy = asyncio.ensure_future(scheduler.run("a", blocker(started, release, order, "busy")))
    await asyncio.to_thread(started.wait, 5)
    older = asyncio.ensure_future(scheduler.run("b", recorder(order, "older")))
    await asyncio.sleep(0.05)
    newer = asyncio.ensure_future(scheduler.run("c", recorder(order, "newer")))
    await asyncio.sleep(0.05)
    release.set()
    assert await asyncio.gather(busy, older, newer) == ["busy", "older", "newer"]
    assert order == ["busy", "newer", "older"]


async def test_newer_job_for_a_key_supersedes_the_older(scheduler: Scheduler) -> None:
    seen: list[bool] = []

    def long_job(cancel: threading.Event) -> str:
        while not cancel.wait(0.01):
            pass
        seen.append(cancel.is_set())
        return "stopped"

    first = asyncio.ensure_future(scheduler.run("doc", long_job))
    await asyncio.sleep(0.1)
    second = await scheduler.run("doc", lambda cancel: "second")
    assert second == "second" and await first == "stopped" and seen == [True]


async def test_debounced_job_replaced_during_the_wait_never_runs(scheduler: Scheduler) -> None:
    order: list[str] = []
    first = asyncio.ensure_future(scheduler.run("doc", recorder(order, "first"), debounce_s=0.2))
    await asyncio.sleep(0.05)
    second = await scheduler.run("doc", recorder(order, "second"), debounce_s=0.2)
    assert await first is None and second == "second" and order == ["second"]


async def test_cancelling_the_caller_sets_the_flag(scheduler: Scheduler) -> None:
    flagged = threading.Event()

    def job(cancel: threading.Event) -> None:
        cancel.wait(5)
        flagged.set()

    task = asyncio.ensure_future(scheduler.run("doc", job))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(flagged.wait, 5)


async def test_a_failing_job_raises_in_the_caller_and_the_worker_goes_on(
    scheduler: Scheduler,
) -> None:
    def boom(cancel: threading.Event) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await scheduler.run("doc", boom)
    assert await scheduler.run("doc", lambda cancel: 7) == 7


async def test_close_cancels_the_running_job_and_waits_for_the_worker(
    scheduler: Scheduler,
) -> None:
    started = threading.Event()

    def job(cancel: threading.Event) -> str:
        started.set()
        cancel.wait(5)
        return "stopped"

    task = asyncio.ensure_future(scheduler.run("doc", job))
    assert await asyncio.to_thread(started.wait, 5)
    assert await asyncio.to_thread(scheduler.close, 5)
    assert await task == "stopped"


async def test_close_says_when_the_worker_is_still_busy(scheduler: Scheduler) -> None:
    started, release = threading.Event(), threading.Event()
    task = asyncio.ensure_future(scheduler.run("doc", blocker(started, release, [], "deaf")))
    assert await asyncio.to_thread(started.wait, 5)
    assert not await asyncio.to_thread(scheduler.close, 0.1)  # the job ignores its flag
    release.set()
    assert await task == "deaf"
