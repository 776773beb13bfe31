"""The golden corpus: text before and after the cursor, a raw model output, and the suggestion
the user should see. `tests/data/golden_completions.jsonl`, one case a line:

- `before`, `after`: the document split at the cursor; `language`: its LSP language id;
- `raw`: what the model wrote (one candidate; each character a token of log-probability -0.1);
- `expected`: the suggestion's text, or null for none; `replace`: characters after the cursor
  it replaces (default 0); `mode`: the `multiline` setting (default `auto`); `stop`: why the
  model stopped (default `eos`).

It runs through `to_suggestions` with a gate just above 0, so rejected candidates are hidden.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model_runtime.backend import Candidate
from model_runtime.context import CursorContext, wants_multiline
from model_runtime.postprocess import Policy, to_suggestions

CORPUS = Path(__file__).parent / "data" / "golden_completions.jsonl"
CASES = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
STOPS = ("<|endoftext|>",)


def decode(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def test_corpus_size_and_spread() -> None:
    assert len(CASES) >= 60
    assert len({c["id"] for c in CASES}) == len(CASES)
    assert len({c["language"] for c in CASES}) >= 4
    assert sum(c["expected"] is None for c in CASES) < len(CASES) / 3


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_golden(case: dict[str, Any]) -> None:
    ctx = CursorContext(case["before"], case["after"], "file", case["language"])
    mode = case.get("mode", "auto")
    raw = case["raw"]
    candidate = Candidate(raw, [ord(c) for c in raw], [-0.1] * len(raw), case.get("stop", "eos"))
    policy = Policy(multiline=mode, min_confidence=0.01)
    one_line = not wants_multiline(ctx, mode)
    out = to_suggestions([candidate], ctx, STOPS, one_line, policy, decode)
    got = (out[0].text, out[0].replace) if out else None
    expected = None if case["expected"] is None else (case["expected"], case.get("replace", 0))
    assert got == expected
