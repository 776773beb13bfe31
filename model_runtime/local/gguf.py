"""GGUF files as a model source: find the file, check it, convert it once into a cached folder.

transformers reads a GGUF file by dequantizing every tensor into an ordinary torch model, which
takes tens of seconds. The result is saved (safetensors, fp32, with the tokenizer) in the user's
cache folder, keyed by the file's identity, so later starts load that folder instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from model_runtime.backend import ModelLoadError, first_line

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
_SAMPLE_BYTES = 1 << 20  # hashed from each end of the file: its identity, cheaply
Report = Callable[[str, int], None]  # (message, percent done)


def find_gguf(source: Path) -> Path | None:
    """The GGUF file `source` names: the file itself, or the one a folder without config holds."""
    if source.is_file():
        return source if source.suffix.lower() == ".gguf" else None
    if not source.is_dir() or (source / "config.json").is_file():
        return None
    files = sorted(source.glob("*.gguf"))
    return files[0] if files else None


def cache_root() -> Path:
    """Where converted models live: $WISP_CACHE_DIR, else the XDG cache folder."""
    if explicit := os.environ.get("WISP_CACHE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "wisp"


def file_identity(path: Path) -> str:
    """A short hash of the file's size and its first and last megabyte."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(_SAMPLE_BYTES))
        handle.seek(max(0, size - _SAMPLE_BYTES))
        digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def check_header(path: Path) -> None:
    """Raise ModelLoadError unless `path` starts like a GGUF file of a version we read."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or head[:4] != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
    (version,) = struct.unpack("<I", head[4:])
    if version not in (2, 3):
        raise ModelLoadError(f"{path} is GGUF version {version}; versions 2 and 3 are read")


def converted_folder(path: Path, report: Report | None = None) -> Path:
    """The cached folder converted from the GGUF file at `path`, made now if it is missing."""
    check_header(path)
    target = cache_root() / "gguf" / f"{path.stem}-{file_identity(path)}"
    if (target / "config.json").is_file():
        return target
    report = report or (lambda _message, _percent: None)
    log.info("converting %s to %s (first use of this file)", path, target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    except OSError as exc:
        raise ModelLoadError(f"cannot write the model cache {target.parent}: {exc}") from exc
    try:
        _convert(path, staging, report)
        staging.rename(target)
    except OSError as exc:
        if not (target / "config.json").is_file():  # else another process converted it meanwhile
            raise ModelLoadError(f"cannot save the converted model in {target}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(path: Path, out: Path, report: Report) -> None:
    folder, name = str(path.parent), path.name
    report(f"reading the tokenizer of {name} (first start only)", 5)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as exc:  # gguf/transformers raise ValueError, KeyError, OSError, ...
        raise ModelLoadError(f"cannot read the tokenizer of {path}: {first_line(exc)}") from exc
    report(f"dequantizing the weights of {name} (first start only)", 30)
    model: Any
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except ImportError as exc:
        raise ModelLoadError(f"reading GGUF files needs the gguf package: {exc}") from exc
    except Exception as exc:  # unsupported architecture or tensor type, truncated data
        raise ModelLoadError(f"cannot read the weights of {path}: {first_line(exc)}") from exc
    # The weights are plain tensors now; without this the model refuses to be saved.
    del model.config.quantization_config
    model.hf_quantizer, model.is_quantized = None, False
    report("saving the converted model", 85)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
