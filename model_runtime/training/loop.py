"""The optimisation loop: schedule, batches, evaluation, checkpoints, progress."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import LlamaForCausalLM

from .packing import Block, Position
from .presets import Preset

CHECKPOINT_DIR = "checkpoint"


@dataclass(frozen=True)
class Budget:
    """How long to train: wall-clock seconds or tokens; the schedule follows whichever is set."""

    seconds: float | None = None
    tokens: int | None = None

    def progress(self, elapsed: float, tokens: int) -> float:
        """How much of the budget is used, from 0 to 1."""
        if self.tokens is not None:
            return min(tokens / self.tokens, 1.0)
        assert self.seconds is not None
        return min(elapsed / self.seconds, 1.0)

    @property
    def unit(self) -> str:
        return "tok" if self.tokens is not None else "s"

    @property
    def total(self) -> float:
        return float(self.tokens if self.tokens is not None else self.seconds or 0.0)


@dataclass
class TrainState:
    """Everything about a run's progress that a checkpoint must restore."""

    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    position: Position = field(default_factory=Position)
    history: list[dict] = field(default_factory=list)
    last_train_loss: float = math.nan

    def to_dict(self) -> dict:
        return {**asdict(self), "position": asdict(self.position)}

    @classmethod
    def from_dict(cls, data: dict) -> TrainState:
        return cls(**{**data, "position": Position(**data["position"])})


def lr_at(progress: float, preset: Preset) -> float:
    """Linear warmup, then cosine decay to `min_lr_ratio` of the peak at progress 1."""
    if progress < preset.warmup_fraction:
        return preset.lr * max(progress / preset.warmup_fraction, 1e-3)
    decay = (progress - preset.warmup_fraction) / (1.0 - preset.warmup_fraction)
    floor = preset.lr * preset.min_lr_ratio
    return floor + 0.5 * (preset.lr - floor) * (1.0 + math.cos(math.pi * min(decay, 1.0)))


def make_optimizer(model: torch.nn.Module, preset: Preset) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms)."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": matrices, "weight_decay": preset.weight_decay},
        {"params": vectors, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=preset.lr, betas=(0.9, 0.95), eps=1e-8)


def to_tensors(blocks: Sequence[Block], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([b.ids for b in blocks], dtype=torch.long, device=device)
    labels = torch.tensor([b.labels for b in blocks], dtype=torch.long, device=device)
    return ids, labels


def batches(
    blocks: Iterator[tuple[Position, Block]], size: int
) -> Iterator[tuple[Position, list[Block]]]:
    """Groups of `size` blocks with the position after the last of them."""
    while True:
        taken = [next(blocks) for _ in range(size)]
        yield taken[-1][0], [block for _, block in taken]


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """bf16 autocast on CUDA when asked; full precision otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


@torch.no_grad()
def evaluate(
    model: LlamaForCausalLM,
    blocks: Sequence[Block],
    batch_size: int,
    device: torch.device,
    bf16: bool,
) -> float:
    """Mean loss per predicted token over `blocks`."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        ids, labels = to_tensors(blocks[start : start + batch_size], device)
        with autocast(device, bf16):
            loss = model(input_ids=ids, labels=labels).loss
        predicted = int((labels[:, 1:] != -100).sum())
        total, count = total + float(loss) * predicted, count + predicted
    model.train()
    return total / max(count, 1)


def save_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainState
) -> None:
    """Write the checkpoint beside the old one, then swap, so a crash never leaves half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "state": state.to_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    partial = directory / "state.pt.partial"
    torch.save(payload, partial)
    os.replace(partial, directory / "state.pt")


def load_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> TrainState:
    """Restore model, optimizer and RNG from `directory`; the schedule follows from the state."""
    payload = torch.load(directory / "state.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["torch_rng"])
    return TrainState.from_dict(payload["state"])


@dataclass(frozen=True)
class LoopSettings:
    preset: Preset
    budget: Budget
    batch_size: int
    device: torch.device
    checkpoint_dir: Path


def train(
    model: LlamaForCausalLM,
    optimizer: torch.optim.Optimizer,
    data: Iterator[tuple[Position, list[Block]]],
    validation: Sequence[Block],
    settings: LoopSettings,
    state: TrainState,
) -> TrainState:
    """Step until the budget is spent; evaluate and checkpoint on wall-clock intervals."""
    preset, budget = settings.preset, settings.budget
    model.train()
    started = time.monotonic() - state.elapsed
    last_eval = last_checkpoint = state.elapsed
    losses: list[float] = []
    bar = tqdm(total=budget.total, unit=budget.unit, dynamic_ncols=True, smoothing=0.05)
    bar.update(_bar_value(budget, state))
    window = (time.monotonic(), state.tokens)
    while budget.progress(state.elapsed, state.tokens) < 1.0:
        lr = lr_at(budget.progress(state.elapsed, state.tokens), preset)
        position, blocks = next(data)
        losses.append(_step(model, optimizer, blocks, lr, settings))
        real = sum(sum(1 for label in b.labels if label != -100) for b in blocks)
        state = replace(
            state,
            step=state.step + 1,
            tokens=state.tokens + real,
            elapsed=time.monotonic() - started,
            position=position,
        )
        before = bar.n
        bar.update(_bar_value(budget, state) - before)
        if state.step % 10 == 0:
            now = time.monotonic()
            rate = (state.tokens - window[1]) / max(now - window[0], 1e-9)
            window = (now, state.tokens)
            bar.set_postfix(
                loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}",
                lr=f"{lr:.2e}",
                tok_s=f"{rate:.0f}",
                tokens=state.tokens,
            )
        if state.elapsed - last_eval >= preset.eval_every_s:
            state = _record(model, validation, settings, state, losses)
            losses, last_eval = [], state.elapsed
        if state.elapsed - last_checkpoint >= preset.checkpoint_every_s:
            save_checkpoint(settings.checkpoint_dir, model, optimizer, state)
            last_checkpoint = state.elapsed
    bar.close()
    state = _record(model, validation, settings, state, losses)
    save_checkpoint(settings.checkpoint_dir, model, optimizer, state)
    return state


def _bar_value(budget: Budget, state: TrainState) -> float:
    return float(state.tokens) if budget.tokens is not None else min(state.elapsed, budget.total)


def _step(
    model: LlamaForCausalLM,
    optimizer: torch.optim.Optimizer,
    blocks: list[Block],
    lr: float,
    settings: LoopSettings,
) -> float:
    """One optimiser step on one batch; returns its loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    ids, labels = to_tensors(blocks, settings.device)
    with autocast(settings.device, settings.preset.bf16):
        loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _record(
    model: LlamaForCausalLM,
    validation: Sequence[Block],
    settings: LoopSettings,
    state: TrainState,
    losses: list[float],
) -> TrainState:
    """Evaluate, log, and append the figures to the state's history."""
    bf16 = settings.preset.bf16
    val_loss = evaluate(model, validation, settings.batch_size, settings.device, bf16)
    train_loss = sum(losses) / len(losses) if losses else state.last_train_loss
    entry = {
        "step": state.step,
        "tokens": state.tokens,
        "elapsed_s": round(state.elapsed, 1),
        "train_loss": round(train_loss, 4),
        "val_loss": round(val_loss, 4),
    }
    tqdm.write(f"eval {entry}")
    return replace(state, history=[*state.history, entry], last_train_loss=train_loss)
