"""Settings parsing: valid, invalid, partial, nested, and the wrong shape."""

from __future__ import annotations

from typing import Any

import pytest

from lsp_server.settings import Settings, parse_settings


def test_empty_is_all_defaults() -> None:
    assert parse_settings({}) == (Settings(), [])
    assert parse_settings(None) == (Settings(), [])
    assert parse_settings([]) == (Settings(), [])  # Neovim's empty Lua table


def test_valid_camel_case_values() -> None:
    raw = {
        "model": "/models/coder",
        "device": "cpu",
        "quantization": "int8",
        "maxNewTokens": 32,
        "numCandidates": 3,
        "contextTokens": 2048,
        "temperature": 0.7,
        "multiline": "never",
        "disabledLanguages": ["markdown", "plaintext"],
        "fimTemplate": "starcoder2",
        "trustRemoteCode": True,
        "threads": 1,
    }
    settings, warnings = parse_settings(raw)
    assert warnings == []
    assert settings == Settings(
        model="/models/coder", device="cpu", quantization="int8", max_new_tokens=32,
        num_candidates=3, context_tokens=2048, temperature=0.7, multiline="never",
        disabled_languages=("markdown", "plaintext"), fim_template="starcoder2",
        trust_remote_code=True, threads=1,
    )  # fmt: skip


def test_wisp_section_is_unwrapped() -> None:
    settings, _ = parse_settings({"wisp": {"maxNewTokens": 9}})
    assert settings.max_new_tokens == 9


@pytest.mark.parametrize(
    ("raw", "setting"),
    [
        ({"maxNewTokens": "lots"}, "maxNewTokens"),
        ({"maxNewTokens": 0}, "maxNewTokens"),
        ({"maxNewTokens": True}, "maxNewTokens"),
        ({"numCandidates": 99}, "numCandidates"),
        ({"temperature": -1}, "temperature"),
        ({"device": "tpu"}, "device"),
        ({"quantization": "int3"}, "quantization"),
        ({"multiline": 3}, "multiline"),
        ({"disabledLanguages": "python"}, "disabledLanguages"),
        ({"fimTemplate": "gpt-17"}, "fimTemplate"),
        ({"model": 42}, "model"),
        ({"trustRemoteCode": "yes"}, "trustRemoteCode"),
        ({"threads": -1}, "threads"),
        ({"threads": 2.5}, "threads"),
    ],
)
def test_invalid_value_falls_back_with_a_warning(raw: dict[str, Any], setting: str) -> None:
    settings, warnings = parse_settings(raw)
    assert settings == Settings()
    assert len(warnings) == 1 and setting in warnings[0]


def test_partial_update_keeps_the_rest() -> None:
    base, _ = parse_settings({"maxNewTokens": 10, "device": "cpu"})
    settings, warnings = parse_settings({"temperature": 0.5, "device": "gpu"}, base)
    assert (settings.max_new_tokens, settings.temperature, settings.device) == (10, 0.5, "cpu")
    assert len(warnings) == 1 and "'cpu'" in warnings[0]


def test_unknown_key_is_reported() -> None:
    settings, warnings = parse_settings({"maxTokens": 5})
    assert settings == Settings() and "maxTokens" in warnings[0]


@pytest.mark.parametrize("raw", [["a"], "text", 3])
def test_wrong_shape_is_reported(raw: Any) -> None:
    settings, warnings = parse_settings(raw)
    assert settings == Settings() and "must be an object" in warnings[0]


def test_empty_strings_mean_default() -> None:
    settings, warnings = parse_settings({"model": "", "fimTemplate": ""})
    assert (settings.model, settings.fim_template, warnings) == (None, None, [])


def test_engine_options_follow_settings() -> None:
    settings, _ = parse_settings({"maxNewTokens": 7, "multiline": "always", "numCandidates": 2})
    opts = settings.engine_options()
    assert (opts.sampling.max_new_tokens, opts.multiline, opts.sampling.num_candidates) == (
        7,
        "always",
        2,
    )


def test_load_key_ignores_generation_settings() -> None:
    a, _ = parse_settings({"maxNewTokens": 7})
    b, _ = parse_settings({"maxNewTokens": 8, "temperature": 1.0})
    c, _ = parse_settings({"quantization": "int8"})
    d, _ = parse_settings({"threads": 1})
    assert a.load_key() == b.load_key() != c.load_key()
    assert d.load_key() not in (a.load_key(), c.load_key())


def test_remote_backend_settings() -> None:
    raw = {
        "backend": "openai",
        "endpoint": "https://gpu-box:8000/v1",
        "remoteModel": "Qwen/Qwen2.5-Coder-1.5B",
        "apiKeyEnv": "WISP_TEAM_KEY",
        "timeoutMs": 2500,
        "remoteOptions": {"repeat_penalty": 1.0},
    }
    settings, warnings = parse_settings(raw)
    assert warnings == []
    assert (settings.backend, settings.endpoint, settings.remote_model) == (
        "openai",
        "https://gpu-box:8000/v1",
        "Qwen/Qwen2.5-Coder-1.5B",
    )
    assert settings.api_key_env == "WISP_TEAM_KEY" and settings.timeout_ms == 2500
    assert settings.remote_options == {"repeat_penalty": 1.0}
    assert settings.load_key() != Settings().load_key()  # each of them reloads the backend
    for key, value in raw.items():
        assert parse_settings({key: value})[0].load_key() != Settings().load_key(), key


@pytest.mark.parametrize(
    "raw",
    [
        {"backend": "vllm"},
        {"timeoutMs": 50},
        {"remoteOptions": [1]},
        {"remoteOptions": "repeat_penalty=1"},
        {"endpoint": 8000},
    ],
)
def test_bad_remote_settings_fall_back_with_a_warning(raw: dict[str, Any]) -> None:
    settings, warnings = parse_settings(raw)
    assert settings == Settings() and len(warnings) == 1
