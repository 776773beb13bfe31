"""Fit the gate (model_runtime/gate.json) on the public sets' outcomes, and report on the rest.

    python tools/fit_gate.py collect OUT  # `wisp eval` over every set below, gate off: OUT/*.jsonl
    python tools/fit_gate.py fit OUT      # fit; write gate.json and docs/gate-reliability.png

A suggestion counts as accepted when its first line is exact or its edit similarity is ≥ 90.
Tasks are split by problem (HumanEval's number; otherwise the task or file): the `fit` half of
each fitting set is fitted on, everything else is reported on. The held-out packages are never
fitted on. Needs the shared data at ../shared/data and the packages installed in the venv.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SITE = Path(next(p for p in sys.path if p.endswith("site-packages")))
OLD_GATE = 0.3  # minConfidence before this gate: exp(score) ≥ 0.3
L2 = 1.0  # ridge on the weights (features are standardised first)
KEEP = 0.95  # the share of the old gate's right answers the threshold keeps on every fit half


@dataclass(frozen=True)
class Set:
    name: str
    args: tuple[str, ...]
    fitted: bool  # its fit half is fitted on; False: reported on only (held out)
    every: int = 1  # every n-th task of the file (its tasks come grouped by problem)


def humaneval(name: str, file: str, fitted: bool, every: int = 1) -> Set:
    """A HumanEval-infilling set; with `every` > 1, every `every`-th task (`collect` writes
    that selection next to the samples)."""
    path = DATA / "human-eval-infilling" / file
    return Set(name, ("--dataset", "humaneval-infilling", "--path", str(path)), fitted, every)


def santacoder(language: str, limit: int) -> Set:
    path = DATA / "santacoder-fim" / "santacoder-fim-task.jsonl.gz"
    args = ("--dataset", "santacoder-fim", "--path", str(path), "--language", language)
    return Set(f"santacoder-{language}", (*args, "--limit", str(limit)), True)


def package(name: str, limit: int, fitted: bool) -> Set:
    return Set(
        name, ("--dataset", "repo", "--path", str(SITE / name), "--limit", str(limit)), fitted
    )


SETS = (
    humaneval("humaneval-single", "HumanEval-SingleLineInfilling.jsonl.gz", True),
    humaneval("humaneval-multi", "HumanEval-MultiLineInfilling.jsonl.gz", True, every=8),
    santacoder("py", 400),
    santacoder("java", 250),
    santacoder("js", 250),
    package("pygls", 250, True),
    package("cattrs", 250, True),
    humaneval("humaneval-span", "HumanEval-RandomSpanInfillingLight.jsonl.gz", False),
    package("click", 150, False),
    package("jinja2", 150, False),
    package("requests", 150, False),
)


def collect(out: Path, model: str | None) -> None:
    """`wisp eval` over each set with the gate off; a set already collected is kept."""
    out.mkdir(parents=True, exist_ok=True)
    for each in SETS:
        samples = out / f"{each.name}.jsonl"
        if samples.exists():
            continue
        partial = samples.with_suffix(".partial")
        args = each.args
        if each.every > 1:
            args = (*args[:-1], str(pick_every(Path(args[-1]), each.every, out)))
        # the label needs no tests run: a short timeout keeps looping programs from costing time
        gate_off = ("--min-confidence", "0", "--timeout", "2")
        command = ["wisp", "eval", *args, *gate_off, "--samples", str(partial)]
        if model:
            command += ["--model", model]
        subprocess.run(command, check=True)
        partial.rename(samples)


def pick_every(path: Path, every: int, out: Path) -> Path:
    """Every `every`-th line of a .jsonl.gz file, written into `out`."""
    picked = out / f"every-{every}-{path.name}"
    with gzip.open(path, "rt", encoding="utf-8") as source:
        lines = [line for i, line in enumerate(source) if i % every == 0]
    with gzip.open(picked, "wt", encoding="utf-8") as target:
        target.writelines(lines)
    return picked


def accepted(sample: dict) -> bool:
    """Kept by a user: the first line exact (a block's too), or edit similarity ≥ 90."""
    first = sample["completion"].strip().split("\n", 1)[0].strip()
    if first and first == sample["reference"].strip().split("\n", 1)[0].strip():
        return True
    return sample["scores"]["edit_similarity"] >= 90.0


def problem(task_id: str) -> str:
    """What tasks of one problem share: HumanEval's number, else the file, else the task."""
    if found := re.search(r"HumanEval[/_](\d+)", task_id):
        return f"humaneval-{found.group(1)}"
    return task_id.rsplit(":", 2)[0] if task_id.count(":") >= 2 else task_id


def in_fit_half(task_id: str) -> bool:
    return hashlib.sha256(problem(task_id).encode()).digest()[0] % 2 == 0


@dataclass
class Rows:
    """The answered tasks of one set: features, outcome, the old gate's verdict."""

    names: list[str]
    x: np.ndarray
    y: np.ndarray
    old: np.ndarray  # shown by the old gate
    score: np.ndarray  # the ranking's score (what the old gate read)
    fit: np.ndarray  # in the fit half
    tasks: int  # all tasks, answered or not


def read(path: Path, names: Sequence[str]) -> Rows:
    from model_runtime.gate import with_shape

    xs, ys, olds, scores, fits, tasks = [], [], [], [], [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        tasks += 1
        if sample["features"] is None or sample["confidence"] == 0.0:
            continue  # no answer, or a rejected one: never shown
        values = with_shape(sample["features"])  # samples from before `block` had it too
        xs.append([values.get(n, math.nan) for n in names])
        ys.append(accepted(sample))
        olds.append(math.exp(min(sample["score"], 0.0)) >= OLD_GATE)
        scores.append(sample["score"])
        fits.append(in_fit_half(sample["task_id"]))
    y, old, fit = (np.array(v, bool) for v in (ys, olds, fits))
    return Rows(list(names), np.array(xs, float), y, old, np.array(scores, float), fit, tasks)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float
) -> tuple[np.ndarray, float]:
    """Ridge-penalised, weighted logistic regression by Newton's method; x standardised,
    `weight` summing to the number of rows."""
    n, d = x.shape
    w, b = np.zeros(d), 0.0
    for _ in range(100):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        r = weight * (p - y)
        s = weight * p * (1 - p)
        grad = np.append(x.T @ r + l2 * w, r.sum()) / n
        xb = np.hstack([x, np.ones((n, 1))])
        hess = (xb * s[:, None]).T @ xb / n
        hess[:d, :d] += l2 * np.eye(d) / n
        step = np.linalg.solve(hess + 1e-9 * np.eye(d + 1), grad)
        w, b = w - step[:d], b - float(step[d])
        if np.abs(step).max() < 1e-9:
            break
    return w, b


def feature_names() -> list[str]:
    from model_runtime.gate import BLOCK_FEATURES, FLAGS, LANGUAGES

    numbers = ["mean_logprob", "min_logprob", "first_logprob", "log_tokens", "lines", "log_chars"]
    cursor = ["mid_line", "empty_line", "mid_word", "replaces", "block_start", "kept_share"]
    shape = ["block", *(f"block_{name}" for name in BLOCK_FEATURES)]
    return [*numbers, *cursor, *FLAGS, *LANGUAGES, *shape]


def fit(out: Path, docs: Path, gate_file: Path) -> dict:
    """Fit on the fit halves, choose the threshold there, report on the rest."""
    names = feature_names()
    sets = [each for each in SETS if (out / f"{each.name}.jsonl").exists()]
    data = {each.name: read(out / f"{each.name}.jsonl", names) for each in sets}
    fitting = [(data[e.name], data[e.name].fit) for e in sets if e.fitted]
    x = np.vstack([r.x[m] for r, m in fitting])
    y = np.concatenate([r.y[m] for r, m in fitting]).astype(float)
    # each set weighs the same, whatever its size
    weight = np.concatenate([np.full(m.sum(), 1.0 / m.sum()) for _, m in fitting])
    weight *= len(weight) / weight.sum()
    mean, std = x.mean(axis=0), x.std(axis=0)
    used = std > 0
    w_std, b_std = fit_logistic((x[:, used] - mean[used]) / std[used], y, weight, L2)
    weights = dict.fromkeys(names, 0.0)
    for name, value, m, s in zip(np.array(names)[used], w_std, mean[used], std[used], strict=True):
        weights[str(name)] = float(value / s)
        b_std -= value * m / s
    unscored = {n: float(np.median(x[:, names.index(n)])) for n in names[:4]}
    gate = {"bias": float(b_std), "weights": {k: round(v, 6) for k, v in weights.items() if v}}
    gate["unscored"] = {k: round(v, 4) for k, v in unscored.items()}

    def prob(rows: Rows) -> np.ndarray:
        z = gate["bias"] + rows.x @ np.array([weights[n] for n in names])
        return 1 / (1 + np.exp(-z))

    threshold = choose_threshold([(prob(r)[m], r.y[m], r.old[m]) for r, m in fitting])
    gate["min_confidence"] = threshold
    gate["fitted_on"] = {e.name: int(data[e.name].fit.sum()) for e in sets if e.fitted}
    gate["accepted"] = "first line exact, or edit similarity >= 90"
    gate_file.write_text(json.dumps(gate, indent=2) + "\n", encoding="utf-8")
    report = {}
    for each in sets:
        rows = data[each.name]
        held = ~rows.fit if each.fitted else np.ones(len(rows.y), bool)
        p, y = prob(rows)[held], rows.y[held]
        report[each.name] = outcome(p, y, rows.old[held], threshold)
        report[each.name]["held_out"] = not each.fitted
        report[each.name]["auc"] = round(auc(p, y), 3)
        report[each.name]["auc_score"] = round(auc(rows.score[held], y), 3)
    plot([(e, data[e.name]) for e in sets], prob, threshold, docs)
    return {"gate": gate, "report": report}


def auc(p: np.ndarray, y: np.ndarray) -> float:
    """The chance that a right answer is judged likelier than a wrong one."""
    right, wrong = p[y], p[~y]
    if not len(right) or not len(wrong):
        return math.nan
    order = np.argsort(np.concatenate([right, wrong]), kind="stable")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    return float(
        (ranks[: len(right)].sum() - len(right) * (len(right) + 1) / 2) / (len(right) * len(wrong))
    )


def counts(shown: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    return int((shown & y).sum()), int((shown & ~y).sum())


def outcome(p: np.ndarray, y: np.ndarray, old: np.ndarray, threshold: float) -> dict:
    """Right and wrong suggestions shown by the old gate and the new one."""
    right_old, wrong_old = counts(old, y)
    right_new, wrong_new = counts(p >= threshold, y)
    return {
        "answers": len(y),
        "right_old": right_old,
        "wrong_old": wrong_old,
        "right_new": right_new,
        "wrong_new": wrong_new,
        "right_kept": round(right_new / max(right_old, 1), 3),
        "wrong_cut": round(1 - wrong_new / max(wrong_old, 1), 3),
    }


def choose_threshold(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """The highest threshold (in steps of 0.01) that keeps `KEEP` of the old gate's right
    suggestions on every fitting set's fit half."""
    best = 0.0
    for step in range(1, 100):
        t = step / 100
        if all(outcome(p, y, old, t)["right_kept"] >= KEEP for p, y, old in parts):
            best = t
    return best


def reliability(p: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float], list[int]]:
    """Per tenth of predicted P(accept) with ≥ 5 answers: the mean prediction, the share
    accepted, and the count."""
    which = np.clip((p * 10).astype(int), 0, 9)
    mids, rates, sizes = [], [], []
    for tenth in range(10):
        inside = which == tenth
        if inside.sum() >= 5:
            mids.append(float(p[inside].mean()))
            rates.append(float(y[inside].mean()))
            sizes.append(int(inside.sum()))
    return mids, rates, sizes


def plot(sets: list[tuple[Set, Rows]], prob: Callable[[Rows], np.ndarray], threshold: float,
         docs: Path) -> None:  # fmt: skip
    """Reliability on the tasks not fitted on (predicted P(accept) against the share accepted),
    and the share of right and wrong answers each gate shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {
        "other half of the fitted sets": [(r, ~r.fit) for e, r in sets if e.fitted],
        "held-out sets": [(r, np.ones(len(r.y), bool)) for e, r in sets if not e.fitted],
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    left.plot([0, 1], [0, 1], color="0.7", linestyle="--", label="perfectly calibrated")
    for label, parts in groups.items():
        if not parts:
            continue
        p = np.concatenate([prob(r)[m] for r, m in parts])
        y = np.concatenate([r.y[m] for r, m in parts])
        mids, rates, sizes = reliability(p, y)
        left.plot(mids, rates, marker="o", label=f"{label} ({len(y)})")
        for mid, rate, size in zip(mids, rates, sizes, strict=True):
            left.annotate(str(size), (mid, rate), textcoords="offset points", xytext=(4, -10),
                          fontsize=7)  # fmt: skip
    left.set(xlabel="predicted P(accept)", ylabel="share accepted",
             title="Reliability (answers not fitted on)")  # fmt: skip
    left.legend(loc="upper left", fontsize=8)
    reported = [pair for parts in groups.values() for pair in parts]
    p = np.concatenate([prob(r)[m] for r, m in reported])
    y = np.concatenate([r.y[m] for r, m in reported])
    old = np.concatenate([r.old[m] for r, m in reported])
    ts = np.linspace(0, 0.95, 96)
    right.axvline(threshold, color="0.6", linestyle=":")
    for shown, label in ((y, "right"), (~y, "wrong")):
        curve = [((p >= t) & shown).sum() / max(shown.sum(), 1) for t in ts]
        line = right.plot(ts, curve, label=f"{label} answers shown (share)")[0]
        right.scatter([threshold], [(old & shown).sum() / max(shown.sum(), 1)], marker="x",
                      color=line.get_color(), zorder=3)  # fmt: skip
    right.scatter([], [], marker="x", color="k", label="the old gate, exp(score) ≥ 0.3")
    right.set(xlabel="minConfidence (P(accept))", ylabel="share",
              title=f"Shown at each gate (default {threshold:.2f})")  # fmt: skip
    right.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / "gate-reliability.png", dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("verb", choices=("collect", "fit"))
    parser.add_argument("out", type=Path, help="folder of the samples")
    parser.add_argument("--model", help="collect: the model to evaluate (default: bundled)")
    args = parser.parse_args(argv)
    if args.verb == "collect":
        collect(args.out, args.model)
        return 0
    result = fit(args.out, ROOT / "docs", ROOT / "model_runtime" / "gate.json")
    print(json.dumps(result["gate"], indent=2))
    print(f"{'set':18} {'answers':>7} {'right old/new':>14} {'wrong old/new':>14} kept  cut   AUC")
    for name, r in result["report"].items():
        mark = " (held out)" if r["held_out"] else ""
        print(
            f"{name:18} {r['answers']:7} {r['right_old']:6}/{r['right_new']:<7} "
            f"{r['wrong_old']:6}/{r['wrong_new']:<7} {r['right_kept']:.3f} {r['wrong_cut']:.3f} "
            f"{r['auc']:.3f} (score {r['auc_score']:.3f}){mark}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
