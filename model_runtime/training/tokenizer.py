"""A byte-level BPE tokenizer for code, with Qwen2's pre-tokenizer and special tokens."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from model_runtime.templates import TEMPLATES

# Keeps indentation runs and punctuation runs whole; digits are split one by one.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_WISP = TEMPLATES["wisp"]
EOS = "<|endoftext|>"
PAD = "<|fim_pad|>"
FILE_SEP = _WISP.file_header.split("{", 1)[0]
REPO_NAME = "<|repo_name|>"
# Spelled like Qwen2.5-Coder's so llama.cpp recognises them; EOS first gets id 0.
SPECIAL_TOKENS = (
    EOS,
    _WISP.prefix_token,
    _WISP.middle_token,
    _WISP.suffix_token,
    PAD,
    FILE_SEP,
    REPO_NAME,
)


def empty_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE with the Qwen2 split regex and no prefix space."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Learn BPE merges from `texts`; every byte is in the base vocabulary."""
    tokenizer = empty_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return wrap(tokenizer)


def wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The transformers view of `tokenizer`: no BOS, EOS and pad named, FIM tokens special."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (EOS, PAD)],
        add_bos_token=False,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 30,
    )


def chars_per_token(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> float:
    """How many characters one token covers on average over `texts`."""
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    tokens = sum(len(ids) for ids in encoded)
    return sum(len(t) for t in texts) / max(tokens, 1)


def load_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(directory))
