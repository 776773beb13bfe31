"""`wisp pull`: downloads into the Hugging Face cache from a loopback stand-in for the hub,
resumed after a cut, refused when corrupted."""

from __future__ import annotations

import hashlib
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_stub import COMMIT, Hub, serve

from lsp_server.cli import main
from model_runtime.backend import ModelLoadError
from model_runtime.models import catalog, names
from model_runtime.models.pull import PullError, pull

NAME = "qwen2.5-coder-0.5b-q8_0"
ENTRY = catalog.BY_NAME[NAME]
DATA = random.Random(7).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
REPO_FOLDER = "models--" + ENTRY.repo.replace("/", "--")


class Stop(Exception):
    """What a progress callback raises to stop a pull halfway, as Ctrl-C would."""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    return folder


@pytest.fixture
def hub(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    files = {(ENTRY.repo, ENTRY.file): DATA, ("someone/tiny-GGUF", "tiny.gguf"): DATA[:1000]}
    with serve(files) as stub:
        monkeypatch.setenv("HF_ENDPOINT", stub.url)
        yield stub


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub writes 10 MiB at a time: smaller pieces, so a cut leaves some on disk."""
    monkeypatch.setattr("huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE", 16 * 1024)


def test_pull_fills_the_hub_cache(hub: Hub, cache: Path) -> None:
    seen: list[tuple[int, int]] = []
    path = pull(NAME, lambda done, total: seen.append((done, total)))
    folder = cache / REPO_FOLDER
    assert path == folder / "snapshots" / COMMIT / ENTRY.file
    assert path.read_bytes() == DATA
    assert path.resolve() == (folder / "blobs" / SHA).resolve()
    assert (folder / "refs" / "main").read_text() == COMMIT
    assert seen[0] == (0, len(DATA)) and seen[-1] == (len(DATA), len(DATA))
    assert [s.range for s in hub.gets()] == [None]
    assert not list(folder.glob("blobs/*.incomplete"))


def test_pulled_and_checked_returns_without_the_hub(hub: Hub) -> None:
    path = pull(NAME)
    asked = len(hub.seen)
    assert pull(NAME) == path
    assert len(hub.seen) == asked


def test_pulled_name_resolves(hub: Hub) -> None:
    with pytest.raises(ModelLoadError, match=f"wisp pull {NAME}"):
        names.resolve(NAME)
    path = pull(NAME)
    assert names.resolve(NAME).source == str(path)
    assert names.resolve(f"{ENTRY.repo}:{ENTRY.file}").source == str(path)


def test_hub_file_by_repo_and_name(hub: Hub) -> None:
    path = pull("someone/tiny-GGUF:tiny.gguf")
    assert path.read_bytes() == DATA[:1000]
    assert names.resolve("someone/tiny-GGUF:tiny.gguf").source == str(path)


def test_cut_connection_resumes_in_the_same_pull(hub: Hub, small_chunks: None) -> None:
    hub.cut_first_get_after = 100_000
    path = pull(NAME)
    first, second = hub.gets()
    assert first.range is None
    assert second.range is not None and second.range.endswith("-")
    start = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= 100_000
    assert path.read_bytes() == DATA


def test_stopped_pull_resumes_next_time(hub: Hub, cache: Path, small_chunks: None) -> None:
    def stop_halfway(done: int, total: int) -> None:
        if done >= total // 2:
            raise Stop

    with pytest.raises(Stop):
        pull(NAME, stop_halfway)
    partial = cache / REPO_FOLDER / "blobs" / f"{SHA}.incomplete"
    kept = partial.stat().st_size
    assert 0 < kept < len(DATA)
    with pytest.raises(ModelLoadError):
        names.resolve(NAME)

    seen: list[int] = []
    path = pull(NAME, lambda done, total: seen.append(done))
    assert hub.gets()[-1].range == f"bytes={kept}-"
    assert seen[0] == kept
    assert path.read_bytes() == DATA
    assert not partial.exists()


def test_corrupted_download_is_refused(hub: Hub, cache: Path) -> None:
    hub.corrupt = True
    with pytest.raises(PullError, match=f"refused: its sha256 is .*, the hub says {SHA}; removed"):
        pull(NAME)
    assert not [p for p in (cache / REPO_FOLDER).rglob("*") if p.is_file() or p.is_symlink()]
    with pytest.raises(ModelLoadError):
        names.resolve(NAME)
    hub.corrupt = False
    assert pull(NAME).read_bytes() == DATA


def test_blob_changed_in_the_cache_is_refused(hub: Hub, cache: Path) -> None:
    path = pull(NAME)
    blob = path.resolve()
    blob.write_bytes(DATA[:-1] + bytes([DATA[-1] ^ 1]))
    with pytest.raises(PullError, match="refused: its sha256 is"):
        pull(NAME)
    assert not blob.exists() and not path.is_symlink()
    with pytest.raises(ModelLoadError):
        names.resolve(NAME)


def test_unknown_name_lists_the_catalog(hub: Hub) -> None:
    with pytest.raises(PullError) as caught:
        pull("qwen9-coder")
    assert "'qwen9-coder'" in str(caught.value)
    assert all(entry.name in str(caught.value) for entry in catalog.CATALOG)
    assert hub.seen == []


def test_missing_file_names_the_hub(hub: Hub) -> None:
    with pytest.raises(PullError, match=f"{hub.url} has no file absent.gguf of {ENTRY.repo}"):
        pull(f"{ENTRY.repo}:absent.gguf")
    with pytest.raises(PullError, match="has no repository nobody/nothing"):
        pull("nobody/nothing:x.gguf")


def test_unreachable_hub_names_the_endpoint(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        with pytest.raises(PullError, match=f"cannot reach the hub at {endpoint}"):
            pull(NAME)


def test_offline_mode_is_said(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # read at import
    with pytest.raises(PullError, match="HF_HUB_OFFLINE is set"):
        pull(NAME)
    assert hub.seen == []


def test_cli_pull(hub: Hub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", NAME]) == 0
    out, err = capsys.readouterr()
    path = Path(out.strip())
    assert out == f"{path}\n" and path.read_bytes() == DATA
    assert NAME in err  # the progress bar


def test_cli_pull_errors(hub: Hub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", "nothing-such"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("wisp: no model called 'nothing-such'")
    assert main(["pull"]) == 2
    assert "wisp pull --list" in capsys.readouterr().err


def test_cli_pull_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(catalog.CATALOG)
    for line, entry in zip(lines, catalog.CATALOG, strict=True):
        assert line.startswith(entry.name) and f"{entry.repo}:{entry.file}" in line
        assert entry.note in line
