"""GGUF files as a model source: finding, reading in place, the tokenizer kept, failing clearly."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from lsp_session import start, stop

from model_runtime.backend import ModelLoadError
from model_runtime.local import LoadOptions, load_backend, loading
from model_runtime.local.gguf_file import GgufFile
from model_runtime.models.gguf_header import check_header, file_identity, find_gguf
from model_runtime.models.names import BUNDLED_MODEL


def _gguf(path: Path, body: bytes = b"", version: int = 3) -> Path:
    path.write_bytes(b"GGUF" + struct.pack("<I", version) + body)
    return path


def test_find_gguf(tmp_path: Path) -> None:
    file = _gguf(tmp_path / "m.gguf")
    assert find_gguf(file) == file
    assert find_gguf(tmp_path) == file  # a folder without config.json that holds one
    _gguf(tmp_path / "mmproj-m-f16.gguf")
    assert find_gguf(tmp_path) == file  # a vision projector beside it is not a model
    other = _gguf(tmp_path / "m-q4.gguf")
    with pytest.raises(ModelLoadError, match="holds 2 GGUF files"):
        find_gguf(tmp_path)
    other.unlink()
    (tmp_path / "config.json").write_text("{}")
    assert find_gguf(tmp_path) is None  # a Hugging Face folder
    (tmp_path / "notes.txt").write_text("x")
    assert find_gguf(tmp_path / "notes.txt") is None
    assert find_gguf(tmp_path / "missing.gguf") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a GGUF file"),
        (b"PK\x03\x04zipzip", "not a GGUF file"),
        (b"GGUF" + struct.pack("<I", 9), "version 9"),
    ],
)
def test_bad_headers_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        check_header(path)


def test_identity_follows_content_not_path(tmp_path: Path) -> None:
    a = _gguf(tmp_path / "a.gguf", b"x" * 3000)
    b = tmp_path / "sub" / "a.gguf"
    b.parent.mkdir()
    shutil.copy(a, b)
    assert file_identity(a) == file_identity(b)
    _gguf(b, b"y" * 3000)
    assert file_identity(a) != file_identity(b)


def test_the_reader_agrees_with_the_gguf_package() -> None:
    """Every metadata value and every tensor's type, shape and bytes, on the bundled file."""
    from gguf import GGUFReader

    ours, theirs = GgufFile(BUNDLED_MODEL), GGUFReader(str(BUNDLED_MODEL))
    fields = {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert ours.metadata == fields
    assert len(ours.tensors) == len(theirs.tensors) == 272
    for tensor in theirs.tensors:
        info = ours.tensors[tensor.name]
        assert info.type == int(tensor.tensor_type)
        assert info.shape == tuple(reversed([int(d) for d in tensor.shape]))
        assert bytes(ours.blocks(tensor.name).numpy()) == tensor.data.tobytes()


def test_truncated_file_is_a_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WISP_CACHE_DIR", str(tmp_path / "cache"))
    cut = tmp_path / "cut.gguf"
    with BUNDLED_MODEL.open("rb") as whole:
        cut.write_bytes(whole.read(3 << 20))  # header and metadata, weights cut short
    with pytest.raises(ModelLoadError, match=r"cut\.gguf.*cut short"):
        load_backend(LoadOptions(str(cut)))
    half = tmp_path / "half.gguf"
    with BUNDLED_MODEL.open("rb") as whole:
        half.write_bytes(whole.read(200_000))  # the vocabulary itself cut short
    with pytest.raises(ModelLoadError, match=r"half\.gguf"):
        load_backend(LoadOptions(str(half)))


def test_missing_file_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_backend(LoadOptions("/nowhere/model.gguf"))


def test_the_tokenizer_is_built_once_and_kept(tmp_path: Path, monkeypatch) -> None:
    """The first start builds the tokenizer from the metadata and keeps it; later starts read
    it; nothing else is written but the kernels."""
    monkeypatch.setenv("WISP_CACHE_DIR", str(tmp_path / "cache"))
    first = load_backend(LoadOptions(str(BUNDLED_MODEL)))
    built = loading.build_tokenizer

    def build_again(*_args: object) -> None:
        raise AssertionError("built a second time")

    monkeypatch.setattr(loading, "build_tokenizer", build_again)
    second = load_backend(LoadOptions(str(BUNDLED_MODEL)))
    text = "def f(x):\n\treturn x + 1  # é 😀"
    assert first.encode(text) == second.encode(text)
    kept = {p.name for p in (tmp_path / "cache").iterdir()}
    assert "tokenizers" in kept and kept <= {"kernels", "tokenizers"}  # kernels: if built here
    monkeypatch.setattr(loading, "build_tokenizer", built)
    (folder,) = (tmp_path / "cache" / "tokenizers").iterdir()
    (folder / "tokenizer.json").write_text("{ not json")  # a damaged copy is built again
    assert load_backend(LoadOptions(str(BUNDLED_MODEL))).encode(text) == first.encode(text)


def test_folder_holding_a_gguf_loads_with_the_prefix_only_template() -> None:
    backend = load_backend(LoadOptions(str(BUNDLED_MODEL.parent)))
    assert backend.template.name == "prefix-only"  # SmolLM2 has no fill-in-the-middle tokens
    assert backend.healing is not None and len(backend.healing.pieces) == 49152
    assert backend.model is None and backend.fast is not None  # no transformers model at all
    assert backend.fast.packing == "Q4_1+Q8_0+F32"


@pytest.mark.slow
async def test_server_reports_a_corrupt_gguf_and_stays_up(tmp_path: Path) -> None:
    bad = _gguf(tmp_path / "broken.gguf", b"\x00" * 64)
    session, _ = await start({"model": str(bad)})
    status = await session.wait_state("ready", "error")
    assert status["state"] == "error" and "broken.gguf" in status["message"]
    uri = "file:///work/a.py"
    session.open(uri, "x = 1\n")
    inline = await session.inline(uri, 0, 5)
    assert not inline.items  # answered, empty, and the server is still there
    assert await stop(session) == 0


@pytest.mark.slow
async def test_first_start_shows_the_tokenizer_being_built(tmp_path: Path) -> None:
    """From an empty cache the server builds the bundled file's tokenizer and says so."""
    session, _ = await start({}, env={"WISP_CACHE_DIR": str(tmp_path / "cache")})
    status = await session.wait_state("ready", "error", timeout=600)
    assert status["state"] == "ready", status
    messages = [s["message"] for s in session.statuses]
    assert any("tokenizer" in m for m in messages), messages
    assert any((tmp_path / "cache" / "tokenizers").iterdir())
    assert await stop(session) == 0
