"""A lean forward pass for Llama-shaped decoders, with a key/value cache that grows in place.

transformers' own forward is general; for a 135M model on two CPU cores its general parts cost
more than the arithmetic. A decode step there runs dozens of small operations per layer, and
its cache grows by concatenation, copying every cached key and value at every step. This
forward runs the same weights with fewer, larger operations: one matrix product for the query,
key and value projections and one for the gate and up projections (wisp's own copies, made one
layer at a time, which the model's modules then hold too, so nothing is stored twice), a cache
preallocated in steps and written in place, and grouped-query attention without repeating the
keys. Rotary embeddings come from the model's own module, so every RoPE variant it supports
is supported here.

`unsupported` says why a model does not have exactly the expected parts, and the loader
checks the result against transformers' forward on a probe (`probe`, `agrees_with`) before
using it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# Cache capacity grows to at least 1.5 times what it held, in multiples of this many positions.
GROWTH_STEP = 256
# Products with at most this many rows run in the narrow weight dtype (see `_linear`).
NARROW_ROWS = 4
_MODEL_TYPES = {"llama", "mistral", "qwen2"}


class GrowingKv:
    """Keys and values of every layer in two preallocated tensors, written in place.

    Shape (layers, batch, key/value heads, capacity, head dim); positions past `length` are
    garbage that the next write overwrites. It offers the parts of transformers' cache
    interface that the decode loop uses: length, crop, and batch repeat/select.
    """

    is_croppable = True

    def __init__(self, layers: int, batch: int, heads: int, head_dim: int, like: torch.Tensor):
        shape = (layers, batch, heads, 0, head_dim)
        self.keys = torch.empty(shape, dtype=like.dtype, device=like.device)
        self.values = torch.empty(shape, dtype=like.dtype, device=like.device)
        self.length = 0

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, max_length: int) -> None:
        """Keep the first `max_length` positions; a negative value drops that many from the end."""
        self.length = max_length if max_length >= 0 else max(0, self.length + max_length)

    def reserve(self, length: int) -> None:
        """Make room for `length` positions, keeping what is cached."""
        capacity = self.keys.shape[3]
        if length <= capacity:
            return
        wanted = max(length, capacity * 3 // 2)
        wanted = -(-wanted // GROWTH_STEP) * GROWTH_STEP
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_empty((*old.shape[:3], wanted, old.shape[4]))
            new[:, :, :, : self.length] = old[:, :, :, : self.length]
            setattr(self, name, new)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.keys = self.keys.repeat_interleave(repeats, dim=1)
        self.values = self.values.repeat_interleave(repeats, dim=1)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.keys = self.keys[:, indices].contiguous()
        self.values = self.values[:, indices].contiguous()


class _Layer:
    """One decoder layer's weights: owned copies, projections fused and in `dtype`."""

    def __init__(self, layer: Any, dtype: torch.dtype) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.norm_in = _own(layer.input_layernorm, "weight", layer.input_layernorm.weight.dtype)
        self.norm_mid = _own(
            layer.post_attention_layernorm, "weight", layer.post_attention_layernorm.weight.dtype
        )
        self.eps_in = _eps(layer.input_layernorm)
        self.eps_mid = _eps(layer.post_attention_layernorm)
        self.qkv, self.qkv_bias = _fuse(dtype, attn.q_proj, attn.k_proj, attn.v_proj)
        self.out = _own(attn.o_proj, "weight", dtype)
        self.gate_up, _ = _fuse(dtype, mlp.gate_proj, mlp.up_proj)
        self.down = _own(mlp.down_proj, "weight", dtype)


class FastLlama:
    """The forward pass of a Llama-shaped causal LM (see the module docstring).

    Building it replaces the model's weights with its own copies (projections in
    `weight_dtype`), one layer at a time: weights that transformers left mapped from the file
    are let go, and with them the file's pages. The model's own forward keeps working while the
    weights keep the activations' dtype; narrower weights are run through this class only.
    """

    def __init__(self, model: Any, weight_dtype: torch.dtype | None = None) -> None:
        config = model.config
        inner = model.model
        self.dtype: torch.dtype = inner.norm.weight.dtype  # of activations, norms and the cache
        self.weight_dtype = weight_dtype or self.dtype
        tied = model.lm_head.weight is inner.embed_tokens.weight
        self.embed = _own(inner.embed_tokens, "weight", self.weight_dtype)
        if tied:
            model.lm_head.weight = inner.embed_tokens.weight
            self.lm_head = self.embed
        else:
            self.lm_head = _own(model.lm_head, "weight", self.weight_dtype)
        self.rotary: Any = inner.rotary_emb
        self.layers = [_Layer(layer, self.weight_dtype) for layer in inner.layers]
        self.final_norm = _own(inner.norm, "weight", self.dtype)
        self.final_eps = _eps(inner.norm)
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        self.scale = self.head_dim**-0.5

    def new_cache(self, batch: int) -> GrowingKv:
        return GrowingKv(len(self.layers), batch, self.kv_heads, self.head_dim, self.final_norm)

    def forward(
        self, ids: torch.Tensor, cache: GrowingKv | None, logits_to_keep: int = 0
    ) -> tuple[GrowingKv, torch.Tensor]:
        """Logits of the last `logits_to_keep` positions of `ids` (all when 0), cache extended."""
        batch, count = ids.shape
        cache = cache if cache is not None else self.new_cache(batch)
        start = cache.length
        end = start + count
        cache.reserve(end)
        hidden = F.embedding(ids, self.embed).to(self.dtype)
        positions = torch.arange(start, end, device=ids.device).unsqueeze(0)
        cos, sin = self.rotary(hidden, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        mask = _causal_mask(count, start, self.heads // self.kv_heads, ids.device)
        for index, layer in enumerate(self.layers):
            hidden = hidden + self._attention(layer, hidden, cos, sin, cache, index, mask)
            x = _rms_norm(hidden, layer.norm_mid, layer.eps_mid)
            gate, up = _linear(x, layer.gate_up).chunk(2, dim=-1)
            hidden = hidden + _linear(F.silu(gate) * up, layer.down)
        cache.length = end
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return cache, _linear(_rms_norm(hidden, self.final_norm, self.final_eps), self.lm_head)

    def _attention(
        self,
        layer: _Layer,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: GrowingKv,
        index: int,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        batch, count, _ = hidden.shape
        x = _rms_norm(hidden, layer.norm_in, layer.eps_in)
        qkv = _linear(x, layer.qkv, layer.qkv_bias)
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        q, k, v = qkv.split((q_size, kv_size, kv_size), dim=-1)
        q = _rotate(q.view(batch, count, self.heads, self.head_dim).transpose(1, 2), cos, sin)
        k = _rotate(k.view(batch, count, self.kv_heads, self.head_dim).transpose(1, 2), cos, sin)
        start, end = cache.length, cache.length + count
        cache.keys[index, :, :, start:end] = k
        cache.values[index, :, :, start:end] = v.view(
            batch, count, self.kv_heads, self.head_dim
        ).transpose(1, 2)
        # The query heads that share a key/value head become rows of one attention call.
        group = self.heads // self.kv_heads
        q = q.reshape(batch, self.kv_heads, group * count, self.head_dim)
        out = F.scaled_dot_product_attention(
            q,
            cache.keys[index, :, :, :end],
            cache.values[index, :, :, :end],
            attn_mask=mask,
            scale=self.scale,
        )
        out = out.view(batch, self.heads, count, self.head_dim).transpose(1, 2)
        return _linear(out.reshape(batch, count, q_size), layer.out)


def _linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`x @ weight.T + bias` in `x`'s dtype, for weights kept in a narrower one.

    A few rows (a decode step) multiply in the weights' dtype: reading half the bytes is what
    makes them faster. More rows (a prefill chunk) widen the weights first: a CPU without
    native bf16 arithmetic multiplies many rows far faster in fp32, and the widening costs
    little next to the product.
    """
    if weight.dtype == x.dtype:
        return F.linear(x, weight, bias)
    rows = x.numel() // x.shape[-1]
    if rows > NARROW_ROWS:
        return F.linear(x, weight.to(x.dtype), bias)
    out = F.linear(x.to(weight.dtype), weight).to(x.dtype)
    return out if bias is None else out + bias


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _causal_mask(count: int, start: int, group: int, device: Any) -> torch.Tensor | None:
    """Which cached positions each new position may attend to, rows repeated per query group.

    None for a single new token: it attends to everything cached.
    """
    if count == 1:
        return None
    rows = torch.arange(start, start + count, device=device).unsqueeze(1)
    allowed = torch.arange(start + count, device=device).unsqueeze(0) <= rows
    return allowed.repeat(group, 1)


def _eps(norm: Any) -> float:
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


def _own(module: Any, name: str, dtype: torch.dtype) -> torch.Tensor:
    """A copy of `module.name` in `dtype` that the module now holds instead of the original."""
    tensor = getattr(module, name).detach().to(dtype, copy=True)
    setattr(module, name, nn.Parameter(tensor, requires_grad=False))
    return tensor


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


def probe(model: Any, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of a fixed probe and transformers' logits for them (before `FastLlama`)."""
    vocab = int(model.config.vocab_size)
    device = model.lm_head.weight.device
    ids = ((torch.arange(length + 1, device=device) * 7919 + 11) % vocab).unsqueeze(0)
    with torch.inference_mode():
        return ids, model(ids, use_cache=False).logits.float()


def agrees_with(fast: FastLlama, ids: torch.Tensor, want: torch.Tensor) -> bool:
    """Whether the lean pass gives `want` (see `probe`) for the probe, as a prefill and a step.

    The tolerance is 1e-3 of the logits' scale with weights as loaded, 5e-2 with narrower
    ones (bf16 keeps 8 bits of mantissa): either way far below what a wrong layout gives.
    """
    with torch.inference_mode():
        cache, head = fast.forward(ids[:, :-1], None)
        _, step = fast.forward(ids[:, -1:], cache)
    got = torch.cat([head, step], dim=1).float()
    error = (got - want).abs().max().item()
    share = 1e-3 if fast.weight_dtype == fast.dtype else 5e-2
    if not error <= share * max(1.0, want.abs().max().item()):
        log.warning("the lean forward pass disagrees with transformers (%.2g); not used", error)
        return False
    return True


def narrow_is_faster(model: Any, dtype: torch.dtype, layers: int = 8, rounds: int = 3) -> bool:
    """Whether decode-shaped products run faster with the projections in `dtype` here.

    Times one row through the projections of the first `layers` layers (more bytes than a CPU
    cache holds, as in a real step) as loaded and as `dtype` copies.
    """
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    wide = [
        getattr(getattr(layer, part), name).weight.detach()
        for layer in model.model.layers[:layers]
        for part, name in ((p, n) for n in names for p in ("self_attn", "mlp"))
        if hasattr(getattr(layer, part), name)
    ]
    narrow = [w.to(dtype) for w in wide]
    activations = model.model.norm.weight.dtype
    inputs = [torch.ones(1, 1, w.shape[1], dtype=activations, device=w.device) for w in wide]

    def best(weights: list[torch.Tensor]) -> float:
        times = []
        with torch.inference_mode():
            for _ in range(rounds):
                started = time.perf_counter()
                for x, w in zip(inputs, weights, strict=True):
                    _linear(x, w)
                times.append(time.perf_counter() - started)
        return min(times)

    wide_s, narrow_s = best(wide), best(narrow)
    log.info(
        "decode-shaped products: %.1f ms wide, %.1f ms in %s", wide_s * 1e3, narrow_s * 1e3, dtype
    )
    return narrow_s < wide_s * 0.9
