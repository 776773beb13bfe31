"""A backend that asks a serving engine over HTTP; prompts, stops and ranking stay in wisp.

Answers stream in and pass the same stop criteria as the local decode loop (one line, the line
after the cursor, stop strings, the token limit, the deadline, a cancel): the stream is closed
as soon as every candidate is finished, so the server stops generating. A 429 or 5xx is retried
with backoff while the request's time budget lasts; everything else that goes wrong raises
BackendUnavailable, which costs one empty answer: the next request tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from model_runtime.backend import (
    BackendUnavailable,
    Candidate,
    GenerationRequest,
    GenerationResult,
)
from model_runtime.healing import TokenTable
from model_runtime.remote.apis import (
    PATHS,
    Api,
    Ask,
    Event,
    MalformedReply,
    parse_line,
    request_body,
    stop_reason,
)
from model_runtime.remote.http import Interrupted, RemoteError, StreamingClient
from model_runtime.remote.tokens import EstimatingTokenizer
from model_runtime.stopping import (
    DecodeState,
    StopCriterion,
    StopReason,
    first_reason,
    looping_line,
    max_tokens,
    single_line,
    stop_strings,
    suffix_line,
)
from model_runtime.templates import FimTemplate, PromptParts

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0
MAX_ATTEMPTS = 6


@dataclass
class _Choice:
    """One candidate as it streams in."""

    state: DecodeState = field(default_factory=DecodeState)
    logprobs: list[float] = field(default_factory=list)
    scored: bool = True
    reason: StopReason | None = None


class RemoteBackend:
    """The Backend interface over a serving engine's HTTP API (see `apis.py` for the three)."""

    healing: TokenTable | None = None  # the served vocabulary is not at hand

    def __init__(
        self,
        api: Api,
        client: StreamingClient,
        template: FimTemplate,
        model: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        context_window: int | None = None,
    ) -> None:
        self.api = api
        self.client = client
        self.template = template
        self.model = model
        self.name = f"{model or 'served model'} at {client.endpoint} ({api})"
        self.context_window = context_window
        self.extra_body = dict(extra_body or {})
        self.tokenizer = EstimatingTokenizer()
        self.logprobs = True  # until the server shows it cannot send them

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
        started = time.perf_counter()
        deadline = (
            None if request.time_budget_ms is None else started + request.time_budget_ms / 1000
        )
        backoff = FIRST_BACKOFF_S
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return self._attempt(request, cancel, started, deadline)
            except RemoteError as exc:
                if self.logprobs and _refused_logprobs(exc):
                    log.info("%s sends no log-probabilities (%s); ranking without them", self, exc)
                    self.logprobs = False
                    continue
                wait = exc.retry_after_s or backoff
                late = deadline is not None and time.perf_counter() + wait >= deadline
                if not exc.retryable or late or attempt == MAX_ATTEMPTS:
                    raise BackendUnavailable(str(exc)) from None
                log.info("attempt %d failed (%s); retrying in %.2f s", attempt, exc, wait)
                if cancel.wait(wait):
                    break
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        return GenerationResult([], 0, {"server": (time.perf_counter() - started) * 1000})

    def __str__(self) -> str:
        return self.name

    def _attempt(
        self,
        request: GenerationRequest,
        cancel: threading.Event,
        started: float,
        deadline: float | None,
    ) -> GenerationResult:
        ask = Ask(
            request.prompt,
            request.parts or PromptParts(request.prompt, ""),
            request.params,
            request.stop_strings,
            self.model,
            self.logprobs,
        )
        body = request_body(self.api, ask, self.template, self.extra_body)
        criteria: list[StopCriterion] = [
            stop_strings(request.stop_strings),
            *([single_line()] if request.single_line else []),
            suffix_line(request.suffix_line),
            looping_line(),
            max_tokens(request.params.max_new_tokens),
        ]
        choices = [_Choice() for _ in range(request.params.num_candidates)]
        sent = time.perf_counter()
        reported: float | None = None
        try:
            with self.client.stream(PATHS[self.api], body, cancel, deadline) as lines:
                for line in lines:
                    events = parse_line(self.api, line)
                    if any(e.server_ms is not None for e in events):
                        reported = next(e.server_ms for e in events if e.server_ms is not None)
                    if self._take(events, choices, criteria) and not _server_ended(choices):
                        break  # a stop of wisp's own: close the stream, the server stops too
                else:
                    if not any(c.reason for c in choices) and reported is None:
                        raise _CutShort(any(c.state.text for c in choices))
        except Interrupted as stop:
            reason: StopReason = "cancelled" if str(stop) == "cancelled" else "deadline"
            for choice in choices:
                choice.reason = choice.reason or reason
        except MalformedReply as exc:
            raise RemoteError(str(exc)) from None
        server_ms = (time.perf_counter() - sent) * 1000
        timings = {
            "prompt_tokens": len(self.encode(request.prompt)),
            "server": server_ms,
            "decode": (time.perf_counter() - started) * 1000,
        }
        if reported is not None:
            timings["server_reported"] = reported
        candidates = [self._candidate(c) for c in choices if c.state.text or c.reason]
        return GenerationResult(candidates, int(timings["prompt_tokens"]), timings)

    def _take(
        self, events: list[Event], choices: list[_Choice], criteria: list[StopCriterion]
    ) -> bool:
        """Add streamed pieces to their candidates; True once every candidate is finished."""
        for event in events:
            if 0 <= event.choice < len(choices):
                self._extend(choices[event.choice], event, criteria)
            if event.end_of_stream:
                for choice in choices:
                    choice.reason = choice.reason or stop_reason(event.finish)
        return all(c.reason is not None for c in choices)

    def _extend(self, choice: _Choice, event: Event, criteria: list[StopCriterion]) -> None:
        """One candidate's new pieces, checked against the stop criteria piece by piece."""
        for piece in event.pieces:
            if choice.reason is not None:
                return
            ids = self.tokenizer.ids_of(piece.text)
            choice.state.token_ids.extend(ids)
            choice.state.text += piece.text
            if piece.logprob is None:
                choice.scored = False
            else:
                choice.logprobs.extend([piece.logprob] * len(ids))
            choice.reason = first_reason(criteria, choice.state)
        if choice.reason is None and event.finish is not None:
            choice.reason = stop_reason(event.finish)

    def _candidate(self, choice: _Choice) -> Candidate:
        scored = choice.scored and len(choice.logprobs) == len(choice.state.token_ids)
        return Candidate(
            choice.state.text,
            list(choice.state.token_ids),
            choice.logprobs if scored else [],
            choice.reason or "cancelled",
            scored=scored,
        )

    def continuation_logprobs(
        self, request: GenerationRequest, answers: Sequence[str], continuation: str
    ) -> list[float]:
        """No engine API scores given text cheaply: every answer gets the same neutral fit."""
        return [0.0] * len(answers)

    def close(self) -> None:
        self.client.close()


def _server_ended(choices: list[_Choice]) -> bool:
    """Whether the server ended every candidate itself (the rest of the stream is its end,
    worth reading so the connection can carry the next request)."""
    return all(c.reason in ("eos", "max_tokens") for c in choices)


class _CutShort(RemoteError):
    """The answer stopped without the server saying it was done."""

    def __init__(self, had_text: bool) -> None:
        super().__init__("the answer ended before it was finished", retryable=True)
        self.had_text = had_text


def _refused_logprobs(exc: RemoteError) -> bool:
    """Whether the server turned the request down for asking for log-probabilities: it says so,
    or (llama-cpp-python without `logits_all`) it ends the stream before the first token."""
    if isinstance(exc, _CutShort):
        return not exc.had_text
    text = str(exc).lower()
    return "logprob" in text or "n_probs" in text
