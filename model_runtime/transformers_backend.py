"""The local backend: a causal LM run in-process with torch and transformers.

This is the only module of the runtime that imports torch or transformers.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.utils import logging as hf_logging

from model_runtime.backend import (
    Candidate,
    GenerationRequest,
    GenerationResult,
    ModelLoadError,
    SamplingParams,
    common_prefix_length,
)
from model_runtime.stopping import (
    DecodeState,
    StopCriterion,
    StopReason,
    cancelled,
    deadline,
    eos,
    fim_end,
    first_reason,
    max_tokens,
    single_line,
    stop_strings,
)
from model_runtime.templates import FimTemplate, detect_template, get_template

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """Where the model comes from and how to run it."""

    source: str
    device: str = "auto"  # auto | cpu | cuda
    quantization: str = "none"  # none | int8 | int4
    threads: int = 0  # CPU threads per matmul; 0: torch's default
    trust_remote_code: bool = False
    fim_template: str | None = None  # registry name; None detects it from the model


# torch's own choice (one thread per physical core), taken before any setting changes it.
DEFAULT_THREADS = torch.get_num_threads()


def set_threads(threads: int) -> None:
    """Threads torch uses within one operation, for the whole process; 0 restores the default.

    Fewer than the cores helps when the machine is busy with other work: torch's threads wait for
    each other at every operation, so one slowed thread slows them all.
    """
    torch.set_num_threads(threads or DEFAULT_THREADS)


def pick_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was requested but no CUDA device is available")
    return requested


def load_backend(options: LoadOptions) -> TransformersBackend:
    """Load tokenizer and model; every failure becomes a ModelLoadError naming the cause."""
    source = options.source
    local = Path(source).expanduser()
    if _looks_like_path(source) and not local.is_dir():
        raise ModelLoadError(f"model folder {source!r} does not exist")
    where = str(local) if local.is_dir() else source
    device = pick_device(options.device)
    set_threads(options.threads)
    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=options.trust_remote_code)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, JSON errors
        raise ModelLoadError(
            f"cannot read the model config of {source!r}: {_first_line(exc)}"
        ) from exc
    if not _is_causal_lm(config, options.trust_remote_code):
        raise ModelLoadError(
            f"{source!r} is not a causal language model "
            f"(model type {getattr(config, 'model_type', '?')!r})"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            where, trust_remote_code=options.trust_remote_code
        )
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load the tokenizer of {source!r}: {_first_line(exc)}"
        ) from exc
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model: Any  # transformers' own annotations of `.to` and friends confuse type checkers
    try:
        model = AutoModelForCausalLM.from_pretrained(
            where,
            config=config,
            dtype=dtype,
            use_safetensors=None,  # safetensors when present, else the pickled weights
            trust_remote_code=options.trust_remote_code,
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot load the weights of {source!r}: {_first_line(exc)}") from exc
    model.to(device).eval()
    if options.quantization in ("int8", "int4"):
        model = _quantize(model, options.quantization, device)
    template = (
        get_template(options.fim_template)
        if options.fim_template
        else detect_template(
            _special_tokens(tokenizer),
            getattr(config, "model_type", None),
            getattr(config, "fim_template", None),
        )
    )
    log.info("loaded %s on %s (template %s)", source, device, template.name)
    return TransformersBackend(source, model, tokenizer, template, device)


def _is_causal_lm(config: PretrainedConfig, trust_remote_code: bool) -> bool:
    if trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {}):
        return True
    return type(config) in AutoModelForCausalLM._model_mapping


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _special_tokens(tokenizer) -> set[str]:
    tokens = set(getattr(tokenizer, "all_special_tokens", []))
    tokens.update(str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values())
    return tokens


def _quantize(model: PreTrainedModel, scheme: str, device: str) -> PreTrainedModel:
    """Weight-only quantization of the linear layers with torchao, in place.

    torchao replaces torch.ao's dynamic quantization, which torch deprecates. On this project's
    CPU (AVX2, no VNNI) int8 prefills and decodes no faster than fp32 for a small model: see the
    README before turning it on. int4 needs a CUDA device.
    """
    if scheme == "int4" and device != "cuda":
        raise ModelLoadError("quantization 'int4' runs on a CUDA device only; use 'int8' on CPU")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao.quantization import (
                Int4WeightOnlyConfig,
                Int8WeightOnlyConfig,
                quantize_,
            )
    except ImportError as exc:
        raise ModelLoadError(
            f"quantization {scheme!r} needs torchao: pip install 'wisp-lsp[quantization]'"
        ) from exc
    config = Int8WeightOnlyConfig() if scheme == "int8" else Int4WeightOnlyConfig()
    try:
        quantize_(model, config)
    except Exception as exc:  # unsupported shapes or kernels on this machine
        raise ModelLoadError(f"cannot quantize to {scheme}: {_first_line(exc)}") from exc
    return model


def _crop_to(cache: Any, length: int) -> None:
    """Drop cached positions past `length` (a negative count means the same in every version)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


# Prompts are prefilled in chunks of this many tokens so that a cancel lands between chunks.
PREFILL_CHUNK = 256


@dataclass
class _KvSlot:
    """A prompt's token ids and the model's key/value cache for exactly those tokens."""

    ids: list[int]
    cache: Any


class TransformersBackend:
    """Runs one request at a time with an own decode loop: cancellable at every step.

    It keeps the key/value cache of the last prompt of up to `kv_slots` documents. A new prompt
    reuses the longest token prefix it shares with any of them and only computes the rest: after
    a keystroke at the cursor that is a handful of tokens (prompts put the code before the cursor
    last for that reason; see `templates.py`).
    """

    def __init__(
        self, name: str, model, tokenizer, template: FimTemplate, device: str, kv_slots: int = 4
    ) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.device = device
        self.context_window: int | None = getattr(model.config, "max_position_embeddings", None)
        # A FIM marker in the answer means the model lost its place: end the candidate there.
        markers = (template.prefix_token, template.suffix_token, template.middle_token)
        self._end_ids = self._token_ids((*template.stop_tokens, *markers))
        if tokenizer.eos_token_id is not None:
            self._end_ids.add(int(tokenizer.eos_token_id))
        self._fim_end_ids = self._end_ids - {tokenizer.eos_token_id}
        self.kv_slots = kv_slots
        self._slots: OrderedDict[str, _KvSlot] = OrderedDict()

    def _token_ids(self, tokens: Sequence[str]) -> set[int]:
        vocab = self.tokenizer.get_vocab()
        return {vocab[t.strip()] for t in tokens if t.strip() in vocab}

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
        ids = self.encode(request.prompt)
        if self.template.add_bos and self.tokenizer.bos_token_id is not None:
            ids = [int(self.tokenizer.bos_token_id), *ids]
        params = request.params
        criteria = [
            cancelled(cancel),
            eos(
                {int(self.tokenizer.eos_token_id)}
                if self.tokenizer.eos_token_id is not None
                else set()
            ),
            fim_end(self._fim_end_ids),
            stop_strings(request.stop_strings),
            *([single_line()] if request.single_line else []),
            max_tokens(params.max_new_tokens),
        ]
        started = time.perf_counter()
        if request.time_budget_ms is not None:
            criteria.insert(1, deadline(started + request.time_budget_ms / 1000))
        with torch.inference_mode():
            return self._decode(ids, params, criteria, cancel, request.cache_key, started)

    def _take_slot(self, ids: list[int], key: str) -> tuple[Any, int]:
        """The cache sharing the longest prefix with `ids`, cut back to it; (None, 0) if none.

        Another document's cache is taken over only when it shares at least half the prompt
        (the same file under two names); otherwise it stays for that document. At least the last
        prompt token is always recomputed: its logits start the answer.
        """
        best_key, best = None, 0
        for other, slot in self._slots.items():
            shared = common_prefix_length(slot.ids, ids)
            if shared > best and (other == key or shared * 2 >= len(ids)):
                best_key, best = other, shared
        if best_key is None:
            return None, 0
        slot = self._slots.pop(best_key)
        keep = min(best, len(ids) - 1)
        if keep <= 0 or not slot.cache.is_croppable:
            return None, 0
        _crop_to(slot.cache, keep)
        return slot.cache, keep

    def _keep_slot(self, key: str, ids: list[int], cache: Any) -> None:
        self._slots[key] = _KvSlot(ids, cache)
        self._slots.move_to_end(key)
        while len(self._slots) > self.kv_slots:
            self._slots.popitem(last=False)

    def _prefill(
        self, ids: list[int], key: str, cancel: threading.Event
    ) -> tuple[Any, torch.Tensor | None, int]:
        """Run the prompt through the model, reusing a kept cache; logits None when cancelled."""
        cache, reused = self._take_slot(ids, key) if self.kv_slots else (None, 0)
        logits = None
        for start in range(reused, len(ids), PREFILL_CHUNK):
            if cancel.is_set():
                if cache is not None and self.kv_slots:
                    self._keep_slot(key, ids[:start], cache)  # what is done stays useful
                return cache, None, reused
            chunk = torch.tensor([ids[start : start + PREFILL_CHUNK]], device=self.device)
            out = self.model(chunk, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache, logits = out.past_key_values, out.logits[:, -1, :]
        return cache, logits, reused

    def _decode(
        self,
        ids: list[int],
        params: SamplingParams,
        criteria: list[StopCriterion],
        cancel: threading.Event,
        key: str,
        started: float,
    ) -> GenerationResult:
        n = params.num_candidates
        generator = torch.Generator(device=self.device)
        if params.seed is not None:
            generator.manual_seed(params.seed)
        cache, logits, reused = self._prefill(ids, key, cancel)
        prefill_ms = (time.perf_counter() - started) * 1000
        if logits is None:
            return GenerationResult(
                [],
                prompt_tokens=len(ids),
                timings_ms={"prefill": prefill_ms, "reused_tokens": reused},
            )
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.expand(n, -1)
        states = [DecodeState() for _ in range(n)]
        reasons: list[StopReason | None] = [None] * n
        logprob_lists: list[list[float]] = [[] for _ in range(n)]
        steps = 0
        while not cancel.is_set():
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            chosen = self._choose(logprobs, params, generator)
            for i in range(n):
                if reasons[i] is None:
                    self._append(
                        states[i], logprob_lists[i], int(chosen[i]), float(logprobs[i, chosen[i]])
                    )
                    reasons[i] = first_reason(criteria, states[i])
            steps += 1
            if all(r is not None for r in reasons):
                break
            out = self.model(chosen.view(n, 1), past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1, :]
        if self.kv_slots:
            self._keep_prompt(key, ids, cache, n)
        candidates = [
            self._candidate(state, lps, reason or "cancelled")
            for state, lps, reason in zip(states, logprob_lists, reasons, strict=True)
        ]
        total_ms = (time.perf_counter() - started) * 1000
        return GenerationResult(
            candidates,
            prompt_tokens=len(ids),
            timings_ms={
                "prefill": prefill_ms,
                "decode": total_ms - prefill_ms,
                "steps": steps,
                "prompt_tokens": len(ids),
                "reused_tokens": reused,
            },
        )

    def _keep_prompt(self, key: str, ids: list[int], cache: Any, batch: int) -> None:
        """Keep the cache of the prompt alone (one row, no answer tokens) for the next request."""
        if not cache.is_croppable:
            return
        if batch > 1:
            cache.batch_select_indices(torch.tensor([0], device=self.device))
        _crop_to(cache, len(ids))
        self._keep_slot(key, ids, cache)

    def _choose(
        self, logprobs: torch.Tensor, params: SamplingParams, generator: torch.Generator
    ) -> torch.Tensor:
        greedy = logprobs.argmax(dim=-1)
        if logprobs.shape[0] == 1 or params.temperature == 0:
            return greedy
        probs = torch.softmax(logprobs / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs > params.top_p
            probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
        sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        sampled[0] = greedy[0]
        return sampled

    def _append(
        self, state: DecodeState, logprobs: list[float], token: int, logprob: float
    ) -> None:
        state.token_ids.append(token)
        logprobs.append(logprob)
        if token not in self._end_ids:
            state.text = self.decode(state.token_ids)

    def _candidate(
        self, state: DecodeState, logprobs: list[float], reason: StopReason
    ) -> Candidate:
        ids = state.token_ids
        if ids and ids[-1] in self._end_ids:
            ids, logprobs = ids[:-1], logprobs[:-1]
        return Candidate(self.decode(ids), list(ids), logprobs, reason)
