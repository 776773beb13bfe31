"""Where names are defined in other documents: signatures of functions, classes and constants.

Python is read with tree-sitter (the grammar the syntax check uses); other languages, or a
grammar that cannot load, fall back to one line per `def`/`class`/`function`/`fn`/... keyword.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from model_runtime.crossfile.documents import Deadline, OpenDocument, Snippet
from model_runtime.syntax import parse, parser_for

if TYPE_CHECKING:
    from tree_sitter import Node

CLASS_LINES = 12  # a class shows its header and this many lines of fields and method headers
_LINE_CHARS = 160
_KEYWORD_DEF = re.compile(
    r"^[ \t]*(?:export\s+)?(?:pub\s+)?(?:async\s+)?"
    r"(?:def|class|function|func|fn|struct|interface|enum|trait|type)\s+([A-Za-z_]\w*)",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Definition:
    """A name, where it is defined, and the lines that tell how to use it."""

    name: str
    path: str
    text: str


def definitions(doc: OpenDocument) -> list[Definition]:
    """The definitions in `doc`: tree-sitter for Python, keyword lines otherwise."""
    parser = parser_for(doc.language) if doc.language == "python" else None
    if parser is None:
        return [
            Definition(m.group(1), doc.path, _line_at(doc.text, m.start()))
            for m in _KEYWORD_DEF.finditer(doc.text)
        ]
    source = doc.text.encode("utf-8")
    tree = parse(parser, source)
    return list(_python_definitions(tree.root_node, source, doc.path))


def _line_at(text: str, start: int) -> str:
    end = text.find("\n", start)
    return text[start : end if end >= 0 else len(text)].strip()[:_LINE_CHARS]


def _text(node: Node, source: bytes) -> str:
    return source[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _unwrap(node: Node) -> Node:
    """The definition inside a decorated one, the assignment inside a statement."""
    if node.type == "decorated_definition":
        inner = node.child_by_field_name("definition")
        return inner if inner is not None else node
    if node.type == "expression_statement" and node.named_child_count == 1:
        child = node.named_children[0]
        return child if child.type == "assignment" else node
    return node


def _header(node: Node, source: bytes) -> str:
    """A function's or class's lines up to its body: `def f(a,\\n      b) -> int:`."""
    body = node.child_by_field_name("body")
    end = body.start_byte if body is not None else node.end_byte
    return source[node.start_byte : end].decode("utf-8", "replace").rstrip()


def _docstring_line(node: Node, source: bytes) -> str:
    """The first line of a function's or class's docstring, or ""."""
    body = node.child_by_field_name("body")
    if body is None or not body.named_children:
        return ""
    first = body.named_children[0]
    if first.type == "expression_statement" and first.named_children:
        first = first.named_children[0]
    if first.type != "string":
        return ""
    return _text(first, source).strip().split("\n")[0][:_LINE_CHARS]


def _assigned_name(node: Node, source: bytes) -> str:
    left = node.child_by_field_name("left")
    return _text(left, source) if left is not None and left.type == "identifier" else ""


def _function(node: Node, source: bytes, indent: str = "") -> str:
    lines = [_header(node, source)]
    if doc := _docstring_line(node, source):
        lines.append(doc)
    return ("\n" + indent + "    ").join(lines)


def _class(node: Node, source: bytes) -> str:
    lines = [_header(node, source)]
    if doc := _docstring_line(node, source):
        lines.append("    " + doc)
    body = node.child_by_field_name("body")
    for child in body.named_children if body is not None else ():
        inner = _unwrap(child)
        if inner.type == "function_definition":
            lines.append("    " + _header(inner, source).split("\n")[0])
        elif inner.type == "assignment":
            lines.append("    " + _text(inner, source).split("\n")[0][:_LINE_CHARS])
        if len(lines) > CLASS_LINES:
            break
    return "\n".join(lines)


def _python_definitions(root: Node, source: bytes, path: str) -> Iterator[Definition]:
    """Module-level functions, classes (and their methods) and assignments."""
    for child in root.named_children:
        node = _unwrap(child)
        name_node = node.child_by_field_name("name")
        if node.type == "function_definition" and name_node is not None:
            yield Definition(_text(name_node, source), path, _function(node, source))
        elif node.type == "class_definition" and name_node is not None:
            yield Definition(_text(name_node, source), path, _class(node, source))
            yield from _methods(node, source, path)
        elif node.type == "assignment" and (name := _assigned_name(node, source)):
            yield Definition(name, path, _text(node, source).split("\n")[0][:_LINE_CHARS])


def _methods(cls: Node, source: bytes, path: str) -> Iterator[Definition]:
    """Each method of a class, shown under its class's first line."""
    body = cls.child_by_field_name("body")
    head = _header(cls, source).split("\n")[0]
    for child in body.named_children if body is not None else ():
        node = _unwrap(child)
        name_node = node.child_by_field_name("name")
        if node.type == "function_definition" and name_node is not None:
            method = _function(node, source, "    ")
            yield Definition(_text(name_node, source), path, f"{head}\n    {method}")


class DefinitionIndex:
    """Definitions per document text, for the last `size` texts seen."""

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._found: OrderedDict[tuple[str, int], list[Definition]] = OrderedDict()

    def of(self, doc: OpenDocument) -> list[Definition]:
        key = (doc.path, hash(doc.text))
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = definitions(doc)
            if len(self._found) > self.size:
                self._found.popitem(last=False)
        self._found.move_to_end(key)
        return found


def definition_snippets(
    names: Sequence[str],
    others: Sequence[OpenDocument],
    deadline: Deadline,
    index: DefinitionIndex,
    per_name: int = 2,
) -> list[Snippet]:
    """Definitions in `others` of `names` (most wanted first), up to `per_name` for each.

    Documents not read before the deadline are not searched.
    """
    wanted = {name: rank for rank, name in enumerate(names)}
    found: dict[str, list[Definition]] = {}
    for doc in others:
        if deadline.expired():
            break
        for definition in index.of(doc):
            if definition.name in wanted:
                found.setdefault(definition.name, []).append(definition)
    snippets = []
    for name in sorted(found, key=wanted.__getitem__):
        for definition in found[name][:per_name]:
            score = 1.0 - wanted[name] / max(len(names), 1)
            snippets.append(Snippet(definition.path, definition.text, "definition", score))
    return snippets
