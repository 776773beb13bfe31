"""Habits of instruction-tuned models that have no place in a completion, as named cuts.

A chat model that continues code tends to close its answer the way it closes a chat reply: a
markdown fence, a `# Example usage:` or `# Test the function` block, a line of prose. Each
habit is one pattern; `cut_chat_habits` cuts the text before the first line showing any.
"""

from __future__ import annotations

import re

HABITS: dict[str, re.Pattern[str]] = {
    "markdown_fence": re.compile(r"^\s*```"),
    "usage_comment": re.compile(
        r"^\s*(#|//|--)\s*(example( usage)?|usage|test(ing)?( the| this)?( function| code| it)?"
        r"|output|expected output|sample (usage|output))\s*:?\s*$",
        re.IGNORECASE,
    ),
    "prose": re.compile(
        r"^(Here('s| is| are)|This (function|code|will|implementation)|Explanation|Note|In this"
        r"|The (function|code|above))\b[^=(){}\[\];]*$"
    ),
}


def habit_of(line: str) -> str | None:
    """The name of the habit a line shows, or None."""
    return next((name for name, pattern in HABITS.items() if pattern.match(line)), None)


def cut_chat_habits(text: str) -> str:
    """The text before its first line that shows a chat habit (all of it when none does)."""
    offset = 0
    for line in text.split("\n"):
        if habit_of(line) is not None:
            return text[:offset].rstrip(" \t")
        offset += len(line) + 1
    return text
