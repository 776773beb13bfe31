"""GGUF's block types in `kernels/quants.c` against gguf's numpy reference.

In order: row sizes; widening to fp32 (whole matrices and picked rows) and to bf16; products
against the widened weights (exactly as far as 8-bit activations allow), over several
matrices of different types at once, none where a type is not read, and on one thread or
two alike; quantizing Q4_1 and Q8_0.
Every check runs on each build: -march=native (AVX2, and VNNI where the CPU has it),
haswell (AVX2 without VNNI) and x86-64 (the plain C paths)."""

from __future__ import annotations

import ctypes
import os
import platform
import shutil

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize, quantize
from tiny_gguf import random_blocks

from model_runtime.local.blocks import KernelError, Matrix, load_library

T = GGMLQuantizationType
FLOATS = [T.F32, T.F16, T.BF16]
SMALL = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]  # blocks of 32
K_QUANTS = [T.Q4_K, T.Q5_K, T.Q6_K]  # super-blocks of 256
TYPES = FLOATS + SMALL + K_QUANTS
# w = d * q with no minimum: widening rounds once, as gguf does, so the floats are equal.
SYMMETRIC = [*FLOATS, T.Q4_0, T.Q5_0, T.Q8_0, T.Q6_K]
# Row lengths that leave tails: an odd number of blocks of 32, and 12 floats past 16s.
COLUMNS = {
    **dict.fromkeys(FLOATS, 300),
    **dict.fromkeys(SMALL, 288),
    **dict.fromkeys(K_QUANTS, 512),
}


@pytest.fixture(scope="session", params=["native", "haswell", "x86-64"])
def lib(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """The kernels built for one -march by wisp's own loader, into a cache folder of their own."""
    arch = request.param
    if arch != "native" and platform.machine() != "x86_64":
        pytest.skip(f"-march={arch} is an x86-64 build")
    saved = os.environ.get("WISP_CACHE_DIR")
    os.environ["WISP_CACHE_DIR"] = str(tmp_path_factory.mktemp("kernels"))
    try:
        return load_library(arch)
    except KernelError as exc:
        if arch == "haswell" or shutil.which(os.environ.get("CC") or "cc") is None:
            pytest.skip(str(exc))
        raise
    finally:
        if saved is None:
            del os.environ["WISP_CACHE_DIR"]
        else:
            os.environ["WISP_CACHE_DIR"] = saved


def blocks(qtype: T, rows: int, k: int, seed: int = 0) -> np.ndarray:
    """A [rows, k] matrix of `qtype` as GGUF stores it (uint8, a row of blocks a row): random
    floats quantized by gguf, or for K-quants, which gguf cannot quantize, random bytes with
    small positive half-float scales (`tiny_gguf.random_blocks`)."""
    rng = np.random.default_rng(seed)
    if qtype in K_QUANTS:
        return random_blocks(qtype, rows, k, rng)
    floats = rng.standard_normal((rows, k), dtype=np.float32)
    return quantize(floats, qtype).view(np.uint8).reshape(rows, -1)


def widen(lib: ctypes.CDLL, qtype: T, w: np.ndarray, k: int, rows=None) -> np.ndarray:
    picked = None if rows is None else np.ascontiguousarray(rows, dtype=np.int64)
    count = len(w) if picked is None else len(picked)
    out = np.empty((count, k), dtype=np.float32)
    index = None if picked is None else picked.ctypes.data
    lib.wisp_widen(qtype, w.ctypes.data, index, count, k, out.ctypes.data)
    return out


def widen_bf16(lib: ctypes.CDLL, qtype: T, w: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(w), k), dtype=np.uint16)
    lib.wisp_widen_bf16(qtype, w.ctypes.data, len(w), k, out.ctypes.data)
    return out


def multiply(lib: ctypes.CDLL, parts: list[tuple[T, np.ndarray]], x: np.ndarray, threads=2):
    """x @ concat(parts)^T by `wisp_multiply`, each part a (type, blocks) pair."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    matrices = (Matrix * len(parts))(*(Matrix(t, w.ctypes.data, len(w)) for t, w in parts))
    y = np.empty((len(x), sum(len(w) for _, w in parts)), dtype=np.float32)
    m, k = x.shape
    lib.wisp_multiply(matrices, len(parts), k, x.ctypes.data, m, y.ctypes.data, threads)
    return y


def reference(qtype: T, w: np.ndarray) -> np.ndarray:
    return dequantize(w, qtype).reshape(len(w), -1)


def bf16(values: np.ndarray) -> np.ndarray:
    """Floats rounded to bf16 (nearest, ties to even) by gguf, as uint16."""
    return quantize(values.astype(np.float32), T.BF16).view(np.uint16).reshape(values.shape)


def bf16_values(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def activations_8bit(x: np.ndarray) -> np.ndarray:
    """x as the products use it: rounded to 8 bits per 32 values (nearest, ties to even)."""
    groups = x.astype(np.float32).reshape(len(x), -1, 32)
    d = np.abs(groups).max(axis=-1, keepdims=True) / np.float32(127)
    inverse = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    return (np.rint(groups * inverse) * d.astype(np.float64)).reshape(x.shape)


@pytest.mark.parametrize(
    ("qtype", "k", "expected"),
    [
        (T.F32, 5, 20),
        (T.F16, 5, 10),
        (T.BF16, 3, 6),
        (T.Q4_0, 64, 36),
        (T.Q4_1, 32, 20),
        (T.Q5_0, 96, 66),
        (T.Q5_1, 64, 48),
        (T.Q8_0, 32, 34),
        (T.Q4_K, 512, 288),
        (T.Q5_K, 256, 176),
        (T.Q6_K, 768, 630),
        (T.Q8_0, 0, 0),
        (T.Q4_0, 48, -1),  # not whole blocks
        (T.Q4_K, 32, -1),
        (T.Q6_K, 300, -1),
        (T.Q8_0, -32, -1),
        (T.Q2_K, 256, -1),  # types wisp does not read
        (T.Q8_1, 32, -1),
        (99, 32, -1),
        (-1, 32, -1),
    ],
)
def test_row_bytes(lib: ctypes.CDLL, qtype: int, k: int, expected: int) -> None:
    assert lib.wisp_row_bytes(qtype, k) == expected


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_widening_gives_ggufs_floats(lib: ctypes.CDLL, qtype: T) -> None:
    """Equal where gguf rounds once (w = d * q); else a multiply-add may round once where gguf
    rounds twice."""
    k = COLUMNS[qtype]
    w = blocks(qtype, 24, k)
    got, want = widen(lib, qtype, w, k), reference(qtype, w)
    assert np.isfinite(want).all()
    if qtype in SYMMETRIC:
        assert np.array_equal(got, want)
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_widening_picks_rows_by_index(lib: ctypes.CDLL, qtype: T) -> None:
    k = COLUMNS[qtype]
    w = blocks(qtype, 24, k, seed=1)
    rows = [5, 0, 5, 23, 11]
    assert np.array_equal(widen(lib, qtype, w, k, rows), widen(lib, qtype, w, k)[rows])


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_bf16_widening_rounds_to_nearest(lib: ctypes.CDLL, qtype: T) -> None:
    """Each weight is its fp32 widening rounded to nearest even: the bf16 of gguf's, or where
    the fp32 differs in its last bit, a neighbour of it at most. Compared as values: a zero's
    sign may differ."""
    k = COLUMNS[qtype]
    w = blocks(qtype, 24, k, seed=2)
    got = bf16_values(widen_bf16(lib, qtype, w, k))
    assert np.array_equal(got, bf16_values(bf16(widen(lib, qtype, w, k))))
    want = bf16_values(bf16(reference(qtype, w)))
    step = 0 if qtype in SYMMETRIC else 2**-7
    assert np.all(np.abs(got - want) <= step * np.abs(want))


@pytest.mark.parametrize("m", [1, 3, 4, 5, 32])
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_products_match_the_widened_weights(lib: ctypes.CDLL, qtype: T, m: int) -> None:
    """Blocked types multiply 8-bit activations: against those, only float rounding differs,
    and against the float activations at most the 8-bit rounding. Float types multiply the
    float activations."""
    k = COLUMNS[qtype]
    w = blocks(qtype, 37, k, seed=m)
    x = np.random.default_rng(100 + m).standard_normal((m, k)).astype(np.float32)
    wide = reference(qtype, w).astype(np.float64)
    got = multiply(lib, [(qtype, w)], x)
    exact = x.astype(np.float64) if qtype in FLOATS else activations_8bit(x)
    assert np.all(np.abs(got - exact @ wide.T) <= 1e-5 * (np.abs(exact) @ np.abs(wide).T))
    norms = np.linalg.norm(x, axis=1)[:, None] * np.linalg.norm(wide, axis=1)[None, :]
    assert np.all(np.abs(got - x @ wide.T) <= 0.02 * norms)


@pytest.mark.parametrize("m", [1, 5])
@pytest.mark.parametrize(
    "qtypes", [[T.Q4_K, T.Q6_K], [T.Q8_0, T.Q4_1, T.Q5_K], [T.F16, T.Q4_0, T.BF16]]
)
def test_one_product_over_matrices_of_different_types(
    lib: ctypes.CDLL, qtypes: list[T], m: int
) -> None:
    """As the fused projections of a Q4_K_M file: the same numbers as separate products."""
    parts = [(t, blocks(t, 5 + 2 * i, 512, seed=i)) for i, t in enumerate(qtypes)]
    x = np.random.default_rng(m).standard_normal((m, 512))
    together = multiply(lib, parts, x)
    assert np.array_equal(together, np.hstack([multiply(lib, [part], x) for part in parts]))


@pytest.mark.parametrize(("qtype", "k"), [(T.Q2_K, 256), (T.Q4_K, 288)])
def test_products_of_a_type_not_read_write_nothing(lib: ctypes.CDLL, qtype: T, k: int) -> None:
    """A type wisp does not read, or rows that are not whole blocks of theirs."""
    parts = [(T.Q8_0, blocks(T.Q8_0, 3, k)), (qtype, np.zeros((4, 4096), dtype=np.uint8))]
    matrices = (Matrix * 2)(*(Matrix(t, w.ctypes.data, len(w)) for t, w in parts))
    x, y = np.ones((1, k), dtype=np.float32), np.full((1, 7), 5.0, dtype=np.float32)
    lib.wisp_multiply(matrices, 2, k, x.ctypes.data, 1, y.ctypes.data, 2)
    assert np.all(y == 5.0)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_threads_share_out_rows_without_changing_them(lib: ctypes.CDLL, qtype: T) -> None:
    k = COLUMNS[qtype]
    parts = [(qtype, blocks(qtype, 37, k, seed=3))]
    x = np.random.default_rng(3).standard_normal((32, k))
    assert np.array_equal(multiply(lib, parts, x, threads=1), multiply(lib, parts, x, threads=2))


def quantize_rows(lib: ctypes.CDLL, qtype: T, floats: np.ndarray) -> np.ndarray:
    rows, k = floats.shape
    out = np.empty((rows, lib.wisp_row_bytes(qtype, k)), dtype=np.uint8)
    lib.wisp_quantize(qtype, np.ascontiguousarray(floats).ctypes.data, rows, k, out.ctypes.data)
    return out


@pytest.mark.parametrize("qtype", [T.Q4_1, T.Q8_0], ids=lambda t: t.name)
def test_quantizing_keeps_each_weight_within_half_a_step(lib: ctypes.CDLL, qtype: T) -> None:
    """gguf's scale d (and Q4_1's minimum), but each weight rounded against them as stored, so
    within half a step of d, which gguf's rounding against d before it is a half float is not
    always; and the widened blocks quantize to the same bytes again. Random rows, a row of
    zeros and a constant one (their blocks' d is 0)."""
    floats = np.random.default_rng(4).standard_normal((16, 256), dtype=np.float32) * 3
    floats[3], floats[7] = 0.0, 1.5
    got, theirs = quantize_rows(lib, qtype, floats), quantize(floats, qtype).reshape(16, -1)
    block, size = GGML_QUANT_SIZES[qtype]
    head = 4 if qtype == T.Q4_1 else 2  # the half floats: d, and Q4_1's m
    got_blocks, their_blocks = got.reshape(-1, size), theirs.reshape(-1, size)
    assert np.array_equal(got_blocks[:, :head], their_blocks[:, :head])
    d = got_blocks[:, :2].copy().view(np.float16).astype(np.float32)
    error = np.abs(reference(qtype, got) - floats).reshape(-1, block)
    assert np.all(error <= d / 2 * (1 + 1e-6))
    their_error = np.abs(reference(qtype, theirs) - floats).reshape(-1, block)
    assert np.any(their_error > d / 2 * (1 + 1e-6))
    assert np.array_equal(quantize_rows(lib, qtype, reference(qtype, got)), got)
