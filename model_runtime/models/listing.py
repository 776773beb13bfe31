"""What each model on this machine is: `wisp models`, and the list an editor picks from.

A GGUF file is described from its header alone (architecture, block types, size, whether its
vocabulary has fill-in-the-middle tokens, whether wisp's native pass runs it); nothing is loaded.
"""

from __future__ import annotations

import mmap
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGMLQuantizationType

from model_runtime.backend import ModelLoadError
from model_runtime.models import catalog, stores
from model_runtime.models.gguf_header import read_header
from model_runtime.models.names import BUNDLED_NAME, bundled_model, parse_hub_file
from model_runtime.templates import detect_template

# What the native pass runs (`local.gguf_model`; tests/test_listing.py checks these against it).
NATIVE_ARCHITECTURES = frozenset({"llama", "qwen2"})
NATIVE_TYPES = frozenset(
    GGMLQuantizationType[name]
    for name in (
        "F32",
        "F16",
        "BF16",
        "Q4_0",
        "Q4_1",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q4_K",
        "Q5_K",
        "Q6_K",
    )
)
# What a listing does not need: the largest arrays after the vocabulary.
_UNUSED = frozenset({"tokenizer.ggml.merges", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"})
_CHAT = re.compile(r"(instruct|chat|\bit\b|-it\b)", re.IGNORECASE)


@dataclass
class ModelEntry:
    """One model a user can choose: `name` is what goes into the `model` setting."""

    name: str | None  # None: the bundled model (an empty setting)
    source: str  # bundled | ollama | lmstudio | huggingface | file
    path: str
    size_bytes: int = 0
    architecture: str = ""
    types: list[str] = field(default_factory=list)  # block types, most bytes first
    fim: bool = False  # has fill-in-the-middle tokens: fit for completion between code
    instruct: bool = False  # named as an instruct or chat model
    native: bool = False  # wisp's own pass runs it (else transformers, dequantized)
    note: str = ""

    def wire(self) -> dict[str, Any]:
        """camelCase keys, as `wisp models --json` and `wisp.models` send it."""
        data = asdict(self)
        return {_camel(key): value for key, value in data.items()}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def describe(path: Path, name: str | None, source: str) -> ModelEntry:
    """`path` described from its header; an unreadable file gets a note saying why."""
    entry = ModelEntry(name, source, str(path))
    try:
        entry.size_bytes = path.stat().st_size
        with (
            path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            metadata, tensors = read_header(data, path, _UNUSED)
    except (OSError, ValueError, ModelLoadError) as exc:
        entry.note = f"unreadable: {exc}"
        return entry
    entry.architecture = str(metadata.get("general.architecture", "?"))
    weights: Counter[int] = Counter()
    for info in tensors.values():
        weights[info.type] += info.nbytes
    entry.types = [_type_name(kind) for kind, _ in weights.most_common()]
    tokens = metadata.get("tokenizer.ggml.tokens") or []
    entry.fim = detect_template(tokens, entry.architecture).name != "prefix-only"
    label = " ".join(str(metadata.get(key, "")) for key in ("general.name", "general.finetune"))
    entry.instruct = bool(_CHAT.search(f"{label} {path.name} {name or ''}"))
    entry.native = entry.architecture in NATIVE_ARCHITECTURES and set(weights) <= NATIVE_TYPES
    entry.note = _note(entry)
    return entry


def _type_name(kind: int) -> str:
    try:
        return GGMLQuantizationType(kind).name
    except ValueError:
        return f"type {kind}"


def _note(entry: ModelEntry) -> str:
    notes = []
    if not entry.fim:
        what = "an instruct or chat model" if entry.instruct else "no fill-in-the-middle tokens"
        notes.append(f"{what}: completes from the code before the cursor only")
    elif entry.instruct:
        notes.append("an instruct model: its base model completes code better")
    if not entry.native:
        notes.append("runs through transformers, dequantized (slower, more memory)")
    return "; ".join(notes)


def find_models(extra: list[Path] | None = None) -> list[ModelEntry]:
    """The bundled model, the Ollama, LM Studio and Hugging Face stores, and `extra` files."""
    entries = []
    if (bundled := bundled_model()) is not None:
        entries.append(describe(bundled, None, "bundled"))
        entries[-1].note = "; ".join(filter(None, (BUNDLED_NAME, entries[-1].note)))
    found = stores.ollama_models() + stores.lmstudio_models() + stores.hf_models()
    for item in found:
        entries.append(describe(item.path, _short_name(item), item.source))
    for path in extra or []:
        entries.append(describe(path, str(path), "file"))
    return entries


def _short_name(item: stores.Found) -> str:
    """A pulled catalog file goes by its catalog name."""
    hub = parse_hub_file(item.name) if item.source == "huggingface" else None
    for entry in catalog.CATALOG:
        if hub == (entry.repo, entry.file):
            return entry.name
    return item.name


def pullable(entries: list[ModelEntry]) -> list[dict[str, Any]]:
    """The catalog, each marked pulled or not."""
    have = {entry.name for entry in entries}
    return [
        {
            "name": item.name,
            "repo": item.repo,
            "file": item.file,
            "sizeBytes": item.about_bytes,
            "note": item.note,
            "pulled": item.name in have,
        }
        for item in catalog.CATALOG
    ]
