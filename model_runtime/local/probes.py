"""Load-time checks and choices for the forward pass (`decoder`).

For a transformers model: whether the pass computes what transformers computes (`probe`,
`agrees_with`), whether and how the weights pack into blocks (`unpackable`,
`round_to_packing`), which form runs decode fastest (`fastest_weights`). For any weights in
blocks: which dtype runs prefill fastest on this machine (`faster_prefill`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model_runtime.local.blocks import KINDS, Q8_0, Blocks, KernelError, drop_scratch, library
from model_runtime.local.decoder import Decoder, linear
from model_runtime.local.layers import Weight

log = logging.getLogger(__name__)
BLOCK = 32  # weights per block of the types a transformers model is packed into


def probe(model: Any, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of a fixed probe and transformers' logits for them (before `Decoder`)."""
    vocab = int(model.config.vocab_size)
    device = model.lm_head.weight.device
    ids = ((torch.arange(length + 1, device=device) * 7919 + 11) % vocab).unsqueeze(0)
    with torch.inference_mode():
        return ids, model(ids, use_cache=False).logits.float()


def agrees_with(fast: Decoder, ids: torch.Tensor, want: torch.Tensor) -> bool:
    """Whether the lean pass gives `want` (see `probe`) for the probe, as a prefill and a step.

    With weights as loaded the logits must match to 1e-3 of their scale. Narrower weights
    (bf16 keeps 8 bits of mantissa) get 5e-2; packed ones 0.15, since their products also round
    the activations to 8 bits, and on SmolLM2-135M that alone moves the largest logit by 8%.
    Both must also point the same way at every position (cosine at least 0.999): on that model
    two swapped projections give 0.27 of the scale and a cosine of 0.994, a swapped layer 0.45
    and 0.95.
    """
    with torch.inference_mode():
        cache, head = fast.forward(ids[:, :-1], None)
        _, step = fast.forward(ids[:, -1:], cache)
    got = torch.cat([head, step], dim=1).float()
    error = (got - want).abs().max().item() / max(1.0, want.abs().max().item())
    exact = fast.weight_dtype == fast.dtype and fast.packing is None
    share = 1e-3 if exact else 0.15 if fast.packing else 5e-2
    cosine = 1.0 if exact else F.cosine_similarity(got, want, dim=-1).min().item()
    if not (error <= share and cosine >= 0.999):
        log.warning(
            "the lean forward pass disagrees with transformers (error %.2g of the scale, "
            "cosine %.4f); not used",
            error,
            cosine,
        )
        return False
    return True


def unpackable(model: Any) -> str | None:
    """Why the model's weights cannot be packed into blocks here, or None when they can."""
    try:
        library()
    except KernelError as exc:
        return str(exc)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Embedding) and module.weight.shape[1] % BLOCK:
            return f"{name} has rows of {module.weight.shape[1]} weights, not blocks of {BLOCK}"
    return None


def round_to_packing(model: Any, packing: str) -> None:
    """Round the model's weights, in place, to what packing them keeps (see `Decoder`).

    Then transformers' forward computes with the same weights as the packed pass, and the probe
    measures only how the two compute, not what packing loses.
    """
    with torch.no_grad():
        for layer in model.model.layers:
            for module in (*_projections(layer.self_attn), *_projections(layer.mlp)):
                module.weight.copy_(Blocks.quantize(module.weight.detach(), KINDS[packing]).widen())
        for module in {id(m): m for m in (model.model.embed_tokens, model.lm_head)}.values():
            module.weight.copy_(Blocks.quantize(module.weight.detach(), Q8_0).widen())


def _projections(block: Any) -> list[nn.Linear]:
    return [m for m in block.children() if isinstance(m, nn.Linear)]


def faster_prefill(fast: Decoder, rows: int = 128, rounds: int = 3) -> torch.dtype:
    """bf16 when it multiplies prefill-shaped products of weights in blocks (widened per product)
    at least 1.5 times as fast as fp32 here, as on CPUs with AMX; else fp32.

    bf16 rounds the activations of the prompt to 8 bits of mantissa, as a decode step rounds
    them to 8-bit integers, so only a clear gain is worth it.
    """
    layer = fast.layers[0]
    weights = [w for w in (layer.qkv, layer.gate_up, layer.down) if isinstance(w, Blocks)]
    if not weights:
        return torch.float32
    inputs = [torch.randn(rows, w.shape[1]) for w in weights]

    def best(dtype: torch.dtype) -> float:
        times = []
        with torch.inference_mode():
            for _ in range(rounds):
                started = time.perf_counter()
                for x, w in zip(inputs, weights, strict=True):
                    w.wide = dtype
                    w.linear(x)
                times.append(time.perf_counter() - started)
        return min(times)

    fp32, bf16 = best(torch.float32), best(torch.bfloat16)
    drop_scratch()
    log.info("prefill-shaped products: fp32 %.1f ms, bf16 %.1f ms", fp32 * 1e3, bf16 * 1e3)
    return torch.bfloat16 if bf16 * 1.5 <= fp32 else torch.float32


def fastest_weights(model: Any, choices: list[str], layers: int = 8, rounds: int = 3) -> str:
    """Which of `choices` ("none", "bf16", "q4", "q8") runs decode-shaped products fastest here.

    Times one row through the projections of the first `layers` layers (more bytes than a CPU
    cache holds, as in a real step) in each form. Another form must beat the weights as loaded
    ("none") by 10% to be chosen.
    """
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    wide = [
        getattr(getattr(layer, part), name).weight.detach()
        for layer in model.model.layers[:layers]
        for part, name in ((p, n) for n in names for p in ("self_attn", "mlp"))
        if hasattr(getattr(layer, part), name)
    ]
    activations = model.model.norm.weight.dtype
    inputs = [torch.ones(1, 1, w.shape[1], dtype=activations, device=w.device) for w in wide]

    def weights(choice: str) -> list[Weight]:
        if choice in KINDS:
            return [Blocks.quantize(w, KINDS[choice]) for w in wide]
        return [w.to(torch.bfloat16) for w in wide] if choice == "bf16" else list(wide)

    def best(choice: str) -> float:
        form, times = weights(choice), []
        with torch.inference_mode():
            for _ in range(rounds):
                started = time.perf_counter()
                for x, w in zip(inputs, form, strict=True):
                    linear(x, w)
                times.append(time.perf_counter() - started)
        return min(times)

    seconds = {choice: best(choice) for choice in choices}
    log.info(
        "decode-shaped products: %s",
        ", ".join(f"{choice} {s * 1e3:.1f} ms" for choice, s in seconds.items()),
    )
    fastest = min(seconds, key=seconds.__getitem__)
    return fastest if seconds[fastest] < seconds.get("none", float("inf")) * 0.9 else "none"
