"""`wisp pull NAME`: download a known-good model into the Hugging Face cache, resumably, and
check it against the hub's size and sha256 before anything loads it.

huggingface_hub 2.x downloads into a temporary file of its own that it deletes when a download
fails, so a pull stopped halfway (Ctrl-C, a closed laptop) would start again from zero. Here the
file is fetched with huggingface_hub's `http_get` into `blobs/<sha256>.incomplete`, which outlives
the process and is continued with a `Range` request; once checked, it becomes the blob and
`hf_hub_download` links it into the snapshot as if it had downloaded it itself. The download is
plain HTTP: huggingface_hub's Xet transfer writes to the same throw-away file, so it is not used.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tqdm import tqdm

try:  # huggingface_hub 2.x (transformers 5); 0.x, beside transformers 4, lacks these
    import httpx2
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )
    from huggingface_hub.file_download import HfFileMetadata, http_get
    from huggingface_hub.utils import WeakFileLock, build_hf_headers
except ImportError as exc:
    _UNAVAILABLE: str | None = f"`wisp pull` needs huggingface_hub 2.4 or newer ({exc})"
else:
    _UNAVAILABLE = None

from model_runtime.models import catalog, names, stores

DEFAULT_ENDPOINT = "https://huggingface.co"
LIBRARY = "wisp"
# In a repository's cache folder, one file per checked blob, holding the blob's size and
# modification time when it was checked: an unchanged blob is not hashed again.
VERIFIED = ".wisp_verified"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Progress = Callable[[int, int], None]


class PullError(Exception):
    """Why a pull failed, said for the user: what went wrong, and where."""


def pull(name: str, progress: Progress | None = None) -> Path:
    """Download `name` (a catalog name or `org/repo:FILE.gguf`) into the Hugging Face cache and
    return its path there. `progress(done_bytes, total_bytes)` is called as bytes arrive; an
    exception it raises stops the download, keeping what arrived for the next pull to continue.
    A file pulled and checked before is returned without asking the hub."""
    repo, file = target(name)
    if _UNAVAILABLE is not None:
        raise PullError(_UNAVAILABLE)
    cached = stores.hf_lookup(repo, file)
    if cached is not None and _is_verified(cached.resolve()):
        return cached
    endpoint = hub_endpoint()
    with _hub_errors(repo, file, endpoint):
        url = hf_hub_url(repo, file, endpoint=endpoint)
        meta = get_hf_file_metadata(url, endpoint=endpoint, library_name=LIBRARY)
        sha256, size, commit = _expected(meta, f"{file} of {repo}", endpoint)
        _fetch_blob(repo, file, sha256, size, meta.location, progress or _ignore)
        path = hf_hub_download(
            repo,
            file,
            revision=commit,
            cache_dir=stores.hf_hub_cache(),
            endpoint=endpoint,
            library_name=LIBRARY,
        )
    ref = stores.hf_repo_folder(repo) / "refs" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit, encoding="utf-8")
    return Path(path)


def target(name: str) -> tuple[str, str]:
    """The hub repository and file that `name` stands for."""
    if (entry := catalog.find(name)) is not None:
        return entry.repo, entry.file
    if (hub_file := names.parse_hub_file(name)) is not None:
        return hub_file
    known = ", ".join(entry.name for entry in catalog.CATALOG)
    raise PullError(
        f"no model called {name!r} to pull: the known ones are {known}; "
        "or name a file on the hub as org/repo:FILE.gguf"
    )


def hub_endpoint() -> str:
    """The hub to use: `$HF_ENDPOINT` (a mirror, or a test's stub), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _ignore(done: int, total: int) -> None:
    pass


def _expected(meta: HfFileMetadata, label: str, endpoint: str) -> tuple[str, int, str]:
    """The sha256, size and commit the hub gives for the file."""
    if meta.commit_hash is None:
        raise PullError(
            f"{endpoint} does not answer as the hub does (no commit for {label}): check HF_ENDPOINT"
        )
    if meta.etag is None or not _SHA256.match(meta.etag) or meta.size is None:
        raise PullError(
            f"{endpoint} gives no sha256 and size for {label} (not an LFS file): "
            "it cannot be checked, so it is not pulled"
        )
    return meta.etag, meta.size, meta.commit_hash


def _fetch_blob(repo: str, file: str, sha256: str, size: int, url: str, progress: Progress) -> None:
    """Put the checked file at `blobs/<sha256>`, downloading what is missing."""
    folder = stores.hf_repo_folder(repo)
    blob = folder / "blobs" / sha256
    lock = stores.hf_hub_cache() / ".locks" / folder.name / f"{sha256}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):  # the lock hf_hub_download takes for this blob
        if blob.is_file():
            if not _is_verified(blob):
                _check(blob, sha256, size, f"{file} of {repo}")
        else:
            partial = blob.with_name(blob.name + ".incomplete")
            _download(url, partial, size, progress)
            _check(partial, sha256, size, f"{file} of {repo}")
            partial.replace(blob)
        stamp = _verified_stamp(blob)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(_stat_text(blob), encoding="utf-8")


def _download(url: str, partial: Path, size: int, progress: Progress) -> None:
    """Download `url` into `partial`, continuing after the bytes it already holds."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.touch()
    with partial.open("r+b") as out:
        done = out.seek(0, os.SEEK_END)
        if done > size:  # not a beginning of this file
            out.truncate(0)
            out.seek(0)
            done = 0
        progress(done, size)
        http_get(
            url,
            out,
            resume_size=done,
            headers=_headers(url),
            expected_size=size,
            displayed_filename=partial.name,
            tqdm_class=_reporting_bar(progress, done, size),
        )


def _headers(url: str) -> dict[str, str]:
    """huggingface_hub's headers; the token goes only to the hub, never to its CDN."""
    headers = build_hf_headers(library_name=LIBRARY)
    if urlsplit(url).netloc != urlsplit(hub_endpoint()).netloc:
        headers.pop("authorization", None)
    return headers


def _reporting_bar(progress: Progress, done: int, size: int) -> type[tqdm]:
    """A silent progress bar class for `http_get` that hands the bytes so far to `progress`."""

    class Reporting(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "disable": True})

        def update(self, n: float | None = 1) -> None:
            nonlocal done
            done += int(n or 0)  # negative when a server ignored `Range` and it starts over
            progress(done, size)

    return Reporting


def _check(path: Path, sha256: str, size: int, label: str) -> None:
    """Raise PullError, removing `path` and the snapshot links to it, unless it is the file."""
    actual_size = path.stat().st_size
    if actual_size != size:
        _remove(path)
        raise PullError(
            f"{label} was refused: its size is {actual_size} bytes, the hub says {size}; "
            "removed, run again"
        )
    with path.open("rb") as data:
        actual = hashlib.file_digest(data, "sha256").hexdigest()
    if actual != sha256:
        _remove(path)
        raise PullError(
            f"{label} was refused: its sha256 is {actual}, the hub says {sha256}; "
            "removed, run again"
        )


def _remove(blob: Path) -> None:
    """Delete a blob and the snapshot links that point to it."""
    for link in blob.parent.parent.glob("snapshots/*/**/*"):
        if link.is_symlink() and link.resolve() == blob.resolve():
            link.unlink()
    blob.unlink(missing_ok=True)
    _verified_stamp(blob).unlink(missing_ok=True)


def _verified_stamp(blob: Path) -> Path:
    return blob.parent.parent / VERIFIED / blob.name


def _stat_text(blob: Path) -> str:
    stat = blob.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def _is_verified(blob: Path) -> bool:
    """Whether `blob` was checked, and has not changed since."""
    try:
        return _verified_stamp(blob).read_text(encoding="utf-8") == _stat_text(blob)
    except OSError:
        return False


@contextmanager
def _hub_errors(repo: str, file: str, endpoint: str) -> Iterator[None]:
    """Turn huggingface_hub's and the network's errors into a PullError saying where."""
    label = f"{file} of {repo}"
    try:
        yield
    except OfflineModeIsEnabled as exc:
        raise PullError(f"cannot pull {label}: HF_HUB_OFFLINE is set") from exc
    except RepositoryNotFoundError as exc:
        raise PullError(f"{endpoint} has no repository {repo} (or it is private or gated)") from exc
    except RemoteEntryNotFoundError as exc:
        raise PullError(f"{endpoint} has no file {label}") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code
        raise PullError(
            f"{endpoint} answered {status} for {label}: {exc.server_message or exc}"
        ) from exc
    except httpx2.TransportError as exc:
        raise PullError(
            f"cannot reach the hub at {endpoint} for {label} ({exc}); "
            "what was downloaded is kept: run again to resume"
        ) from exc
    except OSError as exc:
        raise PullError(f"could not download {label} from {endpoint}: {exc}") from exc
