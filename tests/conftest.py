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
def smollm2_tokenizer():
    """The bundled SmolLM2 GGUF's tokenizer, built from its metadata as the loader builds it."""
    from model_runtime.local.gguf_file import GgufFile
    from model_runtime.local.gguf_tokenizer import build_tokenizer
    from model_runtime.models.names import BUNDLED_MODEL

    return build_tokenizer(GgufFile(BUNDLED_MODEL).metadata)
