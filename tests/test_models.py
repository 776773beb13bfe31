"""Models by name: Ollama, LM Studio and Hugging Face cache stores built by the tests (real
tiny GGUF files, fake manifests), resolved in `wisp complete`, `wisp serve` and `wisp models`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType
from lsp_session import start, stop
from lsprotocol import types
from model_stores import hf_cache, lmstudio_folder, ollama_store
from tiny_gguf import write_tiny_gguf

from model_runtime.backend import ModelLoadError
from model_runtime.models import catalog, stores
from model_runtime.models.gguf_header import read_header
from model_runtime.models.listing import NATIVE_ARCHITECTURES, NATIVE_TYPES, describe, find_models
from model_runtime.models.names import BUNDLED_MODEL, BUNDLED_NAME, parse_hub_file, resolve

PULLED = catalog.find("qwen2.5-coder-0.5b-q8_0")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny-q8_0.gguf")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    return write_tiny_gguf(folder / "tiny-llama-q4_k.gguf", "llama", GGMLQuantizationType.Q4_K)


@pytest.fixture
def machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny: Path, tiny_llama: Path
) -> dict[str, str]:
    """A home with models in all three stores, its environment set (and returned)."""
    home = tmp_path / "home"
    ollama = ollama_store(
        tmp_path / "ollama", {"qwen2.5-coder:1.5b-base": tiny, "qwen2.5-coder:7b": tiny_llama}
    )
    lmstudio_folder(
        home / ".lmstudio" / "models",
        {"lmstudio-community/Tiny-GGUF/tiny-Q8_0.gguf": tiny,
         "lmstudio-community/Tiny-GGUF/mmproj-tiny-f16.gguf": tiny},
    )  # fmt: skip
    assert PULLED is not None
    hf_cache(tmp_path / "hf", PULLED.repo, {PULLED.file: tiny_llama})
    env = {"HOME": str(home), "OLLAMA_MODELS": str(ollama), "HF_HUB_CACHE": str(tmp_path / "hf")}
    for key in ("HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.mark.parametrize(
    ("setting", "source", "name"),
    [
        ("ollama:qwen2.5-coder:1.5b-base", "ollama", "ollama:qwen2.5-coder:1.5b-base"),
        ("ollama:library/qwen2.5-coder:7b", "ollama", "ollama:library/qwen2.5-coder:7b"),
        ("lmstudio:lmstudio-community/Tiny-GGUF", "lmstudio",
         "lmstudio:lmstudio-community/Tiny-GGUF"),
        ("qwen2.5-coder-0.5b-q8_0", "hf", "qwen2.5-coder-0.5b-q8_0"),
        ("ggml-org/Qwen2.5-Coder-0.5B-Q8_0-GGUF:qwen2.5-coder-0.5b-q8_0.gguf", "hf",
         "ggml-org/Qwen2.5-Coder-0.5B-Q8_0-GGUF:qwen2.5-coder-0.5b-q8_0.gguf"),
    ],
)  # fmt: skip
def test_names_resolve_to_the_files_in_each_store(
    machine: dict[str, str], tiny: Path, tiny_llama: Path, setting: str, source: str, name: str
) -> None:
    resolved = resolve(setting)
    path = Path(resolved.source)
    assert resolved.name == name
    assert path.is_file()
    expected = tiny_llama if setting.endswith(("7b", ".gguf", "q8_0")) else tiny
    assert path.read_bytes() == expected.read_bytes()
    if source == "ollama":  # read in place: the blob itself, nothing copied
        assert path.parent == Path(machine["OLLAMA_MODELS"]) / "blobs"
        assert path.name.startswith("sha256-")


def test_paths_in_the_stores_layouts_resolve(machine: dict[str, str], tiny_llama: Path) -> None:
    home = Path(machine["HOME"])
    repo = home / ".lmstudio" / "models" / "lmstudio-community" / "Tiny-GGUF"
    assert Path(resolve(str(repo)).source).name == "tiny-Q8_0.gguf"  # the projector left out
    assert PULLED is not None
    cached = stores.hf_repo_folder(PULLED.repo)
    assert Path(resolve(str(cached)).source).read_bytes() == tiny_llama.read_bytes()
    assert resolve(None) == resolve("") == type(resolve(None))(str(BUNDLED_MODEL), BUNDLED_NAME)
    assert resolve("HuggingFaceTB/SmolLM2-135M").source == "HuggingFaceTB/SmolLM2-135M"


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("ollama:qwen2.5-coder:3b",
         ["no tag 3b for qwen2.5-coder in", "tags found: 1.5b-base, 7b"]),
        ("ollama:starcoder2", ["no Ollama model 'starcoder2' in",
                               "models found: qwen2.5-coder:1.5b-base, qwen2.5-coder:7b"]),
        ("lmstudio:someone/Missing-GGUF",
         ["no LM Studio model 'someone/Missing-GGUF' in", ".lmstudio"]),
        ("lmstudio:lmstudio-community/Tiny-GGUF:other.gguf",
         ["no file other.gguf in", "tiny-Q8_0.gguf"]),
        ("qwen2.5-coder-7b-q8_0", ["is not downloaded", "`wisp pull qwen2.5-coder-7b-q8_0`"]),
        ("org/repo:file.gguf",
         ["is not downloaded", "file.gguf of org/repo", "`wisp pull org/repo:file.gguf`"]),
    ],
)  # fmt: skip
def test_errors_name_what_was_looked_for_and_where(
    machine: dict[str, str], setting: str, words: list[str]
) -> None:
    with pytest.raises(ModelLoadError) as caught:
        resolve(setting)
    for word in words:
        assert word in str(caught.value)


def test_a_folder_of_several_models_asks_which(tmp_path: Path, tiny: Path) -> None:
    folder = lmstudio_folder(tmp_path, {"a-Q8_0.gguf": tiny, "a-Q4_0.gguf": tiny})
    with pytest.raises(ModelLoadError, match="holds 2 GGUF files; name one as"):
        resolve(str(folder))


def test_an_ollama_manifest_without_its_blob_is_refused_and_not_listed(
    machine: dict[str, str], tiny: Path
) -> None:
    root = Path(machine["OLLAMA_MODELS"])
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / "qwen2.5-coder" / "7b"
    blob = json.loads(manifest.read_text())["layers"][0]["digest"].replace(":", "-")
    (root / "blobs" / blob).unlink()
    with pytest.raises(ModelLoadError, match="which is missing"):
        resolve("ollama:qwen2.5-coder:7b")
    assert "ollama:qwen2.5-coder:7b" not in [m.name for m in stores.ollama_models()]
    manifest.write_text("{not json")
    with pytest.raises(ModelLoadError, match="names no model layer"):
        resolve("ollama:qwen2.5-coder:7b")


def test_lmstudio_honours_its_configured_folder(tmp_path: Path, monkeypatch, tiny: Path) -> None:
    home = tmp_path / "home"
    elsewhere = lmstudio_folder(tmp_path / "disk" / "models", {"pub/Repo-GGUF/m.gguf": tiny})
    pointer_home = tmp_path / "lms-home"
    (pointer_home).mkdir()
    (pointer_home / "settings.json").write_text(json.dumps({"downloadsFolder": str(elsewhere)}))
    home.mkdir()
    (home / ".lmstudio-home-pointer").write_text(str(pointer_home))
    monkeypatch.setenv("HOME", str(home))
    assert stores.lmstudio_roots() == [elsewhere]
    assert Path(resolve("lmstudio:pub/Repo-GGUF").source).name == "m.gguf"


def test_the_hub_cache_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    for key in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert stores.hf_hub_cache() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert stores.hf_hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert stores.hf_hub_cache() == tmp_path / "hf-home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert stores.hf_hub_cache() == tmp_path / "hub"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("org/repo:file.gguf", ("org/repo", "file.gguf")),
        ("ggml-org/Qwen2.5-Coder-1.5B-Q8_0-GGUF:qwen2.5-coder-1.5b-q8_0.gguf",
         ("ggml-org/Qwen2.5-Coder-1.5B-Q8_0-GGUF", "qwen2.5-coder-1.5b-q8_0.gguf")),
        ("org/repo:sub/file.GGUF", ("org/repo", "sub/file.GGUF")),
        ("org/repo", None),
        ("ollama:qwen2.5-coder:1.5b", None),
        ("/abs/path:x.gguf", None),
        ("org/repo:file.bin", None),
    ],
)  # fmt: skip
def test_hub_file_names(text: str, parsed: tuple[str, str] | None) -> None:
    assert parse_hub_file(text) == parsed


def test_listing_describes_each_file_from_its_header(machine: dict[str, str]) -> None:
    entries = {entry.name: entry for entry in find_models()}
    assert set(entries) == {
        None,
        "ollama:qwen2.5-coder:1.5b-base",
        "ollama:qwen2.5-coder:7b",
        "lmstudio:lmstudio-community/Tiny-GGUF",
        "qwen2.5-coder-0.5b-q8_0",  # a pulled catalog file goes by its catalog name
    }
    qwen = entries["ollama:qwen2.5-coder:1.5b-base"]
    assert (qwen.source, qwen.architecture, qwen.fim, qwen.native) == (
        "ollama",
        "qwen2",
        True,
        True,
    )
    assert qwen.types[0] == "Q8_0" and "F32" in qwen.types
    assert entries["ollama:qwen2.5-coder:7b"].types[0] == "Q4_K"
    bundled = entries[None]
    assert (bundled.source, bundled.fim, bundled.instruct) == ("bundled", False, True)
    assert "completes from the code before the cursor only" in bundled.note
    assert all(
        entry.size_bytes > 0 and not entry.note.startswith("unreadable")
        for entry in entries.values()
    )


def test_listing_marks_what_the_native_pass_does_not_run(tmp_path: Path, tiny: Path) -> None:
    odd = write_tiny_gguf(tmp_path / "odd.gguf", "llama", GGMLQuantizationType.Q4_0)
    data = bytearray(odd.read_bytes())
    data[data.index(b"llama") : data.index(b"llama") + 5] = b"gemma"  # another architecture
    odd.write_bytes(bytes(data))
    entry = describe(odd, "odd", "file")
    assert entry.architecture == "gemma" and not entry.native
    assert "transformers" in entry.note
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny.read_bytes()[:100])
    assert describe(broken, "broken", "file").note.startswith("unreadable")


def test_native_types_match_the_kernels(tiny: Path) -> None:
    """`listing` says what the native pass runs without loading it: the same as the pass."""
    from model_runtime.local import gguf_model
    from model_runtime.local.blocks import library

    lib = library()
    for kind in GGMLQuantizationType:
        floats = kind.value in (0, 1, 30)
        runs = floats or lib.wisp_row_bytes(kind.value, 256) >= 0
        assert (kind in NATIVE_TYPES) == runs, kind.name
    assert set(gguf_model.ARCHITECTURES) == NATIVE_ARCHITECTURES


def test_the_listing_does_not_import_torch() -> None:
    code = (
        "import sys; from model_runtime.models.listing import find_models; find_models(); "
        "from lsp_server.features import models; assert 'torch' not in sys.modules, 'torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_wisp_models_lists_every_store(machine: dict[str, str], capsys) -> None:
    from lsp_server.cli import main

    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    names = [model["name"] for model in listed["models"]]
    assert "ollama:qwen2.5-coder:1.5b-base" in names and None in names
    first = listed["models"][names.index("ollama:qwen2.5-coder:1.5b-base")]
    assert {"sizeBytes", "architecture", "types", "fim", "native", "instruct", "note"} <= set(first)
    pulled = {item["name"]: item["pulled"] for item in listed["pullable"]}
    assert pulled["qwen2.5-coder-0.5b-q8_0"] and not pulled["qwen2.5-coder-7b-q8_0"]
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "ollama:qwen2.5-coder:7b" in table and "wisp pull NAME" in table


def test_wisp_complete_takes_a_model_by_name(machine: dict[str, str]) -> None:
    source = Path(machine["HOME"]) / "code.py"
    source.write_text("def add(a, b):\n    return ")
    for setting in ("ollama:qwen2.5-coder:1.5b-base", "lmstudio:lmstudio-community/Tiny-GGUF"):
        command = [sys.executable, "-m", "lsp_server.cli", "complete", str(source), "--line", "1",
                   "--character", "11", "--json", "--model", setting,
                   "--settings", '{"minConfidence": 0, "maxNewTokens": 4}']  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "items" in json.loads(done.stdout)
    missing = [*command[:-4], "--model", "ollama:qwen2.5-coder:3b"]
    done = subprocess.run(missing, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "no tag 3b for qwen2.5-coder in" in done.stderr


@pytest.mark.slow
async def test_the_server_lists_models_and_switches_by_name(machine: dict[str, str]) -> None:
    session, _ = await start({"model": "ollama:qwen2.5-coder:1.5b-base"}, env=machine)
    try:
        ready = await session.wait_state("ready", "error")
        assert ready["state"] == "ready", ready
        assert ready["model"] == "ollama:qwen2.5-coder:1.5b-base"
        listed = await session.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="wisp.models")
        )
        assert listed["current"] == listed["loaded"] == "ollama:qwen2.5-coder:1.5b-base"
        names = [model["name"] for model in listed["models"]]
        assert "lmstudio:lmstudio-community/Tiny-GGUF" in names
        assert [item["name"] for item in listed["pullable"]] == [e.name for e in catalog.CATALOG]
        session.statuses.clear()
        session.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"wisp": {"model": "ollama:qwen2.5-coder:7b"}}
            )
        )
        switched = await session.wait_state("ready", "error")
        assert switched == {**switched, "state": "ready", "model": "ollama:qwen2.5-coder:7b"}
        session.statuses.clear()
        lmstudio = "lmstudio:lmstudio-community/Tiny-GGUF"
        session.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"wisp": {"model": lmstudio}})
        )
        switched = await session.wait_state("ready", "error")
        assert switched == {**switched, "state": "ready", "model": lmstudio}
        session.statuses.clear()
        session.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"wisp": {"model": "ollama:nothing"}})
        )
        failed = await session.wait_state("ready", "error")
        assert failed["state"] == "error" and "no Ollama model 'nothing' in" in failed["message"]
    finally:
        await stop(session)


def test_a_header_read_skipping_arrays_differs_only_by_them() -> None:
    data = BUNDLED_MODEL.read_bytes()
    metadata, tensors = read_header(data, BUNDLED_MODEL)  # type: ignore[arg-type]
    skip = frozenset({"tokenizer.ggml.merges", "tokenizer.ggml.token_type", "general.name"})
    lean, lean_tensors = read_header(data, BUNDLED_MODEL, skip)  # type: ignore[arg-type]
    assert lean == {key: value for key, value in metadata.items() if key not in skip}
    assert lean_tensors == tensors and skip <= set(metadata)


@pytest.mark.slow
async def test_the_server_pulls_with_progress_then_serves_the_pulled_model(
    tmp_path: Path, tiny: Path
) -> None:
    from hub_stub import serve

    assert PULLED is not None
    env = {"HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hf"),
           "OLLAMA_MODELS": str(tmp_path / "none")}  # fmt: skip
    with serve({(PULLED.repo, PULLED.file): tiny.read_bytes()}) as hub:
        online = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}  # the session sets 1
        session, _ = await start({}, env={**env, **online})
        try:
            assert (await session.wait_state("ready", "error"))["model"] == BUNDLED_NAME
            pulled = await session.client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="wisp.pull", arguments=[PULLED.name])
            )
            assert Path(pulled["path"]).read_bytes() == tiny.read_bytes()
            reports = [r for rs in session.client.progress_reports.values() for r in rs]
            titles = [getattr(value, "title", "") for value in reports]
            assert f"wisp: Downloading {PULLED.name}" in titles
            assert any(getattr(value, "percentage", None) == 100 for value in reports)
            session.statuses.clear()
            session.client.workspace_did_change_configuration(
                types.DidChangeConfigurationParams(settings={"wisp": {"model": PULLED.name}})
            )
            switched = await session.wait_state("ready", "error")
            assert (switched["state"], switched["model"]) == ("ready", PULLED.name)
            with pytest.raises(Exception, match="no model called 'nothing' to pull"):
                await session.client.workspace_execute_command_async(
                    types.ExecuteCommandParams(command="wisp.pull", arguments=["nothing"])
                )
        finally:
            await stop(session)
