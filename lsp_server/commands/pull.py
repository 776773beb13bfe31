"""`wisp pull NAME`: download a known-good completion model into the Hugging Face cache;
`wisp pull --list`: the models it knows."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", nargs="?", help="a name from `wisp pull --list`, or org/repo:FILE.gguf"
    )
    parser.add_argument("--list", action="store_true", help="list the models `wisp pull` knows")


def run(args: argparse.Namespace) -> int:
    from model_runtime.models.catalog import CATALOG
    from model_runtime.models.pull import PullError, pull

    if args.list:
        for entry in CATALOG:
            size = f"{entry.about_bytes / 1e9:.1f} GB"
            print(f"{entry.name:<26} {size:>7}  {entry.repo}:{entry.file}  {entry.note}")
        return 0
    if not args.name:
        print("wisp: name a model to pull (`wisp pull --list` lists them)", file=sys.stderr)
        return 2
    try:
        with _Bar(args.name) as bar:
            path = pull(args.name, bar.show)
    except PullError as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"wisp: stopped; `wisp pull {args.name}` resumes it", file=sys.stderr)
        return 130
    print(path)
    return 0


class _Bar:
    """A tqdm bar on stderr, opened when the first bytes are reported."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bar: tqdm | None = None

    def show(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(
                total=total,
                initial=done,
                unit="B",
                unit_scale=True,
                desc=self.name,
                file=sys.stderr,
            )
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()
