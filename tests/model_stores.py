"""Model stores as Ollama, LM Studio and the Hugging Face cache lay them out, built for tests
from real (tiny) GGUF files: fake manifests and folders, real models."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

OLLAMA_MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def ollama_store(root: Path, models: dict[str, Path]) -> Path:
    """An Ollama store under `root` holding `{"name:tag": gguf file}`; returns `root`."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    for name, gguf in models.items():
        data = gguf.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (blobs / f"sha256-{digest}").write_bytes(data)
        config = b'{"model_format":"gguf"}'
        config_digest = hashlib.sha256(config).hexdigest()
        (blobs / f"sha256-{config_digest}").write_bytes(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OLLAMA_MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": f"sha256:{config_digest}",
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.ollama.image.model",
                    "digest": f"sha256:{digest}",
                    "size": len(data),
                },
                {
                    "mediaType": "application/vnd.ollama.image.license",
                    "digest": f"sha256:{config_digest}",
                    "size": len(config),
                },
            ],
        }
        base, _, tag = name.partition(":")
        path = root / "manifests" / "registry.ollama.ai"
        path = path / (base if "/" in base else f"library/{base}") / (tag or "latest")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest), encoding="utf-8")
    return root


def lmstudio_folder(root: Path, files: dict[str, Path]) -> Path:
    """LM Studio's models folder under `root`: `{"publisher/repo/FILE.gguf": gguf file}`."""
    for relative, gguf in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(gguf, target)
    return root


def hf_cache(root: Path, repo: str, files: dict[str, Path], commit: str = "a" * 40) -> Path:
    """A Hugging Face hub cache under `root` with `files` of `repo` at `commit` (as `main`)."""
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit, encoding="utf-8")
    for name, gguf in files.items():
        data = gguf.read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return root
