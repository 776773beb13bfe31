"""One fill-in-the-middle task: a document with a hole and what belongs in it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from model_runtime.context import MultilineMode


@dataclass(frozen=True)
class FimTask:
    """The text before and after the hole, its reference middle, and the mode it is built for.

    `prefix + reference + suffix` is the original document; the cursor sits at `len(prefix)`.
    """

    task_id: str
    prefix: str
    suffix: str
    reference: str
    path: str = ""
    language: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)
    multiline: MultilineMode = "never"

    def completed(self, text: str, replace: int = 0) -> str:
        """The document with `text` typed at the cursor over `replace` characters after it."""
        return self.prefix + text + self.suffix[replace:]
