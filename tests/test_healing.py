"""Token healing: the token table, which text is backed off, and the decode loop held to it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from model_runtime.backend import GenerationRequest, SamplingParams
from model_runtime.healing import (
    TokenTable,
    byte_level_bytes,
    remaining_lead,
    sentencepiece_bytes,
    split_lead,
    vocab_bytes,
)
from model_runtime.local import LoadOptions, load_backend
from model_runtime.training.tokenizer import train_tokenizer

CODE = (
    "import os\n\n\ndef add(a, b):\n    return a + b\n\n\nclass Point:\n"
    "    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\n"
    "    def norm(self):\n        return (self.x ** 2 + self.y ** 2) ** 0.5\n"
    "for i in range(10):\n    print(add(i, i * 2), os.path.join('a', 'b'))\n"
)


@pytest.mark.parametrize(
    ("token", "expected"),
    [("Ġreturn", b" return"), ("ĊĠĠĠ", b"\n   "), ("Ċ", b"\n"), ("ĉ", b"\t"), ("x", b"x"),
     ("Ã©", "é".encode()), ("a b", None)],  # a plain space is no byte-level character
)  # fmt: skip
def test_byte_level_tokens_as_bytes(token: str, expected: bytes | None) -> None:
    assert byte_level_bytes(token) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [("▁return", b" return"), ("<0x0A>", b"\n"), ("<0x09>", b"\t"), ("ab", b"ab"),
     ("<0xZZ>", b"<0xZZ>")],
)  # fmt: skip
def test_sentencepiece_tokens_as_bytes(token: str, expected: bytes) -> None:
    assert sentencepiece_bytes(token) == expected


def test_vocab_bytes_leaves_special_tokens_empty() -> None:
    pieces = vocab_bytes({"<s>": 0, "Ġa": 1, "Ċ": 2}, special={"<s>"})
    assert pieces == [b"", b" a", b"\n"]
    assert vocab_bytes({"<s>": 0, "▁a": 1, "<0x0A>": 2}, special={"<s>"}) == [b"", b" a", b"\n"]


TABLE = TokenTable(
    (b"", b"\n", b"\n   ", b"\n    ", b" ", b" return", b"re", b"return", b".", b"\xff")
)


@pytest.mark.parametrize(
    ("lead", "allowed"),
    [
        (b"\n    ", {1, 2, 3}),  # "\n" and "\n   " leave the rest to come; "\n    " covers it
        (b"\n", {1, 2, 3}),
        (b" ", {4, 5}),
        (b" r", {4, 5}),  # " " leaves "r" to come
        (b"re", {6, 7}),
        (b"\xff", {9}),
        (b"q", set()),
    ],
)
def test_tokens_allowed_to_start_an_answer(lead: bytes, allowed: set[int]) -> None:
    assert set(TABLE.allowed(lead)) == allowed


@pytest.mark.parametrize(
    ("piece", "extendable"),
    [(b"\n", True), (b"\n   ", True), (b"\n    ", False), (b" ", True), (b"re", True),
     (b"return", False), (b".", False), (b"", False)],
)  # fmt: skip
def test_extendable_tokens(piece: bytes, extendable: bool) -> None:
    assert TABLE.extendable(piece) is extendable


@pytest.mark.parametrize(
    ("lead", "token", "left"),
    [(b"\n    ", b"\n   ", b" "), (b"\n    ", b"\n    ", b""), (b" ", b" return", b""),
     (b"re", b"re", b"")],
)  # fmt: skip
def test_remaining_lead(lead: bytes, token: bytes, left: bytes) -> None:
    assert remaining_lead(lead, token) == left


def _starcoder_style() -> PreTrainedTokenizerFast:
    """GPT-2's split regex with digits one by one, as StarCoder's tokenizer does."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CODE] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def _qwen_style() -> PreTrainedTokenizerFast:
    """wisp train's tokenizer: Qwen2's split regex (newlines apart from indentation)."""
    return train_tokenizer([CODE] * 20, 600)


def _table(tokenizer) -> TokenTable:
    special = set(tokenizer.all_special_tokens)
    return TokenTable(tuple(vocab_bytes(tokenizer.get_vocab(), special)))


class _Encoder:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))


# (prefix, lead) per tokenizer family: the last token is backed off when a longer one extends it.
SMOLLM2_CASES = [
    ("def add(a, b):\n    ", "\n    "),  # newline and indentation are one token
    ("def add(a, b):\n", "\n"),
    ("    return self.x + sel", " sel"),
    ("x = os.path.", "."),
    ("print(add(i, i ", " "),
]


@pytest.mark.parametrize("family", [_starcoder_style, _qwen_style])
def test_lead_is_the_last_token_when_a_longer_one_extends_it(family) -> None:
    """At every cut point of a file: the prefix splits into kept + lead, and the lead is the
    last token of the prefix's own encoding, backed off exactly when some token extends it."""
    tokenizer = family()
    table, encoder = _table(tokenizer), _Encoder(tokenizer)
    leads = set()
    for end in range(1, len(CODE)):
        prefix = CODE[:end]
        kept, lead = split_lead(prefix, encoder, table)
        assert kept + lead == prefix
        last = table.piece(encoder.encode(prefix)[-1])
        assert (lead.encode() == last) is table.extendable(last)
        leads.add(lead)
    assert "" in leads and len(leads) > 10


@pytest.mark.slow
@pytest.mark.parametrize(("prefix", "lead"), SMOLLM2_CASES)
def test_smollm2_leads(smollm2_tokenizer, prefix: str, lead: str) -> None:
    table = _table(smollm2_tokenizer)
    assert split_lead(prefix, _Encoder(smollm2_tokenizer), table)[1] == lead


def test_no_lead_when_no_longer_token_extends_the_last() -> None:
    tokenizer = _starcoder_style()
    table = _table(tokenizer)
    prefix = "x = 1\n" + "<|endoftext|>"  # a special token is never backed off
    assert split_lead(prefix, _Encoder(tokenizer), table) == (prefix, "")


def test_decode_loop_is_held_to_the_lead(x_model: Path) -> None:
    """The `x` model would write `x` at once; held to the lead it first re-types it."""
    backend = load_backend(LoadOptions(str(x_model)))
    request = GenerationRequest(
        "<|fim_suffix|><|fim_prefix|>a =<|fim_middle|>",
        SamplingParams(max_new_tokens=3),
        lead=" ",
    )
    [cand] = backend.generate(request, threading.Event()).candidates
    assert backend.decode(cand.token_ids).startswith(" ")
    assert cand.text == "xxx" and cand.lead == " "  # three tokens past the lead, lead unshown
    assert len(cand.token_ids) == 4


def test_without_a_lead_the_decode_loop_is_unchanged(random_model: Path) -> None:
    """Where healing backs nothing off, the answer is what it was without healing."""
    healed = load_backend(LoadOptions(str(random_model)))
    plain = load_backend(LoadOptions(str(random_model)))
    plain.healing = None
    request = GenerationRequest(
        "<|fim_suffix|><|fim_prefix|>def f(x):<|fim_middle|>",
        SamplingParams(max_new_tokens=8, num_candidates=3, temperature=1.0, seed=5),
    )
    ours, theirs = (b.generate(request, threading.Event()).candidates for b in (healed, plain))
    assert [(c.text, c.token_ids) for c in ours] == [(c.text, c.token_ids) for c in theirs]
    assert [c.logprobs for c in ours] == [c.logprobs for c in theirs]
