"""Fill-in-the-middle prompt templates: a registry, rendering, and auto-detection.

Each template is a value object; rendering is a pure function of the parts. Special tokens are
written into the prompt as text and the backend tokenizes them as special tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Layout = Literal["psm", "spm", "prefix"]


@dataclass(frozen=True)
class PromptParts:
    """What goes into a prompt: the code around the cursor and where it comes from."""

    prefix: str
    suffix: str
    path: str = ""
    repo: str = ""
    context: str = ""  # other files' snippets, rendered for this template; goes first


@dataclass(frozen=True)
class FimTemplate:
    """How one model family spells a fill-in-the-middle prompt."""

    name: str
    layout: Layout
    prefix_token: str = ""
    suffix_token: str = ""
    middle_token: str = ""
    file_header: str = ""  # format string with {path}; empty when the model has no slot for it
    repo_header: str = ""  # format string with {repo}; written only together with file_header
    stop_tokens: tuple[str, ...] = ()
    add_bos: bool = False

    def render(self, parts: PromptParts) -> str:
        """The prompt text for `parts`; the model's answer continues right after it."""
        header = self.header(parts)
        # Without file sections the (commented) context opens the code before the cursor.
        prefix = parts.prefix if self.file_header else parts.context + parts.prefix
        if self.layout == "prefix":
            return header + prefix
        if self.layout == "spm":
            # Suffix first: typing at the cursor only appends to the end of the prompt.
            return (
                header
                + self.suffix_token
                + parts.suffix
                + self.prefix_token
                + prefix
                + self.middle_token
            )
        return (
            header
            + self.prefix_token
            + prefix
            + self.suffix_token
            + parts.suffix
            + self.middle_token
        )

    def header(self, parts: PromptParts) -> str:
        """Repository metadata, other files' sections and the file's own, where there is room."""
        if not self.file_header:
            return ""
        if not parts.path:
            return parts.context
        repo = self.repo_header.format(repo=parts.repo) if self.repo_header and parts.repo else ""
        return repo + parts.context + self.file_header.format(path=parts.path)

    @property
    def uses_suffix(self) -> bool:
        return self.layout != "prefix"


# The tokens of `wisp train`'s models share Qwen2.5-Coder's spelling so llama.cpp recognises them.
_QWEN_STOPS = ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>")
_STARCODER_STOPS = ("<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>")

TEMPLATES: dict[str, FimTemplate] = {
    t.name: t
    for t in (
        FimTemplate(
            "wisp",
            "spm",
            "<|fim_prefix|>",
            "<|fim_suffix|>",
            "<|fim_middle|>",
            file_header="<|file_sep|>{path}\n",
            stop_tokens=("<|endoftext|>", "<|file_sep|>", "<|fim_pad|>"),
        ),
        FimTemplate(
            "starcoder",
            "psm",
            "<fim_prefix>",
            "<fim_suffix>",
            "<fim_middle>",
            file_header="<filename>{path}\n",
            stop_tokens=_STARCODER_STOPS,
        ),
        FimTemplate(
            "starcoder2",
            "psm",
            "<fim_prefix>",
            "<fim_suffix>",
            "<fim_middle>",
            file_header="<file_sep>{path}\n",
            repo_header="<repo_name>{repo}",
            stop_tokens=_STARCODER_STOPS,
        ),
        FimTemplate(
            "santacoder",
            "psm",
            "<fim-prefix>",
            "<fim-suffix>",
            "<fim-middle>",
            stop_tokens=("<|endoftext|>", "<fim-prefix>", "<fim-suffix>", "<fim-middle>"),
        ),
        FimTemplate(
            "qwen2.5-coder",
            "psm",
            "<|fim_prefix|>",
            "<|fim_suffix|>",
            "<|fim_middle|>",
            file_header="<|file_sep|>{path}\n",
            repo_header="<|repo_name|>{repo}\n",
            stop_tokens=_QWEN_STOPS,
        ),
        FimTemplate(
            "deepseek-coder",
            "psm",
            "<｜fim▁begin｜>",
            "<｜fim▁hole｜>",
            "<｜fim▁end｜>",
            stop_tokens=("<｜end▁of▁sentence｜>", "<|EOT|>"),
            add_bos=True,
        ),
        FimTemplate(
            "codellama",
            "psm",
            "<PRE> ",
            " <SUF>",
            " <MID>",
            stop_tokens=("<EOT>", "</s>"),
            add_bos=True,
        ),
        FimTemplate(
            "codegemma",
            "psm",
            "<|fim_prefix|>",
            "<|fim_suffix|>",
            "<|fim_middle|>",
            stop_tokens=("<|file_separator|>", "<|fim_prefix|>", "<|fim_suffix|>", "<eos>"),
            add_bos=True,
        ),
        FimTemplate(
            "codestral",
            "spm",
            "[PREFIX]",
            "[SUFFIX]",
            "",
            stop_tokens=("</s>",),
            add_bos=True,
        ),
        FimTemplate("prefix-only", "prefix", stop_tokens=("<|endoftext|>", "</s>")),
    )
}


def get_template(name: str) -> FimTemplate:
    """The registered template called `name`; raises KeyError naming the choices."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KeyError(
            f"unknown FIM template {name!r}; choose one of {sorted(TEMPLATES)}"
        ) from None


def detect_template(
    special_tokens: Iterable[str],
    model_type: str | None = None,
    declared: str | None = None,
) -> FimTemplate:
    """Pick the template for a model from what its config declares, its tokens and its type."""
    if declared and declared in TEMPLATES:
        return TEMPLATES[declared]
    tokens = set(special_tokens)
    kind = (model_type or "").lower()
    if "<|fim_prefix|>" in tokens:
        if "<|file_separator|>" in tokens or kind.startswith("gemma"):
            return TEMPLATES["codegemma"]
        return TEMPLATES["qwen2.5-coder"]
    if "<fim_prefix>" in tokens:
        return TEMPLATES["starcoder2" if "<file_sep>" in tokens else "starcoder"]
    if "<fim-prefix>" in tokens:
        return TEMPLATES["santacoder"]
    if "<｜fim▁begin｜>" in tokens:
        return TEMPLATES["deepseek-coder"]
    if "[SUFFIX]" in tokens and "[PREFIX]" in tokens:
        return TEMPLATES["codestral"]
    if {"▁<PRE>", "<PRE>"} & tokens:
        return TEMPLATES["codellama"]
    return TEMPLATES["prefix-only"]


# Model-name fragments (lower case) and the template of their family, most specific first.
_NAMED_FAMILIES = (
    ("qwen2.5-coder", "qwen2.5-coder"),
    ("qwen2.5coder", "qwen2.5-coder"),
    ("qwen3-coder", "qwen2.5-coder"),
    ("starcoder2", "starcoder2"),
    ("starcoder", "starcoder"),
    ("santacoder", "santacoder"),
    ("deepseek-coder", "deepseek-coder"),
    ("codellama", "codellama"),
    ("code-llama", "codellama"),
    ("codegemma", "codegemma"),
    ("codestral", "codestral"),
)


def template_for_model_name(name: str | None) -> FimTemplate:
    """The template of a served model, guessed from its name (a hub id, an Ollama tag, a file);
    `prefix-only` when the name names no FIM family. Used where no tokenizer is at hand."""
    lowered = (name or "").lower().replace("_", "-")
    for fragment, template in _NAMED_FAMILIES:
        if fragment in lowered:
            return TEMPLATES[template]
    return TEMPLATES["prefix-only"]
