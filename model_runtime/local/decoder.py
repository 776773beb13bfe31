"""The forward pass of Llama-shaped decoders, with a key/value cache that grows in place.

transformers' own forward is general; for a small model on two CPU cores its general parts
cost more than the arithmetic. This forward runs the same weights with fewer, larger
operations: one product for the query, key and value projections and one for the gate and up
projections, a cache preallocated in steps and written in place, and grouped-query attention
without repeating the keys. Weights in GGUF blocks (`blocks.Blocks`) run a decode step or a
short chunk through native code, a layer at a time (`kernels/layer.c`).

Here, in order: `Decoder` (built from a GGUF file by `gguf_model`, or from a transformers model
by `Decoder.from_transformers`; `forward`: a decode step or a short chunk in native code for
weights in blocks, `_layers` and `_attention` through torch otherwise), `Rotary` (the angles of
rotary embeddings from their frequencies), `linear` (products with narrowed or block weights)
and `unsupported` (why a transformers model lacks the expected parts). `probes` holds the
load-time checks against transformers' forward and the timings that choose the weights' form;
`kv_cache.GrowingKv` the cache.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model_runtime.local.blocks import NATIVE_ROWS, Q8_0, Blocks, KernelError, library
from model_runtime.local.kv_cache import GrowingKv
from model_runtime.local.layers import Layer, Weight, eps_of, own

log = logging.getLogger(__name__)

# Products with at most this many rows run in the narrow weight dtype (see `linear`).
NARROW_ROWS = 4
# Chunks of up to this many new positions run through the native decode layer with block
# weights; longer ones through torch's attention over the widened cache.
NATIVE_CHUNK = 16
_MODEL_TYPES = {"llama", "mistral", "qwen2"}


@dataclass(frozen=True)
class Heads:
    """The attention's shape, and how its rotation pairs the weights of a head."""

    heads: int
    kv_heads: int
    dim: int
    pairs: bool = False  # neighbouring weights rotate together (GGUF's llama files)


class Decoder:
    """The forward pass of a Llama-shaped causal LM (see the module docstring).

    With weights in blocks (`packing` names their types) the decode step runs in native code;
    otherwise the projections are tensors in `weight_dtype` and run through torch.
    """

    def __init__(
        self,
        embed: Weight,
        lm_head: Weight,
        layers: list[Layer],
        final_norm: torch.Tensor,
        final_eps: float,
        rotary: Any,
        heads: Heads,
        packing: str | None = None,
    ) -> None:
        self.embed, self.lm_head, self.layers = embed, lm_head, layers
        self.final_norm, self.final_eps, self.rotary = final_norm, final_eps, rotary
        self.dtype: torch.dtype = final_norm.dtype  # of activations, norms and the cache
        first = layers[0].qkv if layers else embed
        self.weight_dtype = self.dtype if isinstance(first, Blocks) else first.dtype
        self.packing = packing
        if packing is not None and self.dtype != torch.float32:
            raise KernelError(f"weights in blocks take fp32 activations, not {self.dtype}")
        self.heads, self.kv_heads, self.head_dim = heads.heads, heads.kv_heads, heads.dim
        self.pairs = heads.pairs
        self.scale = self.head_dim**-0.5
        if packing is not None:
            for layer in layers:
                layer.bind_native(heads)

    @classmethod
    def from_transformers(
        cls,
        model: Any,
        weight_dtype: torch.dtype | None = None,
        packing: str | None = None,
    ) -> Decoder:
        """The pass over a transformers model's weights, which it replaces with its own copies
        (projections in `weight_dtype`), one layer at a time. The model's own forward keeps
        working while the weights keep the activations' dtype.

        With `packing` ("q4" or "q8") the projections are rounded into blocks instead, the
        embeddings into Q8_0 blocks, and the model's modules keep their weights until `release`
        lets them go.
        """
        config, inner = model.config, model.model
        dtype = inner.norm.weight.dtype
        weight_dtype = weight_dtype or dtype
        if packing is not None and dtype != torch.float32:
            raise KernelError(f"weights in blocks take fp32 activations, not {dtype}")
        tied = model.lm_head.weight is inner.embed_tokens.weight
        embed: Weight
        lm_head: Weight
        if packing is not None:
            embed = Blocks.quantize(inner.embed_tokens.weight, Q8_0)
            lm_head = embed if tied else Blocks.quantize(model.lm_head.weight, Q8_0)
        else:
            embed = own(inner.embed_tokens, "weight", weight_dtype)
            if tied:
                model.lm_head.weight = inner.embed_tokens.weight
                lm_head = embed
            else:
                lm_head = own(model.lm_head, "weight", weight_dtype)
        heads = int(config.num_attention_heads)
        shape = Heads(
            heads,
            int(getattr(config, "num_key_value_heads", None) or heads),
            int(getattr(config, "head_dim", None) or config.hidden_size // heads),
        )
        layers = [Layer.from_transformers(layer, weight_dtype, packing) for layer in inner.layers]
        final_norm = own(inner.norm, "weight", dtype)
        return cls(
            embed, lm_head, layers, final_norm, eps_of(inner.norm), inner.rotary_emb, shape, packing
        )

    def widen_in(self, dtype: torch.dtype) -> None:
        """Multiply products of many rows (prefill) in `dtype`, for weights in blocks."""
        for layer in self.layers:
            for weight in (layer.qkv, layer.out, layer.gate_up, layer.down):
                if isinstance(weight, Blocks):
                    weight.wide = dtype
        for weight in (self.embed, self.lm_head):
            if isinstance(weight, Blocks):
                weight.wide = dtype

    @property
    def prefill_dtype(self) -> torch.dtype:
        """The dtype of prefill products and attention: bf16 after `widen_in(bf16)`."""
        first = self.layers[0].qkv if self.layers else None
        return first.wide if isinstance(first, Blocks) else self.dtype

    def release(self, model: Any) -> None:
        """Empty the weights of `model`'s linear and embedding modules: the blocks are used.

        The model's own forward cannot run after this.
        """
        if self.packing is None:
            return
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                module.weight = nn.Parameter(module.weight.new_empty(0), requires_grad=False)

    def new_cache(self, batch: int) -> GrowingKv:
        """An empty cache. With weights in blocks it holds half floats: half the bytes for a decode
        step to read and for memory to keep, next to products that round activations to 8 bits."""
        dtype = torch.float16 if self.packing else self.dtype
        return GrowingKv(
            len(self.layers), batch, self.kv_heads, self.head_dim, self.final_norm, dtype
        )

    def turn_keys(self, keys: torch.Tensor, shift: int) -> torch.Tensor:
        """Cached keys (rotated for their positions) as they would be `shift` positions later:
        rotary embeddings compose, so turning by the distance moved is enough."""
        angles = shift * self.rotary.inv_freq.to(keys.device, torch.float32)
        both = torch.cat((angles, angles))
        return _rotate(keys.float(), both.cos(), both.sin(), self.pairs).to(keys.dtype)

    def forward(
        self, ids: torch.Tensor, cache: GrowingKv | None, logits_to_keep: int = 0
    ) -> tuple[GrowingKv, torch.Tensor]:
        """Logits of the last `logits_to_keep` positions of `ids` (all when 0), cache extended."""
        batch, count = ids.shape
        cache = cache if cache is not None else self.new_cache(batch)
        start = cache.length
        end = start + count
        cache.reserve(end)
        if isinstance(self.embed, Blocks):
            hidden = self.embed.widen(ids)
        else:
            hidden = F.embedding(ids, self.embed).to(self.dtype)
        positions = torch.arange(start, end, device=ids.device).unsqueeze(0)
        cos, sin = self.rotary(hidden, positions)
        if self.packing is not None and count == 1:
            self._native_step(hidden, cos[0, 0].contiguous(), sin[0, 0].contiguous(), cache)
        elif self.packing is not None and batch == 1 and count <= NATIVE_CHUNK:
            # A short chunk (the new characters of a keystroke, a draft to check): its rows are
            # positions of one sequence, each attending to the half-float cache in native code.
            rows = hidden.view(count, -1)
            self._native_step(rows, cos[0].contiguous(), sin[0].contiguous(), cache, True)
        else:
            cache.unshare()  # torch's attention reads each row's own copy of every position
            hidden = self._layers(hidden, cos.unsqueeze(1), sin.unsqueeze(1), cache)
        cache.length = end
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return cache, linear(_rms_norm(hidden, self.final_norm, self.final_eps), self.lm_head)

    def _native_step(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: GrowingKv,
        sequence: bool = False,
    ) -> None:
        """All layers in native code, `hidden` ([rows, width]) updated in place: one new position
        per sequence of the batch, or with `sequence` new positions in a row of sequence 0."""
        step = cache.keys.stride(0) * cache.keys.element_size()
        keys, values = cache.keys.data_ptr(), cache.values.data_ptr()
        threads, lib = torch.get_num_threads(), library()
        for index, layer in enumerate(self.layers):
            lib.wisp_decode_layer(
                ctypes.byref(layer.native),
                hidden.data_ptr(),
                hidden.shape[0],
                cos.data_ptr(),
                sin.data_ptr(),
                keys + index * step,
                values + index * step,
                cache.keys.shape[3],
                cache.length,
                cache.shared,
                self.scale,
                threads,
                int(sequence),
            )

    def _layers(
        self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: GrowingKv
    ) -> torch.Tensor:
        """All layers through torch's operations; returns the new hidden states.

        The residual stream stays in `hidden`'s dtype. With block weights widened to bf16 for
        prefill (AMX), what goes into and comes out of each product stays bf16 too: the products
        round their outputs to bf16 anyway, and converting every one back and forth cost a
        fifth of the prefill."""
        batch, count = hidden.shape[:2]
        act = self.prefill_dtype if batch * count > NATIVE_ROWS else hidden.dtype
        group = self.heads // self.kv_heads
        mask = _causal_mask(count, cache.length, group, hidden.device, act)
        for index, layer in enumerate(self.layers):
            hidden = hidden + self._attention(layer, hidden, cos, sin, cache, index, mask, act)
            x = _rms_norm(hidden, layer.norm_mid, layer.eps_mid).to(act)
            gate, up = linear(x, layer.gate_up).chunk(2, dim=-1)
            hidden = hidden + linear(F.silu(gate) * up, layer.down)
        return hidden

    def _attention(
        self,
        layer: Layer,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: GrowingKv,
        index: int,
        mask: torch.Tensor | None,
        act: torch.dtype,
    ) -> torch.Tensor:
        batch, count, _ = hidden.shape
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        x = _rms_norm(hidden, layer.norm_in, layer.eps_in).to(act)
        qkv = linear(x, layer.qkv, layer.qkv_bias).view(batch, count, heads + 2 * kv_heads, dim)
        # Queries and keys are the first heads of one view: they rotate together (in the
        # dtype of cos and sin).
        qk, v = qkv.split((heads + kv_heads, kv_heads), dim=2)
        qk = _rotate(qk.transpose(1, 2), cos, sin, self.pairs)
        start, end = cache.length, cache.length + count
        cache.keys[index, :, :, start:end] = qk[:, heads:]
        cache.values[index, :, :, start:end] = v.transpose(1, 2)
        keys, values = cache.keys[index, :, :, :end], cache.values[index, :, :, :end]
        # The query heads that share a key/value head become rows of one attention call.
        q = qk[:, :heads].reshape(batch, kv_heads, heads // kv_heads * count, dim)
        if mask is None:  # one new position: plain products beat the fused kernel's set-up
            keys, values = keys.to(qk.dtype), values.to(qk.dtype)  # from half floats
            scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(self.scale)
            out = torch.matmul(torch.softmax(scores, dim=-1), values)
        else:
            # In the products' dtype: where bf16 multiplies fastest (AMX), attention over a
            # long prompt would otherwise cost as much as the products.
            q, keys, values = q.to(act), keys.to(act), values.to(act)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale)
        out = out.view(batch, heads, count, dim).transpose(1, 2).to(act)
        return linear(out.reshape(batch, count, heads * dim), layer.out)


class Rotary:
    """Rotary embeddings' angles from their frequencies, as transformers' module computes them
    (cos and sin of each position, the halves repeated; `scaling` multiplies both)."""

    def __init__(self, inv_freq: torch.Tensor, scaling: float = 1.0) -> None:
        self.inv_freq = inv_freq.float()
        self.scaling = scaling

    def __call__(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        freqs = positions[..., None].float() * self.inv_freq.to(x.device)
        both = torch.cat((freqs, freqs), dim=-1)
        return (both.cos() * self.scaling).to(x.dtype), (both.sin() * self.scaling).to(x.dtype)


def linear(x: torch.Tensor, weight: Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`x @ weight.T + bias` in `x`'s dtype, for weights kept in a narrower dtype or in blocks.

    A few rows (a decode step) multiply in the weights' dtype: reading half the bytes is what
    makes them faster. More rows (a prefill chunk) widen the weights first: a CPU without
    native bf16 arithmetic multiplies many rows far faster in fp32, and the widening costs
    little next to the product.
    """
    if isinstance(weight, Blocks):
        out = weight.linear(x)
        return out if bias is None else out + bias
    if weight.dtype == x.dtype:
        return F.linear(x, weight, bias)
    rows = x.numel() // x.shape[-1]
    if rows > NARROW_ROWS:
        return F.linear(x, weight.to(x.dtype), bias)
    out = F.linear(x.to(weight.dtype), weight).to(x.dtype)
    return out if bias is None else out + bias


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pairs: bool) -> torch.Tensor:
    half = x.shape[-1] // 2
    if pairs:  # (x0, x1) turn together, then (x2, x3), ...: angles as the halves' are
        even, odd = x[..., 0::2], x[..., 1::2]
        cos, sin = cos[..., :half], sin[..., :half]
        return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _causal_mask(
    count: int, start: int, group: int, device: Any, dtype: torch.dtype
) -> torch.Tensor | None:
    """What each new position adds to its scores of the cached ones (0, or -inf for a later
    position), rows repeated per query group; in `dtype`, so attention need not convert it in
    every layer. None for a single new token: it attends to everything cached."""
    if count == 1:
        return None
    rows = torch.arange(start, start + count, device=device).unsqueeze(1)
    later = torch.arange(start + count, device=device).unsqueeze(0) > rows
    mask = torch.zeros(later.shape, dtype=dtype, device=device).masked_fill_(later, float("-inf"))
    return mask.repeat(group, 1)


def unsupported(model: Any) -> str | None:
    """Why the lean forward cannot run `model`, or None when it can."""
    config = model.config
    if getattr(config, "model_type", None) not in _MODEL_TYPES:
        return f"model type {getattr(config, 'model_type', '?')!r}"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    if getattr(config, "mlp_bias", False):
        return "biases in the MLP"
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or not all(hasattr(inner, part) for part in needed):
        return "an unexpected module layout"
    for layer in inner.layers:
        attn: Any = getattr(layer, "self_attn", None)
        mlp: Any = getattr(layer, "mlp", None)
        parts = (
            (attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
            (mlp, ("gate_proj", "up_proj", "down_proj")),
            (layer, ("input_layernorm", "post_attention_layernorm")),
        )
        if any(
            owner is None or not all(hasattr(owner, p) for p in names) for owner, names in parts
        ):
            return "an unexpected layer layout"
        if attn.o_proj.bias is not None:
            return "a bias on the attention output"
        if any(isinstance(getattr(attn, n, None), nn.Module) for n in ("q_norm", "k_norm")):
            return "query/key norms"
    return None
