"""Load a model for the local backend: a folder, a hub id or a GGUF file, on a device."""

from __future__ import annotations

import gc
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig
from transformers.utils import logging as hf_logging

from model_runtime.allocator import map_large_blocks
from model_runtime.backend import ModelLoadError, first_line
from model_runtime.healing import TokenTable, vocab_bytes
from model_runtime.local import store
from model_runtime.local.fast_llama import (
    FastLlama,
    unsupported,
)
from model_runtime.local.generation import TransformersBackend
from model_runtime.local.gguf import Report, converted_folder, find_gguf
from model_runtime.local.packed import KINDS
from model_runtime.local.pages import drop_file_pages
from model_runtime.local.probes import (
    agrees_with,
    faster_prefill,
    fastest_weights,
    packs_losslessly,
    probe,
    round_to_packing,
    unpackable,
)
from model_runtime.templates import detect_template, get_template

if TYPE_CHECKING:  # importing it costs ~100 MB and seconds: a stored model never needs it
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """Where the model comes from and how to run it."""

    source: str
    device: str = "auto"  # auto | cpu | cuda
    quantization: str = "auto"  # auto | none | bf16 | q4 | q8 | int8 | int4
    threads: int = 0  # CPU threads per matmul; 0: torch's default
    trust_remote_code: bool = False
    allow_pickle: bool = False  # pickled weights (.bin, .pt) run code when unpickled
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


def resolve_source(source: str, report: Report | None = None) -> str:
    """The folder or hub id to hand to `from_pretrained`; a GGUF file becomes its cached folder."""
    local = Path(source).expanduser()
    if (gguf := find_gguf(local)) is not None:
        return str(converted_folder(gguf, report))
    if _looks_like_path(source) and not local.is_dir():
        what = "model file" if local.suffix else "model folder"
        raise ModelLoadError(f"{what} {source!r} does not exist")
    return str(local) if local.is_dir() else source


def load_backend(options: LoadOptions, report: Report | None = None) -> TransformersBackend:
    """Load tokenizer and model; every failure becomes a ModelLoadError naming the cause.

    `report(message, percent)` hears of slow first-time work (converting a GGUF file).
    """
    source = options.source
    device = pick_device(options.device)
    set_threads(options.threads)
    map_large_blocks()  # as `wisp serve` does first thing (see `allocator`)
    hf_logging.disable_progress_bar()
    where = resolve_source(source, report)
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=options.trust_remote_code)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, JSON errors
        raise ModelLoadError(
            f"cannot read the model config of {source!r}: {first_line(exc)}"
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
        raise ModelLoadError(f"cannot load the tokenizer of {source!r}: {first_line(exc)}") from exc
    _refuse_pickle(where, source, options.allow_pickle)
    stored = _stored_place(where, options, device)
    model: Any = None  # stays None when the store had the packed weights
    fast = store.load(stored) if stored is not None else None
    if fast is None:
        model, fast = _load_model(where, config, options, device)
        if stored is not None and fast is not None and fast.packing:
            store.save(fast, stored)
    template = (
        get_template(options.fim_template)
        if options.fim_template
        else detect_template(
            _special_tokens(tokenizer),
            getattr(config, "model_type", None),
            getattr(config, "fim_template", None),
        )
    )
    healing = TokenTable(tuple(vocab_bytes(tokenizer.get_vocab(), _special_tokens(tokenizer))))
    log.info("loaded %s on %s (template %s)", source, device, template.name)
    return TransformersBackend(
        source,
        model,
        tokenizer,
        template,
        device,
        healing=healing,
        fast=fast,
        context_window=getattr(config, "max_position_embeddings", None),
    )


def _load_model(
    where: str, config: PretrainedConfig, options: LoadOptions, device: str
) -> tuple[Any, FastLlama | None]:
    """transformers' model of `where` on `device`, and the lean forward pass where one runs."""
    source = options.source
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model: Any  # transformers' own annotations of `.to` and friends confuse type checkers
    try:
        model = AutoModelForCausalLM.from_pretrained(
            where,
            config=config,
            dtype=dtype,
            # Pickled weights only when the user allowed them; safetensors first even then.
            use_safetensors=None if options.allow_pickle else True,
            trust_remote_code=options.trust_remote_code,
        )
    except Exception as exc:
        hint = "" if options.allow_pickle else f" ({PICKLE_HINT})"
        raise ModelLoadError(
            f"cannot load the weights of {source!r}: {first_line(exc)}{hint}"
        ) from exc
    model.to(device).eval()
    fast = None
    if options.quantization in ("int8", "int4"):
        model = _quantize(model, options.quantization, device)
    else:
        fast = _lean(model, options.quantization, device)
    return model, fast


def _stored_place(where: str, options: LoadOptions, device: str) -> Path | None:
    """Where packed weights of this load are kept between starts (see `store`), or None where
    they never are: another device, a setting that does not pack, remote code."""
    if (
        device != "cpu"
        or options.trust_remote_code
        or options.quantization
        not in (
            "auto",
            *KINDS,
        )
    ):
        return None
    return store.place(where, {"quantization": options.quantization})


PICKLE_HINT = (
    "wisp loads safetensors and GGUF weights only; pickled weights can run code when loaded. "
    "Convert them to safetensors, or set allowPickle to true if you trust their source"
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _refuse_pickle(where: str, source: str, allowed: bool) -> None:
    """A local folder with pickled weights and no safetensors: say so before transformers does."""
    folder = Path(where)
    if allowed or not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ModelLoadError(f"{source!r} holds pickled weights ({pickled[0]}): {PICKLE_HINT}")


def _is_causal_lm(config: PretrainedConfig, trust_remote_code: bool) -> bool:
    if trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {}):
        return True
    return type(config) in AutoModelForCausalLM._model_mapping


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def _special_tokens(tokenizer) -> set[str]:
    tokens = set(getattr(tokenizer, "all_special_tokens", []))
    tokens.update(str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values())
    return tokens


def _lean(model: Any, scheme: str, device: str) -> FastLlama | None:
    """The lean forward pass on CPU, its weights as loaded, in bf16 or packed (see `packed`).

    `auto` takes whichever runs decode-shaped products fastest here, trying packed weights only
    where packing loses nothing (a model read from a Q4_1 GGUF file). None keeps transformers'
    forward: another device, a model of another shape, or a probe on which the lean pass
    disagrees with transformers.
    """
    reason = unsupported(model) if device == "cpu" else f"device {device}"
    if scheme in KINDS and (reason := reason or unpackable(model)):
        raise ModelLoadError(f"quantization {scheme!r} cannot be used: {reason}")
    if reason:
        log.info("the lean forward pass is not used: %s", reason)
        if scheme == "bf16":
            model.to(torch.bfloat16)
        return None
    choice = scheme
    lossless = scheme in KINDS and packs_losslessly(model, scheme)
    if scheme == "auto":
        choices = ["none", "bf16"]
        why = unpackable(model)
        if why is None and not packs_losslessly(model, "q4"):
            why = "the weights are not already 4-bit blocks (set quantization to q4 to pack them)"
        if why is None:
            choices.append("q4")
        else:
            log.info("4-bit weights are not tried: %s", why)
        choice = fastest_weights(model, choices)
        lossless = choice == "q4"
    if choice in KINDS and not lossless:
        log.info("packing the weights as %s rounds them", choice)
        round_to_packing(model, choice)
    # Packed weights let go of the file's pages as they go, unless rounding wrote to them.
    let_go = choice in KINDS and lossless
    if let_go:
        drop_file_pages(model.parameters())
    ids, want = probe(model, let_go=let_go)
    fast = FastLlama(
        model,
        torch.bfloat16 if choice == "bf16" else None,
        choice if choice in KINDS else None,
        let_go=let_go,
    )
    if not agrees_with(fast, ids, want):
        model.to(fast.weight_dtype)  # what it holds now; transformers runs in that dtype
        return None
    fast.release(model)
    gc.collect()  # the loaded weights' last references sit in cycles: 140 MB on the bundled model
    if fast.packing:
        fast.widen_in(faster_prefill(fast))
    log.info("lean forward pass, weights %s", fast.packing or fast.weight_dtype)
    return fast


def _quantize(model: PreTrainedModel, scheme: str, device: str) -> PreTrainedModel:
    """Weight-only quantization of the linear layers with torchao, in place.

    torchao replaces torch.ao's dynamic quantization, which torch deprecates. On this project's
    CPU (AVX2, no VNNI) int8 prefills and decodes no faster than fp32 for a small model: see
    docs/runtime.md before turning it on. int4 needs a CUDA device.
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
        raise ModelLoadError(f"cannot quantize to {scheme}: {first_line(exc)}") from exc
    return model
