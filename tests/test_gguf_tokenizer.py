"""build_tokenizer against transformers' own GGUF tokenizer loading.

The bundled SmolLM2 file gives real metadata (gpt2/smollm). Small GGUF files written here give the
other kinds: byte-level vocabularies, trained on code, under the qwen2, llama-bpe and deepseek
pre-tokenizers, and a SentencePiece ("llama") one with scores and byte fallback. Where transformers
mishandles a file (deepseek-coder) the reference is that model's own tokenizer.json pipeline.
Timings are printed (`pytest -s`), not asserted.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import logging
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.implementations import SentencePieceBPETokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers import __version__ as transformers_version

from model_runtime.backend import ModelLoadError
from model_runtime.local.gguf_tokenizer import build_tokenizer, load_tokenizer
from model_runtime.models.names import BUNDLED_MODEL

TEXTS = [
    "",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)",
    "class Foo:\n\tdef bar(self):\n\t\treturn {'a': [1, 2, 3]}\n",
    "function add(a, b) {\r\n  return a + b; // sum\r\n}\r\n",
    'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("héllo, wörld")\n}\n',
    "fn main() -> Result<(), Box<dyn Error>> {\n    let v: Vec<u64> = vec![10, 200, 3000];\n}",
    "x = 1234567 + 89.5e-3 * 0x1F",
    "values = [\n    1,\n    22,\n      333,\n]",
    "It's, I'm, we'll, they've, DON'T, she'd, you're",
    "   leading spaces and trailing   ",
    "\n\n\nblank lines\n\n",
    "emoji 😀🚀 and CJK 中文字符, Ελληνικά, ünïcödé, עברית",
    "<|fim_prefix|>def f(x):\n    <|fim_suffix|>\n<|fim_middle|>",
    "text<|endoftext|>more <|im_start|>user\nhi<|im_end|>",
    "<s> a </s> <FILL_ME> <tool_call> <｜fim▁begin｜>x<｜fim▁end｜>",
    "tabs\tand\t\tmixed \t whitespace \u00a0nbsp",
    "a  1 x    1234567",
    "SELECT * FROM users WHERE id = 42; -- comment",
    '<div class="a">&amp; <!-- x --></div>',
]
CODE = "".join(inspect.getsource(m) for m in (argparse, textwrap)) + "".join(TEXTS) * 3
FIM = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
# The reference is transformers 5's reading of GGUF tokenizers. transformers 4 (the lowest run)
# reads them otherwise: the bundled file's eos as id 1 where the file says 2, qwen2 and llama-bpe
# text split as GPT-2's, and it cannot read a byte-level file without merges.
needs_transformers_5 = pytest.mark.skipif(
    int(transformers_version.split(".")[0]) < 5,
    reason="transformers 4 reads GGUF tokenizers differently from 5, the reference here",
)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6  # llama.cpp's token types


def _write_gguf(path: Path, architecture: str, metadata: dict[str, Any]) -> Path:
    writer = gguf.GGUFWriter(str(path), architecture)
    for key, value in metadata.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _metadata(path: Path) -> dict[str, Any]:
    reader = gguf.GGUFReader(path)
    return {key: field.contents() for key, field in reader.fields.items()}


def _transformers(path: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str] = TEXTS) -> list[list[int]]:
    return [list(tokenizer.encode(text, add_special_tokens=False)) for text in texts]


def _added(tokenizer: PreTrainedTokenizerBase) -> dict[int, tuple[str, bool]]:
    return {i: (t.content, t.special) for i, t in tokenizer.added_tokens_decoder.items()}


def _assert_same(ours: PreTrainedTokenizerBase, reference: PreTrainedTokenizerBase) -> None:
    ids = _ids(reference)
    assert _ids(ours) == ids
    assert [ours.decode(i, skip_special_tokens=False) for i in ids] == [
        reference.decode(i, skip_special_tokens=False) for i in ids
    ]
    assert ours.get_vocab() == reference.get_vocab()
    assert (ours.bos_token_id, ours.eos_token_id) == (
        reference.bos_token_id,
        reference.eos_token_id,
    )
    assert ours.all_special_tokens == reference.all_special_tokens
    assert _added(ours) == _added(reference)


def _merges(tokenizer: PreTrainedTokenizerBase) -> list[list[str]]:
    return json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]


def _timed(what: str, build: Any, *args: Any) -> Any:
    start = time.perf_counter()
    result = build(*args)
    print(f"{what}: {time.perf_counter() - start:.3f} s")
    return result


@pytest.fixture(scope="module")
def bundled() -> dict[str, Any]:
    return _metadata(BUNDLED_MODEL)


@pytest.fixture(scope="module")
def byte_level_vocab() -> tuple[list[str], list[str]]:
    """Tokens (by id) and merges of a byte-level BPE trained on code with GPT-2's split, so that
    runs of digits merge and a pre-tokenizer that splits them shows."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=4000, initial_alphabet=alphabet, show_progress=False)
    tokenizer.train_from_iterator([CODE], trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return sorted(model["vocab"], key=model["vocab"].get), [" ".join(m) for m in model["merges"]]


def _byte_level_file(
    path: Path, vocab: tuple[list[str], list[str]], pre: str, control: Sequence[str]
) -> Path:
    """The trained vocabulary, then `control` tokens, a user-defined one, and a plain token the
    file stores as text rather than spelled in the byte alphabet ("→")."""
    tokens, merges = vocab
    return _write_gguf(
        path,
        "qwen2",
        {
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": pre,
            "tokenizer.ggml.tokens": [*tokens, *control, "<tool_call>", "→"],
            "tokenizer.ggml.token_type": [NORMAL] * len(tokens)
            + [CONTROL] * len(control)
            + [USER_DEFINED, NORMAL],
            "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.bos_token_id": len(tokens),
            "tokenizer.ggml.eos_token_id": len(tokens) + len(control) - 1,
            "tokenizer.ggml.padding_token_id": len(tokens),
            "tokenizer.ggml.add_bos_token": False,
        },
    )


def _sentencepiece_file(
    path: Path, add_space_prefix: bool | None = None, flat_scores: bool = False
) -> Path:
    """A SentencePiece-style vocabulary as llama.cpp writes one: `<unk>`, `<s>`, `</s>`, 256 byte
    tokens, pieces scored by merge order (or all alike, as some converters leave them), and no
    merges: the reader derives them from the scores."""
    trained = SentencePieceBPETokenizer()
    trained.train_from_iterator(iter([CODE]), vocab_size=3000, show_progress=False)
    model = json.loads(trained.to_str())["model"]
    merged = {"".join(m): -float(rank) for rank, m in enumerate(model["merges"])}
    chars = [t for t in sorted(model["vocab"], key=model["vocab"].get) if t not in merged]
    scores = merged | {c: -float(len(merged) + i) for i, c in enumerate(chars)}
    pieces = [p for p in scores if "\n" not in p and "\t" not in p]  # those go to <0x0A>, <0x09>
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces]
    metadata: dict[str, Any] = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [*tokens, "<|fim_prefix|>", "<FILL_ME>"],
        "tokenizer.ggml.token_type": [UNKNOWN, CONTROL, CONTROL]
        + [BYTE] * 256
        + [NORMAL] * len(pieces)
        + [CONTROL, USER_DEFINED],
        "tokenizer.ggml.scores": [0.0] * 259
        + [0.0 if flat_scores else scores[p] for p in pieces]
        + [0.0, 0.0],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }
    if add_space_prefix is not None:
        metadata["tokenizer.ggml.add_space_prefix"] = add_space_prefix
    return _write_gguf(path, "llama", metadata)


@needs_transformers_5
def test_bundled_file_matches_transformers(bundled: dict[str, Any]) -> None:
    ours = _timed("build, bundled SmolLM2 (49,152 tokens)", build_tokenizer, bundled)
    _assert_same(ours, _transformers(BUNDLED_MODEL))


@needs_transformers_5
@pytest.mark.parametrize("pre", ["qwen2", "llama-bpe", "smollm"])
def test_byte_level_matches_transformers(
    tmp_path: Path, byte_level_vocab: tuple[list[str], list[str]], pre: str
) -> None:
    path = _byte_level_file(tmp_path / f"{pre}.gguf", byte_level_vocab, pre, FIM)
    ours = build_tokenizer(_metadata(path))
    _assert_same(ours, _transformers(path))
    assert ours.encode("<|fim_prefix|>", add_special_tokens=False) == [len(byte_level_vocab[0]) + 1]


@needs_transformers_5
@pytest.mark.parametrize("flat_scores", [False, True])
def test_sentencepiece_matches_transformers(tmp_path: Path, flat_scores: bool) -> None:
    path = _sentencepiece_file(tmp_path / "spm.gguf", flat_scores=flat_scores)
    ours = build_tokenizer(_metadata(path))
    reference = _transformers(path)
    _assert_same(ours, reference)
    assert _merges(ours) == _merges(reference)  # the whole order, not just the ids it gives here
    crab = ours.encode("🦀", add_special_tokens=False)  # not in the training text: bytes
    assert ours.convert_ids_to_tokens(crab) == ["▁", "<0xF0>", "<0x9F>", "<0xA6>", "<0x80>"]


def test_sentencepiece_without_space_prefix_follows_llama_cpp(tmp_path: Path) -> None:
    """llama.cpp honours `add_space_prefix = false`; transformers 5 ignores it. Without the prefix,
    " text" must read as "text" does with it."""
    ours = build_tokenizer(_metadata(_sentencepiece_file(tmp_path / "a.gguf", False)))
    prefixed = _transformers(_sentencepiece_file(tmp_path / "b.gguf"))
    plain = [t for t in TEXTS if t and not t[0].isspace() and not t.startswith("<")]
    assert _ids(ours, [" " + t for t in plain]) == _ids(prefixed, plain)
    assert ours.encode("x", add_special_tokens=False) != prefixed.encode(
        "x", add_special_tokens=False
    )
    plain = [t for t in TEXTS if "▁" not in t]  # no prefix to strip: lossless
    assert [ours.decode(ids) for ids in _ids(ours, plain)] == plain


DEEPSEEK_CODER = [
    "<｜begin▁of▁sentence｜>",
    "<｜fim▁hole｜>",
    "<｜fim▁begin｜>",
    "<｜fim▁end｜>",
    "<|EOT|>",
    "<｜end▁of▁sentence｜>",
]


def _deepseek_coder_reference(tokens: list[str], merges: list[str]) -> Tokenizer:
    """DeepSeek-Coder's own tokenizer.json pipeline, which llama.cpp transcribes as its regexes,
    over the file's tokens."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    arrow = byte_level.pre_tokenize_str("→")[0][0]
    vocab = {t: i for i, t in enumerate([*tokens, *DEEPSEEK_CODER, "<tool_call>", arrow])}
    reference = Tokenizer(
        models.BPE(vocab, [(a, b) for a, _, b in (m.partition(" ") for m in merges)])
    )
    reference.pre_tokenizer = pre_tokenizers.Sequence(
        [
            *(
                pre_tokenizers.Split(Regex(r), "isolated")
                for r in ("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-퟿]+")
            ),
            pre_tokenizers.Digits(individual_digits=True),
            byte_level,
        ]
    )
    reference.decoder = decoders.ByteLevel()
    reference.add_special_tokens([AddedToken(t, normalized=False) for t in DEEPSEEK_CODER])
    reference.add_tokens([AddedToken("<tool_call>", normalized=False)])
    return reference


def test_deepseek_coder_follows_its_own_tokenizer(
    tmp_path: Path, byte_level_vocab: tuple[list[str], list[str]]
) -> None:
    """transformers reads this file with GPT-2's split, and adds its fullwidth-bar special tokens
    past the end of the vocabulary; llama.cpp and the model's tokenizer.json do neither."""
    path = _byte_level_file(
        tmp_path / "ds.gguf", byte_level_vocab, "deepseek-coder", DEEPSEEK_CODER
    )
    ours = build_tokenizer(_metadata(path))
    reference = _deepseek_coder_reference(*byte_level_vocab)
    ids = [reference.encode(text).ids for text in TEXTS]
    assert _ids(ours) == ids
    assert [ours.decode(i) for i in ids] == reference.decode_batch(ids, skip_special_tokens=False)
    size = len(byte_level_vocab[0])
    assert ours.get_vocab() == reference.get_vocab()
    assert len(ours.get_vocab()) == size + len(DEEPSEEK_CODER) + 2
    assert (ours.bos_token_id, ours.eos_token_id) == (size, size + len(DEEPSEEK_CODER) - 1)
    assert ours.encode("<｜fim▁begin｜>", add_special_tokens=False) == [size + 2]


@pytest.mark.parametrize(
    ("pre", "pieces"),
    [
        ("deepseek-coder", ["Hi", ",", " wörld", " ", "1", "2", "3", "\n", "中文", " x"]),
        # its punctuation class `:-~` holds ASCII letters too, so it cuts " wörld" again
        ("deepseek-llm", ["Hi", ",", " w", "ö", "rld", " ", "123", "\n", "中文", " x"]),
        ("qwen2", ["Hi", ",", " wörld", " ", "1", "2", "3", "\n", "中文", " x"]),
        ("llama-bpe", ["Hi", ",", " wörld", " ", "123", "\n", "中文", " x"]),
        ("smollm", ["Hi", ",", " wörld", " 123", "\n", "中文", " x"]),
    ],
)
def test_pre_tokenizers_cut_text_as_llama_cpp(pre: str, pieces: list[str]) -> None:
    """Pieces worked out by hand from llama.cpp's regexes for each name."""
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": ["a"],
    }
    backend = build_tokenizer(metadata).backend_tokenizer
    text = "Hi, wörld 123\n中文 x"
    cut = backend.pre_tokenizer.pre_tokenize_str(text)
    assert [text[start:end] for _, (start, end) in cut] == pieces


def test_unknown_pre_tokenizer_is_gpt2_with_a_warning(
    bundled: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        ours = build_tokenizer(bundled | {"tokenizer.ggml.pre": "made-up"})
    assert "'made-up'" in caplog.text
    assert _ids(ours) == _ids(build_tokenizer(bundled))


@pytest.mark.parametrize("kind", ["bert", "t5", "rwkv", None])
def test_other_tokenizer_models_are_load_errors(bundled: dict[str, Any], kind: str | None) -> None:
    with pytest.raises(ModelLoadError, match=repr(kind)):
        build_tokenizer(bundled | {"tokenizer.ggml.model": kind})


def test_files_without_a_usable_vocabulary_are_load_errors() -> None:
    with pytest.raises(ModelLoadError, match="no tokenizer"):
        build_tokenizer({"tokenizer.ggml.model": "gpt2"})
    with pytest.raises(ModelLoadError, match="neither merges nor scores"):
        build_tokenizer({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]})


def test_kept_copy_loads_the_same_tokenizer(bundled: dict[str, Any], tmp_path: Path) -> None:
    built = build_tokenizer(bundled)
    built.save_pretrained(str(tmp_path))
    kept = _timed("load kept copy, bundled SmolLM2", load_tokenizer, tmp_path)
    _assert_same(kept, built)


def test_large_vocabulary_builds_in_about_a_second(bundled: dict[str, Any], tmp_path: Path) -> None:
    """The bundled vocabulary grown to Qwen2.5's 151,936 tokens with made-up merges, plus the
    FIM tokens it lacks (it has `<|endoftext|>` already)."""
    tokens = list(bundled["tokenizer.ggml.tokens"])
    types = list(bundled["tokenizer.ggml.token_type"])
    merges = list(bundled["tokenizer.ggml.merges"])
    known = set(tokens)
    for left, right in itertools.product(tokens[100:2000], repeat=2):
        if len(tokens) == 151_936 - 3:
            break
        if left + right not in known:
            known.add(left + right)
            tokens.append(left + right)
            types.append(NORMAL)
            merges.append(f"{left} {right}")
    metadata = bundled | {
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.tokens": [*tokens, *FIM[1:]],
        "tokenizer.ggml.token_type": [*types, CONTROL, CONTROL, CONTROL],
        "tokenizer.ggml.merges": merges,
    }
    ours = _timed("build, 151,936 tokens", build_tokenizer, metadata)
    ours.save_pretrained(str(tmp_path))
    kept = _timed("load kept copy, 151,936 tokens", load_tokenizer, tmp_path)
    assert len(kept.get_vocab()) == 151_936
    assert _ids(kept) == _ids(ours)
