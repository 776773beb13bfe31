"""A GGUF file's model run from its own blocks: the shape from the metadata, the weights mapped.

Every matrix stays in the block type the file gives it (`blocks.Blocks`, a part per
projection); norms and biases, a few kilobytes a layer, are read into floats. llama files
(SmolLM2, CodeLlama, DeepSeek-Coder, Mistral and Codestral: llama.cpp's converter writes them
all as llama) hold their query and key rows interleaved, so their rotation turns neighbouring
weights together (`decoder.Heads.pairs`); qwen2 files (Qwen2.5-Coder) keep transformers' order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model_runtime.local.blocks import Blocks, library
from model_runtime.local.decoder import Decoder, Heads, Rotary
from model_runtime.local.gguf_file import GgufFile
from model_runtime.local.layers import Layer

# Architectures the native pass runs: whether their rotation pairs neighbouring weights.
ARCHITECTURES = {"llama": True, "qwen2": False}
_FLOATS = {0: torch.float32, 1: torch.float16, 30: torch.bfloat16}


@dataclass(frozen=True)
class Shape:
    """What the metadata says of the model's shape."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    rope_base: float
    rope_dim: int
    rope_linear: float  # positions are divided by this (linear rope scaling), 1 without
    context: int | None


def shape_of(file: GgufFile) -> Shape:
    """The model's shape from `file`'s metadata (KeyError for a size it lacks)."""
    hidden, heads = int(file.get("embedding_length")), int(file.get("attention.head_count"))
    head_dim = int(file.get("attention.key_length") or hidden // heads)
    scaling = str(file.get("rope.scaling.type", "none"))
    context = file.get("context_length")
    return Shape(
        layers=int(file.get("block_count")),
        hidden=hidden,
        heads=heads,
        kv_heads=int(file.get("attention.head_count_kv") or heads),
        head_dim=head_dim,
        eps=float(file.get("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_base=float(file.get("rope.freq_base", 10000.0)),
        rope_dim=int(file.get("rope.dimension_count") or head_dim),
        rope_linear=float(file.get("rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0,
        context=int(context) if context else None,
    )


def unsupported(file: GgufFile) -> str | None:
    """Why the native pass cannot run `file`, or None when it can."""
    arch = file.architecture
    if arch not in ARCHITECTURES:
        return f"architecture {arch!r} (the native pass runs {', '.join(sorted(ARCHITECTURES))})"
    try:
        shape = shape_of(file)
    except (KeyError, TypeError, ValueError) as exc:
        return f"metadata without a usable size ({exc})"
    scaling = str(file.get("rope.scaling.type", "none"))
    if scaling not in ("none", "linear"):
        return f"rope scaling {scaling!r}"
    if shape.rope_dim != shape.head_dim:
        return f"rotation of {shape.rope_dim} of {shape.head_dim} dimensions"
    lib = library()
    for name in _names(shape.layers):
        info = file.tensors.get(name)
        if info is None:
            return f"no tensor {name}"
        if info.type not in _FLOATS and lib.wisp_row_bytes(info.type, info.shape[-1]) < 0:
            return f"tensor {name} of block type {info.type_name}"
    return None


def load_decoder(file: GgufFile) -> Decoder:
    """The forward pass over `file`'s blocks (check `unsupported` first)."""
    shape = shape_of(file)
    lib = library()

    def matrix(*names: str) -> Blocks:
        infos = [file.tensors[name] for name in names]
        parts = [(info.type, file.blocks(info.name), info.shape[0]) for info in infos]
        return Blocks(parts, infos[0].shape[-1], lib)

    def floats(name: str) -> torch.Tensor | None:
        info = file.tensors.get(name)
        if info is None:
            return None
        return file.blocks(name).view(_FLOATS[info.type]).float().clone()

    layers = []
    for index in range(shape.layers):
        at = f"blk.{index}."
        biases = [b for p in "qkv" if (b := floats(f"{at}attn_{p}.bias")) is not None]
        layers.append(
            Layer(
                qkv=matrix(*(f"{at}attn_{p}.weight" for p in "qkv")),
                qkv_bias=torch.cat(biases) if len(biases) == 3 else None,
                out=matrix(f"{at}attn_output.weight"),
                gate_up=matrix(f"{at}ffn_gate.weight", f"{at}ffn_up.weight"),
                down=matrix(f"{at}ffn_down.weight"),
                norm_in=_required(floats(f"{at}attn_norm.weight")),
                norm_mid=_required(floats(f"{at}ffn_norm.weight")),
                eps_in=shape.eps,
                eps_mid=shape.eps,
            )
        )
    embed = matrix("token_embd.weight")
    lm_head = matrix("output.weight") if "output.weight" in file.tensors else embed
    exponents = torch.arange(0, shape.head_dim, 2, dtype=torch.float32) / shape.head_dim
    inv_freq = 1.0 / (shape.rope_base**exponents) / shape.rope_linear
    heads = Heads(shape.heads, shape.kv_heads, shape.head_dim, ARCHITECTURES[file.architecture])
    return Decoder(
        embed,
        lm_head,
        layers,
        _required(floats("output_norm.weight")),
        shape.eps,
        Rotary(inv_freq),
        heads,
        packing=block_types(file),
    )


def block_types(file: GgufFile) -> str:
    """The block types of the file's matrices, most weights first: "Q4_K+Q6_K+F32"."""
    weights: dict[str, int] = {}
    for info in file.tensors.values():
        count = 1
        for size in info.shape:
            count *= size
        weights[info.type_name] = weights.get(info.type_name, 0) + count
    return "+".join(sorted(weights, key=lambda name: -weights[name]))


def _names(layers: int) -> list[str]:
    parts = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate"]
    parts += ["ffn_up", "ffn_down"]
    names = ["token_embd.weight", "output_norm.weight"]
    return names + [f"blk.{i}.{part}.weight" for i in range(layers) for part in parts]


def _required(tensor: torch.Tensor | None) -> torch.Tensor:
    if tensor is None:
        raise KeyError("a norm weight is missing")
    return tensor
