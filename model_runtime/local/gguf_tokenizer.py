"""A fast tokenizer built straight from a GGUF file's tokenizer metadata.

transformers reads a GGUF tokenizer only through its own conversion, slow for a 150k vocabulary.
This module writes the `tokenizer.json` that conversion would give and wraps it as a
`PreTrainedTokenizerFast`. Build once, then keep it in a folder:

    tokenizer = build_tokenizer(metadata)  # GGUF key -> plain Python value
    tokenizer.save_pretrained(folder)      # writes tokenizer.json and tokenizer_config.json
    tokenizer = load_tokenizer(folder)     # later starts: a fraction of a second

Two kinds of vocabulary (`tokenizer.ggml.model`) are read: "gpt2", byte-level BPE cut by the
regexes llama.cpp names by `tokenizer.ggml.pre`, and "llama", SentencePiece BPE with scores and
byte fallback. The ids are transformers' except where its reading breaks a file; there we follow
llama.cpp: the deepseek pre-tokenizers (GPT-2's split in transformers), `add_space_prefix = false`
(ignored there) and control tokens outside the byte alphabet (added past the vocabulary there).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from model_runtime.backend import ModelLoadError

log = logging.getLogger(__name__)

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp's token types that are matched whole in the text

_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3 = _QWEN2.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
# Written as escapes: these classes hold letters that editors may normalize into others.
_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
_DEEPSEEK_PUNCTUATION = "[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"
_DEEPSEEK_LETTERS = (
    "[A-Za-z\xb5\xc0-\xd6\xd8-\xf6\xf8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1"
    "\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5"
    "\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a"
    "\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d"
    "\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3"
    "\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115"
    "\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f"
    "\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf"
    "\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f"
    "\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2"
    "\U000118a0-\U000118df\U0001e900-\U0001e943]+"
)

# `tokenizer.ggml.pre` -> the regexes that cut text before the merges, one after another, as
# llama.cpp's `llm_tokenizer_bpe` lists them. Names not here get GPT-2's split. Two differences
# from llama.cpp are transformers' and kept, so wisp's ids stay as they were: llama.cpp first cuts
# "smollm", "starcoder" and "refact" text into single digits, and looks up a whole llama3 word
# before merging it (`ignore_merges`).
_SPLITS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("qwen2", "qwen2.5", "qwen-2.5", "deepseek-r1-qwen"), (_QWEN2,)),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx"), (_LLAMA3,)),
    "deepseek-coder": ("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}"),
    "deepseek-llm": (
        "[\r\n]",
        r"\s?" + _DEEPSEEK_LETTERS,
        r"\s?" + _DEEPSEEK_PUNCTUATION,
        r"\s+$",
        _CJK,
        r"\p{N}+",
    ),
}
_GPT2_NAMES = frozenset(("gpt2", "gpt-2", "smollm", "starcoder", "refact", "default"))


def build_tokenizer(metadata: Mapping[str, Any]) -> PreTrainedTokenizerFast:
    """The tokenizer a GGUF file's metadata describes; `ModelLoadError` for a kind not handled."""
    kind = metadata.get("tokenizer.ggml.model")
    tokens: Sequence[str] = metadata.get("tokenizer.ggml.tokens") or ()
    types: Sequence[int] = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges: Sequence[str] | None = metadata.get("tokenizer.ggml.merges")
    if not tokens:
        raise ModelLoadError("the file holds no tokenizer (no tokenizer.ggml.tokens)")
    if kind == "gpt2":
        vocab = _byte_level_vocab(tokens, types)
        pipeline = _byte_level(metadata.get("tokenizer.ggml.pre"))
    elif kind == "llama":
        vocab = {text: index for index, text in enumerate(tokens)}
        if not merges and "tokenizer.ggml.scores" not in metadata:
            raise ModelLoadError("the SentencePiece vocabulary has neither merges nor scores")
        merges = merges or _merges_from_scores(vocab, metadata["tokenizer.ggml.scores"])
        pipeline = _sentencepiece(bool(metadata.get("tokenizer.ggml.add_space_prefix", True)))
    else:
        raise ModelLoadError(f"tokenizer model {kind!r} is not supported (only 'gpt2' and 'llama')")
    whole = json.loads(pipeline.to_str())
    whole["model"] |= {"vocab": vocab, "merges": list(merges or ())}  # "a b", as GGUF has them
    whole["added_tokens"] = _whole_tokens(tokens, types)

    def token(key: str) -> str | None:
        index = metadata.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[index] if index is not None and 0 <= index < len(tokens) else None

    # Read from a file: a `Tokenizer` object would be parsed, then deep-copied: twice the time.
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "tokenizer.json"
        file.write_text(json.dumps(whole, ensure_ascii=False), encoding="utf-8")
        return PreTrainedTokenizerFast(
            tokenizer_file=str(file),
            bos_token=token("bos"),
            eos_token=token("eos"),
            unk_token=token("unknown"),
            pad_token=token("padding"),
            add_bos_token=bool(metadata.get("tokenizer.ggml.add_bos_token", kind == "llama")),
            add_eos_token=bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
        )


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """A tokenizer kept with `save_pretrained(folder)`; raises whatever transformers raises for a
    missing or damaged copy."""
    return PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)


def _byte_level_vocab(tokens: Sequence[str], types: Sequence[int]) -> dict[str, int]:
    """Tokens as the merges spell them, in GPT-2's byte alphabet. A token the file stores as plain
    text is spelled here, unless it is one matched whole, which stays as the text it matches."""
    spelling = _byte_spelling()
    alphabet = set(spelling.values())
    vocab = {}
    for index, (text, kind) in enumerate(zip(tokens, types, strict=False)):
        if kind not in (_CONTROL, _USER_DEFINED) and not alphabet.issuperset(text):
            text = "".join(spelling[b] for b in text.encode())
        vocab[text] = index
    return vocab


def _byte_level(pre: str | None) -> Tokenizer:
    """An empty byte-level BPE with the split `pre` names."""
    pipeline = Tokenizer(models.BPE())
    splits = _SPLITS.get(pre or "default")
    if splits is None:
        if pre and pre not in _GPT2_NAMES:
            log.warning("unknown GGUF pre-tokenizer %r: splitting text as GPT-2 does", pre)
        pipeline.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        pipeline.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(s), behavior="isolated") for s in splits]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    pipeline.decoder = decoders.ByteLevel()
    return pipeline


def _sentencepiece(space_prefix: bool) -> Tokenizer:
    """An empty SentencePiece BPE: `▁` for spaces, `<0x0A>` byte tokens for what it lacks."""
    pipeline = Tokenizer(models.BPE(fuse_unk=True, byte_fallback=True))
    pipeline.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if space_prefix else "never", split=False
    )
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if space_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    pipeline.decoder = decoders.Sequence(steps)
    return pipeline


def _merges_from_scores(vocab: Mapping[str, int], scores: Sequence[float]) -> list[str]:
    """SentencePiece files store no merges: each cut of a token into two tokens is one, ranked by
    the token's score, then by longer left and right parts, then by token (transformers' order)."""
    ranked = [
        (-scores[index], -cut, cut - len(token), token, cut)
        for token, index in vocab.items()
        for cut in range(1, len(token))
        if token[:cut] in vocab and token[cut:] in vocab
    ]
    ranked.sort(key=lambda merge: merge[:3])  # stable: ties keep the vocabulary's order
    return [f"{token[:cut]} {token[cut:]}" for *_, token, cut in ranked]


def _whole_tokens(tokens: Sequence[str], types: Sequence[int]) -> list[dict[str, Any]]:
    """Control tokens as special added tokens, user-defined ones as plain added tokens: both are
    matched whole in the text, as llama.cpp does."""
    return [
        {
            "id": index,
            "content": text,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": kind == _CONTROL,
        }
        for index, (text, kind) in enumerate(zip(tokens, types, strict=False))
        if kind in (_CONTROL, _USER_DEFINED)
    ]


@cache
def _byte_spelling() -> dict[int, str]:
    """GPT-2's byte -> character map: printable bytes stand for themselves, others move to 256+."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    kept += range(ord("®"), ord("ÿ") + 1)
    moved = [b for b in range(256) if b not in kept]
    return {b: chr(b) for b in kept} | {b: chr(256 + n) for n, b in enumerate(moved)}
