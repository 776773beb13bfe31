"""Packed weights kept between starts: the lean forward pass without transformers' model classes.

The first load of a model goes through transformers (`from_pretrained`), packs the weights
(`fast_llama`, `packed`), checks the packed pass against transformers' forward on a probe and
times the forms it could take (`probes`). All of that gives the same answer the next time, on
the same weights, code and CPU, so a load that ended with packed weights saves them here, with
what the probes chose; the next start reads them back and builds `FastLlama` directly. It then
never imports `transformers.modeling_utils` and the modules that come with it (about 100 MB
of the server's memory, and seconds of its start), nor reads the full-width weights.

A saved copy is found by a key over the model folder's files (name, size, modification time),
the load options that shape it, this module's and the kernels' source, torch's version and the
CPU: a change to any of them makes a new copy, and the old one is never read again. A copy that
cannot be read is deleted and the model is loaded the long way. `WISP_PACKED_STORE=0` turns
the store off. Models from a hub id (no local folder) are not stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model_runtime.local import fast_llama, layers, packed
from model_runtime.local.fast_llama import FastLlama
from model_runtime.local.gguf import cache_root
from model_runtime.local.layers import Layer
from model_runtime.local.packed import KINDS, Packed

log = logging.getLogger(__name__)

FORMAT = 1
_FILE = "weights.safetensors"
# RoPE variants whose frequencies change with the sequence length are recomputed by
# transformers' module at run time; those models are not stored.
_DYNAMIC_ROPE = ("dynamic", "longrope")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def enabled() -> bool:
    return os.environ.get("WISP_PACKED_STORE", "1") != "0"


class Rotary:
    """Rotary embeddings from stored frequencies, computed as transformers' module does."""

    def __init__(self, inv_freq: torch.Tensor, scaling: float) -> None:
        self.inv_freq = inv_freq.float()
        self.scaling = scaling

    def __call__(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        freqs = positions[..., None].float() * self.inv_freq.to(x.device)
        both = torch.cat((freqs, freqs), dim=-1)
        return (both.cos() * self.scaling).to(x.dtype), (both.sin() * self.scaling).to(x.dtype)


def place(folder: str, options: dict[str, Any]) -> Path | None:
    """Where the packed copy of the model in `folder` loaded with `options` lives (it may not
    exist yet); None when the store is off or `folder` is not a local folder."""
    where = Path(folder)
    if not enabled() or not where.is_dir():
        return None
    files = sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in where.iterdir()
        if p.is_file() and p.suffix in (".json", ".safetensors")
    )
    sources = (
        b"".join(
            Path(module.__file__ or "").read_bytes() for module in (fast_llama, layers, packed)
        )
        + packed.SOURCE.read_bytes()
        + Path(__file__).read_bytes()
    )
    key = json.dumps(
        [FORMAT, str(where.resolve()), files, options, torch.__version__, packed.machine()]
    ).encode()
    digest = hashlib.sha256(key + sources).hexdigest()[:20]
    return cache_root() / "packed" / f"{where.name}-{digest}"


def save(fast: FastLlama, target: Path) -> None:
    """Write `fast` (packed) to `target`; a failure is logged, never raised."""
    try:
        tensors, meta = _parts(fast)
    except ValueError as exc:
        log.info("packed weights not stored: %s", exc)
        return
    partial: Path | None = None
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, suffix=".partial", delete=False) as handle:
            partial = Path(handle.name)
        save_file(tensors, str(partial), metadata={"wisp": json.dumps(meta)})
        partial.replace(target / _FILE)  # readers see the old file or the whole new one
        log.info("packed weights stored in %s", target)
    except OSError as exc:  # a full disk, a read-only cache folder
        log.warning("cannot store the packed weights in %s: %s", target, exc)
        if partial is not None:
            partial.unlink(missing_ok=True)


def load(target: Path) -> FastLlama | None:
    """The lean forward pass saved in `target`, or None when there is none or it is unreadable
    (an unreadable copy is deleted, with a warning)."""
    path = target / _FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})["wisp"])
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not iterable)
        fast = _build(tensors, meta)
    except Exception as exc:  # a cut or foreign file: any error from safetensors, json or shapes
        log.warning(
            "the stored packed weights %s are unreadable (%s); loading the model", path, exc
        )
        path.unlink(missing_ok=True)
        return None
    log.info("packed weights read from %s", target)
    return fast


def _parts(fast: FastLlama) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    rotary = fast.rotary
    rope = str(getattr(rotary, "rope_type", "default"))
    if fast.packing is None:
        raise ValueError("the weights are not packed")
    if any(kind in rope for kind in _DYNAMIC_ROPE):
        raise ValueError(f"RoPE {rope!r} changes with the sequence length")
    tensors: dict[str, torch.Tensor] = {
        "final_norm": fast.final_norm,
        "inv_freq": rotary.inv_freq.detach().float(),
    }
    shapes: dict[str, list[int]] = {}

    def put(name: str, weight: Any) -> None:
        if not isinstance(weight, Packed):
            raise ValueError(f"{name} is not packed")
        tensors[name] = weight.blocks
        shapes[name] = list(weight.shape)

    put("embed", fast.embed)
    tied = fast.lm_head is fast.embed
    if not tied:
        put("lm_head", fast.lm_head)
    layers = []
    for index, layer in enumerate(fast.layers):
        for part in ("qkv", "out", "gate_up", "down"):
            put(f"{index}.{part}", getattr(layer, part))
        tensors[f"{index}.norm_in"], tensors[f"{index}.norm_mid"] = layer.norm_in, layer.norm_mid
        if layer.qkv_bias is not None:
            tensors[f"{index}.qkv_bias"] = layer.qkv_bias
        layers.append([layer.eps_in, layer.eps_mid])
    wide = fast.layers[0].qkv.wide if isinstance(fast.layers[0].qkv, Packed) else torch.float32
    meta = {
        "format": FORMAT,
        "packing": fast.packing,
        "embed_kind": fast.embed.kind if isinstance(fast.embed, Packed) else None,
        "tied": tied,
        "heads": [fast.heads, fast.kv_heads, fast.head_dim],
        "final_eps": fast.final_eps,
        "layers": layers,
        "shapes": shapes,
        "wide": str(wide).removeprefix("torch."),
        "scaling": float(getattr(rotary, "attention_scaling", 1.0)),
    }
    return {k: v.detach().contiguous() for k, v in tensors.items()}, meta


def _build(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> FastLlama:
    if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')!r}")
    kind, wide = KINDS[meta["packing"]], _DTYPES[meta["wide"]]
    heads, kv_heads, head_dim = (int(n) for n in meta["heads"])

    def unpack(name: str, block_kind: int) -> Packed:
        rows, cols = meta["shapes"][name]
        return Packed.from_blocks(tensors[name], block_kind, (rows, cols), wide)

    fast = FastLlama.__new__(FastLlama)
    fast.dtype = fast.weight_dtype = torch.float32
    fast.packing = meta["packing"]
    fast.embed = unpack("embed", int(meta["embed_kind"]))
    fast.lm_head = fast.embed if meta["tied"] else unpack("lm_head", int(meta["embed_kind"]))
    fast.rotary = Rotary(tensors["inv_freq"], float(meta["scaling"]))
    fast.heads, fast.kv_heads, fast.head_dim = heads, kv_heads, head_dim
    fast.scale = head_dim**-0.5
    fast.layers = []
    for index, (eps_in, eps_mid) in enumerate(meta["layers"]):
        layer = Layer.__new__(Layer)
        layer.norm_in, layer.norm_mid = tensors[f"{index}.norm_in"], tensors[f"{index}.norm_mid"]
        layer.eps_in, layer.eps_mid = float(eps_in), float(eps_mid)
        layer.qkv_bias = tensors.get(f"{index}.qkv_bias")
        layer.qkv, layer.out, layer.gate_up, layer.down = (
            unpack(f"{index}.{part}", kind) for part in ("qkv", "out", "gate_up", "down")
        )
        layer.bind_native(kind, (heads, kv_heads, head_dim))
        fast.layers.append(layer)
    fast.final_norm, fast.final_eps = tensors["final_norm"], float(meta["final_eps"])
    return fast
