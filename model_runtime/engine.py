"""The completion pipeline: document -> context -> prompt -> model -> candidates -> suggestions."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Literal

from model_runtime.backend import Backend, GenerationRequest, Prefills, SamplingParams
from model_runtime.context import (
    CursorContext,
    MultilineMode,
    cursor_context,
    next_code_line,
    wants_multiline,
)
from model_runtime.crossfile import (
    CrossFileContext,
    CrossFileOptions,
    EditedRange,
    OpenDocument,
)
from model_runtime.dismissals import DismissalMemory
from model_runtime.postprocess import Policy, Suggestion, block_cut, to_suggestions
from model_runtime.prompt import PrefixAnchor, build_prompt
from model_runtime.result_cache import ResultCache
from model_runtime.suffix_fit import continuation, ranked_score
from model_runtime.templates import PromptParts

# Characters a token holds on average in code, to reach a budget's worth of tokens past a cursor.
DOCUMENT_CHARS_PER_TOKEN = 4
# A document's cache holds this many `contextTokens` budgets of its code, half of them past the
# cursor: the whole of most files (4,096 tokens at the default), so that a jump anywhere, up to
# the file's first line too, finds its window in it.
DOCUMENT_BUDGETS = 4


@dataclass(frozen=True)
class EngineOptions:
    """The settings that shape one completion: how to sample, how much context, what shape."""

    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(seed=0))
    context_tokens: int = 1024
    multiline: MultilineMode = "auto"
    max_latency_ms: float | None = None  # decoding stops at this age and returns what is ready
    min_confidence: float = 0.0  # the gate: less confident suggestions are not shown
    raw: bool = False  # ranking and trimming off: the first candidate, cut at stops only
    healing: bool = True  # token healing where the backend supports it (off only to measure it)
    cross_file: CrossFileOptions = field(default_factory=CrossFileOptions)


@dataclass(frozen=True)
class CompletionRequest:
    """A document's text and a cursor offset (in code points) into it; the other open
    documents and the places edited last, for context beyond this one."""

    text: str
    offset: int
    path: str = ""
    language: str = ""
    others: tuple[OpenDocument, ...] = ()
    edits: tuple[EditedRange, ...] = ()


ResultSource = Literal["model", "cache", "typed_through"]


@dataclass
class CompletionResult:
    """Suggestions best first, where they came from, and how long each step took."""

    suggestions: list[Suggestion]
    timings_ms: dict[str, float] = field(default_factory=dict)
    cancelled: bool = False
    source: ResultSource = "model"


def code_budget(backend: Backend, opts: EngineOptions, path: str, context: str = "") -> int:
    """Tokens left for code: the setting, capped so prompt (with the other files' `context`)
    and answer fit the model's window."""
    if not backend.context_window:
        return opts.context_tokens
    parts = PromptParts("", "", path, context=context)
    overhead = len(backend.encode(backend.template.render(parts)))
    room = (
        backend.context_window
        - opts.sampling.max_new_tokens
        - overhead
        - int(backend.template.add_bos)
    )
    return max(0, min(opts.context_tokens, room))


class CompletionEngine:
    """Runs the pipeline on one backend; thread-compatible, one `complete` at a time.

    Answers come from the result cache when the context was seen or the user is typing out a
    suggestion (`lookup`, safe to call from another thread), else from the model.
    """

    def __init__(
        self, backend: Backend, options: EngineOptions | None = None, cache_size: int = 64
    ) -> None:
        self.backend = backend
        self._options = options or EngineOptions()
        self.cache = ResultCache(cache_size)
        self._anchors: dict[str, PrefixAnchor] = {}
        self.dismissals = DismissalMemory()
        self.cross_file = CrossFileContext(backend, self._options.cross_file)

    @property
    def options(self) -> EngineOptions:
        return self._options

    @options.setter
    def options(self, value: EngineOptions) -> None:
        if value != self._options:
            self.cache.clear()  # answers made under other settings are not answers to these
        self._options = value
        self.cross_file.options = value.cross_file

    def lookup(self, request: CompletionRequest) -> CompletionResult | None:
        """The answer from the result cache, or None when the model has to run."""
        started = time.perf_counter()
        ctx = cursor_context(request.text, request.offset, request.path, request.language)
        return self._cached(ctx, self._depends(ctx, request), started)

    def _depends(self, ctx: CursorContext, request: CompletionRequest) -> Hashable:
        """What an answer at `ctx` depends on besides the document: the cross-file sources."""
        return self.cross_file.sources(ctx.path, request.others, request.edits)

    def _cached(
        self, ctx: CursorContext, depends: Hashable, started: float
    ) -> CompletionResult | None:
        hit = self.cache.get(ctx, depends)
        if hit is None:
            return None
        suggestions, through = hit
        suggestions = self.dismissals.screen(ctx, suggestions)
        elapsed = (time.perf_counter() - started) * 1000
        return CompletionResult(
            suggestions, {"total": elapsed}, source="typed_through" if through else "cache"
        )

    def complete(
        self, request: CompletionRequest, cancel: threading.Event | None = None
    ) -> CompletionResult:
        started = time.perf_counter()
        ctx = cursor_context(request.text, request.offset, request.path, request.language)
        depends = self._depends(ctx, request)
        if (hit := self._cached(ctx, depends, started)) is not None:
            return hit
        cancel = cancel or threading.Event()
        opts = self.options
        asked, timings = self._ask(ctx, request, opts, started)
        generation = self.backend.generate(asked, cancel)
        if cancel.is_set():
            return CompletionResult([], {"prompt": timings["prompt"]}, cancelled=True)
        policy = Policy(opts.multiline, opts.min_confidence, opts.raw)
        suggestions = self.dismissals.screen(
            ctx,
            to_suggestions(
                generation.candidates,
                ctx,
                asked.stop_strings,
                asked.single_line,
                policy,
                self.backend.decode,
            ),
        )
        if len(suggestions) > 1 and not self.backend.template.uses_suffix and not opts.raw:
            suggestions = self._fit_to_suffix(ctx, asked, suggestions, cancel)
        self.dismissals.offered(ctx, suggestions)
        timings = {
            **timings,
            **generation.timings_ms,
            "total": (time.perf_counter() - started) * 1000,
        }
        self.cache.put(ctx, suggestions, depends)
        return CompletionResult(suggestions, timings)

    @property
    def prefills(self) -> bool:
        """Whether the backend can work on a prompt before it is asked (see `prefill`)."""
        return isinstance(self.backend, Prefills)

    def prefill(self, request: CompletionRequest, cancel: threading.Event) -> int:
        """Get the backend ready for requests anywhere near `request`'s cursor: let it compute
        the cache of `document_request`, stopping at `cancel`.

        Returns the positions computed: 0 when the backend cannot prefill or is warm already.
        """
        backend = self.backend
        if not isinstance(backend, Prefills) or cancel.is_set():
            return 0
        return backend.prefill(self.document_request(request), cancel)

    def document_request(self, request: CompletionRequest) -> GenerationRequest:
        """The prompt of the document with the cursor `DOCUMENT_BUDGETS` / 2 budgets' worth of
        code after `request`'s (its end, most often), in `DOCUMENT_BUDGETS` budgets, without
        other files' context: the code before any cursor in it is a stretch of it."""
        opts = self.options
        text = request.text
        ahead = DOCUMENT_BUDGETS // 2 * opts.context_tokens * DOCUMENT_CHARS_PER_TOKEN
        reach = request.offset + ahead
        newline = text.find("\n", reach)
        end = newline if reach < len(text) and newline >= 0 else len(text)
        ctx = cursor_context(text[:end], end, request.path, request.language)
        wide = replace(opts, context_tokens=DOCUMENT_BUDGETS * opts.context_tokens)
        budget = code_budget(self.backend, wide, ctx.path)
        prompt = build_prompt(ctx, self.backend.template, self.backend, budget)
        return GenerationRequest(
            prompt.text, opts.sampling, (), cache_key=ctx.path, parts=prompt.parts
        )

    def forget(self, path: str) -> None:
        """The document at `path` was closed: drop what the backend keeps for it, and its anchor.

        Answers in the result cache stay: they are small, and right again if it is reopened.
        """
        self._anchors.pop(path, None)
        if isinstance(self.backend, Prefills):
            self.backend.forget(path)

    def _ask(
        self, ctx: CursorContext, request: CompletionRequest, opts: EngineOptions, started: float
    ) -> tuple[GenerationRequest, dict[str, float]]:
        """What the model is asked at `ctx` (the prompt's anchor is remembered for the next
        one), and the time to the context block and to the prompt since `started`."""
        multiline = wants_multiline(ctx, opts.multiline)
        block = self.cross_file.block(ctx, request.others, request.edits, self.backend.template)
        context_ms = (time.perf_counter() - started) * 1000
        budget = code_budget(self.backend, opts, ctx.path, block.text)
        prompt = build_prompt(
            ctx,
            self.backend.template,
            self.backend,
            budget,
            anchor=self._anchors.get(ctx.path),
            healing=self.backend.healing if opts.healing else None,
            context=block.text,
        )
        self._remember_anchor(ctx.path, prompt.anchor)
        prompt_ms = (time.perf_counter() - started) * 1000
        budget_ms = (
            None if opts.max_latency_ms is None else max(0.0, opts.max_latency_ms - prompt_ms)
        )
        # decoding a block may stop once trimming's cuts of it are settled
        cut = block_cut(ctx, Policy(opts.multiline)) if multiline and not opts.raw else None
        asked = GenerationRequest(
            prompt.text,
            opts.sampling,
            self.backend.template.stop_tokens,
            single_line=not multiline,
            cache_key=ctx.path,
            time_budget_ms=budget_ms,
            lead=prompt.lead,
            suffix_line=next_code_line(ctx) if multiline else "",
            parts=prompt.parts,
            block_cut=cut,
        )
        timings = {"cross_file": context_ms, "cross_file_tokens": block.tokens, "prompt": prompt_ms}
        return asked, timings

    def _fit_to_suffix(
        self,
        ctx: CursorContext,
        asked: GenerationRequest,
        suggestions: list[Suggestion],
        cancel: threading.Event,
    ) -> list[Suggestion]:
        """The suggestions reordered by how well the code after the cursor follows each."""
        fits: list[float | None] = [None] * len(suggestions)
        groups: dict[str, list[int]] = {}  # one forward pass per answer, one call per follow-up
        for i, suggestion in enumerate(suggestions):
            if follows := continuation(ctx, suggestion.replace):
                groups.setdefault(follows, []).append(i)
        for follows, members in groups.items():
            if cancel.is_set():
                break
            answers = [suggestions[i].text for i in members]
            for i, fit in zip(
                members,
                self.backend.continuation_logprobs(asked, answers, follows),
                strict=True,
            ):
                fits[i] = fit
        order = sorted(
            range(len(suggestions)),
            key=lambda i: ranked_score(suggestions[i].score, fits[i]),
            reverse=True,
        )
        return [suggestions[i] for i in order]

    def _remember_anchor(self, path: str, anchor: PrefixAnchor | None) -> None:
        self._anchors.pop(path, None)
        if anchor is not None:
            self._anchors[path] = anchor
            if len(self._anchors) > 64:
                del self._anchors[next(iter(self._anchors))]
