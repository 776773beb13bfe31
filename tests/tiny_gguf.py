"""Tiny GGUF files with random blocks of any type, written as llama.cpp lays them out.

`random_blocks` makes a matrix's blocks of a ggml type with sane scales (random bytes, the half
float scales overwritten with small values), so that kernels can be checked against the `gguf`
package's reference dequantization. `write_tiny_gguf` writes a whole model of an architecture
in such blocks, with a byte-level vocabulary, for the native pass to be checked against
transformers' reading of the same file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

# Byte offsets of the half-float scales in a block of each type (the rest is random bytes), and
# the largest number they multiply: a weight's size is at most the scale times that.
_SCALES = {
    GGMLQuantizationType.Q4_0: ((0,), 8),
    GGMLQuantizationType.Q4_1: ((0, 2), 15),
    GGMLQuantizationType.Q5_0: ((0,), 16),
    GGMLQuantizationType.Q5_1: ((0, 2), 31),
    GGMLQuantizationType.Q8_0: ((0,), 127),
    GGMLQuantizationType.Q4_K: ((0, 2), 63 * 15),
    GGMLQuantizationType.Q5_K: ((0, 2), 63 * 31),
    GGMLQuantizationType.Q6_K: ((208,), 128 * 32),
}
_FLOATS = {
    GGMLQuantizationType.F32: np.float32,
    GGMLQuantizationType.F16: np.float16,
}
CONTROL = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"]


def random_blocks(
    kind: GGMLQuantizationType, rows: int, cols: int, rng: np.random.Generator, size: float = 0.1
) -> np.ndarray:
    """A [rows, cols] matrix in blocks of `kind`, its weights at most about `size`, as uint8
    [rows, bytes per row]."""
    if kind in _FLOATS:
        values = rng.standard_normal((rows, cols)) * size / 3
        return values.astype(_FLOATS[kind]).view(np.uint8)
    if kind == GGMLQuantizationType.BF16:
        bits = (rng.standard_normal((rows, cols)) * size / 3).astype(np.float32).view(np.uint32)
        return (bits >> 16).astype(np.uint16).view(np.uint8)
    block, nbytes = GGML_QUANT_SIZES[kind]
    count = rows * cols // block
    data = rng.integers(0, 256, (count, nbytes), dtype=np.uint8)
    offsets, largest = _SCALES[kind]
    for offset in offsets:
        halves = (rng.uniform(0.2, 1.0, count) * size / largest).astype(np.float16)
        data[:, offset : offset + 2] = halves.view(np.uint8).reshape(count, 2)
    return data.reshape(rows, cols // block * nbytes)


def byte_tokens() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    tokens, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            tokens[byte] = chr(byte)
        else:
            tokens[byte] = chr(256 + extra)
            extra += 1
    return [tokens[b] for b in range(256)]


def write_tiny_gguf(
    path: Path,
    arch: str = "qwen2",
    kind: GGMLQuantizationType = GGMLQuantizationType.Q8_0,
    head_kind: GGMLQuantizationType | None = None,
    hidden: int = 256,
    inter: int = 512,
    heads: int = 4,
    kv_heads: int = 2,
    layers: int = 2,
    tied: bool = True,
    seed: int = 0,
) -> Path:
    """A model of `arch` ("llama" or "qwen2") with all matrices in `kind` (the
    embeddings in `head_kind`, else `kind`), qkv biases for qwen2, a byte-level vocabulary."""
    rng = np.random.default_rng(seed)
    tokens = byte_tokens() + CONTROL
    vocab = len(tokens)
    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(layers)
    writer.add_context_length(4096)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(inter)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2" if arch == "qwen2" else "smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 256 + [3] * len(CONTROL))
    writer.add_token_merges([])
    writer.add_token_scores([0.0] * vocab)
    writer.add_bos_token_id(vocab - len(CONTROL))
    writer.add_eos_token_id(vocab - len(CONTROL))
    dim = hidden // heads

    def matrix(name: str, rows: int, cols: int, form: GGMLQuantizationType = kind) -> None:
        data = random_blocks(form, rows, cols, rng)
        writer.add_tensor(name, data, raw_dtype=form)

    def vector(name: str, size: int, around: float) -> None:
        values = (around + rng.standard_normal(size) * 0.05).astype(np.float32)
        writer.add_tensor(name, values)

    matrix("token_embd.weight", vocab, hidden, head_kind or kind)
    for index in range(layers):
        at = f"blk.{index}."
        vector(at + "attn_norm.weight", hidden, 1.0)
        matrix(at + "attn_q.weight", heads * dim, hidden)
        matrix(at + "attn_k.weight", kv_heads * dim, hidden)
        matrix(at + "attn_v.weight", kv_heads * dim, hidden)
        if arch == "qwen2":
            vector(at + "attn_q.bias", heads * dim, 0.0)
            vector(at + "attn_k.bias", kv_heads * dim, 0.0)
            vector(at + "attn_v.bias", kv_heads * dim, 0.0)
        matrix(at + "attn_output.weight", hidden, heads * dim)
        vector(at + "ffn_norm.weight", hidden, 1.0)
        matrix(at + "ffn_gate.weight", inter, hidden)
        matrix(at + "ffn_up.weight", inter, hidden)
        matrix(at + "ffn_down.weight", hidden, inter)
    vector("output_norm.weight", hidden, 1.0)
    if not tied:
        matrix("output.weight", vocab, hidden, head_kind or kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
