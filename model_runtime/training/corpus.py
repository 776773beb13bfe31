"""The training corpus: Python files under a directory, deduplicated and split by file."""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

HELD_OUT_DIRS = frozenset({"site-packages", "dist-packages"})


@dataclass(frozen=True)
class Document:
    """One source file: its path relative to the corpus root (with `/`) and its text."""

    path: str
    text: str


@dataclass(frozen=True)
class Corpus:
    train: list[Document]
    validation: list[Document]


def default_root() -> Path:
    """The running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root: Path) -> list[Path]:
    """Every *.py file under `root`, sorted, skipping third-party package folders."""
    return sorted(
        p
        for p in root.rglob("*.py")
        if p.is_file() and not HELD_OUT_DIRS.intersection(p.relative_to(root).parts)
    )


def read_text(path: Path) -> str | None:
    """The file's text as UTF-8 with its line ends kept, or None when it is not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def unique_documents(root: Path) -> list[Document]:
    """Non-empty documents under `root`; of files with identical content only the first is kept."""
    seen: set[str] = set()
    documents = []
    for path in source_files(root):
        text = read_text(path)
        if not text or not text.strip():
            continue
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        documents.append(Document(path.relative_to(root).as_posix(), text))
    return documents


def is_validation(path: str, fraction: float) -> bool:
    """A stable choice by hash of the path, so the split never changes between runs."""
    bucket = int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8], "big")
    return bucket / 2**64 < fraction


def load_corpus(root: Path, validation_fraction: float = 0.02) -> Corpus:
    """The deduplicated documents under `root`, split into train and validation by file."""
    documents = unique_documents(root)
    validation = [d for d in documents if is_validation(d.path, validation_fraction)]
    train = [d for d in documents if not is_validation(d.path, validation_fraction)]
    return Corpus(train, validation)
