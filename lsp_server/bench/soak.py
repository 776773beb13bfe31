"""A soak: the typing replay, round after round in one server; memory and latency per round."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lsp_server.bench.replay import Recording, replay_session, server_memory_mb, serving
from lsp_server.bench.report import percentile
from lsp_server.bench.script import Session


async def soak(
    plan: list[Session],
    settings: dict[str, Any],
    rounds: int,
    seed: int,
    pause_scale: float,
    on_line: Callable[[], None] = lambda: None,
    server_log: Path | None = None,
) -> tuple[list[dict[str, Any]], Recording]:
    """Replay `plan` `rounds` times; one row per round (requests, p50/p95, RSS after it).

    Each round opens its documents under new names and closes them at its end, so per-document
    state (key/value caches, results, dismissals) keeps being evicted as it would in a long day.
    """
    rows: list[dict[str, Any]] = []
    rng = random.Random(seed)
    async with serving(settings, server_log) as (client, recording):
        for number in range(1, rounds + 1):
            first = len(recording.samples)
            for session in plan:
                renamed = dataclasses.replace(session, name=f"r{number}-{session.name}")
                await replay_session(client, renamed, rng, pause_scale, 0.3, recording, on_line)
            latencies = [ms for _, ms in recording.samples[first:]]
            rows.append(
                {
                    "round": number,
                    "requests": len(latencies),
                    "p50_ms": round(percentile(latencies, 50), 1),
                    "p95_ms": round(percentile(latencies, 95), 1),
                    "rss_mb": server_memory_mb(client),
                }
            )
    return rows, recording


def drift(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Growth from the end of the first round (the warm-up) to the end of the last."""
    first, last = rows[0], rows[-1]
    rss = (
        round(100 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"], 1)
        if first["rss_mb"] and last["rss_mb"]
        else None
    )
    p50 = round(last["p50_ms"] / first["p50_ms"], 2) if first["p50_ms"] else None
    return {
        "requests": sum(row["requests"] for row in rows),
        "rss_growth_after_warmup_pct": rss,
        "p50_last_over_first": p50,
    }


def soak_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = ["round  requests  p50 ms  p95 ms  RSS MB"]
    for row in rows:
        lines.append(
            f"{row['round']:>5}  {row['requests']:>8}  {row['p50_ms']:>6}  {row['p95_ms']:>6}  "
            f"{row['rss_mb']}"
        )
    lines.append(
        f"{summary['requests']} requests; RSS growth after round 1: "
        f"{summary['rss_growth_after_warmup_pct']}%; p50 last/first round: "
        f"{summary['p50_last_over_first']}"
    )
    return "\n".join(lines)


def plot_soak(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    """RSS and latency per round, side by side (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [row["round"] for row in rows]
    figure, (memory, latency) = plt.subplots(1, 2, figsize=(10, 3.5))
    memory.plot(rounds, [row["rss_mb"] for row in rows], marker="o")
    memory.set(xlabel="round", ylabel="server RSS (MB)", title="memory after each round")
    memory.set_ylim(bottom=0)
    latency.plot(rounds, [row["p50_ms"] for row in rows], marker="o", label="p50")
    latency.plot(rounds, [row["p95_ms"] for row in rows], marker="o", label="p95")
    latency.set(xlabel="round", ylabel="ms", title="latency per round")
    latency.set_ylim(bottom=0)
    latency.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
