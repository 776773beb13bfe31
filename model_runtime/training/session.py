"""One training session from start to saved model: wires corpus, tokenizer, data, model and loop."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from .corpus import Corpus, default_root, load_corpus
from .fim import FimConfig
from .loop import (
    CHECKPOINT_DIR,
    Budget,
    LoopSettings,
    TrainState,
    batches,
    load_checkpoint,
    make_optimizer,
    train,
)
from .model import build_model, generation_config, parameter_count
from .packing import HEADER_ROOM, blocks_of, chunk_documents, stream
from .presets import PRESETS, Preset
from .tokenizer import chars_per_token, load_tokenizer, train_tokenizer

log = logging.getLogger(__name__)
DEFAULT_MINUTES = 60.0


def resolve_preset(args: argparse.Namespace) -> Preset:
    """The named preset with the command line's overrides applied."""
    preset = PRESETS[args.preset]
    if args.seq_len:
        preset = replace(preset, seq_len=args.seq_len)
    if args.batch_size:
        preset = replace(preset, batch_size=args.batch_size)
    return preset


def resolve_budget(args: argparse.Namespace) -> Budget:
    if args.tokens is not None:
        return Budget(tokens=args.tokens)
    return Budget(seconds=60.0 * (args.minutes if args.minutes is not None else DEFAULT_MINUTES))


def hardware() -> str:
    """A one-line description of where training ran."""
    if torch.cuda.is_available():
        return f"CUDA {torch.cuda.get_device_name(0)}"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def prepare_tokenizer(
    out: Path, corpus: Corpus, preset: Preset, resume: bool
) -> PreTrainedTokenizerFast:
    """The run's tokenizer: reloaded from `out` when resuming, else trained and saved there."""
    if resume and (out / "tokenizer.json").exists():
        return load_tokenizer(out)
    tokenizer = train_tokenizer((d.text for d in corpus.train), preset.vocab_size)
    tokenizer.save_pretrained(str(out))
    return tokenizer


def train_command(args: argparse.Namespace) -> int:
    """Run `wisp train` as parsed from `args`; returns the exit status."""
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    torch.manual_seed(args.seed)
    preset, budget = resolve_preset(args), resolve_budget(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = out / CHECKPOINT_DIR
    resume = args.resume and (checkpoint_dir / "state.pt").exists()
    if args.resume and not resume:
        log.warning("no checkpoint in %s; starting afresh", checkpoint_dir)
    wall_start = time.time()

    root = args.corpus or default_root()
    corpus = load_corpus(root)
    if not corpus.train:
        print(f"wisp train: no Python files under {root}", file=sys.stderr)
        return 2
    tokenizer = prepare_tokenizer(out, corpus, preset, resume)
    validation_docs = corpus.validation or corpus.train[:1]
    cpt = chars_per_token(tokenizer, [d.text for d in validation_docs])
    fim = FimConfig() if args.fim_rate is None else FimConfig(rate=args.fim_rate)
    budget_tokens = preset.seq_len - HEADER_ROOM
    train_chunks = chunk_documents(corpus.train, tokenizer, budget_tokens)
    validation = blocks_of(
        chunk_documents(validation_docs, tokenizer, budget_tokens),
        tokenizer,
        preset.seq_len,
        random.Random(f"{args.seed}/validation"),
        fim,
    )[: preset.eval_blocks]
    print(
        f"corpus {root}: {len(corpus.train)} train / {len(corpus.validation)} validation files, "
        f"{len(train_chunks)} chunks; vocab {len(tokenizer)}, {cpt:.2f} chars/token",
        file=sys.stderr,
    )

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model: Any = build_model(preset, tokenizer)  # transformers' `.to` confuses mypy
    model.to(device)
    optimizer = make_optimizer(model, preset)
    state = load_checkpoint(checkpoint_dir, model, optimizer) if resume else TrainState()
    print(f"model: {parameter_count(model):,} parameters on {hardware()}", file=sys.stderr)

    data = batches(
        stream(train_chunks, tokenizer, preset.seq_len, args.seed, fim, state.position),
        preset.batch_size,
    )
    settings = LoopSettings(preset, budget, preset.batch_size, device, checkpoint_dir)
    state = train(model, optimizer, data, validation, settings, state)

    if preset.bf16:
        model = model.to(torch.bfloat16)  # halves the shipped weights; CPU loading upcasts
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    generation_config(tokenizer).save_pretrained(str(out))
    summary = {
        "command": sys.argv,
        "preset": asdict(preset),
        "budget": asdict(budget),
        "fim": asdict(fim),
        "seed": args.seed,
        "parameters": parameter_count(model),
        "vocab_size": len(tokenizer),
        "chars_per_token": round(cpt, 3),
        "train_files": len(corpus.train),
        "validation_files": len(corpus.validation),
        "steps": state.step,
        "tokens_seen": state.tokens,
        "train_time_s": round(state.elapsed, 1),
        "session_wall_s": round(time.time() - wall_start, 1),
        "hardware": hardware(),
        "final_train_loss": state.history[-1]["train_loss"],
        "final_val_loss": state.history[-1]["val_loss"],
        "history": state.history,
    }
    (out / "training_log.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"saved model to {out}", file=sys.stderr)
    return 0
