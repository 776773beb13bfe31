"""Drive a completion engine over tasks and score each answer and the empty floor."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from model_runtime.backend import Backend
from model_runtime.context import MultilineMode
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


Completer = Callable[[FimTask], Suggestion | None]


def score(task: FimTask, completion: str, replaced: int, timeout_s: float) -> Scores:
    """Compare with the reference (stripped), and run the task's tests where it has some."""
    predicted = scored_part(completion, task.reference).strip()
    program = program_for(task, task.completed(completion, replaced))
    passed = None if program is None else run_python(program, timeout_s).passed
    reference = task.reference.strip()
    return Scores(exact_match(predicted, reference), edit_similarity(predicted, reference), passed)


def engine_completer(
    backend: Backend, options: EngineOptions, multiline: MultilineMode | None
) -> Completer:
    """The best suggestion, if any; `multiline` None follows each task's mode."""
    engines = {
        mode: CompletionEngine(backend, replace(options, multiline=mode))
        for mode in ("auto", "always", "never")
    }

    def complete(task: FimTask) -> Suggestion | None:
        engine = engines[multiline or task.multiline]
        request = CompletionRequest(
            task.prefix + task.suffix, len(task.prefix), task.path, task.language
        )
        suggestions = engine.complete(request).suggestions
        return suggestions[0] if suggestions else None

    return complete


def evaluate(tasks: Iterable[FimTask], complete: Completer, timeout_s: float) -> Iterator[Sample]:
    """Complete and score each task in turn."""
    for task in tasks:
        started = time.perf_counter()
        answer = complete(task)
        latency_ms = (time.perf_counter() - started) * 1000
        text, replaced = (answer.text, answer.replace) if answer else ("", 0)
        yield Sample(
            task.task_id,
            text,
            task.reference,
            score(task, text, replaced, timeout_s),
            score(task, "", 0, timeout_s),
            latency_ms,
            answer.confidence if answer else None,
        )
