"""The summary of a run: mean scores, the empty-completion floor, and their text form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def summarize(
    dataset: str, samples: Sequence[Sample], model: str, settings: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "n": len(samples),
        **aggregate([s.scores for s in samples]),
        "floor": aggregate([s.floor for s in samples]),
        "mean_latency_ms": round(mean(s.latency_ms for s in samples), 1),
        "model": model,
        "settings": dict(settings),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few lines for people: the scores, then the floor of an empty completion."""

    def line(scores: Mapping[str, Any]) -> str:
        return "  ".join(
            f"{label} {scores[key]:.2f}" for key, label in METRIC_LABELS.items() if key in scores
        )

    return "\n".join(
        [
            f"{summary['dataset']}: n={summary['n']}  model={summary['model']}",
            f"  completion: {line(summary)}",
            f"  floor (empty completion): {line(summary['floor'])}",
            f"  mean latency {summary['mean_latency_ms']:.1f} ms",
        ]
    )
