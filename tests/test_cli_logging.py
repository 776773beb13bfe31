"""`wisp` logging: stderr or a file, pygls' chatter and import-time library noise only with -vv."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from lsp_server.cli import IMPORT_NOISE, setup_logging

NAMES = ("pygls", *IMPORT_NOISE)  # the loggers setup_logging sets levels on


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in NAMES}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def logged(tmp_path: Path, verbose: int) -> str:
    log_file = tmp_path / "wisp.log"
    setup_logging(verbose, str(log_file))
    logging.getLogger("pygls.protocol").info("Sending data")
    logging.getLogger("model_runtime.engine").warning("model missing")
    logging.getLogger("model_runtime.engine").info("loaded")
    for handler in logging.getLogger().handlers:
        handler.flush()
    return log_file.read_text(encoding="utf-8")


def noise_shown() -> list[bool]:
    # Whether import-time warnings get through. Asked of the loggers, not read from the file:
    # once torch is imported, its own logging keeps torch.* records off the root handler.
    return [logging.getLogger(name).isEnabledFor(logging.WARNING) for name in IMPORT_NOISE]


@pytest.mark.parametrize(
    ("verbose", "shown", "hidden"),
    [
        (0, ["model missing"], ["loaded", "Sending data"]),
        (1, ["model missing", "loaded"], ["Sending data"]),
        (2, ["model missing", "loaded", "Sending data"], []),
    ],
)
def test_verbosity_decides_what_is_logged(
    tmp_path: Path, verbose: int, shown: list[str], hidden: list[str]
) -> None:
    text = logged(tmp_path, verbose)
    for message in shown:
        assert message in text
    for message in hidden:
        assert message not in text
    assert noise_shown() == [verbose >= 2] * len(IMPORT_NOISE)


def test_a_later_verbose_setup_undoes_an_earlier_quiet_one(tmp_path: Path) -> None:
    setup_logging(0, str(tmp_path / "quiet.log"))
    assert "Sending data" in logged(tmp_path, 2)
    assert all(noise_shown())
