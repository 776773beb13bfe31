"""Load a model for the local backend: a GGUF file run from its blocks, or a folder or hub id
through transformers, on a device."""

from __future__ import annotations

import gc
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers.utils import logging as hf_logging

from model_runtime.allocator import map_large_blocks
from model_runtime.backend import ModelLoadError, first_line
from model_runtime.healing import TokenTable, vocab_bytes
from model_runtime.local import gguf_model
from model_runtime.local.blocks import KINDS, KernelError
from model_runtime.local.cache_folder import cache_root
from model_runtime.local.decoder import Decoder, unsupported
from model_runtime.local.generation import LocalBackend
from model_runtime.local.gguf_file import GgufFile
from model_runtime.local.gguf_tokenizer import build_tokenizer, load_tokenizer
from model_runtime.local.probes import (
    agrees_with,
    faster_prefill,
    fastest_weights,
    probe,
    round_to_packing,
    unpackable,
)
from model_runtime.models.gguf_header import check_header, file_identity, find_gguf
from model_runtime.templates import FimTemplate, detect_template, get_template

if TYPE_CHECKING:  # importing them costs ~100 MB and seconds: a GGUF file never needs them
    from transformers import PretrainedConfig, PreTrainedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """Where the model comes from and how to run it."""

    source: str
    name: str = ""  # what to call the model (the setting that named it); "": the source
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


Report = Callable[[str, int], None]  # (message, percent done)


def load_backend(options: LoadOptions, report: Report | None = None) -> LocalBackend:
    """Load tokenizer and model; every failure becomes a ModelLoadError naming the cause.

    `report(message, percent)` hears of slow first-time work (building a GGUF file's tokenizer).
    """
    device = pick_device(options.device)
    set_threads(options.threads)
    map_large_blocks()  # as `wisp serve` does first thing (see `allocator`)
    hf_logging.disable_progress_bar()
    local = Path(options.source).expanduser()
    if (gguf := find_gguf(local)) is not None:
        return _load_gguf(gguf, options, device, report or (lambda _message, _percent: None))
    if _looks_like_path(options.source) and not local.is_dir():
        what = "model file" if local.suffix else "model folder"
        raise ModelLoadError(f"{what} {options.source!r} does not exist")
    return _load_transformers(str(local) if local.is_dir() else options.source, options, device)


def _load_gguf(path: Path, options: LoadOptions, device: str, report: Report) -> LocalBackend:
    """The file's own blocks through the native pass; transformers' dequantized copy, in memory,
    for an architecture or block type that pass does not run (the log says which)."""
    check_header(path)
    file = GgufFile(path)
    try:
        why = gguf_model.unsupported(file) if device == "cpu" else f"device {device}"
    except KernelError as exc:
        why = str(exc)
    if why is not None:
        log.info("%s runs through transformers, dequantized: the native pass lacks %s", path, why)
        try:
            tokenizer = _gguf_tokenizer(file, report)
        except ModelLoadError as exc:  # a kind of vocabulary only transformers reads
            log.info("%s: %s; transformers reads the tokenizer", path, exc)
            tokenizer = None
        return _load_transformers(str(path.parent), options, device, path.name, tokenizer)
    if options.quantization != "auto":
        log.info("quantization %r is not used: %s runs its own blocks", options.quantization, path)
    tokenizer = _gguf_tokenizer(file, report)
    decoder = gguf_model.load_decoder(file)
    decoder.widen_in(faster_prefill(decoder))
    model_type = file.architecture
    log.info("loaded %s: %s, blocks %s", path, model_type, decoder.packing)
    return _backend(
        options, None, tokenizer, device, decoder, model_type, file.get("context_length")
    )


def _gguf_tokenizer(file: GgufFile, report: Report) -> Any:
    """The file's tokenizer, built from its metadata on first use and kept in the cache."""
    folder = cache_root() / "tokenizers" / f"{file.path.stem}-{file_identity(file.path)}"
    if (folder / "tokenizer.json").is_file():
        try:
            return load_tokenizer(folder)
        except Exception as exc:  # a damaged copy: build it again
            log.warning("cannot read the kept tokenizer %s (%s); building it again", folder, exc)
    report(f"building the tokenizer of {file.path.name} (first start only)", 10)
    tokenizer = build_tokenizer(file.metadata)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
        tokenizer.save_pretrained(str(staging))
        staging.replace(folder)
    except OSError as exc:  # a read-only cache costs a rebuild next time, nothing else
        log.warning("cannot keep the tokenizer in %s: %s", folder, exc)
        shutil.rmtree(staging, ignore_errors=True)
    return tokenizer


def _load_transformers(
    where: str,
    options: LoadOptions,
    device: str,
    gguf_file: str | None = None,
    tokenizer: Any = None,
) -> LocalBackend:
    """transformers' model and tokenizer of a folder or hub id (or of a GGUF file it reads, with
    the tokenizer wisp built from it), with the lean forward pass where it runs."""
    from transformers import AutoConfig, AutoTokenizer  # a GGUF file run natively needs neither

    source = options.source
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        config = AutoConfig.from_pretrained(
            where, trust_remote_code=options.trust_remote_code, **extra
        )
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
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(
            where, trust_remote_code=options.trust_remote_code, **extra
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer of {source!r}: {first_line(exc)}") from exc
    _refuse_pickle(where, source, options.allow_pickle or gguf_file is not None)
    model, fast = _load_model(where, config, options, device, extra)
    return _backend(
        options,
        model,
        tokenizer,
        device,
        fast,
        getattr(config, "model_type", None),
        getattr(config, "max_position_embeddings", None),
        getattr(config, "fim_template", None),
    )


def _backend(
    options: LoadOptions,
    model: Any,
    tokenizer: Any,
    device: str,
    fast: Decoder | None,
    model_type: str | None,
    context_window: int | None,
    fim_template: str | None = None,
) -> LocalBackend:
    specials = _special_tokens(tokenizer)
    template: FimTemplate = (
        get_template(options.fim_template)
        if options.fim_template
        else detect_template(specials, model_type, fim_template)
    )
    healing = TokenTable(tuple(vocab_bytes(tokenizer.get_vocab(), specials)))
    log.info("loaded %s on %s (template %s)", options.source, device, template.name)
    return LocalBackend(
        options.name or options.source,
        model,
        tokenizer,
        template,
        device,
        healing=healing,
        fast=fast,
        context_window=int(context_window) if context_window else None,
    )


def _load_model(
    where: str, config: PretrainedConfig, options: LoadOptions, device: str, extra: dict[str, Any]
) -> tuple[Any, Decoder | None]:
    """transformers' model of `where` on `device`, and the lean forward pass where one runs."""
    from transformers import AutoModelForCausalLM

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
            **extra,
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
    from transformers import AutoModelForCausalLM

    if trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {}):
        return True
    return type(config) in AutoModelForCausalLM._model_mapping


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def _special_tokens(tokenizer) -> set[str]:
    tokens = set(getattr(tokenizer, "all_special_tokens", []))
    tokens.update(str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values())
    return tokens


def _lean(model: Any, scheme: str, device: str) -> Decoder | None:
    """The lean forward pass on CPU, its weights as loaded, in bf16 or packed into blocks.

    `auto` takes whichever of the weights as loaded and bf16 runs decode-shaped products
    fastest here; `q4`/`q8` round the weights into blocks. None keeps transformers' forward:
    another device, a model of another shape, or a probe on which the lean pass disagrees with
    transformers.
    """
    reason = unsupported(model) if device == "cpu" else f"device {device}"
    if scheme in KINDS and (reason := reason or unpackable(model)):
        raise ModelLoadError(f"quantization {scheme!r} cannot be used: {reason}")
    if reason:
        log.info("the lean forward pass is not used: %s", reason)
        if scheme == "bf16":
            model.to(torch.bfloat16)
        return None
    choice = fastest_weights(model, ["none", "bf16"]) if scheme == "auto" else scheme
    if choice in KINDS:
        log.info("packing the weights as %s rounds them", choice)
        round_to_packing(model, choice)
    ids, want = probe(model)
    fast = Decoder.from_transformers(
        model,
        torch.bfloat16 if choice == "bf16" else None,
        choice if choice in KINDS else None,
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
