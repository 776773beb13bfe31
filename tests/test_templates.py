"""Exact prompt strings per template family, and template detection."""

from __future__ import annotations

import pytest

from model_runtime.templates import TEMPLATES, PromptParts, detect_template, get_template

PARTS = PromptParts(
    prefix="def f(x):\n    return ", suffix="\n\nprint(f(1))\n", path="pkg/m.py", repo="acme"
)

EXPECTED = {
    "wisp": "<|file_sep|>pkg/m.py\n<|fim_suffix|>\n\nprint(f(1))\n<|fim_prefix|>def f(x):\n    return <|fim_middle|>",
    "starcoder": "<filename>pkg/m.py\n<fim_prefix>def f(x):\n    return <fim_suffix>\n\nprint(f(1))\n<fim_middle>",
    "starcoder2": "<repo_name>acme<file_sep>pkg/m.py\n<fim_prefix>def f(x):\n    return <fim_suffix>\n\nprint(f(1))\n<fim_middle>",
    "santacoder": "<fim-prefix>def f(x):\n    return <fim-suffix>\n\nprint(f(1))\n<fim-middle>",
    "qwen2.5-coder": "<|repo_name|>acme\n<|file_sep|>pkg/m.py\n<|fim_prefix|>def f(x):\n    return <|fim_suffix|>\n\nprint(f(1))\n<|fim_middle|>",
    "deepseek-coder": "<｜fim▁begin｜>def f(x):\n    return <｜fim▁hole｜>\n\nprint(f(1))\n<｜fim▁end｜>",
    "codellama": "<PRE> def f(x):\n    return  <SUF>\n\nprint(f(1))\n <MID>",
    "codegemma": "<|fim_prefix|>def f(x):\n    return <|fim_suffix|>\n\nprint(f(1))\n<|fim_middle|>",
    "codestral": "[SUFFIX]\n\nprint(f(1))\n[PREFIX]def f(x):\n    return ",
    "prefix-only": "def f(x):\n    return ",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_exact_prompt(name: str) -> None:
    assert get_template(name).render(PARTS) == EXPECTED[name]


def test_every_template_has_an_expected_prompt() -> None:
    assert set(EXPECTED) == set(TEMPLATES)


def test_no_path_means_no_header() -> None:
    parts = PromptParts(prefix="a", suffix="b")
    assert (
        get_template("qwen2.5-coder").render(parts)
        == "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"
    )
    assert get_template("wisp").render(parts) == "<|fim_suffix|>b<|fim_prefix|>a<|fim_middle|>"


def test_repo_header_needs_a_file() -> None:
    parts = PromptParts(prefix="a", suffix="b", repo="acme")
    assert get_template("starcoder2").render(parts) == "<fim_prefix>a<fim_suffix>b<fim_middle>"


@pytest.mark.parametrize(
    ("tokens", "model_type", "declared", "expected"),
    [
        ({"<|fim_prefix|>", "<|repo_name|>"}, "qwen2", None, "qwen2.5-coder"),
        ({"<|fim_prefix|>", "<|file_separator|>"}, "gemma", None, "codegemma"),
        ({"<|fim_prefix|>"}, "gemma", None, "codegemma"),
        ({"<fim_prefix>", "<file_sep>"}, "starcoder2", None, "starcoder2"),
        ({"<fim_prefix>", "<filename>"}, "gpt_bigcode", None, "starcoder"),
        ({"<fim-prefix>"}, "gpt2", None, "santacoder"),
        ({"<｜fim▁begin｜>"}, "llama", None, "deepseek-coder"),
        ({"▁<PRE>", "▁<SUF>"}, "llama", None, "codellama"),
        ({"[SUFFIX]", "[PREFIX]"}, "mistral", None, "codestral"),
        ({"<|endoftext|>"}, "gpt2", None, "prefix-only"),
        (set(), None, None, "prefix-only"),
        ({"<|fim_prefix|>"}, "llama", "wisp", "wisp"),
        ({"<|fim_prefix|>"}, "llama", "no-such-template", "qwen2.5-coder"),
    ],
)
def test_detection(
    tokens: set[str], model_type: str | None, declared: str | None, expected: str
) -> None:
    assert detect_template(tokens, model_type, declared).name == expected


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(KeyError, match="starcoder"):
        get_template("gpt-17")
