"""Weights in blocks: the native kernels against plain torch arithmetic, on transformers' models
packed into 4- and 8-bit blocks (GGUF files' own blocks: `test_quants`, `test_gguf_model`).

In order: packing, widening and products of few and many rows (every build alike, bf16
rounding, the widening buffer, the bf16 prefill choice), building the kernels, the lean pass
with packed weights against transformers, the native decode step and short chunks against
torch's layers and attention in every build, then loading: the probe, what refuses to pack."""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import pytest
import torch
from test_decoder import IDS, fast_logits, reference_logits
from test_decoder import SIZES as FAST_SIZES
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from model_runtime.backend import ModelLoadError
from model_runtime.local import LoadOptions, decoder, load_backend, probes
from model_runtime.local.blocks import (
    NATIVE_ROWS,
    Q4_1,
    Q8_0,
    Blocks,
    KernelError,
    library,
    load_library,
)
from model_runtime.local.decoder import Decoder
from model_runtime.local.probes import (
    agrees_with,
    faster_prefill,
    probe,
    round_to_packing,
    unpackable,
)

# A prompt long enough that its prefill widens the weights.
LONG = torch.arange(80).unsqueeze(0) * 13 % 97
SIZES = {**FAST_SIZES, "hidden_size": 64, "intermediate_size": 96}  # whole blocks of 32


def on_grid(model, packing: str = "q4"):
    """The model with its weights rounded as a GGUF file of that kind holds them (embeddings
    Q8_0): packing such weights loses nothing, so what differs from transformers is the rounding
    of activations alone, as with the bundled model."""
    round_to_packing(model, packing)
    return model


def llama(**overrides: object) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return on_grid(LlamaForCausalLM(LlamaConfig(**{**SIZES, **overrides})).eval())


def qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(1)
    model = Qwen2ForCausalLM(Qwen2Config(**SIZES, tie_word_embeddings=True)).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_()
    return on_grid(model)


def close(got: torch.Tensor, want: torch.Tensor, share: float) -> bool:
    return bool((got - want).abs().max() <= share * want.abs().max())


# One block of 32: 16 levels of Q4_1 between a minimum and a maximum, or Q8_0's symmetric ones.
LEVELS = torch.arange(32, dtype=torch.float32) % 16 * 0.25 - 1.5
SYMMETRIC = torch.linspace(-127, 127, 32).round() / 64


@pytest.mark.parametrize(
    ("kind", "row", "bytes_per_block"),
    [(Q4_1, LEVELS, 20), (Q8_0, SYMMETRIC, 34), (Q4_1, torch.zeros(32), 20)],
)
def test_values_on_the_grid_come_back_exactly(kind: int, row, bytes_per_block: int) -> None:
    """What a GGUF block holds, dequantized, packs again into the same numbers."""
    weight = torch.stack([row, row.flip(0) * 2])
    packed = Blocks.quantize(weight, kind)
    assert packed.nbytes == 2 * bytes_per_block
    assert torch.equal(packed.widen(), weight)
    assert torch.equal(Blocks.quantize(packed.widen(), kind).parts[0][1], packed.parts[0][1])


@pytest.mark.parametrize(("kind", "levels"), [(Q4_1, 15), (Q8_0, 254)])
def test_rounding_stays_within_half_a_step(kind: int, levels: int) -> None:
    torch.manual_seed(0)
    weight = torch.randn(8, 96)
    blocks = weight.view(8, 3, 32)
    spread = blocks.amax(-1) - blocks.amin(-1) if kind == Q4_1 else 2 * blocks.abs().amax(-1)
    step = (spread / levels).repeat_interleave(32, dim=1)
    error = (Blocks.quantize(weight, kind).widen() - weight).abs()
    assert (error <= step * 0.5 + 1e-3).all()


def test_rows_of_the_matrix_by_index() -> None:
    weight = torch.randn(10, 64)
    packed = Blocks.quantize(weight, Q8_0)
    rows = torch.tensor([[3, 9], [0, 3]])
    assert torch.equal(packed.widen(rows), packed.widen()[rows])


@pytest.mark.parametrize("kind", [Q4_1, Q8_0])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 9, NATIVE_ROWS, NATIVE_ROWS + 1])
def test_products_match_the_widened_weights(kind: int, rows: int) -> None:
    """Up to NATIVE_ROWS rows go through 8-bit activations (within 1%), more through torch."""
    torch.manual_seed(rows)
    packed = Blocks.quantize(torch.randn(80, 96), kind)
    x = torch.randn(1, rows, 96)
    want = x @ packed.widen().T
    got = packed.linear(x)
    assert got.shape == (1, rows, 80)
    assert close(got, want, 1e-2)
    if rows > NATIVE_ROWS:
        assert torch.allclose(got, want, atol=1e-5)
    else:  # each row alone gives the same numbers: rows share weights, not rounding
        alone = torch.cat([packed.linear(x[:, r : r + 1]) for r in range(rows)], dim=1)
        assert torch.allclose(got, alone, rtol=1e-5, atol=1e-4)


# The kernels' three paths: plain C, AVX2's pair of byte instructions, and VNNI's one.
ARCHES = {"x86-64": "", "x86-64-v3": "avx2", "icelake-server": "avx512_vnni"}


def build_for(arch: str, feature: str, tmp_path: Path, monkeypatch) -> ctypes.CDLL:
    """The kernels built for `arch` into `tmp_path`; skips where this CPU cannot run them."""
    if platform.machine() != "x86_64" or feature not in Path("/proc/cpuinfo").read_text():
        pytest.skip(f"this CPU cannot run the {arch} build")
    monkeypatch.setenv("WISP_CACHE_DIR", str(tmp_path))
    return load_library(arch)


@pytest.mark.parametrize(("arch", "feature"), ARCHES.items())
@pytest.mark.parametrize("kind", [Q4_1, Q8_0])
def test_every_build_of_the_kernels_gives_the_same_products(
    arch: str, feature: str, kind: int, tmp_path: Path, monkeypatch
) -> None:
    lib = build_for(arch, feature, tmp_path, monkeypatch)
    torch.manual_seed(kind)
    weight, x = torch.randn(40, 128), torch.randn(3, 128)
    native, other = Blocks.quantize(weight, kind), Blocks.quantize(weight, kind, lib)
    assert torch.equal(other.parts[0][1], native.parts[0][1])
    assert torch.equal(other.widen(), native.widen())
    assert torch.equal(other.widen_bf16(), native.widen_bf16())
    for rows in (1, 3):
        assert torch.allclose(other.linear(x[:rows]), native.linear(x[:rows]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", [Q4_1, Q8_0])
def test_bf16_widening_rounds_each_weight_to_the_nearest(kind: int) -> None:
    packed = Blocks.quantize(torch.randn(24, 96) * 3, kind)
    assert torch.equal(packed.widen_bf16(), packed.widen().to(torch.bfloat16))


def test_many_rows_multiply_in_the_chosen_dtype() -> None:
    torch.manual_seed(5)
    packed = Blocks.quantize(torch.randn(80, 96), Q4_1)
    x = torch.randn(2, NATIVE_ROWS, 96)
    want = x @ packed.widen().T
    packed.wide = torch.bfloat16
    got = packed.linear(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert close(got, want, 2e-2) and not torch.allclose(got, want, atol=1e-5)
    packed.wide = torch.float32
    assert torch.allclose(packed.linear(x), want, atol=1e-5)


@pytest.mark.parametrize("wide", [torch.float32, torch.bfloat16])
def test_matrices_of_one_shape_take_turns_in_the_widening_buffer(wide: torch.dtype) -> None:
    """Long products widen into one buffer per shape: each must see its own weights."""
    torch.manual_seed(6)
    first, second = (
        Blocks.quantize(torch.randn(64, 96), Q4_1),
        Blocks.quantize(torch.randn(64, 96), Q8_0),
    )
    x = torch.randn(NATIVE_ROWS + 3, 96)
    for packed in (first, second):
        packed.wide = wide
    tolerance = 1e-5 if wide == torch.float32 else 2e-2
    for packed in (first, second, first):
        assert close(packed.linear(x), x @ packed.widen().T, tolerance)


def test_bf16_activations_come_back_in_bf16() -> None:
    """A prefill with bf16 products keeps its activations in bf16, also for a short chunk."""
    torch.manual_seed(8)
    packed = Blocks.quantize(torch.randn(64, 96), Q4_1)
    packed.wide = torch.bfloat16
    for rows in (3, NATIVE_ROWS + 1):
        x = torch.randn(rows, 96)
        got = packed.linear(x.to(torch.bfloat16))
        assert got.dtype == torch.bfloat16
        assert close(got.float(), x @ packed.widen().T, 3e-2)


@pytest.mark.parametrize(("bf16_s", "want"), [(0.6, torch.bfloat16), (0.7, torch.float32)])
def test_bf16_prefill_is_taken_only_for_a_clear_gain(bf16_s: float, want, monkeypatch) -> None:
    fast = Decoder.from_transformers(llama(), packing="q4")
    ticks = iter([0.0, 1.0, 2.0, 2.0 + bf16_s])
    monkeypatch.setattr(probes.time, "perf_counter", lambda: next(ticks))
    assert faster_prefill(fast, rounds=1) == want
    fast.widen_in(want)
    assert {w.wide for w in (fast.layers[1].down, fast.lm_head)} == {want}


def test_a_bf16_prefill_stays_close_to_transformers() -> None:
    model = llama()
    want = reference_logits(model, LONG)
    fast = Decoder.from_transformers(model, packing="q4")
    fast.widen_in(torch.bfloat16)
    assert close(fast_logits(fast, LONG, [NATIVE_ROWS + 8]), want, 5e-2)


def test_a_row_that_is_not_whole_blocks_is_refused() -> None:
    with pytest.raises(KernelError, match="not a whole number of blocks"):
        Blocks.quantize(torch.randn(4, 48), Q4_1)
    odd = LlamaForCausalLM(LlamaConfig(**{**SIZES, "hidden_size": 48})).eval()
    assert "blocks of 32" in (unpackable(odd) or "")
    assert unpackable(llama()) is None


@pytest.mark.parametrize("compiler", ["/nonexistent/cc", "false"])
def test_without_a_working_compiler_the_kernels_say_why(
    compiler: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("WISP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", compiler)
    with pytest.raises(KernelError, match=r"compiler|cannot build"):
        load_library()
    assert not list(tmp_path.rglob("*.so"))


def test_the_build_is_kept_in_the_cache_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WISP_CACHE_DIR", str(tmp_path))
    lib = load_library()
    built = list((tmp_path / "kernels").glob("kernels-*.so"))
    assert len(built) == 1 and lib.wisp_row_bytes(Q4_1, 64) == 40
    stamp = built[0].stat().st_mtime_ns
    load_library()
    assert built[0].stat().st_mtime_ns == stamp  # loaded again, not rebuilt


@pytest.mark.parametrize("make", [llama, qwen2, lambda: llama(num_key_value_heads=4)])
@pytest.mark.parametrize("packing", ["q4", "q8"])
def test_packed_logits_stay_close_to_transformers(make, packing: str) -> None:
    model = on_grid(make(), packing)
    want = reference_logits(model, IDS)
    fast = Decoder.from_transformers(model, packing=packing)
    for splits in ([], [1, 2, 3, 10], list(range(1, 20))):  # chunks and native single steps
        assert close(fast_logits(fast, IDS, splits), want, 5e-2)


@pytest.mark.parametrize("make", [llama, qwen2])
def test_native_step_equals_the_torch_layers_on_the_same_weights(make, monkeypatch) -> None:
    """The decode step in C (norms, rotation, cache, attention) against torch's operations,
    which run a chunk of two positions; the first position's logits and keys must agree."""
    monkeypatch.setattr(decoder, "NATIVE_CHUNK", 0)  # chunks through torch
    fast = Decoder.from_transformers(make(), packing="q4")
    with torch.inference_mode():
        cache, _ = fast.forward(IDS[:, :12], None)
        _, native = fast.forward(IDS[:, 12:13], cache)
        keys, values = cache.keys[:, :, :, :13].clone(), cache.values[:, :, :, :13].clone()
        cache.crop(12)
        _, chunk = fast.forward(IDS[:, 12:14], cache)
    assert torch.allclose(native[0, 0], chunk[0, 0], atol=1e-5)
    assert torch.allclose(keys, cache.keys[:, :, :, :13], atol=1e-5)
    assert torch.allclose(values, cache.values[:, :, :, :13], atol=1e-5)


@pytest.mark.parametrize("make", [lambda: llama(max_position_embeddings=512), qwen2])
@pytest.mark.parametrize(("start", "count"), [(12, 2), (3, 5), (0, 16), (100, 7)])
def test_a_short_chunk_runs_natively_like_the_torch_layers(
    make, start: int, count: int, monkeypatch
) -> None:
    """A chunk of up to NATIVE_CHUNK positions of one sequence runs in C, each position
    attending to the ones before it; logits of every position and the cache it wrote agree
    with torch's operations on the same weights."""
    assert count <= decoder.NATIVE_CHUNK
    fast = Decoder.from_transformers(make(), packing="q4")
    ids = (torch.arange(start + count) * 13 % 97).unsqueeze(0)
    results = []
    for limit in (decoder.NATIVE_CHUNK, 0):
        monkeypatch.setattr(decoder, "NATIVE_CHUNK", limit)
        with torch.inference_mode():
            cache, _ = fast.forward(ids[:, :start], None) if start else (None, None)
            cache, logits = fast.forward(ids[:, start:], cache)
        end = start + count
        results.append((logits, cache.keys[:, :, :, :end], cache.values[:, :, :, :end]))
    (native, keys, values), (torch_logits, torch_keys, torch_values) = results
    # C's norm and torch's differ in the last bits; now and then that flips the 8-bit rounding
    # of an activation (seen: 1e-3 of the logits' scale once in 24 cases)
    assert close(native, torch_logits, 5e-3)
    assert torch.allclose(keys.float(), torch_keys.float(), atol=2e-3)
    assert torch.allclose(values.float(), torch_values.float(), atol=2e-3)


@pytest.mark.parametrize("length", [65, 300, 1100])  # spans of positions; 300, 1100: on threads
@pytest.mark.parametrize("rows", [1, 2])
def test_native_attention_over_long_contexts(length: int, rows: int, monkeypatch) -> None:
    monkeypatch.setattr(decoder, "NATIVE_CHUNK", 0)  # the chunk of two through torch
    fast = Decoder.from_transformers(llama(max_position_embeddings=2048), packing="q4")
    ids = (torch.arange(length + 2) * 13 % 97).unsqueeze(0).repeat(rows, 1)
    ids[-1, :7] = 3  # rows differ
    with torch.inference_mode():
        cache, _ = fast.forward(ids[:, :length], None)
        _, native = fast.forward(ids[:, length : length + 1], cache)
        cache.crop(length)
        _, chunk = fast.forward(ids[:, length : length + 2], cache)
    assert torch.allclose(native[:, 0], chunk[:, 0], atol=1e-4)


def _attend(
    lib: ctypes.CDLL, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """`wisp_attend` of one head: softmax(k . q * scale) . v."""
    out = torch.empty(q.shape[0])
    pointers = (ctypes.c_void_p(t.data_ptr()) for t in (q, k, v))
    assert lib.wisp_attend(
        *pointers,
        ctypes.c_int64(k.shape[0]),
        ctypes.c_int64(q.shape[0]),
        ctypes.c_float(scale),
        ctypes.c_void_p(out.data_ptr()),
    )
    return out


@pytest.mark.parametrize(("arch", "feature"), ARCHES.items())
@pytest.mark.parametrize("dim", [64, 128, 12, 136])  # 12 and 136: the plain loops everywhere
def test_every_build_attends_like_torch(
    arch: str, feature: str, dim: int, tmp_path: Path, monkeypatch
) -> None:
    """One head's softmax attention over keys and values kept as half floats, scores spread
    so that some weights underflow to 0."""
    lib = build_for(arch, feature, tmp_path, monkeypatch)
    torch.manual_seed(dim)
    for length in (1, 7, 8, 9, 301):
        q = torch.randn(dim)
        k, v = (torch.randn(length, dim) * 4).half(), torch.randn(length, dim).half()
        scale = dim**-0.5
        out = _attend(lib, q, k, v, scale)
        want = torch.softmax(k.double() @ q.double() * scale, dim=0) @ v.double()
        assert torch.allclose(out.double(), want, rtol=1e-5, atol=3e-6), (length, dim)


@pytest.mark.parametrize(("arch", "feature"), ARCHES.items())
@pytest.mark.parametrize("at", [0, 5, 8, 19, 296, 300])  # in the first or a later eight, the tail
def test_one_score_far_above_the_rest_wherever_it_is(
    arch: str, feature: str, at: int, tmp_path: Path, monkeypatch
) -> None:
    """The softmax is shifted by the largest score. Were it missed, e^100 (scores 0 and 100
    here) would overflow a float, and the answer would not be that position's value."""
    lib = build_for(arch, feature, tmp_path, monkeypatch)
    q = torch.zeros(64)
    q[0] = 10.0
    k, v = torch.zeros(301, 64).half(), torch.randn(301, 64).half()
    k[at, 0] = 10.0
    assert torch.allclose(_attend(lib, q, k, v), v[at].float(), atol=1e-3)


@pytest.mark.parametrize(("arch", "feature"), ARCHES.items())
def test_every_build_of_the_kernels_takes_the_same_decode_step(
    arch: str, feature: str, tmp_path: Path, monkeypatch
) -> None:
    """Attention in plain C and with AVX2 (eight positions at a time, a polynomial exp) over a
    context that is not a whole number of eights, against this machine's build."""
    lib = build_for(arch, feature, tmp_path, monkeypatch)
    fast = Decoder.from_transformers(llama(max_position_embeddings=512), packing="q4")
    ids = (torch.arange(302) * 29 % 97).unsqueeze(0)
    with torch.inference_mode():
        cache, _ = fast.forward(ids[:, :301], None)
        _, native = fast.forward(ids[:, 301:], cache)
        cache.crop(301)
        monkeypatch.setattr(decoder, "library", lambda: lib)
        _, other = fast.forward(ids[:, 301:], cache)
    assert torch.allclose(other, native, atol=1e-4)


def test_a_native_step_on_several_rows_equals_each_row_alone() -> None:
    fast = Decoder.from_transformers(llama(), packing="q4")
    with torch.inference_mode():
        cache, _ = fast.forward(IDS[:, :9], None)
        cache.batch_repeat_interleave(3)
        step = torch.tensor([[5], [17], [60]])
        _, together = fast.forward(step, cache)
        for row in range(3):
            single, _ = fast.forward(IDS[:, :9], None)
            _, alone = fast.forward(step[row : row + 1], single)
            assert torch.allclose(together[row], alone[0], atol=1e-5)


def test_packed_pass_releases_the_model_weights_and_passes_the_probe() -> None:
    model = llama(tie_word_embeddings=True)
    ids, want = probe(model)
    fast = Decoder.from_transformers(model, packing="q4")
    assert agrees_with(fast, ids, want)
    fast.release(model)
    assert model.model.layers[0].mlp.up_proj.weight.numel() == 0
    assert model.lm_head.weight.numel() == 0
    assert close(
        fast_logits(fast, IDS, [4]), reference_logits(llama(tie_word_embeddings=True), IDS), 5e-2
    )
    broken = Decoder.from_transformers(llama(), packing="q4")
    broken.layers[1].down = Blocks.quantize(torch.randn(64, 96), Q4_1)  # not the model's weights
    assert not agrees_with(broken, ids, want)
    swapped = Decoder.from_transformers(
        llama(), packing="q4"
    )  # a layout slip: each layer gets the other's MLP
    swapped.layers[0].down, swapped.layers[1].down = swapped.layers[1].down, swapped.layers[0].down
    assert not agrees_with(swapped, ids, want)


def test_packing_needs_fp32_activations() -> None:
    with pytest.raises(KernelError, match="fp32"):
        Decoder.from_transformers(
            llama(torch_dtype=torch.bfloat16).to(torch.bfloat16), packing="q4"
        )


def test_explicit_packing_that_cannot_run_is_a_clear_load_error(
    random_model: Path, monkeypatch
) -> None:
    from model_runtime.local import loading

    monkeypatch.setattr(loading, "unpackable", lambda model: "no C compiler ('cc')")
    with pytest.raises(ModelLoadError, match="'q4' cannot be used: no C compiler"):
        load_backend(LoadOptions(str(random_model), quantization="q4"))
    auto = load_backend(LoadOptions(str(random_model)))  # auto goes on without packing
    assert auto.fast is not None and auto.fast.packing is None


def test_the_library_is_built_once_per_process() -> None:
    assert library() is library() and isinstance(library(), ctypes.CDLL)
