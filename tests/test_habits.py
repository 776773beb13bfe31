"""Chat habits of instruction-tuned models: each named pattern, and the cut."""

from __future__ import annotations

import pytest

from model_runtime.habits import cut_chat_habits, habit_of


@pytest.mark.parametrize(
    ("line", "habit"),
    [
        ("```", "markdown_fence"),
        ("```python", "markdown_fence"),
        ("    ```", "markdown_fence"),
        ("# Example usage:", "usage_comment"),
        ("# Example", "usage_comment"),
        ("# Test the function", "usage_comment"),
        ("    # test", "usage_comment"),
        ("// Example usage", "usage_comment"),
        ("# Output:", "usage_comment"),
        ("Here is the completed function:", "prose"),
        ("Here's how it works", "prose"),
        ("This function returns the sum of a and b.", "prose"),
        ("Explanation:", "prose"),
        # code and ordinary comments are no habit
        ("# Test whether the list is empty first", None),
        ("# example of a doubled loop", None),
        ("    return a + b", None),
        ("result = []", None),
        ("This = Here(is)", None),  # an assignment, not prose
        ("Note = namedtuple('Note', 'pitch')", None),
        ('"""Here is the docstring."""', None),
        ("", None),
    ],
)
def test_habit_of(line: str, habit: str | None) -> None:
    assert habit_of(line) == habit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("return a + b\n\n# Example usage:\nprint(add(1, 2))", "return a + b\n\n"),
        ("return a + b\n```\nThis function adds.", "return a + b\n"),
        ("x = 1  ", "x = 1  "),  # nothing to cut
        ("# Test the function\nprint(f())", ""),  # all of it: the candidate is then rejected
        ("total += x\n    ```", "total += x\n"),
    ],
)
def test_cut_chat_habits(text: str, expected: str) -> None:
    assert cut_chat_habits(text) == expected
