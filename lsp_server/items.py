"""Suggestions -> LSP items, for inline completion and the classic completion menu."""

from __future__ import annotations

from lsprotocol import types

from model_runtime.postprocess import Suggestion

ACCEPT_COMMAND = "wisp.didAccept"


def accept_command(item_id: str) -> types.Command:
    """The command a client runs after inserting an item, so that wisp counts the acceptance."""
    return types.Command(title="Accept", command=ACCEPT_COMMAND, arguments=[item_id])


def replace_range(cursor: types.Position, replaced_units: int) -> types.Range:
    """The same-line range from the cursor over `replaced_units` code units."""
    end = types.Position(line=cursor.line, character=cursor.character + replaced_units)
    return types.Range(start=cursor, end=end)


def inline_items(
    suggestions: list[Suggestion],
    cursor: types.Position,
    replaced_units: list[int],
    ids: list[str],
) -> types.InlineCompletionList:
    """Ghost-text items; a range only where a suggestion replaces text right of the cursor."""
    return types.InlineCompletionList(
        items=[
            types.InlineCompletionItem(
                insert_text=s.text,
                range=replace_range(cursor, units) if units else None,
                command=accept_command(item_id),
            )
            for s, units, item_id in zip(suggestions, replaced_units, ids, strict=True)
        ]
    )


def label_for(text: str) -> str:
    """The first line that has content, trimmed, as a completion menu label."""
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


def completion_items(
    suggestions: list[Suggestion],
    cursor: types.Position,
    replaced_units: list[int],
    language: str,
    ids: list[str],
) -> types.CompletionList:
    """Menu items for clients without inline completion; incomplete so typing asks again."""
    items = [
        types.CompletionItem(
            label=label_for(s.text),
            kind=types.CompletionItemKind.Text,
            detail="wisp",
            sort_text=f"{rank:04d}",
            filter_text=s.text,
            preselect=rank == 0,
            insert_text_format=types.InsertTextFormat.PlainText,
            text_edit=types.TextEdit(range=replace_range(cursor, units), new_text=s.text),
            documentation=types.MarkupContent(
                kind=types.MarkupKind.Markdown, value=f"```{language}\n{s.text}\n```"
            ),
            command=accept_command(item_id),
        )
        for rank, (s, units, item_id) in enumerate(
            zip(suggestions, replaced_units, ids, strict=True)
        )
    ]
    return types.CompletionList(is_incomplete=True, items=items)
