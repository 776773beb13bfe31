"""The interface every model backend implements, and the values that cross it."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from model_runtime.healing import TokenTable
from model_runtime.stopping import StopReason
from model_runtime.templates import FimTemplate, PromptParts


class ModelLoadError(Exception):
    """A model could not be loaded; the message names the cause for the user."""


class BackendUnavailable(Exception):
    """A completion failed outside wisp (a serving engine down, refusing, cut off): the message
    names the cause; no traceback is worth logging."""


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only: enough to name a cause in a status line."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@dataclass(frozen=True)
class SamplingParams:
    """How to draw candidates. The first candidate is greedy; the rest are sampled."""

    max_new_tokens: int = 64
    num_candidates: int = 1
    temperature: float = 0.2
    top_p: float = 0.95
    seed: int | None = None
    # Tokens guessed from the prompt and checked in one pass (one greedy candidate only); 0: off.
    draft_tokens: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= 4096:
            raise ValueError(f"max_new_tokens must be in 1..4096, got {self.max_new_tokens}")
        if not 1 <= self.num_candidates <= 16:
            raise ValueError(f"num_candidates must be in 1..16, got {self.num_candidates}")
        if not 0 <= self.draft_tokens <= 64:
            raise ValueError(f"draft_tokens must be in 0..64, got {self.draft_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in 0..2, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to continue, with what ends each candidate."""

    prompt: str
    params: SamplingParams
    stop_strings: tuple[str, ...] = ()
    single_line: bool = False
    cache_key: str = ""  # the document: backends keep its last prompt's state for the next one
    time_budget_ms: float | None = None  # stop decoding after this long and return what is ready
    lead: str = ""  # text the prompt left out (token healing): answers start with it, unshown
    suffix_line: str = ""  # the first line after the cursor's: a candidate stops on writing it
    parts: PromptParts | None = None  # the prompt unrendered, for servers that render their own
    block_cut: Callable[[str], str] | None = None  # trimming's cuts of a block (`cut_settled`)


@dataclass
class Candidate:
    """One generated continuation with the log-probability of each of its tokens."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stop_reason: StopReason | None = None
    lead: str = ""  # text the first tokens re-type that `text` leaves out (token healing)
    scored: bool = True  # False: the backend had no log-probabilities; ranking uses the checks

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else -math.inf


@dataclass
class GenerationResult:
    candidates: list[Candidate]
    prompt_tokens: int
    timings_ms: dict[str, float] = field(default_factory=dict)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items `a` and `b` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Backend(Protocol):
    """A loaded model that continues prompts. Implementations own all tensor code."""

    name: str
    template: FimTemplate
    context_window: int | None  # positions the model was built for; None when unbounded
    healing: TokenTable | None  # the vocabulary as bytes, for token healing; None: no healing

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> GenerationResult: ...

    def continuation_logprobs(
        self, request: GenerationRequest, answers: Sequence[str], continuation: str
    ) -> list[float]:
        """Per answer, the mean log-probability of `continuation` after prompt, lead and answer."""
        ...


@runtime_checkable
class Prefills(Protocol):
    """What a backend that keeps prompt caches may add: work on a prompt before it is asked.

    Optional: the engine checks for it, and backends without it (remote ones: their server
    keeps its own cache) are simply not asked.
    """

    def prefill(self, request: GenerationRequest, cancel: threading.Event) -> int:
        """Compute what `generate` would reuse for `request`, stopping at a cancel between
        small chunks and keeping what was done; how many positions it computed."""
        ...

    def forget(self, key: str) -> None:
        """Let go of what is kept for the document `key` (`GenerationRequest.cache_key`)."""
        ...
