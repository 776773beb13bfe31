"""Named model sizes and training settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """A model shape plus the optimisation settings that go with it."""

    name: str
    vocab_size: int
    hidden_size: int
    layers: int
    heads: int
    intermediate_size: int
    seq_len: int
    batch_size: int
    lr: float
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.02
    weight_decay: float = 0.1
    eval_every_s: float = 300.0
    eval_blocks: int = 64
    checkpoint_every_s: float = 300.0
    bf16: bool = False


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        # Sized for 2 CPU cores: small enough that decoding a token stays well under 10 ms.
        Preset("cpu", 8192, 256, 6, 4, 768, seq_len=512, batch_size=8, lr=2e-3),
        # ~19M parameters, so the bf16 weights it ships stay under 40 MB.
        Preset(
            "gpu",
            8192,
            384,
            9,
            6,
            1024,
            seq_len=1024,
            batch_size=64,
            lr=1.5e-3,
            bf16=True,
            eval_every_s=120.0,
        ),
        # For tests: a few thousand parameters, trains in seconds.
        Preset(
            "tiny",
            320,
            16,
            1,
            2,
            32,
            seq_len=64,
            batch_size=8,
            lr=1e-2,
            warmup_fraction=0.05,
            weight_decay=0.0,
            eval_blocks=4,
            eval_every_s=1e9,
            checkpoint_every_s=1e9,
        ),
    )
}
