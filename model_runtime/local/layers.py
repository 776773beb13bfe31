"""One decoder layer's weights as the lean forward pass (`fast_llama`) holds them: the query,
key and value projections fused into one matrix and gate/up into another, as owned copies in
the weights' dtype or packed into blocks (`packed`) for the native decode step."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from model_runtime.local.packed import KINDS, LayerWeights, Packed

Weight = torch.Tensor | Packed


class Layer:
    """One decoder layer's weights: projections fused, owned copies in `dtype` or packed."""

    def __init__(
        self, layer: Any, dtype: torch.dtype, packing: str | None, heads: tuple[int, int, int]
    ) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.norm_in = own(layer.input_layernorm, "weight", layer.input_layernorm.weight.dtype)
        self.norm_mid = own(
            layer.post_attention_layernorm, "weight", layer.post_attention_layernorm.weight.dtype
        )
        self.eps_in = eps_of(layer.input_layernorm)
        self.eps_mid = eps_of(layer.post_attention_layernorm)
        self.qkv: Weight
        self.out: Weight
        self.gate_up: Weight
        self.down: Weight
        if packing is None:
            self.qkv, self.qkv_bias = _fuse(dtype, attn.q_proj, attn.k_proj, attn.v_proj)
            self.out = own(attn.o_proj, "weight", dtype)
            self.gate_up, _ = _fuse(dtype, mlp.gate_proj, mlp.up_proj)
            self.down = own(mlp.down_proj, "weight", dtype)
            return
        kind = KINDS[packing]
        self.qkv, self.qkv_bias = _pack(kind, attn.q_proj, attn.k_proj, attn.v_proj)
        self.out, _ = _pack(kind, attn.o_proj)
        self.gate_up, _ = _pack(kind, mlp.gate_proj, mlp.up_proj)
        self.down, _ = _pack(kind, mlp.down_proj)
        self.bind_native(kind, heads)

    def bind_native(self, kind: int, heads: tuple[int, int, int]) -> None:
        """Point the native decode step at this layer's packed weights and norms."""
        assert isinstance(self.qkv, Packed) and isinstance(self.out, Packed)
        assert isinstance(self.gate_up, Packed) and isinstance(self.down, Packed)
        self.native = LayerWeights(
            kind,
            self.qkv.pointer,
            self.out.pointer,
            self.gate_up.pointer,
            self.down.pointer,
            None if self.qkv_bias is None else self.qkv_bias.data_ptr(),
            self.norm_in.data_ptr(),
            self.norm_mid.data_ptr(),
            self.eps_in,
            self.eps_mid,
            self.down.shape[0],
            self.down.shape[1],
            *heads,
        )


def eps_of(norm: Any) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def _fuse(dtype: torch.dtype, *linears: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight in `dtype` (and one bias) for several linear layers; they keep views of it."""
    weight = torch.cat([linear.weight.detach().to(dtype) for linear in linears])
    biases = [linear.bias for linear in linears]
    bias = torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
    row = 0
    for linear in linears:
        rows = linear.weight.shape[0]
        linear.weight = nn.Parameter(weight[row : row + rows], requires_grad=False)
        if bias is not None:
            linear.bias = nn.Parameter(bias[row : row + rows], requires_grad=False)
        row += rows
    return weight, bias


def own(module: Any, name: str, dtype: torch.dtype) -> torch.Tensor:
    """A copy of `module.name` in `dtype` that the module now holds instead of the original."""
    tensor = getattr(module, name).detach().to(dtype, copy=True)
    setattr(module, name, nn.Parameter(tensor, requires_grad=False))
    return tensor


def _pack(kind: int, *linears: Any) -> tuple[Packed, torch.Tensor | None]:
    """Several linear layers' weights stacked and packed (and their biases, stacked)."""
    weight = torch.cat([linear.weight.detach() for linear in linears])
    biases = [linear.bias for linear in linears]
    bias = torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
    return Packed(weight, kind), bias
