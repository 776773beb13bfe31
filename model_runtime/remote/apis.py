"""The wire formats of serving engines: request bodies to send, and stream lines to read.

Pure functions, one pair per API:
- `openai`: `POST {endpoint}/completions` (vLLM, llama.cpp's server, Ollama, TGI's OpenAI route),
  the prompt rendered by wisp's template, answered as server-sent events;
- `llamacpp`: llama.cpp's native `POST {endpoint}/infill`, prefix and suffix as separate fields,
  the server's own FIM tokens and prompt cache, server-sent events;
- `ollama`: `POST {endpoint}/api/generate` with `suffix`, answered as JSON lines.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from model_runtime.backend import SamplingParams
from model_runtime.templates import FimTemplate, PromptParts

Api = Literal["openai", "llamacpp", "ollama"]
APIS: tuple[Api, ...] = ("openai", "llamacpp", "ollama")
# Where each engine listens by default (vLLM 8000, llama.cpp 8080, Ollama 11434).
DEFAULT_ENDPOINTS: dict[Api, str] = {
    "openai": "http://127.0.0.1:8000/v1",
    "llamacpp": "http://127.0.0.1:8080",
    "ollama": "http://127.0.0.1:11434",
}
PATHS: dict[Api, str] = {"openai": "/completions", "llamacpp": "/infill", "ollama": "/api/generate"}
MAX_OPENAI_STOPS = 4  # the OpenAI API refuses more


class MalformedReply(ValueError):
    """A line of the server's answer that is not what its API promises."""


@dataclass(frozen=True)
class Piece:
    """Text the server streamed for one token (or several, when it did not split them)."""

    text: str
    logprob: float | None = None


@dataclass(frozen=True)
class Event:
    """What one stream line says about one choice (candidate)."""

    choice: int = 0
    pieces: tuple[Piece, ...] = ()
    finish: str | None = None  # the server's reason when this choice is finished
    server_ms: float | None = None  # the server's own timing of the request, when it reports one
    end_of_stream: bool = False


@dataclass(frozen=True)
class Ask:
    """What wisp wants from the server for one completion."""

    prompt: str  # rendered by wisp's template (openai, and ollama for prefix-only models)
    parts: PromptParts  # the same, unrendered (llamacpp, and ollama for FIM models)
    params: SamplingParams
    stops: tuple[str, ...]
    model: str | None = None
    logprobs: bool = True


def _sampling(params: SamplingParams) -> tuple[float, int]:
    """Temperature and count: one candidate is the greedy one, as the local backend draws it."""
    if params.num_candidates == 1:
        return 0.0, 1
    return params.temperature, params.num_candidates


def request_body(
    api: Api, ask: Ask, template: FimTemplate, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON body of a streaming completion request; `extra` is merged in last."""
    temperature, n = _sampling(ask.params)
    body: dict[str, Any]
    if api == "openai":
        body = {
            "prompt": ask.prompt,
            "max_tokens": ask.params.max_new_tokens,
            "temperature": temperature,
            "top_p": ask.params.top_p,
            "n": n,
            "stream": True,
        }
        if ask.model:
            body["model"] = ask.model
        if ask.stops:
            body["stop"] = list(ask.stops[:MAX_OPENAI_STOPS])
        if ask.logprobs:
            body["logprobs"] = 1
    elif api == "llamacpp":
        body = {
            "input_prefix": ask.parts.prefix,
            "input_suffix": ask.parts.suffix,
            # other files' snippets: the server places them ahead of the FIM prompt
            "input_extra": [{"filename": "", "text": ask.parts.context}]
            if ask.parts.context
            else [],
            "prompt": "",
            "n_predict": ask.params.max_new_tokens,
            "temperature": temperature,
            "top_p": ask.params.top_p,
            "repeat_penalty": 1.0,
            "stream": True,
            "cache_prompt": True,
        }
        if ask.stops:
            body["stop"] = list(ask.stops)
        if ask.logprobs:
            body["n_probs"] = 1
    else:
        options: dict[str, Any] = {
            "temperature": temperature,
            "top_p": ask.params.top_p,
            "num_predict": ask.params.max_new_tokens,
            "repeat_penalty": 1.0,
        }
        if ask.stops:
            options["stop"] = list(ask.stops)
        body = {"model": ask.model or "", "stream": True, "options": options}
        if template.uses_suffix:
            body.update(prompt=ask.parts.context + ask.parts.prefix, suffix=ask.parts.suffix)
        else:  # no FIM in the model: wisp's own prompt, as is
            body.update(prompt=ask.prompt, raw=True)
        if ask.logprobs:
            body["logprobs"] = True
    if ask.params.seed is not None:
        (body["options"] if api == "ollama" else body)["seed"] = ask.params.seed
    return {**body, **(extra or {})}


def parse_line(api: Api, line: str) -> list[Event]:
    """The events in one line of a streamed answer ([] for keep-alives and other framing)."""
    line = line.strip()
    if api == "ollama":
        if not line:
            return []
        return _ollama(_json(line))
    if not line.startswith("data:"):
        return []  # blank lines, `: ping` comments, `event:` names
    data = line[len("data:") :].strip()
    if data == "[DONE]":
        return [Event(end_of_stream=True)]
    message = _json(data)
    return _openai(message) if api == "openai" else _llamacpp(message)


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise MalformedReply(f"not JSON: {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise MalformedReply(f"not a JSON object: {text[:80]!r}")
    if "error" in value:
        raise MalformedReply(f"the server reported an error: {error_message(value)}")
    return value


def error_message(value: Any) -> str:
    """The human part of an error body: OpenAI's `{"error": {"message"}}`, FastAPI's
    `{"detail"}`, Ollama's `{"error": "..."}` or any other text."""
    error = value.get("error", value.get("detail", value)) if isinstance(value, dict) else value
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error
    return str(error)[:200]


def _openai(message: dict[str, Any]) -> list[Event]:
    choices = message.get("choices")
    if not isinstance(choices, list):
        raise MalformedReply("a completion chunk without `choices`")
    events = []
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise MalformedReply("a choice that is not an object")
        text = choice.get("text") or ""
        if not isinstance(text, str):
            raise MalformedReply("a choice whose `text` is not a string")
        index = choice.get("index", position)
        events.append(
            Event(
                index if isinstance(index, int) else position,
                _openai_pieces(text, choice.get("logprobs")),
                choice.get("finish_reason") or None,
            )
        )
    return events


def _openai_pieces(text: str, logprobs: Any) -> tuple[Piece, ...]:
    """Per-token pieces when the server sent `logprobs`; one piece without a score otherwise."""
    if not text:
        return ()
    if not isinstance(logprobs, dict):
        return (Piece(text),)
    tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
    if not _numbers(values) or not isinstance(tokens, list) or len(tokens) != len(values):
        return (Piece(text),)
    if "".join(str(t) for t in tokens) == text:
        return tuple(Piece(str(t), float(v)) for t, v in zip(tokens, values, strict=True))
    return (Piece(text, sum(values) / len(values)),)  # tokens that do not spell the text


def _numbers(values: Any) -> TypeGuard[list[float]]:
    return (
        isinstance(values, list)
        and bool(values)
        and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
    )


def _scored_piece(message: dict[str, Any], text_key: str, scores_key: str) -> tuple[Piece, ...]:
    """The text under `text_key` as one piece, scored by the mean `logprob` of the entries
    under `scores_key` (llama.cpp's and Ollama's one-token chunks)."""
    text = message.get(text_key, "")
    if not isinstance(text, str):
        raise MalformedReply(f"a chunk whose `{text_key}` is not a string")
    if not text:
        return ()
    scores = message.get(scores_key)
    values = [p.get("logprob") for p in scores if isinstance(p, dict)] if scores else None
    return (Piece(text, sum(values) / len(values) if _numbers(values) else None),)


def _llamacpp(message: dict[str, Any]) -> list[Event]:
    pieces = _scored_piece(message, "content", "completion_probabilities")
    stopped = message.get("stop") is True
    timings = message.get("timings")
    server_ms = None
    if stopped and isinstance(timings, dict):
        parts = [timings.get("prompt_ms"), timings.get("predicted_ms")]
        server_ms = sum(float(p) for p in parts if isinstance(p, int | float))
    finish = str(message.get("stop_type") or "stop") if stopped else None
    return [Event(0, pieces, finish, server_ms, end_of_stream=stopped)]


def _ollama(message: dict[str, Any]) -> list[Event]:
    pieces = _scored_piece(message, "response", "logprobs")
    done = message.get("done") is True
    total = message.get("total_duration")
    server_ms = total / 1e6 if done and isinstance(total, int | float) else None
    finish = str(message.get("done_reason") or "stop") if done else None
    return [Event(0, pieces, finish, server_ms, end_of_stream=done)]


def stop_reason(finish: str | None) -> Literal["max_tokens", "eos"]:
    """wisp's name for the reason a server gave for ending a choice."""
    return "max_tokens" if finish in ("length", "limit") else "eos"


def model_ids(listing: Any) -> Sequence[str]:
    """The model ids in an OpenAI `GET /models` answer (empty when it is not one)."""
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        return []
    return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
