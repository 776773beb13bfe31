"""User settings: one fully defaulted model, camelCase on the wire, forgiving on bad input."""

from __future__ import annotations

import dataclasses
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from model_runtime.backend import SamplingParams
from model_runtime.crossfile import CrossFileOptions
from model_runtime.engine import EngineOptions
from model_runtime.gate import DEFAULT_MIN_CONFIDENCE
from model_runtime.lexical import CommentsAndStrings
from model_runtime.templates import TEMPLATES


@dataclass(frozen=True)
class Settings:
    """Every setting with its default; `Settings()` is a valid configuration."""

    model: str | None = None
    device: str = "auto"
    quantization: str = "auto"
    threads: int = 0  # 0: torch's default, one per physical core
    trust_remote_code: bool = False
    allow_pickle: bool = False  # pickled checkpoints can run code when loaded
    backend: str = "local"  # local | openai | llamacpp | ollama (a serving engine over HTTP)
    endpoint: str | None = None  # the engine's base URL; None: its default port on this machine
    remote_model: str | None = None  # the served model's name; None: what the server lists
    api_key_env: str | None = None  # the environment variable holding the engine's API key
    timeout_ms: int = 5000  # waiting for the engine to connect or to send the next bytes
    remote_options: dict[str, Any] = field(default_factory=dict)  # merged into request bodies
    max_new_tokens: int = 48
    num_candidates: int = 1
    draft_tokens: int = 0  # speculative decoding: tokens looked up in the prompt per check
    context_tokens: int = 1024
    temperature: float = 0.2
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    multiline: str = "auto"
    disabled_languages: tuple[str, ...] = field(default_factory=tuple)
    enabled_languages: tuple[str, ...] | None = None  # None: every language not disabled
    comments_and_strings: CommentsAndStrings = "invoked"
    fim_template: str | None = None
    debounce_ms: int = 0
    max_latency_ms: int = 1500
    cross_file_tokens: int = CrossFileOptions().tokens  # context from other files; 0: off
    cross_file_ms: int = int(CrossFileOptions().source_ms)  # time budget of each source
    prefill_when_idle: bool = True  # keep each open document's cache ready while the model is idle

    def engine_options(self) -> EngineOptions:
        sampling = SamplingParams(
            max_new_tokens=self.max_new_tokens,
            num_candidates=self.num_candidates,
            draft_tokens=self.draft_tokens,
            temperature=self.temperature,
            seed=0,
        )
        return EngineOptions(
            sampling=sampling,
            context_tokens=self.context_tokens,
            multiline=self.multiline,  # type: ignore[arg-type]  # validated by parse_settings
            min_confidence=self.min_confidence,
            max_latency_ms=float(self.max_latency_ms) if self.max_latency_ms else None,
            cross_file=CrossFileOptions(self.cross_file_tokens, float(self.cross_file_ms)),
        )

    def language_enabled(self, language: str) -> bool:
        if language in self.disabled_languages:
            return False
        return self.enabled_languages is None or language in self.enabled_languages

    def load_key(self) -> tuple[Any, ...]:
        """The settings that need a model reload when they change."""
        return (
            self.model,
            self.device,
            self.quantization,
            self.threads,
            self.trust_remote_code,
            self.allow_pickle,
            self.fim_template,
            self.backend,
            self.endpoint,
            self.remote_model,
            self.api_key_env,
            self.timeout_ms,
            self.remote_options,
        )


def _choice(*allowed: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return check


def _int_range(low: int, high: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return value

    return check


def _float_range(low: float, high: float) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise ValueError(f"must be a number from {low} to {high}")
        return float(value)

    return check


def _optional_text(value: Any) -> Any:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _json_object(value: Any) -> Any:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError("must be an object")
    return dict(value)


def _template_name(value: Any) -> Any:
    if value is None or value == "":
        return None
    return _choice(*TEMPLATES)(value)


def _boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _languages(value: Any) -> Any:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of language ids")
    return tuple(value)


def _optional_languages(value: Any) -> Any:
    return None if value is None else _languages(value)


VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "model": _optional_text,
    "device": _choice("auto", "cpu", "cuda"),
    "quantization": _choice("auto", "none", "bf16", "q4", "q8", "int8", "int4"),
    "threads": _int_range(0, 256),
    "trust_remote_code": _boolean,
    "allow_pickle": _boolean,
    "backend": _choice("local", "openai", "llamacpp", "ollama"),
    "endpoint": _optional_text,
    "remote_model": _optional_text,
    "api_key_env": _optional_text,
    "timeout_ms": _int_range(100, 600000),
    "remote_options": _json_object,
    "max_new_tokens": _int_range(1, 512),
    "num_candidates": _int_range(1, 8),
    "draft_tokens": _int_range(0, 16),
    "context_tokens": _int_range(64, 32768),
    "temperature": _float_range(0.0, 2.0),
    "min_confidence": _float_range(0.0, 1.0),
    "multiline": _choice("auto", "always", "never"),
    "disabled_languages": _languages,
    "enabled_languages": _optional_languages,
    "comments_and_strings": _choice("never", "invoked", "always"),
    "fim_template": _template_name,
    "debounce_ms": _int_range(0, 2000),
    "max_latency_ms": _int_range(0, 60000),
    "cross_file_tokens": _int_range(0, 4096),
    "cross_file_ms": _int_range(1, 1000),
    "prefill_when_idle": _boolean,
}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 60


def _brief(value: Any) -> str:
    """`repr(value)`, cut short: a warning must not carry a megabyte of someone's settings."""
    return _BRIEF.repr(value)


def parse_settings(raw: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Settings from a client's JSON (`{"wisp": {...}}` or the section itself), and warnings.

    Keys that are missing keep the value in `base` (the defaults when None). Keys that are
    unknown or invalid are ignored, each with a warning naming it.
    """
    base = base or Settings()
    if raw is None or raw == []:  # Lua clients send an empty table as an empty list
        return base, []
    if isinstance(raw, Mapping) and isinstance(raw.get("wisp"), Mapping):
        raw = raw["wisp"]
    if not isinstance(raw, Mapping):
        return base, [f"settings must be an object, got {type(raw).__name__}; using defaults"]
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for key, value in raw.items():
        name = snake(str(key))
        if name not in known:
            warnings.append(f"unknown setting {_brief(key)} ignored")
            continue
        try:
            values[name] = VALIDATORS[name](value)
        except ValueError as exc:
            default = getattr(base, name)
            warnings.append(
                f"setting {camel(name)!r}: {exc}; got {_brief(value)}, using {default!r}"
            )
    return dataclasses.replace(base, **values), warnings
