"""Pure scores of a predicted middle against its reference, all in 0–100."""

from __future__ import annotations

from collections.abc import Iterable


def levenshtein(a: str, b: str) -> int:
    """The fewest single-character inserts, deletes and substitutions that turn `a` into `b`."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            substitute = previous[j - 1] + (char_a != char_b)
            current.append(min(previous[j] + 1, current[j - 1] + 1, substitute))
        previous = current
    return previous[-1]


def edit_similarity(a: str, b: str) -> float:
    """100 for equal strings, 0 when no character can be kept."""
    return 100.0 * (1.0 - levenshtein(a, b) / max(len(a), len(b), 1))


def exact_match(prediction: str, reference: str) -> float:
    """100 when both are equal after stripping surrounding blank space, else 0."""
    return 100.0 if prediction.strip() == reference.strip() else 0.0


def first_line(text: str) -> str:
    return text.split("\n", 1)[0]


def scored_part(completion: str, reference: str) -> str:
    """What is compared with a one-line reference is the first line; else the whole completion."""
    return completion if "\n" in reference else first_line(completion)


def mean(values: Iterable[float]) -> float:
    """The arithmetic mean; 0 for no values."""
    items = list(values)
    return sum(items) / len(items) if items else 0.0
