"""The layering rules that keep the pipeline readable."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "transformers"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_local_backend_imports_torch_or_transformers() -> None:
    serving = [*ROOT.glob("lsp_server/**/*.py"), *ROOT.glob("model_runtime/*.py")]
    heavy = sorted(p.relative_to(ROOT).as_posix() for p in serving if _imports(p) & HEAVY)
    assert heavy == []  # model_runtime/local/ is the one package that may
    local = {p.name for p in ROOT.glob("model_runtime/local/*.py") if _imports(p) & HEAVY}
    assert local == {
        "blocks.py",
        "decoder.py",
        "generation.py",
        "gguf_file.py",
        "gguf_model.py",
        "gguf_tokenizer.py",
        "kv_cache.py",
        "layers.py",
        "loading.py",
        "probes.py",
    }


def test_model_runtime_knows_nothing_of_lsp() -> None:
    offenders = [
        p.relative_to(ROOT).as_posix()
        for p in ROOT.glob("model_runtime/**/*.py")
        if _imports(p) & {"lsp_server", "pygls", "lsprotocol"}
    ]
    assert offenders == []
