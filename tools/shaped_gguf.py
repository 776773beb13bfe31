"""GGUF files at real models' exact shapes, with random weights, for speed and memory tests.

Speed and memory depend on a model's shapes and tensor types, not on its values, so this writes
what llama.cpp's converter would write for a preset -- tensor names, shapes, metadata and a valid
byte-level BPE vocabulary of the model's size -- with weights drawn from N(0, 0.02²) (norms are
ones). Nothing is downloaded.

    python tools/shaped_gguf.py --preset qwen2.5-coder-1.5b --type Q8_0 --out q.gguf
    python tools/shaped_gguf.py --preset qwen2.5-coder-1.5b --type Q4_K_M --out q.gguf
    python tools/shaped_gguf.py --preset smollm2-135m --type F16 --layers 2 --out tiny.gguf

F16, Q8_0, Q4_0 and Q4_1 are written directly, every 2-D weight in that type (llama-quantize
would keep the output matrix finer) and 1-D ones in F32, tensor by tensor in row chunks, so
memory stays far below the file size. K-quants are made the way real files are: an F16 file
first, then llama.cpp's `llama_model_quantize` (from llama-cpp-python, in the venv that
.ci/install-llama-server makes) picks each tensor's type.

The vocabulary: the 256 GPT-2 byte symbols, then the first merges a byte-level BPE learns from
this Python's standard library (so code encodes to a realistic number of tokens), then unique
synthetic merges (a word-start token joined to a word piece), then the control tokens.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
import sysconfig
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType
from tqdm import tqdm

STD = 0.02
CHUNK_ELEMENTS = 1 << 24  # rows generated at once: 64 MiB of float32
LEARNED_MERGES = 32_000
CORPUS_CHARS = 8_000_000
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_SPECIALS = (
    "<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>",
)  # fmt: skip
DEEPSEEK_SPECIALS = (
    "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<｜end▁of▁sentence｜>",
    "<｜begin▁of▁sentence｜>",
)  # fmt: skip
CACHE = Path(os.environ.get("WISP_CI_CACHE") or Path.home() / ".cache" / "wisp-ci")
DEFAULT_LLAMA_PYTHON = os.environ.get("WISP_LLAMA_SERVER_PYTHON") or str(
    CACHE / "llama-server" / "bin" / "python"
)


@dataclass(frozen=True)
class Preset:
    """A model's shapes and tokenizer settings, from its config.json."""

    arch: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    context: int
    rope_theta: float
    rms_eps: float
    tied: bool
    qkv_bias: bool
    pre: str
    specials: tuple[str, ...]
    bos: str
    eos: str
    add_bos: bool = False
    rope_linear: float | None = None  # linear RoPE scaling factor

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


QWEN_0_5B = Preset(
    arch="qwen2", layers=24, hidden=896, heads=14, kv_heads=2, ffn=4864, vocab=151936,
    context=32768, rope_theta=1e6, rms_eps=1e-6, tied=True, qkv_bias=True, pre="qwen2",
    specials=QWEN_SPECIALS, bos="<|endoftext|>", eos="<|endoftext|>",
)  # fmt: skip
PRESETS = {
    "qwen2.5-coder-0.5b": QWEN_0_5B,
    "qwen2.5-coder-1.5b": replace(QWEN_0_5B, layers=28, hidden=1536, heads=12, ffn=8960),
    "qwen2.5-coder-3b": replace(QWEN_0_5B, layers=36, hidden=2048, heads=16, ffn=11008),
    "qwen2.5-coder-7b": replace(
        QWEN_0_5B, layers=28, hidden=3584, heads=28, kv_heads=4, ffn=18944, vocab=152064,
        tied=False,
    ),
    "smollm2-135m": Preset(
        arch="llama", layers=30, hidden=576, heads=9, kv_heads=3, ffn=1536, vocab=49152,
        context=8192, rope_theta=100000, rms_eps=1e-5, tied=True, qkv_bias=False, pre="smollm",
        specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<file_sep>"),
        bos="<|endoftext|>", eos="<|endoftext|>",
    ),
    "deepseek-coder-1.3b": Preset(
        arch="llama", layers=24, hidden=2048, heads=16, kv_heads=16, ffn=5504, vocab=32256,
        context=16384, rope_theta=100000, rms_eps=1e-6, tied=False, qkv_bias=False,
        pre="deepseek-coder", specials=DEEPSEEK_SPECIALS, bos="<｜begin▁of▁sentence｜>",
        eos="<｜end▁of▁sentence｜>", add_bos=True, rope_linear=4.0,
    ),
}  # fmt: skip
DIRECT = {
    "F16": (Q.F16, LlamaFileType.MOSTLY_F16),
    "Q8_0": (Q.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "Q4_0": (Q.Q4_0, LlamaFileType.MOSTLY_Q4_0),
    "Q4_1": (Q.Q4_1, LlamaFileType.MOSTLY_Q4_1),
}
K_QUANTS = {
    "Q4_K_S": LlamaFileType.MOSTLY_Q4_K_S,
    "Q4_K_M": LlamaFileType.MOSTLY_Q4_K_M,
    "Q5_K_M": LlamaFileType.MOSTLY_Q5_K_M,
    "Q6_K": LlamaFileType.MOSTLY_Q6_K,
}


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in GPT-2's vocabulary order."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(rest))]


@functools.cache
def learned_merges() -> tuple[tuple[str, str], ...]:
    """Merges a byte-level BPE learns from the standard library's Python (deterministic)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    root = Path(sysconfig.get_paths()["stdlib"])
    texts, size = [], 0
    for path in sorted(root.rglob("*.py")):
        if size >= CORPUS_CHARS or {"test", "tests", "site-packages"} & set(path.parts):
            continue
        texts.append(path.read_text(encoding="utf-8", errors="replace"))
        size += len(texts[-1])
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )  # fmt: skip
    trainer = trainers.BpeTrainer(
        vocab_size=256 + LEARNED_MERGES,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    merges = json.loads(bpe.to_str())["model"]["merges"]  # ["a", "b"] pairs, or "a b"
    return tuple((a, b) for a, b in (m.split(" ") if isinstance(m, str) else m for m in merges))


def build_vocab(preset: Preset) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges: exactly `preset.vocab` unique tokens."""
    normal = preset.vocab - len(preset.specials)
    tokens = byte_symbols()
    known = set(tokens)
    merges: list[str] = []

    def add(a: str, b: str) -> None:
        if len(tokens) < normal and a + b not in known:
            tokens.append(a + b)
            known.add(a + b)
            merges.append(f"{a} {b}")

    for a, b in learned_merges():
        add(a, b)
    heads = [t for t in tokens[256:] if t.startswith("Ġ") and t[1:].isalpha()]
    pieces = [t for t in tokens[256:] if t.isalpha() and "Ġ" not in t]
    for piece in pieces:
        if len(tokens) >= normal:
            break
        for head in heads:
            add(head, piece)
    if len(tokens) < normal:
        raise ValueError(f"could only make {len(tokens)} of {normal} tokens")
    types = [gguf.TokenType.NORMAL] * normal + [gguf.TokenType.CONTROL] * len(preset.specials)
    return tokens + list(preset.specials), [int(t) for t in types], merges


def tensor_plan(p: Preset, layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """llama.cpp's tensor names with numpy shapes (rows, columns): ne reversed."""
    kv = p.kv_heads * p.head_dim
    plan: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (p.vocab, p.hidden))]
    for i in range(layers):
        blk = f"blk.{i}"
        plan.append((f"{blk}.attn_norm.weight", (p.hidden,)))
        for name, rows in (("attn_q", p.hidden), ("attn_k", kv), ("attn_v", kv)):
            plan.append((f"{blk}.{name}.weight", (rows, p.hidden)))
            if p.qkv_bias:
                plan.append((f"{blk}.{name}.bias", (rows,)))
        plan += [
            (f"{blk}.attn_output.weight", (p.hidden, p.hidden)),
            (f"{blk}.ffn_norm.weight", (p.hidden,)),
            (f"{blk}.ffn_gate.weight", (p.ffn, p.hidden)),
            (f"{blk}.ffn_up.weight", (p.ffn, p.hidden)),
            (f"{blk}.ffn_down.weight", (p.hidden, p.ffn)),
        ]
    plan.append(("output_norm.weight", (p.hidden,)))
    if not p.tied:
        plan.append(("output.weight", (p.vocab, p.hidden)))
    return plan


def add_metadata(w: gguf.GGUFWriter, name: str, p: Preset, layers: int, ftype: int) -> None:
    w.add_name(f"{name} (random weights)")
    w.add_file_type(ftype)
    if ftype not in (LlamaFileType.ALL_F32, LlamaFileType.MOSTLY_F16):
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_block_count(layers)
    w.add_context_length(p.context)
    w.add_embedding_length(p.hidden)
    w.add_feed_forward_length(p.ffn)
    w.add_head_count(p.heads)
    w.add_head_count_kv(p.kv_heads)
    w.add_rope_freq_base(p.rope_theta)
    w.add_layer_norm_rms_eps(p.rms_eps)
    if p.arch == "llama":
        w.add_vocab_size(p.vocab)
        w.add_rope_dimension_count(p.head_dim)
    if p.rope_linear:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(p.rope_linear)
    tokens, types, merges = build_vocab(p)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(p.pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index(p.bos))
    w.add_eos_token_id(tokens.index(p.eos))
    w.add_add_bos_token(p.add_bos)


def tensor_type(shape: tuple[int, ...], qtype: Q) -> Q:
    return qtype if len(shape) == 2 else Q.F32


def tensor_nbytes(shape: tuple[int, ...], qtype: Q) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * size


def tensor_chunks(
    name: str, shape: tuple[int, ...], qtype: Q, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """The tensor's bytes, a few rows at a time: norms are ones, the rest N(0, STD²)."""
    if "norm" in name:
        yield np.ones(shape, np.float32)
        return
    rows, cols = (1, shape[0]) if len(shape) == 1 else shape
    step = max(1, CHUNK_ELEMENTS // cols)
    for start in range(0, rows, step):
        values = rng.standard_normal((min(step, rows - start), cols), np.float32)
        values *= STD
        yield gguf.quants.quantize(values, qtype)


def write_gguf(
    out: Path, name: str, p: Preset, layers: int, qtype: Q, ftype: int, seed: int
) -> None:
    """Write the file tensor by tensor: header and tensor infos first, then each tensor's data."""
    writer = gguf.GGUFWriter(out, p.arch)
    add_metadata(writer, name, p, layers, ftype)
    plan = [(n, shape, tensor_type(shape, qtype)) for n, shape in tensor_plan(p, layers)]
    for n, shape, t in plan:
        writer.add_tensor_info(n, shape, np.dtype(np.float32), tensor_nbytes(shape, t), raw_dtype=t)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    assert writer.fout is not None
    fout = writer.fout[0]
    rng = np.random.default_rng(seed)
    total = sum(tensor_nbytes(s, t) for _, s, t in plan)
    with tqdm(total=total, desc=f"writing {out.name}", unit="B", unit_scale=True) as bar:
        for n, shape, t in plan:
            writer.write_padding(fout, fout.tell())  # every tensor starts aligned
            for chunk in tensor_chunks(n, shape, t, rng):
                chunk.tofile(fout)
                bar.update(chunk.nbytes)
            writer.write_padding(fout, tensor_nbytes(shape, t))
    writer.close()


QUANTIZE_SCRIPT = """
import sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params))
"""


def llama_quantize(python: str, src: Path, out: Path, ftype: int, n_tensors: int) -> None:
    """Quantize with llama.cpp in a subprocess, following its per-tensor log lines."""
    cmd = [python, "-c", QUANTIZE_SCRIPT, str(src), str(out), str(int(ftype))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tail: deque[str] = deque(maxlen=20)
    assert proc.stderr is not None
    with tqdm(total=n_tensors, desc=f"quantizing {out.name}", unit="tensor") as bar:
        for line in proc.stderr:
            tail.append(line)
            if re.match(r"\[\s*\d+/\s*\d+\]", line):  # "[  12/ 339] blk.1.attn_q.weight ..."
                bar.update()
    if proc.wait() != 0:
        sys.exit(f"llama_model_quantize failed ({proc.returncode}):\n{''.join(tail)}")


def tensor_types(path: Path) -> Counter[str]:
    """How many tensors of each type the file holds, read by wisp's own GGUF reader (the `gguf`
    package's GGUFReader takes seconds to wrap a 150k-token vocabulary in numpy views)."""
    from model_runtime.local.gguf_file import GgufFile

    return Counter(info.type_name for info in GgufFile(path).tensors.values())


def summary(out: Path, started: float) -> str:
    types = ", ".join(f"{name} {count}" for name, count in tensor_types(out).most_common())
    size = out.stat().st_size
    return (
        f"{out}: {size / 2**30:.2f} GiB ({size} bytes); {types}; {time.monotonic() - started:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS), help="model shapes")
    parser.add_argument("--type", required=True, choices=[*DIRECT, *K_QUANTS], help="weight type")
    parser.add_argument("--out", required=True, type=Path, help="the GGUF file to write")
    parser.add_argument("--layers", type=int, help="override the layer count (quick tests)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the weights")
    parser.add_argument(
        "--llama-python",
        default=DEFAULT_LLAMA_PYTHON,
        help="Python with llama_cpp, for K-quants (default: $WISP_LLAMA_SERVER_PYTHON or the "
        "venv of .ci/install-llama-server)",
    )
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    layers = args.layers or preset.layers
    started = time.monotonic()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.type in DIRECT:
        qtype, ftype = DIRECT[args.type]
        write_gguf(args.out, args.preset, preset, layers, qtype, ftype, args.seed)
    else:
        if not Path(args.llama_python).is_file():
            sys.exit(
                f"{args.llama_python} not found: K-quants need llama-cpp-python; run "
                "`bash .ci/install-llama-server` (quick once its wheel is cached)"
            )
        # F16, not Q8_0: llama.cpp quantizes from F16/F32 without needing allow_requantize.
        f16 = args.out.with_name(f".{args.out.name}.f16.tmp")
        try:
            write_gguf(f16, args.preset, preset, layers, Q.F16, LlamaFileType.MOSTLY_F16, args.seed)
            n_tensors = len(tensor_plan(preset, layers))
            llama_quantize(args.llama_python, f16, args.out, K_QUANTS[args.type], n_tensors)
        finally:
            f16.unlink(missing_ok=True)
    print(summary(args.out, started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
