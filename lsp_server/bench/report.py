"""Latency blocks, the summary table and the latency plot of a bench run."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lsp_server.bench.replay import Recording

KINDS = ("first", "cold", "warm", "jump", "typed_through", "cache")
# Jumps by how far the cursor moved: up the document, or down fewer or more lines than this.
FAR_JUMP_LINES = 40


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0–100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_block(values: Sequence[float]) -> dict[str, float | int | None]:
    """`{"p50_ms", "p95_ms", "p99_ms", "n"}`; percentiles None when there is no sample."""
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "n": 0}
    return {
        "p50_ms": round(percentile(values, 50), 2),
        "p95_ms": round(percentile(values, 95), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "n": len(values),
    }


def latency_blocks(samples: Iterable[tuple[str, float]]) -> dict[str, dict[str, Any]]:
    """One block per request kind, from (kind, milliseconds) samples."""
    by_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for kind, ms in samples:
        by_kind.setdefault(kind, []).append(ms)
    return {kind: latency_block(values) for kind, values in by_kind.items()}


def summarize(recording: Recording, speeds: dict[str, float | None]) -> dict[str, Any]:
    """The JSON summary: a latency block per kind, speeds, overhead and memory."""
    summary: dict[str, Any] = latency_blocks(recording.samples)
    summary.update(speeds)
    cold, warm = summary["cold"]["p50_ms"], summary["warm"]["p50_ms"]
    summary["warm_p50_over_cold_p50"] = round(warm / cold, 3) if cold and warm else None
    first = summary["first"]["p50_ms"]
    summary["first_over_cold_p50"] = round(first / cold, 3) if cold and first else None
    summary["jump_by_distance"] = jump_blocks(recording.jumps)
    summary["overhead_ratio"] = overhead_ratio(recording)
    served = (recording.stats_after or {}).get("server_latency_ms") or {}
    server = served.get("p50")
    summary["server_p50_ms"] = server
    summary["warm_p50_over_server_p50"] = round(warm / server, 3) if server and warm else None
    summary["server_overhead_p50"] = (recording.stats_after or {}).get("server_overhead_p50")
    # the same speeds inside the server, over the replay's own requests (local backends)
    model = (recording.stats_after or {}).get("model") or {}
    summary["served_prefill_tokens_per_s"] = model.get("prefill_tokens_per_s")
    summary["served_decode_tokens_per_s"] = model.get("decode_tokens_per_s")
    summary["peak_rss_mb"] = recording.peak_rss_mb
    summary["ready_ms"] = recording.ready_ms
    summary["requests"] = len(recording.samples)
    return summary


def jump_blocks(jumps: Iterable[tuple[int, float]]) -> dict[str, dict[str, Any]]:
    """A latency block per jump distance: up, down near, down far (`FAR_JUMP_LINES`)."""
    groups: dict[str, list[float]] = {"up": [], "down_near": [], "down_far": []}
    for lines, ms in jumps:
        kind = "up" if lines < 0 else "down_near" if lines < FAR_JUMP_LINES else "down_far"
        groups[kind].append(ms)
    return {kind: latency_block(values) for kind, values in groups.items()}


def overhead_ratio(recording: Recording) -> float | None:
    """End-to-end time of all requests over the engine's own time for them (`wisp/stats`)."""
    before, after = recording.stats_before, recording.stats_after
    if not before or not after:
        return None
    engine_ms = after.get("engine_ms_total", 0) - before.get("engine_ms_total", 0)
    if engine_ms <= 0:
        return None
    return round(sum(ms for _, ms in recording.samples) / engine_ms, 3)


def table(summary: Mapping[str, Any]) -> str:
    """A human-readable summary of the JSON report."""
    lines = [f"{'kind':<14}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}"]
    for kind in KINDS:
        block = summary[kind]
        cells = [_ms(block[k]) for k in ("p50_ms", "p95_ms", "p99_ms")]
        lines.append(f"{kind:<14}{block['n']:>6}" + "".join(f"{c:>10}" for c in cells))
    for distance, block in (summary.get("jump_by_distance") or {}).items():
        cells = [_ms(block[k]) for k in ("p50_ms", "p95_ms", "p99_ms")]
        name = f"  jump {distance.replace('_', ' ')}"
        lines.append(f"{name:<14}{block['n']:>6}" + "".join(f"{c:>10}" for c in cells))
    for key in (
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
        "served_prefill_tokens_per_s",
        "served_decode_tokens_per_s",
        "overhead_ratio",
        "server_p50_ms",
        "warm_p50_over_server_p50",
        "server_overhead_p50",
        "warm_p50_over_cold_p50",
        "first_over_cold_p50",
        "peak_rss_mb",
        "ready_ms",
    ):
        value = summary.get(key)
        lines.append(f"{key:<30}{'n/a' if value is None else value}")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def plot(samples: Mapping[str, Sequence[tuple[str, float]]], out: Path, title: str) -> None:
    """Latency per request kind (log scale) as box plots, one box per engine in each kind's group.

    `samples` maps an engine's label to its (kind, ms) samples: one engine gives one box a kind;
    two (`--against`) stand side by side in one figure, so the same replay compares.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as exc:  # an optional extra: say how to get it
        raise RuntimeError("--plot needs matplotlib: pip install 'wisp-lsp[bench]'") from exc
    present = {kind for rows in samples.values() for kind, _ in rows}
    kinds = [k for k in KINDS if k in present]
    width = 0.8 / max(len(samples), 1)
    fig, ax = plt.subplots(figsize=(2.0 + 1.4 * len(kinds), 4.5))
    for i, rows in enumerate(samples.values()):
        color = f"C{i}"
        for column, kind in enumerate(kinds, start=1):
            values = [ms for k, ms in rows if k == kind]
            if not values:
                continue
            x = column + (i - (len(samples) - 1) / 2) * width
            ax.boxplot(
                [values],
                positions=[x],
                widths=0.8 * width,
                patch_artist=True,
                boxprops={"facecolor": color, "alpha": 0.3, "edgecolor": color},
                medianprops={"color": "black"},
                showfliers=False,
            )
            jitter = [x + 0.6 * width * ((j * 0.618) % 1 - 0.5) for j in range(len(values))]
            ax.scatter(jitter, values, s=6, alpha=0.35, color=color)
    ax.set_xticks(range(1, len(kinds) + 1), [k.replace("_", " ") for k in kinds])
    if kinds:
        ax.set_yscale("log")
    if len(samples) > 1:
        handles = [Patch(color=f"C{i}", alpha=0.5, label=name) for i, name in enumerate(samples)]
        ax.legend(handles=handles)
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
