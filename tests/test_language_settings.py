"""The per-language and comments-and-strings settings: parsing and the language gate."""

from __future__ import annotations

import pytest

from lsp_server.settings import Settings, parse_settings


def test_defaults() -> None:
    settings = Settings()
    assert settings.comments_and_strings == "invoked"
    assert settings.enabled_languages is None
    assert settings.language_enabled("python") and settings.language_enabled("")


def test_parsed_values() -> None:
    raw = {"enabledLanguages": ["python", "go"], "commentsAndStrings": "never"}
    settings, warnings = parse_settings(raw)
    assert warnings == []
    assert settings.enabled_languages == ("python", "go")
    assert settings.comments_and_strings == "never"
    assert parse_settings({"enabledLanguages": None}, settings)[0].enabled_languages is None


@pytest.mark.parametrize(
    ("enabled", "disabled", "language", "allowed"),
    [
        (None, [], "rust", True),
        (None, ["rust"], "rust", False),
        (["python"], [], "rust", False),
        (["python"], [], "python", True),
        (["python"], ["python"], "python", False),  # disabling wins
    ],
)
def test_language_gate(
    enabled: list[str] | None, disabled: list[str], language: str, allowed: bool
) -> None:
    raw = {"enabledLanguages": enabled, "disabledLanguages": disabled}
    settings, _ = parse_settings(raw)
    assert settings.language_enabled(language) is allowed


@pytest.mark.parametrize(
    "raw",
    [{"commentsAndStrings": "sometimes"}, {"commentsAndStrings": True}, {"enabledLanguages": "go"}],
)
def test_invalid_values_keep_the_previous_ones(raw: dict[str, object]) -> None:
    settings, warnings = parse_settings(raw)
    assert settings == Settings()
    assert len(warnings) == 1 and next(iter(raw)) in warnings[0]
