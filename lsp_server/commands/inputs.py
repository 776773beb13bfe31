"""What the one-shot commands (`complete`, `bench`) read from their command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lsp_server.settings import Settings, parse_settings


class InputError(Exception):
    """A file or option the command cannot use; the message is for the user."""


def read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


def cli_settings(settings_json: str | None, model: str | None) -> tuple[dict[str, Any], Settings]:
    """`--settings` (a JSON object, as an editor sends it) with `--model` on top, parsed.

    Returns the raw object and the settings; warnings about single keys go to stderr.
    """
    try:
        raw = json.loads(settings_json) if settings_json else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"--settings is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InputError("--settings must be a JSON object")
    if model:
        raw["model"] = model
    settings, warnings = parse_settings(raw)
    for warning in warnings:
        print(f"wisp: {warning}", file=sys.stderr)
    return raw, settings
