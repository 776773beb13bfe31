"""Drive a completion engine over tasks and score each answer and the empty floor."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from model_runtime.backend import Backend
from model_runtime.context import MultilineMode
from model_runtime.crossfile import OpenDocument
from model_runtime.engine import CompletionEngine, CompletionRequest, EngineOptions
from model_runtime.evaluation.execution import program_for, run_python
from model_runtime.evaluation.metrics import edit_similarity, exact_match, scored_part
from model_runtime.evaluation.task import FimTask
from model_runtime.postprocess import Suggestion


@dataclass(frozen=True)
class Scores:
    """One completion's scores, each in 0–100, and whether its program passed its tests."""

    exact_match: float
    edit_similarity: float
    passed: bool | None  # None where the task has no tests


@dataclass(frozen=True)
class Sample:
    """One task's answer, its scores, and the scores an empty completion gets."""

    task_id: str
    completion: str
    reference: str
    scores: Scores
    floor: Scores
    latency_ms: float
    confidence: float | None = None  # the answer's; None when there was none
    warm_latency_ms: float | None = None  # after one more character typed (see `warm`)
    warm_reused_tokens: int | None = None  # prompt tokens the warm request did not recompute
    score: float | None = None  # the answer's ranking score; None when there was none
    features: dict[str, float] | None = None  # what the gate read of the answer


Completer = Callable[[FimTask], Suggestion | None]
WarmProbe = Callable[[FimTask], tuple[float, int]]


def score(task: FimTask, completion: str, replaced: int, timeout_s: float) -> Scores:
    """Compare with the reference (stripped), and run the task's tests where it has some."""
    predicted = scored_part(completion, task.reference).strip()
    program = program_for(task, task.completed(completion, replaced))
    passed = None if program is None else run_python(program, timeout_s).passed
    reference = task.reference.strip()
    return Scores(exact_match(predicted, reference), edit_similarity(predicted, reference), passed)


class EngineCompleter:
    """The best suggestion per task from one engine per multiline mode; `multiline` None
    follows each task's mode. `others` are the documents open besides each task's own."""

    def __init__(
        self,
        backend: Backend,
        options: EngineOptions,
        multiline: MultilineMode | None,
        others: Sequence[OpenDocument] = (),
    ) -> None:
        self.engines = {
            mode: CompletionEngine(backend, replace(options, multiline=mode))
            for mode in ("auto", "always", "never")
        }
        self.multiline = multiline
        self.others = tuple(others)

    def _engine(self, task: FimTask) -> CompletionEngine:
        return self.engines[self.multiline or task.multiline]

    def _request(self, task: FimTask, typed: str = "") -> CompletionRequest:
        prefix = task.prefix + typed
        others = tuple(d for d in self.others if d.path != task.path)
        return CompletionRequest(
            prefix + task.suffix, len(prefix), task.path, task.language, others=others
        )

    def __call__(self, task: FimTask) -> Suggestion | None:
        suggestions = self._engine(task).complete(self._request(task)).suggestions
        return suggestions[0] if suggestions else None

    def warm(self, task: FimTask) -> tuple[float, int]:
        """Latency (ms) and reused prompt tokens of the request after the answer's first
        character is typed, with the result cache bypassed so the model runs, as after a
        keystroke that no cached answer covers."""
        engine = self._engine(task)
        engine.cache.clear()
        started = time.perf_counter()
        result = engine.complete(self._request(task, task.reference[:1]))
        elapsed = (time.perf_counter() - started) * 1000
        return elapsed, int(result.timings_ms.get("reused_tokens", 0))


def engine_completer(
    backend: Backend,
    options: EngineOptions,
    multiline: MultilineMode | None,
    others: Sequence[OpenDocument] = (),
) -> EngineCompleter:
    """The best suggestion, if any; `multiline` None follows each task's mode."""
    return EngineCompleter(backend, options, multiline, others)


def evaluate(
    tasks: Iterable[FimTask], complete: Completer, timeout_s: float, warm: WarmProbe | None = None
) -> Iterator[Sample]:
    """Complete and score each task in turn; with `warm`, time a keystroke after each too."""
    for task in tasks:
        started = time.perf_counter()
        answer = complete(task)
        latency_ms = (time.perf_counter() - started) * 1000
        warm_ms, reused = warm(task) if warm is not None else (None, None)
        text, replaced = (answer.text, answer.replace) if answer else ("", 0)
        yield Sample(
            task.task_id,
            text,
            task.reference,
            score(task, text, replaced, timeout_s),
            score(task, "", 0, timeout_s),
            latency_ms,
            answer.confidence if answer else None,
            warm_ms,
            reused,
            answer.score if answer else None,
            dict(answer.features) if answer else None,
        )
