"""The gate: the probability that a suggestion would be accepted, from what wisp knows of it.

Each suggestion is described by a few numbers (`features`): its tokens' log-probabilities (mean,
lowest, first), its length, where the cursor is (mid-line, empty line, mid-word), what the checks
cut or found, and the language. A logistic model fitted on the public sets' outcomes
(`tools/fit_gate.py`: accepted = the first line exact, or edit similarity ≥ 0.9) turns them into
P(accept), shipped as `gate.json`. `minConfidence` is a floor on that probability.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from model_runtime.context import CursorContext

GATE_FILE = Path(__file__).with_name("gate.json")
# The `minConfidence` default: the fit's threshold (gate.json's "min_confidence"; a test holds
# them equal). docs/quality.md, "The gate", has what it shows and hides.
DEFAULT_MIN_CONFIDENCE = 0.04
# The checks' names (postprocess.cuts, trim): each a 0/1 feature.
FLAGS = (
    "chat_habit",
    "repetition",
    "suffix_copy",
    "scope",
    "statement",
    "line_suffix",
    "syntax",
    "unfinished",
    "copies_previous_line",
)
LANGUAGES = ("python", "java", "javascript", "typescript")
LOGPROB_FLOOR = -12.0  # a token less likely than this counts as this unlikely
# Features weighed apart for a block (a suggestion of several lines): `block_<name>`.
BLOCK_FEATURES = ("mean_logprob", "min_logprob", "first_logprob", "log_tokens", "log_chars",
                  "kept_share", "empty_line")  # fmt: skip


def features(
    logprobs: Sequence[float] | None,
    text: str,
    replace: int,
    flags: Sequence[str],
    ctx: CursorContext,
    kept_share: float = 1.0,
) -> dict[str, float]:
    """The numbers the gate reads for a suggestion; `logprobs` (its kept tokens') is None when
    the backend sent none; `kept_share` is the share of the model's text that trimming kept."""
    line_prefix, line_suffix = ctx.line_prefix, ctx.line_suffix
    out: dict[str, float] = {}
    if logprobs:
        clipped = [max(lp, LOGPROB_FLOOR) for lp in logprobs]
        out["mean_logprob"] = sum(clipped) / len(clipped)
        out["min_logprob"] = min(clipped)
        out["first_logprob"] = clipped[0]
        out["log_tokens"] = math.log1p(len(clipped))
    out["lines"] = float(min(text.count("\n"), 10))
    out["log_chars"] = math.log1p(len(text.strip()))
    out["mid_line"] = float(bool(line_suffix.strip()))
    out["empty_line"] = float(not line_prefix.strip())
    out["mid_word"] = float(
        bool(line_prefix) and (line_prefix[-1].isalnum() or line_prefix[-1] == "_")
    )
    out["replaces"] = float(replace > 0)
    out["block_start"] = float(_previous_code_line(ctx).rstrip().endswith((":", "{")))
    out["kept_share"] = max(0.0, min(kept_share, 1.0))
    for flag in FLAGS:
        out[flag] = float(flag in flags)
    for language in LANGUAGES:
        out[language] = float(ctx.language == language)
    return with_shape(out)


def with_shape(values: dict[str, float]) -> dict[str, float]:
    """`values` with `block` (several lines) and, for a block, `block_<name>` copies of the
    `BLOCK_FEATURES` it has: a block's numbers mean other things than a line's."""
    block = values.get("lines", 0.0) > 0
    values["block"] = float(block)
    for name in BLOCK_FEATURES:
        if name in values:
            values[f"block_{name}"] = values[name] if block else 0.0
    return values


def _previous_code_line(ctx: CursorContext) -> str:
    """The cursor's line up to the cursor, or the last line above it holding code when that
    is blank."""
    if ctx.line_prefix.strip():
        return ctx.line_prefix
    above = ctx.prefix[: len(ctx.prefix) - len(ctx.line_prefix)].split("\n")
    return next((line for line in reversed(above) if line.strip()), "")


@dataclass(frozen=True)
class Gate:
    """A logistic model over `features`: P(accept) = σ(bias + Σ weight·value)."""

    bias: float
    weights: Mapping[str, float]
    # Values for the log-probability features when a backend sent none (the fit's medians).
    unscored: Mapping[str, float]

    def probability(self, values: Mapping[str, float]) -> float:
        """P(accept) for a suggestion's features; missing log-probabilities take `unscored`'s."""
        filled = with_shape({**self.unscored, **values})
        z = self.bias + sum(w * filled.get(name, 0.0) for name, w in self.weights.items())
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Gate:
        weights = data["weights"]
        unscored = data.get("unscored", {})
        assert isinstance(weights, dict) and isinstance(unscored, dict)
        return cls(float(data["bias"]), dict(weights), dict(unscored))  # type: ignore[arg-type]


@cache
def shipped() -> Gate:
    """The gate fitted on the bundled model, from `gate.json`."""
    return Gate.from_json(json.loads(GATE_FILE.read_text(encoding="utf-8")))
