"""The summary of a run: mean scores, the empty-completion floor, the gate, and their text form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any

from model_runtime.evaluation.metrics import mean
from model_runtime.evaluation.runner import Sample, Scores

METRIC_LABELS = {
    "exact_match": "exact match",
    "edit_similarity": "edit similarity",
    "pass_at_1": "pass@1",
}


def aggregate(scores: Sequence[Scores]) -> dict[str, float]:
    """Mean exact match and edit similarity; pass@1 too where the tasks have tests (0–100)."""
    out = {
        "exact_match": round(mean(s.exact_match for s in scores), 2),
        "edit_similarity": round(mean(s.edit_similarity for s in scores), 2),
    }
    tested = [s.passed for s in scores if s.passed is not None]
    if tested:
        out["pass_at_1"] = round(mean(100.0 * p for p in tested), 2)
    return out


def gate(samples: Sequence[Sample], min_confidence: float) -> dict[str, Any]:
    """What a confidence gate would do: the share of tasks shown, the scores of what is shown,
    and the scores of all tasks when a hidden answer counts as an empty one."""
    visible = [s.confidence is not None and s.confidence >= min_confidence for s in samples]
    shown = [s for s, seen in zip(samples, visible, strict=True) if seen]
    gated = [s.scores if seen else s.floor for s, seen in zip(samples, visible, strict=True)]
    return {
        "min_confidence": min_confidence,
        "shown": round(100.0 * len(shown) / max(len(samples), 1), 2),
        "of_shown": aggregate([s.scores for s in shown]),
        "all_tasks": aggregate(gated),
    }


def summarize(
    dataset: str,
    samples: Sequence[Sample],
    model: str,
    settings: Mapping[str, Any],
    min_confidence: float | None = None,
) -> dict[str, Any]:
    """Mean scores and latency; with `min_confidence`, what that gate would show too."""
    summary = {
        "dataset": dataset,
        "n": len(samples),
        **aggregate([s.scores for s in samples]),
        "floor": aggregate([s.floor for s in samples]),
        "mean_latency_ms": round(mean(s.latency_ms for s in samples), 1),
        "p50_latency_ms": round(median(s.latency_ms for s in samples), 1) if samples else 0.0,
        "model": model,
        "settings": dict(settings),
    }
    warm = [s for s in samples if s.warm_latency_ms is not None]
    if warm:
        summary["warm_p50_ms"] = round(median(s.warm_latency_ms or 0.0 for s in warm), 1)
        summary["warm_reused_tokens_mean"] = round(mean(s.warm_reused_tokens or 0 for s in warm), 1)
    if min_confidence is not None:
        summary["gate"] = gate(samples, min_confidence)
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few lines for people: the scores, then the floor of an empty completion."""

    def line(scores: Mapping[str, Any]) -> str:
        return "  ".join(
            f"{label} {scores[key]:.2f}" for key, label in METRIC_LABELS.items() if key in scores
        )

    lines = [
        f"{summary['dataset']}: n={summary['n']}  model={summary['model']}",
        f"  completion: {line(summary)}",
        f"  floor (empty completion): {line(summary['floor'])}",
        f"  latency mean {summary['mean_latency_ms']:.1f} ms, "
        f"p50 {summary['p50_latency_ms']:.1f} ms",
    ]
    if "warm_p50_ms" in summary:
        lines.append(
            f"  warm (one more character) p50 {summary['warm_p50_ms']:.1f} ms, "
            f"reused {summary['warm_reused_tokens_mean']:.1f} prompt tokens on average"
        )
    if "gate" in summary:
        g = summary["gate"]
        lines += [
            f"  gate minConfidence {g['min_confidence']:.2f}: shown {g['shown']:.2f}% of tasks",
            f"    of shown: {line(g['of_shown'])}",
            f"    all tasks, hidden as empty: {line(g['all_tasks'])}",
        ]
    return "\n".join(lines)
