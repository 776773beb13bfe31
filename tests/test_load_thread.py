"""The model loads in a thread of its own that ends, taking its OpenMP team with it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from lsp_server.loading import in_own_thread


def test_in_own_thread_returns_the_value_from_another_thread_that_then_ends() -> None:
    seen: list[threading.Thread] = []

    def work() -> int:
        seen.append(threading.current_thread())
        return 42

    assert asyncio.run(in_own_thread(work)) == 42
    assert seen[0] is not threading.main_thread()
    seen[0].join(timeout=5)
    assert not seen[0].is_alive()


def test_in_own_thread_raises_what_the_work_raised() -> None:
    def work() -> None:
        raise ValueError("no such model")

    with pytest.raises(ValueError, match="no such model"):
        asyncio.run(in_own_thread(work))


# Counts the process's threads after a parallel torch operation ran in a thread: one started by
# `in_own_thread` (its OpenMP team should go with it), or a pooled one (the team stays).
PROBE = textwrap.dedent(
    """
    import asyncio, concurrent.futures, os, sys, time
    import torch
    from lsp_server.loading import in_own_thread

    def count():
        return len(os.listdir("/proc/self/task"))

    x = torch.ones(20_000_000)
    before = count()
    if sys.argv[1] == "own":
        asyncio.run(in_own_thread(lambda: (x * 2).sum().item()))
    else:
        pool = concurrent.futures.ThreadPoolExecutor(1)
        pool.submit(lambda: (x * 2).sum().item()).result()
    for _ in range(40):  # a team's threads take a moment to exit
        if count() <= before:
            break
        time.sleep(0.05)
    print(before, count())
    """
)


@pytest.mark.skipif(
    sys.platform != "linux" or torch.get_num_threads() < 2, reason="needs /proc and 2 threads"
)
def test_the_loading_threads_openmp_team_ends_with_it_unlike_a_pooled_threads() -> None:
    def threads_before_and_after(mode: str) -> tuple[int, int]:
        out = subprocess.run(
            [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
        ).stdout.split()
        return int(out[-2]), int(out[-1])

    before, after = threads_before_and_after("own")
    assert after <= before
    before, after = threads_before_and_after("pooled")
    assert after > before  # the team stays: what in_own_thread avoids
