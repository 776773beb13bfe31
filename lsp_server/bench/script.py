"""A simulated developer: where they type, what, how fast. Pure; the replay drives the server."""

from __future__ import annotations

import random
from dataclasses import dataclass

# Lines shorter than this (without indentation) are not worth a hole; longer ones are typed
# up to MAX_TYPED characters, then the developer moves on.
MIN_LINE = 12
MAX_TYPED = 40


@dataclass(frozen=True)
class Hole:
    """A line whose content (after its indentation) the developer types from scratch."""

    line: int
    indent: str
    content: str


@dataclass(frozen=True)
class Session:
    """One document: its text with the holes emptied, and the holes in the order typed."""

    name: str
    text: str
    holes: tuple[Hole, ...]


@dataclass(frozen=True)
class Keystroke:
    """A pause before typing `char` (or deleting one, for "\b")."""

    char: str
    pause_s: float


def pick_holes(text: str, count: int, rng: random.Random) -> list[Hole]:
    """`count` lines with real content, at least ten lines apart, in random order."""
    lines = text.split("\n")
    eligible = [i for i, line in enumerate(lines) if len(line.strip()) >= MIN_LINE]
    rng.shuffle(eligible)
    chosen: list[int] = []
    for i in eligible:
        if all(abs(i - j) >= 10 for j in chosen):
            chosen.append(i)
        if len(chosen) == count:
            break
    holes = []
    for i in chosen:
        line = lines[i]
        content = line.lstrip()
        holes.append(Hole(i, line[: len(line) - len(content)], content[:MAX_TYPED]))
    return holes


def with_holes_emptied(text: str, holes: list[Hole]) -> str:
    """`text` where each hole's line keeps only its indentation."""
    lines = text.split("\n")
    for hole in holes:
        lines[hole.line] = hole.indent
    return "\n".join(lines)


def sessions(
    text: str, name: str, documents: int, holes_per_document: int, seed: int
) -> list[Session]:
    """Documents made from one source file, each with its own holes and its own file name."""
    rng = random.Random(seed)
    out = []
    for index in range(documents):
        holes = pick_holes(text, holes_per_document, rng)
        out.append(Session(f"bench{index}_{name}", with_holes_emptied(text, holes), tuple(holes)))
    return out


def keystrokes(content: str, rng: random.Random, pause_scale: float = 1.0) -> list[Keystroke]:
    """Typing `content`: 40–250 ms between keys, longer after punctuation, and a typo now and
    then that is fixed with a backspace."""
    out: list[Keystroke] = []
    for char in content:
        pause = rng.uniform(0.04, 0.25) * (2.0 if char in "(),:=" else 1.0)
        if char.isalpha() and rng.random() < 0.04:
            typo = rng.choice("qwertyuiopasdfghjklzxcvbnm")
            out.append(Keystroke(typo, pause * pause_scale))
            out.append(Keystroke("\b", rng.uniform(0.1, 0.3) * pause_scale))
        out.append(Keystroke(char, pause * pause_scale))
    return out


def follow_ghost_text(shown: str, limit: int = 3) -> str:
    """The characters a developer types along the ghost text before going their own way."""
    first_line = shown.split("\n", 1)[0]
    return first_line[: min(limit, len(first_line))]
