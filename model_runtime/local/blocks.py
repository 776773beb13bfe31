"""Weight matrices in GGUF's block types, multiplied by native code built on this machine.

A decode step reads every weight once, so on a CPU its time is the bytes read: the products
run on the blocks as a GGUF file stores them (4 to 8 bits a weight, in any of the types
`kernels/quants.c` reads), never widened to floats. Products of many rows (prefill) widen one
matrix at a time into a reused buffer and let torch multiply it.

`kernels/*.c` are compiled once per machine with the C compiler (`$CC`, else `cc`) into the
user's cache folder and loaded with ctypes. Without a compiler `library()` says why, and the
loader runs the model through transformers instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

from model_runtime.local.cache_folder import cache_root

log = logging.getLogger(__name__)

KERNELS = Path(__file__).with_name("kernels")
SOURCES = ("quants.c", "layer.c")
# ggml's numbers of the block types wisp packs weights of other models into.
Q4_1, Q8_0 = 3, 8
KINDS = {"q4": Q4_1, "q8": Q8_0}
# Products with more rows than this widen the weights (to fp32, or bf16 where that is faster:
# `Blocks.wide`) and let torch multiply them:
# past it, torch's fp32 kernels beat 8-bit products (measured on AVX2: 3.1 ms against 3.4 ms
# for 64 rows of a 3072x576 matrix; 0.4 ms against 2.0 ms for 8 rows).
NATIVE_ROWS = 32
# Weights of several parts up to this many weights are widened whole for a product of many rows.
WIDEN_WHOLE = 1 << 24
_FLAGS = ("-O3", "-shared", "-fPIC")


class KernelError(RuntimeError):
    """The native kernels could not be built or loaded here."""


@cache
def library() -> ctypes.CDLL:
    """The compiled kernels, built into the cache folder on first use (KernelError if not)."""
    return load_library()


def load_library(arch: str = "native") -> ctypes.CDLL:
    """Build the kernels for `-march=arch` unless the cache holds that build, and load them (not
    cached). Another `arch` than this CPU's builds the kernels' other paths, for tests."""
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        raise KernelError(f"no C compiler ({compiler!r}) to build the kernels")
    source = b"".join((KERNELS / name).read_bytes() for name in (*SOURCES, "wisp.h"))
    key = hashlib.sha256(source + f"{machine()} {arch} {compiler}".encode()).hexdigest()[:16]
    target = cache_root() / "kernels" / f"kernels-{key}.so"
    if not target.is_file():
        _build(compiler, arch, target)
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as exc:
        raise KernelError(f"cannot load {target}: {exc}") from exc
    pointer, size, kind, threads = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int
    lib.wisp_row_bytes.argtypes = [kind, size]
    lib.wisp_row_bytes.restype = size
    lib.wisp_quantize.argtypes = [kind, pointer, size, size, pointer]
    lib.wisp_widen.argtypes = [kind, pointer, pointer, size, size, pointer]
    lib.wisp_widen_bf16.argtypes = [kind, pointer, size, size, pointer]
    matrices = ctypes.POINTER(Matrix)
    lib.wisp_multiply.argtypes = [matrices, ctypes.c_int, size, pointer, size, pointer, threads]
    lib.wisp_decode_layer.argtypes = [
        ctypes.POINTER(LayerWeights),
        *(pointer, size, pointer, pointer, pointer, pointer, size, size, size),
        ctypes.c_float,
        ctypes.c_int,
        ctypes.c_int,
    ]
    return lib


def machine() -> str:
    """What a build depends on besides the source: the CPU's features (`-march=native`)."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()} {flags}"


def _build(compiler: str, arch: str, target: Path) -> None:
    """Compile, with OpenMP where the compiler has it, and move the result into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        errors = ""
        for openmp in (["-fopenmp"], []):
            flags = [*_FLAGS, f"-march={arch}", *openmp]
            sources = [str(KERNELS / name) for name in SOURCES]
            command = [compiler, *flags, *sources, "-o", str(built), "-lm"]
            run = subprocess.run(command, capture_output=True, text=True, check=False)
            if run.returncode == 0:
                how = "" if openmp else " without OpenMP"
                log.info("built the kernels%s: %s", how, target)
                built.replace(target)
                return
            errors = (run.stderr.strip().splitlines() or ["(no message)"])[-1]
    raise KernelError(f"cannot build the kernels with {compiler}: {errors}")


class Matrix(ctypes.Structure):
    """One matrix as `wisp_multiply` takes it: its block type, its blocks and its rows."""

    _fields_ = [("type", ctypes.c_int), ("data", ctypes.c_void_p), ("rows", ctypes.c_int64)]


class LayerWeights(ctypes.Structure):
    """What `wisp_decode_layer` reads of one decoder layer: its matrices, norms and shape."""

    _fields_ = [
        ("qkv", Matrix * 3),
        ("out", Matrix),
        ("gate_up", Matrix * 2),
        ("down", Matrix),
        ("qkv_bias", ctypes.c_void_p),
        ("norm_in", ctypes.c_void_p),
        ("norm_mid", ctypes.c_void_p),
        ("eps_in", ctypes.c_float),
        ("eps_mid", ctypes.c_float),
        *((name, ctypes.c_int64) for name in ("hidden", "inter", "heads", "kv_heads", "dim")),
        ("pairs", ctypes.c_int),
    ]


_scratches = threading.local()


def _scratch(size: int, dtype: torch.dtype) -> torch.Tensor:
    """This thread's buffer of `size` elements of `dtype` (contents undefined): matrices of one
    size take turns in it."""
    buffers = _scratches.__dict__.setdefault("buffers", {})
    if (size, dtype) not in buffers:
        buffers[size, dtype] = torch.empty(size, dtype=dtype)
    return buffers[size, dtype]


def drop_scratch() -> None:
    """Let go of this thread's widening buffers (a load-time probe filled them in both dtypes)."""
    _scratches.__dict__.pop("buffers", None)


class Blocks:
    """Matrices of `cols` columns stacked by rows, each in its own block type: one weight of a
    model (the query, key and value projections of a layer are three parts of one)."""

    def __init__(
        self,
        parts: Sequence[tuple[int, torch.Tensor, int]],
        cols: int,
        lib: ctypes.CDLL | None = None,
    ) -> None:
        """`parts`: (block type, the blocks as uint8, rows) each, kept as they are (not copied)."""
        self.lib = lib or library()
        self.parts = [(kind, blocks.contiguous(), rows) for kind, blocks, rows in parts]
        for kind, blocks, rows in self.parts:
            row_bytes = self.lib.wisp_row_bytes(kind, cols)
            if row_bytes < 0 or blocks.dtype != torch.uint8 or blocks.numel() != rows * row_bytes:
                raise KernelError(f"{blocks.numel()} bytes are not {rows}x{cols} of type {kind}")
        self.shape = (sum(rows for _, _, rows in self.parts), cols)
        # The dtype of products with more than NATIVE_ROWS rows (see `Decoder.widen_in`).
        self.wide = torch.float32
        self.matrices = (Matrix * len(self.parts))(
            *(Matrix(kind, blocks.data_ptr(), rows) for kind, blocks, rows in self.parts)
        )

    @classmethod
    def quantize(cls, weight: torch.Tensor, kind: int, lib: ctypes.CDLL | None = None) -> Blocks:
        """`weight` ([out, in] floats) rounded into blocks of `kind` (Q4_1 or Q8_0)."""
        lib = lib or library()
        rows, cols = weight.shape
        row_bytes = lib.wisp_row_bytes(kind, cols)
        if row_bytes < 0:
            raise KernelError(f"a row of {cols} weights is not a whole number of blocks")
        source = weight.detach().to(torch.float32).contiguous()
        blocks = torch.empty(rows * row_bytes, dtype=torch.uint8)
        lib.wisp_quantize(kind, source.data_ptr(), rows, cols, blocks.data_ptr())
        return cls([(kind, blocks, rows)], cols, lib)

    @property
    def nbytes(self) -> int:
        return sum(blocks.numel() for _, blocks, _ in self.parts)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """`x @ weight.T` in `x`'s dtype (fp32, or bf16 for products widened to bf16)."""
        rows, cols = x.numel() // x.shape[-1], self.shape[1]
        if rows > NATIVE_ROWS:
            # The widened matrix lives only for this product, in a buffer reused across calls:
            # fresh pages for every matrix of every chunk cost more than widening them. A large
            # weight of several parts is widened and multiplied a part at a time, so the buffer
            # stays the size of one part.
            wide = x.to(self.wide)
            if len(self.parts) == 1 or self.shape[0] * cols <= WIDEN_WHOLE:
                buffer = _scratch(self.shape[0] * cols, self.wide).view(self.shape)
                return F.linear(wide, self.widen_into(buffer)).to(x.dtype)
            outs = []
            for kind, blocks, count in self.parts:
                buffer = _scratch(count * cols, self.wide).view(count, cols)
                outs.append(F.linear(wide, self._widen_part(kind, blocks, buffer)))
            return torch.cat(outs, dim=-1).to(x.dtype)
        narrow = x.dtype
        x = x.float().contiguous()
        out = x.new_empty(*x.shape[:-1], self.shape[0])
        self.lib.wisp_multiply(
            self.matrices,
            len(self.parts),
            cols,
            x.data_ptr(),
            rows,
            out.data_ptr(),
            torch.get_num_threads(),
        )
        return out.to(narrow)

    def _widen_part(self, kind: int, blocks: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        rows, cols = out.shape
        if out.dtype == torch.bfloat16:
            self.lib.wisp_widen_bf16(kind, blocks.data_ptr(), rows, cols, out.data_ptr())
        else:
            self.lib.wisp_widen(kind, blocks.data_ptr(), None, rows, cols, out.data_ptr())
        return out

    def widen_into(self, out: torch.Tensor) -> torch.Tensor:
        """The whole matrix written into `out` (its shape, fp32 or bf16), which is returned."""
        row = 0
        for kind, blocks, rows in self.parts:
            self._widen_part(kind, blocks, out[row : row + rows])
            row += rows
        return out

    def widen_bf16(self) -> torch.Tensor:
        """The whole matrix in bf16."""
        return self.widen_into(torch.empty(self.shape, dtype=torch.bfloat16))

    def widen(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The matrix in fp32, or only the rows with indices `rows` (any shape) in that shape;
        picking rows takes a matrix of one part (an embedding)."""
        if rows is None:
            return self.widen_into(torch.empty(self.shape, dtype=torch.float32))
        ((kind, blocks, _),) = self.parts
        indices = rows.reshape(-1).to(torch.int64).contiguous()
        out = torch.empty(indices.numel(), self.shape[1], dtype=torch.float32)
        self.lib.wisp_widen(
            kind,
            blocks.data_ptr(),
            indices.data_ptr(),
            indices.numel(),
            self.shape[1],
            out.data_ptr(),
        )
        return out.view(*rows.shape, self.shape[1])
