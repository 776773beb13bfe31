"""A backend without a model: it answers each prompt with scripted candidates."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from model_runtime.backend import Candidate, GenerationRequest, GenerationResult
from model_runtime.templates import FimTemplate, get_template


class FakeBackend:
    """Characters are tokens; `answers` are returned as candidates, in order."""

    name = "fake"
    context_window: int | None = None
    healing = None

    def __init__(self, answers: list[str], template: FimTemplate | None = None) -> None:
        self.answers = answers
        self.template = template or get_template("wisp")
        self.requests: list[GenerationRequest] = []

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in ids)

    def continuation_logprobs(
        self, request: GenerationRequest, answers: Sequence[str], continuation: str
    ) -> list[float]:
        """Scripted: answers that `continuation` starts by re-typing fit worse."""
        return [-1.0 if continuation.strip().startswith(a.strip()) else -0.1 for a in answers]

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
        self.requests.append(request)
        candidates = [
            Candidate(text, self.encode(text), [-0.1 * (rank + 1)] * max(len(text), 1), "eos")
            for rank, text in enumerate(self.answers[: request.params.num_candidates])
        ]
        return GenerationResult(candidates, prompt_tokens=len(request.prompt))
