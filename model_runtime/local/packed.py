"""Weights packed in GGUF's 4- and 8-bit blocks, multiplied by native code built on this machine.

A decode step reads every weight once, so on a CPU its time is the bytes read. Q4_1 blocks
(0.625 bytes a weight) read less than a quarter of fp32's bytes and, unlike torch's packed
int4 CPU kernels, multiply with integer instructions AVX2 has. The default model's file holds
exactly these blocks: packing its dequantized weights again gives back the file's numbers.

`kernels/blocks.c` is compiled once per machine with the C compiler (`$CC`, else `cc`) into
the user's cache folder and loaded with ctypes. Without a compiler `library()` says why and the
loader keeps bf16 or fp32 weights.
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
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

from model_runtime.local.gguf import cache_root

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels") / "blocks.c"
BLOCK = 32
Q4_1, Q8_0 = 0, 1
KINDS = {"q4": Q4_1, "q8": Q8_0}
# Products with more rows than this widen the weights (to fp32, or bf16 where that is faster:
# `Packed.wide`) and let torch multiply them:
# past it, torch's fp32 kernels beat 8-bit products (measured on AVX2: 3.1 ms against 3.4 ms
# for 64 rows of a 3072x576 matrix; 0.4 ms against 2.0 ms for 8 rows).
NATIVE_ROWS = 32
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
        raise KernelError(f"no C compiler ({compiler!r}) to build the 4-bit kernels")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + f"{machine()} {arch} {compiler}".encode()).hexdigest()[:16]
    target = cache_root() / "kernels" / f"blocks-{key}.so"
    if not target.is_file():
        _build(compiler, arch, target)
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as exc:
        raise KernelError(f"cannot load {target}: {exc}") from exc
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    lib.wisp_quantize.argtypes = [ctypes.c_int, pointer, size, size, pointer]
    lib.wisp_widen.argtypes = [ctypes.c_int, pointer, pointer, size, size, pointer]
    lib.wisp_widen_bf16.argtypes = [ctypes.c_int, pointer, size, size, pointer]
    kind, threads = ctypes.c_int, ctypes.c_int
    lib.wisp_matmul.argtypes = [kind, pointer, size, size, pointer, size, pointer, threads]
    lib.wisp_block_bytes.argtypes = [ctypes.c_int]
    lib.wisp_decode_layer.argtypes = [
        ctypes.POINTER(LayerWeights),
        *(pointer, size, pointer, pointer, pointer, pointer, size, size),
        ctypes.c_float,
        ctypes.c_int,
        ctypes.c_int,
    ]
    return lib


def machine() -> str:
    """What a build (and a stored packing, `store`) depends on besides the source: the CPU's
    features (`-march=native`)."""
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
            command = [compiler, *flags, str(SOURCE), "-o", str(built), "-lm"]
            run = subprocess.run(command, capture_output=True, text=True, check=False)
            if run.returncode == 0:
                how = "" if openmp else " without OpenMP"
                log.info("built the 4-bit kernels%s: %s", how, target)
                built.replace(target)
                return
            errors = (run.stderr.strip().splitlines() or ["(no message)"])[-1]
    raise KernelError(f"cannot build the 4-bit kernels with {compiler}: {errors}")


class LayerWeights(ctypes.Structure):
    """What `wisp_decode_layer` reads of one decoder layer: packed products, norms, shape."""

    _fields_ = [
        ("kind", ctypes.c_int),
        *((name, ctypes.c_void_p) for name in ("qkv", "out", "gate_up", "down", "qkv_bias")),
        ("norm_in", ctypes.c_void_p),
        ("norm_mid", ctypes.c_void_p),
        ("eps_in", ctypes.c_float),
        ("eps_mid", ctypes.c_float),
        *((name, ctypes.c_int64) for name in ("hidden", "inter", "heads", "kv_heads", "dim")),
    ]


_scratches = threading.local()


def _scratch(shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """This thread's buffer for a widened matrix of `shape` and `dtype` (contents undefined)."""
    buffers = _scratches.__dict__.setdefault("buffers", {})
    if (shape, dtype) not in buffers:
        buffers[shape, dtype] = torch.empty(shape, dtype=dtype)
    return buffers[shape, dtype]


class Packed:
    """One weight matrix ([out, in] floats) packed into blocks of `kind` along its rows."""

    def __init__(self, weight: torch.Tensor, kind: int, lib: ctypes.CDLL | None = None) -> None:
        rows, cols = weight.shape
        if cols % BLOCK:
            raise KernelError(f"a row of {cols} weights is not a whole number of blocks")
        self.lib = lib or library()
        self.kind, self.shape = kind, (rows, cols)
        # The dtype of products with more than NATIVE_ROWS rows (see `FastLlama.widen_in`).
        self.wide = torch.float32
        source = weight.detach().to(torch.float32).contiguous()
        size = rows * (cols // BLOCK) * self.lib.wisp_block_bytes(kind)
        self.blocks = torch.empty(size, dtype=torch.uint8)
        self.pointer = self.blocks.data_ptr()
        self.lib.wisp_quantize(kind, source.data_ptr(), rows, cols, self.pointer)

    @classmethod
    def from_blocks(
        cls, blocks: torch.Tensor, kind: int, shape: tuple[int, int], wide: torch.dtype
    ) -> Packed:
        """A matrix packed before (`blocks` as `Packed.blocks` held them), kept as it is."""
        rows, cols = shape
        packed = cls.__new__(cls)
        packed.lib = library()
        expected = rows * (cols // BLOCK) * packed.lib.wisp_block_bytes(kind)
        if cols % BLOCK or blocks.dtype != torch.uint8 or blocks.numel() != expected:
            raise KernelError(
                f"{blocks.numel()} bytes are not a {rows}x{cols} matrix of kind {kind}"
            )
        packed.kind, packed.shape, packed.wide = kind, (rows, cols), wide
        packed.blocks = blocks.contiguous()
        packed.pointer = packed.blocks.data_ptr()
        return packed

    @property
    def nbytes(self) -> int:
        return self.blocks.numel()

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """`x @ weight.T` in `x`'s dtype (fp32, or bf16 for products widened to bf16)."""
        rows, cols = x.numel() // x.shape[-1], self.shape[1]
        if rows > NATIVE_ROWS:
            # The widened matrix lives only for this product, in a buffer reused across calls:
            # fresh pages for every matrix of every chunk cost more than widening them.
            wide = self.widen_into(_scratch(self.shape, self.wide))
            return F.linear(x.to(self.wide), wide).to(x.dtype)
        narrow = x.dtype
        x = x.float().contiguous()
        out = x.new_empty(*x.shape[:-1], self.shape[0])
        self.lib.wisp_matmul(
            self.kind,
            self.pointer,
            self.shape[0],
            cols,
            x.data_ptr(),
            rows,
            out.data_ptr(),
            torch.get_num_threads(),
        )
        return out.to(narrow)

    def widen_into(self, out: torch.Tensor) -> torch.Tensor:
        """The whole matrix written into `out` (its shape, fp32 or bf16), which is returned."""
        if out.dtype == torch.bfloat16:
            self.lib.wisp_widen_bf16(self.kind, self.pointer, *self.shape, out.data_ptr())
        else:
            self.lib.wisp_widen(self.kind, self.pointer, None, *self.shape, out.data_ptr())
        return out

    def widen_bf16(self) -> torch.Tensor:
        """The whole matrix in bf16."""
        return self.widen_into(torch.empty(self.shape, dtype=torch.bfloat16))

    def widen(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The matrix in fp32, or only the rows with indices `rows` (any shape) in that shape."""
        indices = None if rows is None else rows.reshape(-1).to(torch.int64).contiguous()
        count = self.shape[0] if indices is None else indices.numel()
        out = torch.empty(count, self.shape[1], dtype=torch.float32)
        self.lib.wisp_widen(
            self.kind,
            self.blocks.data_ptr(),
            None if indices is None else indices.data_ptr(),
            count,
            self.shape[1],
            out.data_ptr(),
        )
        return out if rows is None else out.view(*rows.shape, self.shape[1])
