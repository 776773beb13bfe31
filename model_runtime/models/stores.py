"""Where the tools people already use keep their models, and what each store holds.

- Ollama: `$OLLAMA_MODELS` (default `~/.ollama/models`): `manifests/<registry>/<namespace>/<name>/
  <tag>` is a JSON manifest whose model layer names a blob, `blobs/sha256-<hex>`: the GGUF file.
- LM Studio: `<downloads folder>/<publisher>/<repo>/*.gguf`; the folder is LM Studio's
  `downloadsFolder` setting, else `models` under its home (`~/.lmstudio-home-pointer` names it).
- The Hugging Face cache: `$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`:
  `models--<org>--<repo>/snapshots/<commit>/<file>`, the commit of `main` in `refs/main`.

Every folder is read from the environment when asked, so a changed variable takes effect at once.
Nothing here reads a model file (see `listing`) or imports torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from model_runtime.backend import ModelLoadError

OLLAMA_REGISTRY = "registry.ollama.ai"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"


@dataclass(frozen=True)
class Found:
    """A model file in a store, under the name that loads it."""

    name: str
    source: str  # ollama | lmstudio | huggingface
    path: Path


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


# Ollama


def ollama_root() -> Path:
    """The Ollama store: `$OLLAMA_MODELS`, else `~/.ollama/models`."""
    configured = os.environ.get("OLLAMA_MODELS")
    return Path(configured).expanduser() if configured else _home() / ".ollama" / "models"


def _ollama_parts(name: str) -> tuple[str, str, str, str]:
    """`[registry/][namespace/]model[:tag]` -> (registry, namespace, model, tag)."""
    base, _, tag = name.partition(":")
    pieces = base.split("/")
    model = pieces[-1]
    namespace = pieces[-2] if len(pieces) >= 2 else "library"
    registry = "/".join(pieces[:-2]) if len(pieces) >= 3 else OLLAMA_REGISTRY
    return registry, namespace, model, tag or "latest"


def ollama_lookup(name: str) -> Path:
    """The GGUF blob of Ollama model `name` (`qwen2.5-coder:1.5b-base`), read in place."""
    root = ollama_root()
    registry, namespace, model, tag = _ollama_parts(name)
    folder = root / "manifests" / registry / namespace / model
    if not folder.is_dir():
        known = sorted(found.name.removeprefix("ollama:") for found in ollama_models())
        listing = f": models found: {', '.join(known)}" if known else ": it holds no models"
        raise ModelLoadError(f"no Ollama model {model!r} in {root}{listing}")
    manifest = folder / tag
    if not manifest.is_file():
        tags = sorted(path.name for path in folder.iterdir() if path.is_file())
        raise ModelLoadError(
            f"no tag {tag} for {model} in {root}: tags found: {', '.join(tags) or 'none'}"
        )
    return _ollama_blob(root, manifest)


def _ollama_blob(root: Path, manifest: Path) -> Path:
    try:
        layers = json.loads(manifest.read_text(encoding="utf-8"))["layers"]
        digest = next(
            layer["digest"] for layer in layers if layer["mediaType"] == OLLAMA_MODEL_LAYER
        )
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as exc:
        raise ModelLoadError(f"the Ollama manifest {manifest} names no model layer") from exc
    blob = root / "blobs" / str(digest).replace(":", "-")
    if not blob.is_file():
        raise ModelLoadError(f"the Ollama manifest {manifest} names {blob}, which is missing")
    return blob


def ollama_models() -> list[Found]:
    """Every tagged model in the Ollama store whose blob is there."""
    root = ollama_root()
    found = []
    for manifest in sorted((root / "manifests").glob("*/*/*/*")):
        if not manifest.is_file():
            continue
        model, namespace, registry = (manifest.parents[i].name for i in range(3))
        name = f"{model}:{manifest.name}"
        if registry != OLLAMA_REGISTRY:
            name = f"{registry}/{namespace}/{name}"
        elif namespace != "library":
            name = f"{namespace}/{name}"
        try:
            found.append(Found(f"ollama:{name}", "ollama", _ollama_blob(root, manifest)))
        except ModelLoadError:
            continue  # a manifest without its blob (a pull in progress) is not listed
    return found


# LM Studio


def lmstudio_roots() -> list[Path]:
    """LM Studio's model folders that exist: its `downloadsFolder` setting, the `models` folder
    of its home (`~/.lmstudio-home-pointer`, else `~/.lmstudio`), and the older
    `~/.cache/lm-studio/models`."""
    home = _home()
    lmstudio_home = home / ".lmstudio"
    pointer = home / ".lmstudio-home-pointer"
    if pointer.is_file():
        text = pointer.read_text(encoding="utf-8", errors="replace").strip()
        lmstudio_home = Path(text).expanduser() if text else lmstudio_home
    candidates = []
    for settings in (
        lmstudio_home / "settings.json",
        home / ".config" / "LM Studio" / "settings.json",
    ):
        try:
            folder = json.loads(settings.read_text(encoding="utf-8")).get("downloadsFolder")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(folder, str) and folder:
            candidates.append(Path(folder).expanduser())
    candidates += [lmstudio_home / "models", home / ".cache" / "lm-studio" / "models"]
    unique: list[Path] = []
    for folder in candidates:
        if folder.is_dir() and folder.resolve() not in {u.resolve() for u in unique}:
            unique.append(folder)
    return unique


def lmstudio_lookup(name: str) -> Path:
    """The GGUF file of `publisher/repo[:FILE.gguf]` in LM Studio's folders."""
    repo, _, file = name.partition(":")
    roots = lmstudio_roots()
    where = ", ".join(str(root) for root in roots) or "no LM Studio folder (~/.lmstudio/models)"
    for root in roots:
        folder = root / repo
        if folder.is_dir():
            return pick_gguf(folder, file, f"lmstudio:{repo}")
    raise ModelLoadError(f"no LM Studio model {repo!r} in {where}")


def lmstudio_models() -> list[Found]:
    """Every GGUF file two folders deep in LM Studio's folders (projector files left out)."""
    found = []
    for root in lmstudio_roots():
        for folder in sorted(p for p in root.glob("*/*") if p.is_dir()):
            files = [p for p in sorted(folder.glob("*.gguf")) if not _is_projector(p)]
            name = f"lmstudio:{folder.parent.name}/{folder.name}"
            for path in files:  # the file named only where the folder holds several
                found.append(
                    Found(name if len(files) == 1 else f"{name}:{path.name}", "lmstudio", path)
                )
    return found


# The Hugging Face cache


def hf_hub_cache() -> Path:
    """The hub's cache folder, as huggingface_hub finds it."""
    if configured := os.environ.get("HF_HUB_CACHE"):
        return Path(configured).expanduser()
    if hf_home := os.environ.get("HF_HOME"):
        return Path(hf_home).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache).expanduser() if cache else _home() / ".cache") / "huggingface" / "hub"


def hf_repo_folder(repo: str) -> Path:
    """The cache folder of hub repository `org/repo`."""
    return hf_hub_cache() / ("models--" + repo.replace("/", "--"))


def hf_snapshot(folder: Path) -> Path | None:
    """The snapshot of `main` in a repository's cache folder, else its newest one."""
    ref = folder / "refs" / "main"
    if ref.is_file():
        snapshot = folder / "snapshots" / ref.read_text(encoding="utf-8").strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = [p for p in (folder / "snapshots").glob("*") if p.is_dir()]
    return max(snapshots, key=lambda p: p.stat().st_mtime) if snapshots else None


def hf_lookup(repo: str, file: str) -> Path | None:
    """`file` of hub repository `repo` in the cache, or None when it was not downloaded."""
    snapshot = hf_snapshot(hf_repo_folder(repo))
    path = snapshot / file if snapshot is not None else None
    return path if path is not None and path.is_file() else None


def hf_models() -> list[Found]:
    """Every GGUF file in the newest snapshot of each cached repository."""
    found = []
    for folder in sorted(hf_hub_cache().glob("models--*")):
        snapshot = hf_snapshot(folder)
        if snapshot is None:
            continue
        repo = folder.name.removeprefix("models--").replace("--", "/", 1)
        for path in sorted(snapshot.rglob("*.gguf")):
            if path.is_file() and not _is_projector(path):
                file = path.relative_to(snapshot).as_posix()
                found.append(Found(f"{repo}:{file}", "huggingface", path))
    return found


# Folders


def pick_gguf(folder: Path, file: str, name: str) -> Path:
    """`file` in `folder`, or its only GGUF model file when `file` is empty."""
    if file:
        path = folder / file
        if not path.is_file():
            raise ModelLoadError(f"no file {file} in {folder}: {_files(folder)}")
        return path
    files = [p for p in sorted(folder.glob("*.gguf")) if not _is_projector(p)]
    if len(files) == 1:
        return files[0]
    if not files:
        raise ModelLoadError(f"{name}: {folder} holds no GGUF file")
    raise ModelLoadError(
        f"{name}: {folder} holds {len(files)} GGUF files; name one as {name}:FILE: {_files(folder)}"
    )


def _files(folder: Path) -> str:
    names = [p.name for p in sorted(folder.glob("*.gguf")) if not _is_projector(p)]
    return "files found: " + (", ".join(names) if names else "none")


def _is_projector(path: Path) -> bool:
    """A vision projector (`mmproj-*.gguf`) that LM Studio and the hub keep beside a model."""
    return path.name.lower().startswith("mmproj")
