"""The forward pass against transformers' own, on tiny models of each supported shape."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from tiny_model import build_tiny_model
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from model_runtime.backend import GenerationRequest, SamplingParams
from model_runtime.local import LoadOptions, load_backend, probes
from model_runtime.local import loading as loading_module
from model_runtime.local.decoder import Decoder, GrowingKv, unsupported
from model_runtime.local.kv_cache import crop_to, croppable
from model_runtime.local.probes import (
    agrees_with,
    fastest_weights,
    probe,
)

SIZES = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


def llama(**overrides: object) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**{**SIZES, **overrides})).eval()


def qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(1)
    model = Qwen2ForCausalLM(Qwen2Config(**SIZES, tie_word_embeddings=True)).eval()
    with torch.no_grad():  # random biases: zeros would hide a missing one
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_()
    return model


def reference_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids, use_cache=False).logits


def fast_logits(fast: Decoder, ids: torch.Tensor, splits: list[int]) -> torch.Tensor:
    """Logits of `ids` run through the lean pass in pieces ending at `splits`."""
    cache, pieces, start = None, [], 0
    with torch.inference_mode():
        for end in [*splits, ids.shape[1]]:
            cache, logits = fast.forward(ids[:, start:end], cache)
            pieces.append(logits)
            start = end
    return torch.cat(pieces, dim=1)


IDS = torch.tensor([[5, 17, 3, 88, 42, 42, 9, 61, 2, 30, 71, 13, 5, 17, 3, 90, 44, 1, 0, 96]])


@pytest.mark.parametrize("make", [llama, qwen2, lambda: llama(num_key_value_heads=4)])
@pytest.mark.parametrize("splits", [[], [1], [7, 8, 9, 15], list(range(1, 20))])
def test_logits_match_transformers(make, splits: list[int]) -> None:
    model = make()
    want = reference_logits(model, IDS)
    fast = Decoder.from_transformers(model)
    assert torch.allclose(fast_logits(fast, IDS, splits), want, atol=1e-5, rtol=1e-4)


def test_fused_weights_are_shared_with_the_model() -> None:
    model = llama()
    fast = Decoder.from_transformers(model)
    attn = model.model.layers[1].self_attn
    assert attn.q_proj.weight.data_ptr() == fast.layers[1].qkv.data_ptr()
    # transformers' forward still runs on the views: the fused tensor holds the same values
    assert torch.allclose(reference_logits(model, IDS), fast_logits(fast, IDS, [4]), atol=1e-5)


def test_only_the_last_logits_when_asked() -> None:
    fast = Decoder.from_transformers(llama())
    with torch.inference_mode():
        cache, last = fast.forward(IDS, None, logits_to_keep=1)
    assert last.shape == (1, 1, SIZES["vocab_size"]) and cache.get_seq_length() == IDS.shape[1]
    assert torch.allclose(last[0, 0], fast_logits(fast, IDS, [])[0, -1], atol=1e-5)


def test_cache_crop_then_rewrite_gives_the_same_logits() -> None:
    fast = Decoder.from_transformers(llama())
    with torch.inference_mode():
        cache, _ = fast.forward(IDS, None)
        crop_to(cache, 6)
        assert cache.get_seq_length() == 6
        _, again = fast.forward(IDS[:, 6:], cache)
    assert torch.allclose(again, fast_logits(fast, IDS, [])[:, 6:], atol=1e-5)


def test_cache_grows_in_steps_and_keeps_its_content() -> None:
    fast = Decoder.from_transformers(llama())
    long_ids = torch.arange(200).remainder(SIZES["vocab_size"]).unsqueeze(0)
    with torch.inference_mode():
        cache, _ = fast.forward(long_ids[:, :150], None)
        first = cache.keys[:, :, :, :150].clone()
        capacity = cache.keys.shape[3]
        cache, _ = fast.forward(long_ids[:, 150:], cache)
    assert capacity == 256 and cache.keys.shape[3] == 256
    assert torch.equal(cache.keys[:, :, :, :150], first)
    small = GrowingKv(1, 1, 1, 2, torch.zeros(1))
    small.reserve(10)
    assert small.keys.shape[3] == 256
    small.reserve(300)
    assert small.keys.shape[3] == 512  # at least 1.5 times, in whole steps


def test_batch_rows_repeat_and_select() -> None:
    fast = Decoder.from_transformers(llama())
    with torch.inference_mode():
        cache, _ = fast.forward(IDS[:, :10], None, logits_to_keep=1)
        cache.batch_repeat_interleave(3)
        step = torch.tensor([[10], [20], [10]])
        cache, rows = fast.forward(step, cache, logits_to_keep=1)
        assert torch.allclose(rows[0], rows[2], atol=1e-6)
        assert not torch.allclose(rows[0], rows[1])
        cache.batch_select_indices(torch.tensor([1]))
        crop_to(cache, 10)
        _, alone = fast.forward(torch.tensor([[20]]), cache, logits_to_keep=1)
    assert torch.allclose(alone[0], rows[1], atol=1e-5)
    assert croppable(cache)


def test_rows_sharing_the_prompt_decode_as_each_row_alone() -> None:
    """Candidates read the prompt's cached positions from the first row (`GrowingKv.shared`)
    and their own after it: step by step, through a growth of the cache, and after picking one
    row, each row's logits are those of its decode alone."""
    model = llama(intermediate_size=64, max_position_embeddings=512)  # whole blocks of 32
    fast = Decoder.from_transformers(model, packing="q4")
    prompt = (torch.arange(254) * 29 % 97).unsqueeze(0)
    tokens = torch.tensor([[5, 8, 30, 7], [17, 3, 30, 7], [60, 41, 2, 7]])
    with torch.inference_mode():
        cache, _ = fast.forward(prompt, None)
        cache.batch_repeat_interleave(3)
        assert cache.shared == 254 and cache.keys.shape[1] == 3
        together = []
        for step in range(3):  # the third outgrows the 256 positions cached
            cache, logits = fast.forward(tokens[:, step : step + 1], cache)
            together.append(logits[:, -1])
        assert cache.keys.shape[3] > 256
        cache.batch_select_indices(torch.tensor([2]))
        assert cache.shared == 0
        _, last = fast.forward(tokens[2:, 3:], cache)
        for row in range(3):
            alone, _ = fast.forward(prompt, None)
            for step in range(4 if row == 2 else 3):
                alone, logits = fast.forward(tokens[row : row + 1, step : step + 1], alone)
                want = last[0, -1] if step == 3 else together[step][row]
                assert torch.allclose(want, logits[0, -1], atol=1e-5)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (
            lambda: GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)),
            "gpt2",
        ),
        (lambda: llama(mlp_bias=True), "MLP"),
        (lambda: llama(hidden_act="gelu"), "gelu"),
    ],
)
def test_other_shapes_are_left_to_transformers(model, reason: str) -> None:
    assert reason in (unsupported(model()) or "")


def test_bf16_weights_stay_close_and_free_the_wide_ones() -> None:
    model = llama(tie_word_embeddings=True)
    want = reference_logits(model, IDS)
    fast = Decoder.from_transformers(model, torch.bfloat16)
    assert fast.weight_dtype == torch.bfloat16 and fast.dtype == torch.float32
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    got = fast_logits(fast, IDS, [1, 9])  # single rows narrow, the 8-row chunk widened
    assert got.dtype == torch.float32
    assert (got - want).abs().max() < 0.05 * want.abs().max()


def test_probe_catches_a_lean_pass_that_disagrees(caplog) -> None:
    model = llama()
    ids, want = probe(model)
    fast = Decoder.from_transformers(model)
    assert agrees_with(fast, ids, want)
    assert agrees_with(
        Decoder.from_transformers(llama(), torch.bfloat16), ids, want
    )  # within bf16's tolerance
    fast.layers[0].down = fast.layers[0].down * 1.5  # no longer what the model computes
    with caplog.at_level("WARNING"):
        assert not agrees_with(fast, ids, want)
    assert "disagrees" in caplog.text


@pytest.mark.parametrize(
    ("bf16_s", "q4_s", "want"),
    [(0.8, 0.5, "q4"), (0.8, 0.95, "bf16"), (0.95, 0.92, "none"), (1.2, 1.5, "none")],
)
def test_the_fastest_weights_are_kept_only_when_clearly_faster(
    bf16_s: float, q4_s: float, want: str, monkeypatch
) -> None:
    """One timed round each on a fake clock: fp32 products take 1 s, the others as given."""
    model = llama(hidden_size=64, intermediate_size=96)
    ticks = iter([0.0, 1.0, 1.0, 1.0 + bf16_s, 3.0, 3.0 + q4_s])
    monkeypatch.setattr(probes.time, "perf_counter", lambda: next(ticks))
    assert fastest_weights(model, ["none", "bf16", "q4"], rounds=1) == want


def ask(backend, prompt: str, **params: object):
    request = GenerationRequest(prompt, SamplingParams(**params), cache_key="doc")  # type: ignore[arg-type]
    return backend.generate(request, threading.Event())


PROMPTS = ["<|fim_prefix|>def add(a, b):\n", "class Greeter:\n    def", "for i in range("]


def test_backend_greedy_answers_match_transformers(random_model: Path) -> None:
    lean = load_backend(LoadOptions(str(random_model), quantization="none"))
    plain = load_backend(LoadOptions(str(random_model), quantization="none"))
    plain.fast = None
    assert lean.fast is not None and lean.fast.weight_dtype == torch.float32
    for prompt in PROMPTS:
        for typed in ("", "x", "xy"):  # later keystrokes reuse the kept cache
            a = ask(lean, prompt + typed, max_new_tokens=12)
            b = ask(plain, prompt + typed, max_new_tokens=12)
            assert a.candidates[0].token_ids == b.candidates[0].token_ids
    assert a.timings_ms["reused_tokens"] > 0
    several = ask(lean, PROMPTS[0], max_new_tokens=8, num_candidates=3, temperature=1.0, seed=2)
    assert (
        several.candidates[0].token_ids
        == ask(plain, PROMPTS[0], max_new_tokens=8).candidates[0].token_ids
    )


def test_quantization_settings_pick_the_weights(random_model: Path, monkeypatch) -> None:
    narrow = load_backend(LoadOptions(str(random_model), quantization="bf16")).fast
    assert narrow is not None and narrow.weight_dtype == torch.bfloat16
    assert narrow.new_cache(1).keys.dtype == torch.float32  # half floats only with blocks
    packed = load_backend(LoadOptions(str(random_model), quantization="q4")).fast
    assert packed is not None and packed.packing == "q4"
    tried: list[list[str]] = []
    answer = ["none"]

    def pick(model, choices, **_):
        tried.append(choices)
        return answer[0]

    monkeypatch.setattr(loading_module, "fastest_weights", pick)
    for fastest in ("none", "bf16"):
        answer[0] = fastest
        backend = load_backend(LoadOptions(str(random_model)))  # auto: never rounds to blocks
        assert tried[-1] == ["none", "bf16"]
        assert backend.fast is not None and backend.fast.packing is None
        assert backend.fast.weight_dtype == (torch.bfloat16 if fastest == "bf16" else torch.float32)
        assert ask(backend, PROMPTS[0], max_new_tokens=4).candidates


def test_loader_falls_back_when_the_probe_disagrees(random_model: Path, monkeypatch) -> None:
    monkeypatch.setattr(loading_module, "agrees_with", lambda *a: False)
    backend = load_backend(LoadOptions(str(random_model), quantization="bf16"))
    assert backend.fast is None
    assert next(backend.model.parameters()).dtype == torch.bfloat16
    assert ask(backend, PROMPTS[0], max_new_tokens=4).candidates


def test_folder_model_loads_through_from_pretrained(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids, want = probe(model)
    assert unsupported(model) is None and agrees_with(Decoder.from_transformers(model), ids, want)
