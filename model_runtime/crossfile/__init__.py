"""Context beyond the current file: snippets of other open documents, recent edits, definitions.

Each source is a pure function of the documents and the cursor's surroundings with a deadline;
`assemble.CrossFileContext` spends one token budget on their snippets, renders them for the
template and keeps the block unchanged while the user types, so the prompt's start stays put.
"""

from model_runtime.crossfile.assemble import ContextBlock, CrossFileContext, CrossFileOptions
from model_runtime.crossfile.documents import EditedRange, OpenDocument, RecentEdits

__all__ = [
    "ContextBlock",
    "CrossFileContext",
    "CrossFileOptions",
    "EditedRange",
    "OpenDocument",
    "RecentEdits",
]
