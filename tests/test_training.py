"""Training pipeline: tokenizer round trips, FIM examples, packing, and a tiny end-to-end run."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest

from model_runtime.training import command
from model_runtime.training.fim import FimConfig, make_example, psm_example, spm_example
from model_runtime.training.packing import IGNORE, line_chunk_spans, pack
from model_runtime.training.tokenizer import SPECIAL_TOKENS, train_tokenizer

SAMPLES = [
    "def f(x):\n        return x  # eight spaces\n",
    "if a:\r\n\tb = 1\r\n\t\tc = 2\r\n",
    "s = 'héllo wörld 🎉🐍 日本語'\n\n\n    \n",
    "x = [1, 2, 3]  ;;  {}\t\t\n" * 3,
    "",
    "   leading spaces and trailing   ",
]

CODE = '''import os


class Point:
    """A point."""

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm(self):
        return (self.x ** 2 + self.y ** 2) ** 0.5


def main():
    for name in os.listdir("."):
        if name.endswith(".py"):
            print(name)
'''


@pytest.fixture(scope="module")
def tokenizer():
    texts = [CODE * 3, *SAMPLES, "        x = 1\n" * 50, *[" " * 8] * 50]
    return train_tokenizer(texts, vocab_size=400)


@pytest.mark.parametrize("text", SAMPLES)
def test_tokenizer_round_trips_code_exactly(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_indentation_run_is_one_token(tokenizer):
    assert len(tokenizer.tokenize(" " * 8)) == 1
    # The regex gives the last space to the word, as Qwen2's does.
    assert tokenizer.tokenize("        x") == ["ĠĠĠĠĠĠĠ", "Ġx"]


def test_special_tokens_are_single_ids_and_no_bos(tokenizer):
    for token in SPECIAL_TOKENS:
        assert tokenizer.encode(token) == [tokenizer.convert_tokens_to_ids(token)]
    assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == "<|endoftext|>"
    assert tokenizer.convert_ids_to_tokens(tokenizer.pad_token_id) == "<|fim_pad|>"


def test_psm_and_spm_layouts():
    args = ("json/decoder.py", "def f(", "x", "):\n")
    header = "<|file_sep|>json/decoder.py\n"
    assert psm_example(*args) == (
        header + "<|fim_prefix|>def f(<|fim_suffix|>):\n<|fim_middle|>x<|endoftext|>"
    )
    assert spm_example(*args) == (
        header + "<|fim_suffix|>):\n<|fim_prefix|>def f(<|fim_middle|>x<|endoftext|>"
    )


def test_fim_rate_zero_gives_plain_text():
    example = make_example("a.py", CODE, random.Random(0), FimConfig(rate=0.0))
    assert example == "<|file_sep|>a.py\n" + CODE + "<|endoftext|>"


def test_fim_example_for_fixed_seed():
    example = make_example("a.py", "ab\ncd\n", random.Random(3), FimConfig(rate=1.0))
    expected = "<|fim_suffix|>d\n<|fim_prefix|>ab<|fim_middle|>\nc<|endoftext|>"
    assert example == "<|file_sep|>a.py\n" + expected


@pytest.mark.parametrize("seed", range(50))
def test_fim_examples_keep_all_text(seed):
    example = make_example("p.py", CODE, random.Random(seed), FimConfig(rate=1.0))
    body = example.removeprefix("<|file_sep|>p.py\n").removesuffix("<|endoftext|>")
    if body.startswith("<|fim_prefix|>"):
        prefix, rest = body.removeprefix("<|fim_prefix|>").split("<|fim_suffix|>")
        suffix, middle = rest.split("<|fim_middle|>")
    else:
        suffix, rest = body.removeprefix("<|fim_suffix|>").split("<|fim_prefix|>")
        prefix, middle = rest.split("<|fim_middle|>")
    assert prefix + middle + suffix == CODE


def test_line_chunks_cover_text_and_end_at_newlines():
    text = "".join(f"line {i}\n" for i in range(40))
    starts = list(range(0, len(text), 3))  # pretend every 3 characters is a token
    spans = line_chunk_spans(text, starts, budget=20)
    assert "".join(text[a:b] for a, b in spans) == text
    assert all(text[b - 1] == "\n" for _, b in spans)


def test_pack_keeps_examples_whole_and_masks_padding():
    blocks = pack([[1] * 5, [2] * 4, [3] * 3, [4] * 2], seq_len=8, pad_id=0)
    assert all(len(b.ids) == 8 for b in blocks)
    assert sorted(t for b in blocks for t in b.ids if t) == [1] * 5 + [2] * 4 + [3] * 3 + [4] * 2
    for block in blocks:
        assert [i for i, label in zip(block.ids, block.labels, strict=True) if label == IGNORE] == [
            i for i in block.ids if i == 0
        ]


def _run_tiny(corpus: Path, out: Path, tokens: int) -> dict:
    parser = argparse.ArgumentParser()
    command.configure(parser)
    args = parser.parse_args(
        ["--corpus", str(corpus), "--out", str(out), "--preset", "tiny", "--tokens", str(tokens)]
    )
    assert command.run(args) == 0
    return json.loads((out / "training_log.json").read_text())


def test_tiny_training_lowers_loss_and_saves_a_loadable_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus = tmp_path / "corpus"
    (corpus / "pkg").mkdir(parents=True)
    (corpus / "site-packages").mkdir()
    for i in range(6):
        (corpus / "pkg" / f"m{i}.py").write_text(CODE.replace("Point", f"Point{i}") * 2)
    (corpus / "pkg" / "copy.py").write_text(CODE.replace("Point", "Point0") * 2)
    (corpus / "site-packages" / "third.py").write_text("held_out = True\n")
    out = tmp_path / "model"

    log = _run_tiny(corpus, out, tokens=15000)

    assert log["train_files"] + log["validation_files"] == 6  # deduplicated, site-packages skipped
    assert log["tokens_seen"] >= 15000
    first_loss = 5.78  # ln(320): what an untrained model scores
    assert log["final_val_loss"] < first_loss - 1.0

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.fim_template == "wisp"
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.convert_tokens_to_ids("<|fim_pad|>")
    assert tok.decode(tok.encode(CODE)) == CODE
    assert (out / "model.safetensors").exists()
    assert (out / "checkpoint" / "state.pt").exists()


class _VocabOnly:
    """Just what `build_config` reads from a tokenizer."""

    eos_token_id, pad_token_id = 0, 4

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_shipped_presets_fit_the_40_mb_budget(name):
    import torch
    from transformers import LlamaForCausalLM

    from model_runtime.training.model import build_config, parameter_count
    from model_runtime.training.presets import PRESETS

    preset = PRESETS[name]
    with torch.device("meta"):
        model = LlamaForCausalLM(build_config(preset, _VocabOnly(preset.vocab_size)))
    bytes_per_weight = 2 if preset.bf16 else 4
    assert parameter_count(model) * bytes_per_weight <= 40 * 1024 * 1024
