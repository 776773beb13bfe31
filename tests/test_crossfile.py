"""Context beyond the current file: each source, the budget, rendering, stability, the server."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from fake_backend import FakeBackend
from in_process import initialize, send, wired_server

from lsp_server.settings import Settings, parse_settings
from model_runtime.context import cursor_context
from model_runtime.crossfile import (
    CrossFileContext,
    CrossFileOptions,
    EditedRange,
    OpenDocument,
    RecentEdits,
)
from model_runtime.crossfile.assemble import names_near, within_budget
from model_runtime.crossfile.definitions import DefinitionIndex, definition_snippets, definitions
from model_runtime.crossfile.documents import Deadline, Snippet
from model_runtime.crossfile.edits import edit_snippets
from model_runtime.crossfile.render import render_block, render_snippet
from model_runtime.crossfile.similar import WindowIndex, identifiers, jaccard, similar_snippets
from model_runtime.engine import CompletionEngine, CompletionRequest, EngineOptions
from model_runtime.evaluation.holes import SourceFile, cut_holes, foreign_names
from model_runtime.templates import PromptParts, get_template


class Words:
    """A tokenizer whose tokens are whitespace-separated words."""

    def encode(self, text: str) -> list[str]:
        return text.split()

    def decode(self, ids: Any) -> str:
        return " ".join(ids)


def never() -> Deadline:
    return Deadline(1e9)


def already_over() -> Deadline:
    return Deadline(0.0)


SHAPES = OpenDocument(
    "geo/shapes.py",
    'import math\n\nUNIT = 1.0\n\n\n@dataclass\nclass Circle:\n    """A round shape."""\n\n'
    "    radius: float\n\n    def area(self) -> float:\n        return math.pi * self.radius**2\n\n"
    "    def scaled(self,\n               by: float) -> Circle:\n"
    "        return Circle(self.radius * by)\n\n\n"
    "def perimeter(shape: Circle,\n              exact: bool = True) -> float:\n"
    '    """Around it."""\n'
    "    return 2 * math.pi * shape.radius\n",
    "python",
)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("def area(self): return self.radius", {"area", "radius"}),
        ("x = y_1 + _z", {"y_1", "_z"}),  # one-letter names say nothing
        ("", set()),
    ],
)
def test_identifiers(text: str, expected: set[str]) -> None:
    assert identifiers(text) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ({"a", "b"}, {"b", "c"}, 1 / 3),
        ({"a"}, {"a"}, 1.0),
        (set(), set(), 0.0),
        ({"a"}, set(), 0.0),
    ],
)
def test_jaccard(a: set[str], b: set[str], expected: float) -> None:
    assert jaccard(frozenset(a), frozenset(b)) == pytest.approx(expected)


def test_similar_snippets_rank_shared_identifiers_first() -> None:
    other = OpenDocument("b.py", "\n" * 30 + "alpha_one = beta_two(gamma_three)\n")
    noise = OpenDocument("c.py", "unrelated_name = 1\n")
    query = identifiers("result = beta_two(gamma_three)")
    found = similar_snippets(query, [noise, other], never(), WindowIndex())
    assert [s.path for s in found] == ["b.py"]
    assert "beta_two(gamma_three)" in found[0].text and found[0].kind == "similar"
    assert similar_snippets(query, [other], already_over(), WindowIndex()) == []


def test_recent_edits_merge_bound_and_forget() -> None:
    edits = RecentEdits(size=3, merge_lines=2)
    for path, line in [("a", 10), ("a", 11), ("b", 1), ("c", 5), ("d", 0)]:
        edits.record(path, line)
    assert edits.ranges() == (EditedRange("d", 0), EditedRange("c", 5), EditedRange("b", 1))
    edits.forget("c")
    assert [r.path for r in edits.ranges()] == ["d", "b"]


def test_edit_snippets_show_the_lines_around_edits_of_open_documents() -> None:
    doc = OpenDocument("b.py", "\n".join(f"line{i}" for i in range(20)))
    edits = [EditedRange("closed.py", 3), EditedRange("b.py", 10)]
    (snippet,) = edit_snippets(edits, [doc], never())
    assert snippet.text.split("\n") == [f"line{i}" for i in range(7, 15)]
    assert edit_snippets(edits, [doc], already_over()) == []


def test_python_definitions_are_signatures_with_their_docstring() -> None:
    found = {d.name: d.text for d in definitions(SHAPES)}
    assert found["UNIT"] == "UNIT = 1.0"
    assert found["perimeter"] == (
        "def perimeter(shape: Circle,\n              exact: bool = True) -> float:\n"
        '    """Around it."""'
    )
    assert found["Circle"] == (
        'class Circle:\n    """A round shape."""\n    radius: float\n'
        "    def area(self) -> float:\n    def scaled(self,"
    )
    assert found["area"] == "class Circle:\n    def area(self) -> float:"
    assert "math" not in found


def test_other_languages_fall_back_to_keyword_lines() -> None:
    doc = OpenDocument(
        "a.ts", "export function load(path: string) {\n  return 1;\n}\n", "typescript"
    )
    assert [(d.name, d.text) for d in definitions(doc)] == [
        ("load", "export function load(path: string) {")
    ]


def test_definition_snippets_follow_the_wanted_order() -> None:
    found = definition_snippets(
        ["perimeter", "UNIT", "missing"], [SHAPES], never(), DefinitionIndex()
    )
    assert [s.text.split("\n")[0] for s in found] == ["def perimeter(shape: Circle,", "UNIT = 1.0"]
    assert definition_snippets(["UNIT"], [SHAPES], already_over(), DefinitionIndex()) == []


def test_names_near_the_cursor_nearest_first_then_imports_not_local_ones() -> None:
    ctx = cursor_context(
        "from geo.shapes import perimeter, Circle\n\ndef local_fn():\n    pass\n\n"
        "c = Circle(UNIT)\nlocal_fn(c)\n",
        10_000,
    )
    assert names_near(ctx) == ["Circle", "UNIT", "geo", "shapes", "perimeter"]


SNIPPET = Snippet("lib/util.py", "def helper(x):\n    return x", "definition")


@pytest.mark.parametrize(
    ("template", "language", "expected"),
    [
        ("prefix-only", "python", "# Path: lib/util.py\n# def helper(x):\n#     return x\n"),
        ("prefix-only", "go", "// Path: lib/util.py\n// def helper(x):\n//     return x\n"),
        ("qwen2.5-coder", "python", "<|file_sep|>lib/util.py\ndef helper(x):\n    return x\n"),
    ],
)
def test_render_snippet_per_template(template: str, language: str, expected: str) -> None:
    assert render_snippet(SNIPPET, get_template(template), language) == expected


def test_commented_block_ends_with_the_current_path() -> None:
    block = render_block([SNIPPET], get_template("prefix-only"), "python", "app/main.py")
    assert block.endswith("#     return x\n# Path: app/main.py\n")
    assert render_block([], get_template("prefix-only"), "python", "app/main.py") == ""


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("prefix-only", "CTXa"),
        ("santacoder", "<fim-prefix>CTXa<fim-suffix>b<fim-middle>"),
        ("codestral", "[SUFFIX]b[PREFIX]CTXa"),
        (
            "qwen2.5-coder",
            "<|repo_name|>r\nCTX<|file_sep|>m.py\n<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>",
        ),
        ("wisp", "CTX<|file_sep|>m.py\n<|fim_suffix|>b<|fim_prefix|>a<|fim_middle|>"),
    ],
)
def test_templates_put_the_context_first(template: str, expected: str) -> None:
    parts = PromptParts("a", "b", "m.py", repo="r", context="CTX")
    assert get_template(template).render(parts) == expected


def test_budget_keeps_what_fits_and_skips_repeats() -> None:
    small = Snippet("a.py", "x y", "similar")
    big = Snippet("a.py", " ".join(["w"] * 50), "similar")
    inside = Snippet("a.py", "x", "similar")
    template = get_template("prefix-only")
    chosen = within_budget([big, small, inside], 10, Words(), template, "python")
    assert chosen == [small]


def module(n: int) -> OpenDocument:
    body = "\n".join(f"def helper_{n}_{i}(value):\n    return value + {i}\n" for i in range(40))
    return OpenDocument(f"pkg/m{n}.py", body, "python")


def typing_context(extra: str, line: int = 0) -> Any:
    text = "\n" * line + "from pkg.m1 import helper_1_3\n\nresult = helper_1_3(" + extra
    return cursor_context(text, len(text), "app.py", "python")


def test_block_is_kept_while_typing_and_rebuilt_when_needed() -> None:
    context = CrossFileContext(Words(), CrossFileOptions(tokens=60, region_lines=5))
    template = get_template("prefix-only")
    others = [module(1), module(2)]
    first = context.block(typing_context("1"), others, [], template)
    assert "# def helper_1_3(value):" in first.text and 0 < first.tokens <= 60
    assert context.block(typing_context("12, 3"), others, [], template) is first
    assert context.builds == 1
    context.block(typing_context("1", line=20), others, [], template)  # another region
    assert context.builds == 2
    changed = [module(1), OpenDocument("pkg/m2.py", "changed = 1\n", "python")]
    context.block(typing_context("1", line=20), changed, [], template)
    assert context.builds == 3
    context.block(typing_context("1", line=20), changed, [EditedRange("pkg/m1.py", 3)], template)
    assert context.builds == 4
    own = [EditedRange("app.py", 9), EditedRange("pkg/m1.py", 3)]
    context.block(typing_context("1", line=20), changed, own, template)
    assert context.builds == 4  # the current document's own edits change with every keystroke


@pytest.mark.parametrize(
    "sources",
    [("definitions", "edits", "similar"), ("definitions",), ("similar",), ("edits",), ()],
)
def test_the_block_takes_only_the_sources_asked_for(sources: tuple[str, ...]) -> None:
    context = CrossFileContext(Words(), CrossFileOptions(tokens=400, sources=sources))
    notes = OpenDocument("pkg/notes.py", "\n".join(f"note_{i} = {i}" for i in range(30)))
    others = [module(1), OpenDocument("pkg/use.py", "result = helper_1_3(1, 2)\n"), notes]
    edits = [EditedRange("pkg/notes.py", 15)]
    block = context.block(typing_context("1"), others, edits, get_template("prefix-only"))
    kinds = {snippet.kind for snippet in block.snippets}
    expected = {"definitions": "definition", "edits": "edit", "similar": "similar"}
    assert kinds == {expected[source] for source in sources}


def test_no_budget_or_no_other_document_means_no_block() -> None:
    template = get_template("prefix-only")
    off = CrossFileContext(Words(), CrossFileOptions(tokens=0))
    assert off.block(typing_context("1"), [module(1)], [], template).text == ""
    on = CrossFileContext(Words())
    assert on.block(typing_context("1"), [OpenDocument("app.py", "x")], [], template).text == ""


def test_engine_prompts_start_with_the_same_block_while_typing() -> None:
    backend = FakeBackend(["value)"], get_template("prefix-only"))
    engine = CompletionEngine(backend, EngineOptions(cross_file=CrossFileOptions(tokens=2000)))
    others = (module(1),)
    for typed in ("", "9", "98"):
        ctx = typing_context(typed)
        engine.complete(CompletionRequest(ctx.prefix, len(ctx.prefix), "app.py", "python", others))
    prompts = [r.prompt for r in backend.requests]
    block_end = prompts[0].index("# Path: app.py\n") + len("# Path: app.py\n")
    assert "# def helper_1_3(value):" in prompts[0][:block_end]
    assert all(p.startswith(prompts[0][:block_end]) for p in prompts)
    assert prompts[2].endswith("result = helper_1_3(98")


def test_an_answer_is_not_reused_after_a_sibling_document_changed() -> None:
    """The result cache keys on the context from other documents too: the same cursor in the
    same document asks the model again once a definition it was shown changed or closed."""
    backend = FakeBackend(["value)"], get_template("prefix-only"))
    engine = CompletionEngine(backend, EngineOptions(cross_file=CrossFileOptions(tokens=2000)))
    ctx = typing_context("")

    def ask(*others: OpenDocument, edits: tuple[EditedRange, ...] = ()) -> str:
        request = CompletionRequest(ctx.prefix, len(ctx.prefix), "app.py", "python", others, edits)
        return engine.complete(request).source

    changed = OpenDocument("pkg/m1.py", "def helper_1_3(value, scale):\n    pass\n", "python")
    assert ask(module(1)) == "model"
    assert ask(module(1)) == "cache"
    assert ask(changed) == "model"
    assert "# def helper_1_3(value, scale):" in backend.requests[-1].prompt
    assert ask(changed) == "cache"
    assert ask(changed, edits=(EditedRange("pkg/m1.py", 0),)) == "model"  # edited there
    assert ask() == "model"  # closed
    assert ask(edits=(EditedRange("app.py", 2),)) == "cache"  # its own edits are in the text
    assert len(backend.requests) == 4


def test_engine_without_other_documents_prompts_as_before() -> None:
    backend = FakeBackend(["x"], get_template("prefix-only"))
    CompletionEngine(backend).complete(CompletionRequest("a = ", 4, "app.py", "python"))
    assert backend.requests[0].prompt == "a = "


def test_settings_validate_the_budgets() -> None:
    settings, warnings = parse_settings({"crossFileTokens": 0, "crossFileMs": 20})
    assert warnings == [] and settings.engine_options().cross_file == CrossFileOptions(0, 20.0)
    kept, warnings = parse_settings({"crossFileTokens": -1}, settings)
    assert kept.cross_file_tokens == 0 and "crossFileTokens" in warnings[0]
    assert Settings().engine_options().cross_file.tokens > 0  # on by default


TREE = [
    SourceFile("pkg/shapes.py", "def area(r):\n    return 3 * r * r\n\nUNIT = 2\n"),
    SourceFile(
        "pkg/main.py",
        "from pkg.shapes import area\n\n\ndef total(rs):\n    s = 0\n    for r in rs:\n"
        "        s += area(r)\n    return s * len(rs)\n",
    ),
]


def test_cross_file_holes_need_a_name_defined_in_another_file() -> None:
    assert foreign_names(TREE)["pkg/main.py"] == {"area", "UNIT"}
    holes = cut_holes(TREE, 50, seed=0, kind="cross-file")
    assert holes and all("area" in h.reference for h in holes)
    assert {h.task_id.split(":")[1] for h in holes} == {"1", "7"}


def test_single_file_holes_use_no_such_name() -> None:
    holes = cut_holes(TREE, 50, seed=0, kind="single-file")
    assert holes and not any("area" in h.reference or "UNIT" in h.reference for h in holes)


URI_A, URI_B = "file:///project/a.py", "file:///project/b.py"


async def test_server_feeds_open_documents_and_recent_edits() -> None:
    server, wire = wired_server()
    initialize(server)
    backend = FakeBackend(["x"], get_template("prefix-only"))
    server.engine = CompletionEngine(backend, server.settings.engine_options())
    seen: list[CompletionRequest] = []
    complete = server.engine.complete
    server.engine.complete = lambda request, cancel=None: (
        seen.append(request)
        or complete(  # type: ignore[method-assign]
            request, cancel
        )
    )
    for uri, text in ((URI_A, "import b\nb.helper_b("), (URI_B, "def helper_b(n):\n    pass\n")):
        item = {"uri": uri, "languageId": "python", "version": 1, "text": text}
        send(server, {"method": "textDocument/didOpen", "params": {"textDocument": item}})
    change = {"range": {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 8}},
              "text": "return n"}  # fmt: skip
    send(server, {"method": "textDocument/didChange", "params": {
        "textDocument": {"uri": URI_B, "version": 2}, "contentChanges": [change]}})  # fmt: skip
    params = {"textDocument": {"uri": URI_A}, "position": {"line": 1, "character": 11},
              "context": {"triggerKind": 1}}  # fmt: skip
    send(server, {"id": 7, "method": "textDocument/inlineCompletion", "params": params})
    async with asyncio.timeout(10):
        while wire.answer(7) is None:
            await asyncio.sleep(0.01)
    (request,) = seen
    assert [(d.path, d.text) for d in request.others] == [
        ("b.py", "def helper_b(n):\n    return n\n")
    ]
    assert request.edits == (EditedRange("b.py", 1),)
    assert "# def helper_b(n):" in backend.requests[0].prompt
    send(server, {"method": "textDocument/didClose", "params": {"textDocument": {"uri": URI_B}}})
    assert server.recent_edits.ranges() == ()
    server.scheduler.shutdown()


def test_region_counts_lines_not_keystrokes() -> None:
    context = CrossFileContext(Words(), CrossFileOptions(region_lines=2))
    template = get_template("prefix-only")
    for line in itertools.chain(range(0, 3), range(0, 3)):
        context.block(typing_context("1", line=line), [module(1)], [], template)
    assert context.builds == 1


def test_eval_completer_opens_the_tree_and_times_a_warm_keystroke() -> None:
    from model_runtime.evaluation.report import summarize
    from model_runtime.evaluation.runner import engine_completer, evaluate

    backend = FakeBackend(["area(r)"], get_template("prefix-only"))
    tree = [OpenDocument(f.path, f.text, "python") for f in TREE]
    complete = engine_completer(backend, EngineOptions(), None, tree)
    task = cut_holes(TREE, 1, seed=0, kind="cross-file")[0]
    (sample,) = evaluate([task], complete, 1.0, complete.warm)
    cold, warm = backend.requests
    block = cold.prompt.split("# Path: pkg/main.py\n")[0]
    assert "# Path: pkg/shapes.py" in block and "def total" not in block
    assert warm.prompt == cold.prompt + task.reference[0]
    assert sample.warm_latency_ms is not None and sample.warm_reused_tokens == 0
    summary = summarize("repo", [sample], "fake", {})
    assert summary["warm_p50_ms"] == round(sample.warm_latency_ms, 1)
