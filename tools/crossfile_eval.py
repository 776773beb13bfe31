"""Which sources of context from other files help, on packages they were not chosen on.

    python tools/crossfile_eval.py collect OUT   # `wisp eval` per package, kind of hole, sources
    python tools/crossfile_eval.py report OUT    # exact match per package and sources, won/lost

Holes are cut in installed packages (`wisp eval --dataset repo`): cross-file holes need a name
another file defines, single-file holes use none. Each runs with nothing else open, and with
every other file of the package open (as tabs in an editor) and the block built from each set of
sources. The sources are chosen on the TUNING packages and reported on the HELD_OUT ones.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

SITE = Path(next(p for p in sys.path if p.endswith("site-packages")))
TUNING = ("cattrs", "pygls")
HELD_OUT = ("click", "jinja2", "requests")
# name -> the sources of the block (None: nothing else open)
CONFIGS: dict[str, str | None] = {
    "none": None,
    "all": "definitions,edits,similar",
    "definitions": "definitions",
    "similar": "similar",
}
HOLES = {"cross-file": 40, "single-file": 40}


def runs() -> list[tuple[str, str, str]]:
    """(package, kind of hole, config) for every run."""
    return [
        (package, kind, config)
        for package in (*HELD_OUT, *TUNING)
        for kind in HOLES
        for config in CONFIGS
        if kind == "cross-file" or config in ("none", "all")
    ]


def collect(out: Path) -> None:
    """Each run's samples and summary; a run already collected is kept."""
    out.mkdir(parents=True, exist_ok=True)
    for package, kind, config in runs():
        name = f"{package}.{kind}.{config}"
        if (out / f"{name}.json").exists():
            continue
        sources = CONFIGS[config]
        command = ["wisp", "eval", "--dataset", "repo", "--path", str(SITE / package)]
        command += ["--holes", kind, "--limit", str(HOLES[kind]), "--timeout", "2"]
        command += ["--open", "none" if sources is None else "tree"]
        if sources is not None:
            command += ["--cross-file-sources", sources]
        command += ["--samples", str(out / f"{name}.jsonl"), "--json", str(out / f"{name}.part")]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        (out / f"{name}.part").rename(out / f"{name}.json")


def exact(out: Path, name: str) -> dict[str, float]:
    lines = (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return {s["task_id"]: s["scores"]["exact_match"] for s in map(json.loads, lines)}


def report(out: Path) -> str:
    """Exact match per package and config, and holes won/lost against nothing open."""
    rows = ["| package | holes | nothing open | " + " | ".join(list(CONFIGS)[1:]) + " |"]
    rows.append("|---" * (len(CONFIGS) + 2) + "|")
    for package, kind, config in runs():
        if config != "none" or not (out / f"{package}.{kind}.none.jsonl").exists():
            continue
        tag = " (held out)" if package in HELD_OUT else ""
        base = exact(out, f"{package}.{kind}.none")
        cells = [f"{sum(base.values()) / len(base):.1f}"]
        for other in list(CONFIGS)[1:]:
            name = f"{package}.{kind}.{other}"
            if not (out / f"{name}.jsonl").exists():
                cells.append("")
                continue
            scores = exact(out, name)
            won = sum(scores[t] > base[t] for t in base)
            lost = sum(scores[t] < base[t] for t in base)
            cells.append(f"{sum(scores.values()) / len(scores):.1f} (+{won}/-{lost})")
        rows.append(f"| {package}{tag} | {kind} ({len(base)}) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("verb", choices=("collect", "report"))
    parser.add_argument("out", type=Path, help="folder of the runs")
    args = parser.parse_args(argv)
    if args.verb == "collect":
        collect(args.out)
    else:
        print(report(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
