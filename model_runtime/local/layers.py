"""One decoder layer's weights as the forward pass (`decoder`) holds them: the query, key and
value projections as one weight and gate/up as another, either tensors (fused into one matrix)
or blocks (`blocks.Blocks`, a part per projection in its own block type) for the native step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from model_runtime.local.blocks import KINDS, Blocks, LayerWeights, Matrix

if TYPE_CHECKING:
    from model_runtime.local.decoder import Heads

Weight = torch.Tensor | Blocks


@dataclass
class Layer:
    """One decoder layer's weights, norms and norm epsilons."""

    qkv: Weight
    qkv_bias: torch.Tensor | None
    out: Weight
    gate_up: Weight
    down: Weight
    norm_in: torch.Tensor
    norm_mid: torch.Tensor
    eps_in: float
    eps_mid: float

    @classmethod
    def from_transformers(cls, layer: Any, dtype: torch.dtype, packing: str | None) -> Layer:
        """The layer's weights as owned copies in `dtype` (the modules hold them too, so nothing
        is stored twice), or rounded into blocks of `packing` ("q4" or "q8")."""
        attn, mlp = layer.self_attn, layer.mlp
        norms = (layer.input_layernorm, layer.post_attention_layernorm)
        norm_in, norm_mid = (own(norm, "weight", norm.weight.dtype) for norm in norms)
        eps = (eps_of(norms[0]), eps_of(norms[1]))
        if packing is None:
            qkv, bias = _fuse(dtype, attn.q_proj, attn.k_proj, attn.v_proj)
            gate_up, _ = _fuse(dtype, mlp.gate_proj, mlp.up_proj)
            out, down = own(attn.o_proj, "weight", dtype), own(mlp.down_proj, "weight", dtype)
            return cls(qkv, bias, out, gate_up, down, norm_in, norm_mid, *eps)
        kind = KINDS[packing]
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        biases = [p.bias for p in projections]
        bias = (
            torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
        )
        return cls(
            _pack(kind, *projections),
            bias,
            _pack(kind, attn.o_proj),
            _pack(kind, mlp.gate_proj, mlp.up_proj),
            _pack(kind, mlp.down_proj),
            norm_in,
            norm_mid,
            *eps,
        )

    def bind_native(self, heads: Heads) -> None:
        """Point the native decode step at this layer's blocks and norms."""
        assert isinstance(self.qkv, Blocks) and isinstance(self.out, Blocks)
        assert isinstance(self.gate_up, Blocks) and isinstance(self.down, Blocks)
        assert len(self.qkv.parts) == 3 and len(self.gate_up.parts) == 2
        self.native = LayerWeights(
            (Matrix * 3)(*self.qkv.matrices),
            self.out.matrices[0],
            (Matrix * 2)(*self.gate_up.matrices),
            self.down.matrices[0],
            None if self.qkv_bias is None else self.qkv_bias.data_ptr(),
            self.norm_in.data_ptr(),
            self.norm_mid.data_ptr(),
            self.eps_in,
            self.eps_mid,
            self.down.shape[0],
            self.down.shape[1],
            heads.heads,
            heads.kv_heads,
            heads.dim,
            int(heads.pairs),
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


def _pack(kind: int, *linears: Any) -> Blocks:
    """Linear layers' weights rounded into blocks of `kind`: a part each, multiplied as one."""
    packed = [Blocks.quantize(linear.weight.detach(), kind) for linear in linears]
    return Blocks([part for weight in packed for part in weight.parts], packed[0].shape[1])
