"""Drafts from the prompt (pure) and speculative decoding's promise: the same greedy answer."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from model_runtime.backend import GenerationRequest, SamplingParams
from model_runtime.local import LoadOptions, LocalBackend, load_backend
from model_runtime.lookahead import DraftIndex, accepted_length


@pytest.mark.parametrize(
    ("ids", "limit", "want"),
    [
        ([1, 2, 3, 4, 5, 1, 2, 3], 4, [4, 5, 1, 2]),  # the continuation of the earlier 1 2 3
        ([1, 2, 3, 4, 5, 1, 2, 3], 1, [4]),
        ([1, 2, 3, 4, 1, 2, 3], 9, [4, 1, 2, 3]),  # never past the end of what is known
        ([1, 2, 3, 9, 1, 2, 3, 7, 1, 2, 3], 2, [7, 1]),  # the latest earlier place wins
        ([1, 2, 3, 4, 5, 6], 4, []),  # the tail never occurred before
        ([1, 2], 4, []),  # shorter than a match
        ([1, 2, 3, 1, 2, 3], 0, []),
        ([7, 7, 7, 7, 7], 3, [7]),  # a run: the earlier place is one token back
    ],
)
def test_drafts(ids: list[int], limit: int, want: list[int]) -> None:
    assert DraftIndex(ids).propose(limit) == want


def test_drafts_follow_appended_tokens() -> None:
    index = DraftIndex([5, 6, 7, 8, 9, 1])
    assert index.propose(3) == []
    index.extend([5, 6])
    assert index.propose(3) == []  # two tokens are not a match
    index.extend([7])
    assert index.propose(3) == [8, 9, 1]


@pytest.mark.parametrize(
    ("draft", "predicted", "want"),
    [
        ([4, 5, 6], [4, 5, 6, 7], 3),
        ([4, 5, 6], [4, 9, 6, 7], 1),
        ([4, 5, 6], [8, 5, 6, 7], 0),
        ([], [3], 0),
    ],
)
def test_accepted_length(draft: list[int], predicted: list[int], want: int) -> None:
    assert accepted_length(draft, predicted) == want


REPEATING = "def add(a, b):\n    return a + b\n\n\ndef add(a, b):\n    return a + b\n\n\ndef "


def generate(backend: LocalBackend, prompt: str, draft: int, **params: object):
    request = GenerationRequest(
        prompt,
        SamplingParams(max_new_tokens=40, draft_tokens=draft, **params),  # type: ignore[arg-type]
        cache_key=f"doc{draft}",
    )
    return backend.generate(request, threading.Event())


@pytest.mark.parametrize("lean", [True, False])
def test_greedy_answers_are_identical_with_drafts(random_model: Path, lean: bool) -> None:
    backend = load_backend(LoadOptions(str(random_model), quantization="none"))
    if not lean:
        backend.fast = None
    drafted = accepted = 0
    for prompt in (REPEATING, REPEATING[:40], "class Greeter:\n    def greet(self)", "x x x x x"):
        for typed in ("", " a"):
            plain = generate(backend, prompt + typed, 0)
            quick = generate(backend, prompt + typed, 6)
            assert quick.candidates[0].token_ids == plain.candidates[0].token_ids
            assert quick.candidates[0].stop_reason == plain.candidates[0].stop_reason
            assert quick.candidates[0].logprobs == pytest.approx(
                plain.candidates[0].logprobs, abs=1e-4
            )
            assert plain.timings_ms["drafted"] == 0
            assert quick.timings_ms["steps"] == plain.timings_ms["steps"]
            drafted += quick.timings_ms["drafted"]
            accepted += quick.timings_ms["accepted"]
    assert drafted > 0  # the repeating prompts did give drafts to check


def test_a_model_that_repeats_accepts_whole_drafts(x_model: Path) -> None:
    """The x model writes `x` forever: every draft from a run of x's is right."""
    backend = load_backend(LoadOptions(str(x_model), quantization="none"))
    prompt = "<|fim_suffix|><|fim_prefix|>y = xxxxxxxxxxxxxxxx<|fim_middle|>"
    result = generate(backend, prompt, 4)
    plain = generate(backend, prompt, 0)
    assert result.candidates[0].token_ids == plain.candidates[0].token_ids
    assert result.timings_ms["accepted"] > 0
    assert result.timings_ms["forward_passes"] < plain.timings_ms["forward_passes"]


def test_drafts_stop_exactly_at_the_token_limit(x_model: Path) -> None:
    backend = load_backend(LoadOptions(str(x_model), quantization="none"))
    prompt = "<|fim_suffix|><|fim_prefix|>y = xxxxxxxxxxxxxxxx<|fim_middle|>"
    request = GenerationRequest(prompt, SamplingParams(max_new_tokens=7, draft_tokens=5))
    [candidate] = backend.generate(request, threading.Event()).candidates
    assert len(candidate.token_ids) == 7 and candidate.stop_reason == "max_tokens"


def test_several_candidates_do_not_draft(random_model: Path) -> None:
    backend = load_backend(LoadOptions(str(random_model), quantization="none"))
    result = generate(backend, REPEATING, 6, num_candidates=3, temperature=1.0, seed=1)
    assert len(result.candidates) == 3 and result.timings_ms["drafted"] == 0
