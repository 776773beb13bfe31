"""A GGUF file's model run from its own blocks, against transformers' reading of the same file.

transformers dequantizes every tensor to fp32 (and puts llama files' query and key rows back in
its own order); the native pass runs the blocks as stored. Their logits must agree within the
rounding of activations to 8 bits in decode-shaped products, on every architecture and block
type, for a prefill, a decode step and a short chunk.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType as T
from test_decoder import fast_logits
from tiny_gguf import write_tiny_gguf
from transformers import AutoModelForCausalLM

from model_runtime.local import LoadOptions, gguf_model, load_backend
from model_runtime.local.gguf_file import GgufFile
from model_runtime.local.gguf_tokenizer import build_tokenizer

IDS = (torch.arange(60) * 37 % 256).unsqueeze(0)


def reference(path: Path) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    with torch.inference_mode():
        return model(IDS, use_cache=False).logits.float()


def native(path: Path, splits: list[int]) -> torch.Tensor:
    return fast_logits(gguf_model.load_decoder(GgufFile(path)), IDS, splits).float()


def agree(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    """The largest error as a share of the logits' scale, and the least cosine per position."""
    error = ((got - want).abs().max() / want.abs().max()).item()
    return error, F.cosine_similarity(got[0], want[0], dim=-1).min().item()


# A prefill of 40 positions (products widened), a chunk of 8 and one of 3 (native, through the
# half-float cache), then single steps: every path of the pass.
SPLITS = [40, 48, 51, 52, 53, 54]


# Mistral, Codestral, CodeLlama and DeepSeek-Coder files are llama files with an output matrix
# of their own: llama.cpp's converter writes them so.
@pytest.mark.parametrize(("arch", "tied"), [("llama", True), ("qwen2", True), ("llama", False)])
@pytest.mark.parametrize("kind", [T.Q8_0, T.Q4_K, T.Q6_K])
def test_each_architecture_matches_transformers(
    tmp_path: Path, arch: str, tied: bool, kind: T
) -> None:
    path = write_tiny_gguf(tmp_path / f"{arch}.gguf", arch, kind, tied=tied, kv_heads=1 + tied)
    error, cosine = agree(native(path, SPLITS), reference(path))
    assert error < 0.05 and cosine > 0.998, (error, cosine)


@pytest.mark.parametrize("kind", [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q5_K])
def test_each_block_type_matches_transformers(tmp_path: Path, kind: T) -> None:
    """The other types, in a qwen2 file whose embeddings are Q6_K, as a Q4_K_M file's are."""
    path = write_tiny_gguf(tmp_path / "m.gguf", "qwen2", kind, head_kind=T.Q6_K, seed=int(kind))
    error, cosine = agree(native(path, SPLITS), reference(path))
    assert error < 0.05 and cosine > 0.998, (error, cosine)


def test_a_mistake_in_the_pass_is_caught(tmp_path: Path) -> None:
    """The comparison can fail: rotating llama's heads by halves instead of by pairs does."""
    path = write_tiny_gguf(tmp_path / "llama.gguf", "llama", T.Q8_0)
    want = reference(path)
    pairs = gguf_model.ARCHITECTURES["llama"]
    gguf_model.ARCHITECTURES["llama"] = not pairs
    try:
        error, cosine = agree(native(path, SPLITS), want)
    finally:
        gguf_model.ARCHITECTURES["llama"] = pairs
    assert error > 0.05 or cosine < 0.998


@pytest.mark.parametrize("name", ["m.gguf", "sha256-0123abcd"])  # an Ollama blob: no suffix
def test_an_architecture_it_does_not_run_goes_through_transformers(
    tmp_path: Path, monkeypatch, caplog, name: str
) -> None:
    monkeypatch.setenv("WISP_CACHE_DIR", str(tmp_path / "cache"))
    path = write_tiny_gguf(tmp_path / name, "qwen2", T.Q8_0)
    monkeypatch.delitem(gguf_model.ARCHITECTURES, "qwen2")
    with caplog.at_level(logging.INFO):
        backend = load_backend(LoadOptions(str(path)))
    assert "architecture 'qwen2'" in caplog.text and "through transformers" in caplog.text
    assert backend.model is not None and backend.fast is not None  # transformers' model, lean pass
    assert len(list((tmp_path / "cache" / "tokenizers").iterdir())) == 1  # wisp's, from the file
    assert backend.tokenizer.encode("def f():") == build_tokenizer(GgufFile(path).metadata).encode(
        "def f():"
    )


def test_a_block_type_it_does_not_read_goes_through_transformers(tmp_path: Path, caplog) -> None:
    path = write_tiny_gguf(tmp_path / "m.gguf", "qwen2", T.Q8_0)
    file = GgufFile(path)
    assert gguf_model.unsupported(file) is None
    info = file.tensors["blk.1.ffn_down.weight"]
    monkey = dict(file.tensors)
    monkey[info.name] = type(info)(info.name, 10, info.shape, info.offset, info.nbytes)  # Q2_K
    file.tensors = monkey
    assert gguf_model.unsupported(file) == "tensor blk.1.ffn_down.weight of block type Q2_K"


def test_the_shape_and_the_template_come_from_the_metadata(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WISP_CACHE_DIR", str(tmp_path / "cache"))
    path = write_tiny_gguf(tmp_path / "m.gguf", "qwen2", T.Q4_K, head_kind=T.Q6_K, layers=3)
    backend = load_backend(LoadOptions(str(path)))
    assert backend.model is None and backend.fast is not None
    assert backend.fast.packing == "Q4_K+Q6_K+F32"
    assert len(backend.fast.layers) == 3 and backend.context_window == 4096
    assert backend.template.name == "qwen2.5-coder"  # its fill-in-the-middle tokens


def test_speed_decodes_several_rows_through_the_native_pass(tmp_path: Path) -> None:
    backend = load_backend(LoadOptions(str(write_tiny_gguf(tmp_path / "tiny.gguf"))))
    assert backend.fast is not None and backend.fast.packing is not None
    ids = backend.encode("def add(a, b):\n    return a + b\n")
    for rows in (1, 3):
        prefill, decode = backend.speed(ids, 4, rows)
        assert prefill > 0 and decode > 0
