"""Shared fixtures: tiny models built on disk once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights, the bundled model's template: output is noise but real."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "random")


@pytest.fixture(scope="session")
def x_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Always writes `x`: predictable suggestions for end-to-end checks."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "x", emit="x")


@pytest.fixture(scope="session")
def paren_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Always writes `)`: its suggestions overlap an auto-closed bracket."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "paren", emit=")")


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """The bundled SmolLM2 GGUF, converted once per machine into the wisp cache."""
    from model_runtime.local.gguf import converted_folder
    from model_runtime.model_source import BUNDLED_MODEL

    return converted_folder(BUNDLED_MODEL)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_folder)


@pytest.fixture(autouse=True)
def no_packed_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every load the long way, so each test sees the probes and choices it sets up; the
    store's own tests turn it back on (`test_store`). Servers started by tests inherit it."""
    monkeypatch.setenv("WISP_PACKED_STORE", "0")
