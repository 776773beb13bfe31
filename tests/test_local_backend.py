"""The local backend on tiny models loaded through the real `from_pretrained` path."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from tiny_model import build_tiny_model

from model_runtime.backend import GenerationRequest, ModelLoadError, SamplingParams
from model_runtime.local import (
    DEFAULT_THREADS,
    PREFILL_CHUNK,
    LoadOptions,
    LocalBackend,
    load_backend,
)
from model_runtime.local.generation import PREFILL_TAIL, chunk_ends


@pytest.fixture(scope="module")
def x_backend(x_model: Path) -> LocalBackend:
    return load_backend(LoadOptions(str(x_model)))


def ask(backend: LocalBackend, cancel: threading.Event | None = None, **params: object):
    request = GenerationRequest(
        "<|fim_suffix|><|fim_prefix|>x = <|fim_middle|>", SamplingParams(**params)
    )  # type: ignore[arg-type]
    return backend.generate(request, cancel or threading.Event())


def test_template_comes_from_the_config(x_backend: LocalBackend) -> None:
    assert x_backend.template.name == "wisp"


def test_template_detected_from_tokens_without_config_hint(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "m", fim_template=None)
    assert load_backend(LoadOptions(str(folder))).template.name == "qwen2.5-coder"
    overridden = load_backend(LoadOptions(str(folder), fim_template="starcoder"))
    assert overridden.template.name == "starcoder"


def test_candidates_carry_per_token_logprobs(x_backend: LocalBackend) -> None:
    result = ask(x_backend, max_new_tokens=6)
    [cand] = result.candidates
    assert cand.text == "xxxxxx" and cand.stop_reason == "max_tokens"
    assert len(cand.logprobs) == len(cand.token_ids) == 6
    assert all(-0.1 < lp <= 0 for lp in cand.logprobs)
    assert result.prompt_tokens > 3 and result.timings_ms["steps"] == 6


def test_several_candidates_sampled_from_random_model(random_model: Path) -> None:
    backend = load_backend(LoadOptions(str(random_model)))
    result = ask(backend, max_new_tokens=8, num_candidates=4, temperature=1.5, seed=1)
    assert len(result.candidates) == 4
    greedy = ask(backend, max_new_tokens=8)
    assert result.candidates[0].token_ids == greedy.candidates[0].token_ids
    assert len({tuple(c.token_ids) for c in result.candidates}) > 1
    for cand in result.candidates:
        assert len(cand.logprobs) == len(cand.token_ids)  # the end token is not part of it


def test_stop_reasons(x_backend: LocalBackend) -> None:
    request = GenerationRequest("x", SamplingParams(max_new_tokens=50), stop_strings=("xxx",))
    [cand] = x_backend.generate(request, threading.Event()).candidates
    assert cand.stop_reason == "stop_string" and cand.text == "xxx"


def test_cancel_stops_within_a_step(x_backend: LocalBackend) -> None:
    cancel = threading.Event()
    result_box: list = []
    worker = threading.Thread(
        target=lambda: result_box.append(ask(x_backend, cancel, max_new_tokens=4000))
    )
    worker.start()
    time.sleep(0.3)
    cancel.set()
    set_at = time.perf_counter()
    worker.join(timeout=30)
    assert not worker.is_alive()
    stopped_after_ms = (time.perf_counter() - set_at) * 1000
    [cand] = result_box[0].candidates
    assert cand.stop_reason == "cancelled"
    assert len(cand.token_ids) < 4000
    assert stopped_after_ms < 1000, "cancel took longer than a decode step should"


def test_int8_generates_the_same(x_model: Path, x_backend: LocalBackend) -> None:
    quantized = load_backend(LoadOptions(str(x_model), quantization="int8"))
    assert ask(quantized, max_new_tokens=4).candidates[0].text == "xxxx"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("broken_config", "cannot read the model config"),
        ("not_causal", "not a causal language model"),
        ("no_weights", "cannot load the weights"),
    ],
)
def test_load_errors_name_the_cause(
    tmp_path: Path, x_model: Path, setup: str, message: str
) -> None:
    folder = tmp_path / setup
    if setup != "missing":
        folder.mkdir()
    if setup == "broken_config":
        (folder / "config.json").write_text("{not json")
    if setup == "not_causal":
        (folder / "config.json").write_text('{"model_type": "clip_vision_model"}')
    if setup == "no_weights":
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            (folder / name).write_bytes((x_model / name).read_bytes())
    with pytest.raises(ModelLoadError, match=message):
        load_backend(LoadOptions(str(folder)))


def test_the_decode_loop_uses_the_cache_argument_this_transformers_wants(
    x_backend: LocalBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """No deprecation warning per step (5.x renamed `past_key_values` to `cache`)."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    logging.Logger.warning_once.cache_clear()  # type: ignore[attr-defined]  # once per process
    hf_logging.enable_propagation()
    try:
        with warnings.catch_warnings(), caplog.at_level(logging.WARNING, "transformers"):
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            assert ask(x_backend, max_new_tokens=4).candidates[0].text == "xxxx"
    finally:
        hf_logging.disable_propagation()
    assert not [r.getMessage() for r in caplog.records if "deprecat" in r.getMessage()]


def test_pickled_weights_are_refused_unless_allowed(tmp_path: Path, x_model: Path) -> None:
    """A `pytorch_model.bin` can run code when unpickled: loading it takes `allowPickle`."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((x_model / name).read_bytes())
    torch.save(load_file(x_model / "model.safetensors"), folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"pickled weights.*allowPickle"):
        load_backend(LoadOptions(str(folder)))
    backend = load_backend(LoadOptions(str(folder), allow_pickle=True))
    assert ask(backend, max_new_tokens=3).candidates[0].text == "xxx"


def test_threads_setting_applies_and_zero_restores_the_default(x_model: Path) -> None:
    import torch

    try:
        backend = load_backend(LoadOptions(str(x_model), threads=1))
        assert torch.get_num_threads() == 1
        assert ask(backend, max_new_tokens=4).candidates[0].text == "xxxx"
        load_backend(LoadOptions(str(x_model), threads=0))
        assert torch.get_num_threads() == DEFAULT_THREADS
    finally:
        torch.set_num_threads(DEFAULT_THREADS)


def test_hub_id_without_network_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="acme/no-such-coder"):
        load_backend(LoadOptions("acme/no-such-coder"))


def test_cuda_without_a_gpu_is_refused(x_model: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        load_backend(LoadOptions(str(x_model), device="cuda"))


def _greedy(backend: LocalBackend, prompt: str, key: str = "doc", **params: object):
    request = GenerationRequest(
        prompt,
        SamplingParams(**params),  # type: ignore[arg-type]
        cache_key=key,
    )
    return backend.generate(request, threading.Event())


CODE = "def area(width, height):\n    return width * height\n\n" * 12


@pytest.mark.parametrize("num_candidates", [1, 3])
def test_reused_cache_answers_as_a_fresh_prefill(random_model: Path, num_candidates: int) -> None:
    reusing = load_backend(LoadOptions(str(random_model)))
    fresh = load_backend(LoadOptions(str(random_model)))
    fresh.slots.size = 0
    opts = {"max_new_tokens": 6, "num_candidates": num_candidates, "seed": 3, "temperature": 1.0}
    first = _greedy(reusing, f"<|fim_suffix|>\n<|fim_prefix|>{CODE}def pe<|fim_middle|>", **opts)
    assert first.timings_ms["reused_tokens"] == 0
    prompt = f"<|fim_suffix|>\n<|fim_prefix|>{CODE}def per<|fim_middle|>"
    again = _greedy(reusing, prompt, **opts)
    baseline = _greedy(fresh, prompt, **opts)
    assert again.prompt_tokens > PREFILL_CHUNK + PREFILL_TAIL  # the fresh prefill: 2+ chunks
    assert again.prompt_tokens - again.timings_ms["reused_tokens"] <= 4
    assert [c.token_ids for c in again.candidates] == [c.token_ids for c in baseline.candidates]
    for ours, theirs in zip(again.candidates, baseline.candidates, strict=True):
        assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-4)


def test_identical_prompt_recomputes_only_its_last_token(x_backend: LocalBackend) -> None:
    _greedy(x_backend, "<|fim_suffix|><|fim_prefix|>y = <|fim_middle|>", key="same")
    result = _greedy(x_backend, "<|fim_suffix|><|fim_prefix|>y = <|fim_middle|>", key="same")
    assert result.timings_ms["reused_tokens"] == result.prompt_tokens - 1
    assert result.candidates[0].text.startswith("x")


def test_kept_caches_are_bounded(random_model: Path) -> None:
    backend = load_backend(LoadOptions(str(random_model)))
    backend.slots.size = 2
    for key in ("a", "b", "c"):
        _greedy(backend, f"<|fim_suffix|><|fim_prefix|>{key * 40}<|fim_middle|>", key=key)
    assert list(backend.slots._slots) == ["b", "c"]
    for slot in backend.slots._slots.values():
        assert slot.cache.get_seq_length() == len(slot.ids)


def test_time_budget_stops_decoding(x_backend: LocalBackend) -> None:
    request = GenerationRequest(
        "<|fim_suffix|><|fim_prefix|>z<|fim_middle|>",
        SamplingParams(max_new_tokens=4000),
        time_budget_ms=30,
    )
    result = x_backend.generate(request, threading.Event())
    [cand] = result.candidates
    assert cand.stop_reason == "deadline"
    assert 0 < len(cand.token_ids) < 4000


def test_int4_needs_a_gpu(x_model: Path) -> None:
    with pytest.raises(ModelLoadError, match="CUDA"):
        load_backend(LoadOptions(str(x_model), quantization="int4"))


def test_int8_without_torchao_says_how_to_get_it(
    x_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # import fails
    with pytest.raises(ModelLoadError, match=r"wisp-lsp\[quantization\]"):
        load_backend(LoadOptions(str(x_model), quantization="int8"))


def test_continuation_scores_reuse_the_prompt_and_leave_it_cached(random_model: Path) -> None:
    prompt = f"<|fim_suffix|>\n<|fim_prefix|>{CODE}def pe<|fim_middle|>"
    request = GenerationRequest(prompt, SamplingParams(max_new_tokens=3), cache_key="doc")
    warm = load_backend(LoadOptions(str(random_model)))
    warm.generate(request, threading.Event())
    fits = warm.continuation_logprobs(request, ["r(a, b):", "x"], "\n    return a")
    cold = load_backend(LoadOptions(str(random_model)))
    assert fits == pytest.approx(
        cold.continuation_logprobs(request, ["r(a, b):", "x"], "\n    return a"), abs=1e-4
    )
    assert all(f < 0 for f in fits) and fits[0] != fits[1]
    [slot] = warm.slots._slots.values()
    assert slot.cache.get_seq_length() == len(slot.ids) == len(warm.encode(prompt))
    again = warm.generate(request, threading.Event())
    assert again.timings_ms["reused_tokens"] == again.prompt_tokens - 1


@pytest.mark.parametrize(
    ("start", "end", "ends"),
    [
        (0, 551, [256, 551]),  # a tail of 39 joins the chunk before it
        (0, 807, [256, 512, 807]),
        (0, 575, [256, 575]),  # a tail of 63
        (0, 576, [256, 576]),  # of 64: the longest that joins
        (0, 577, [256, 512, 577]),
        (0, 256, [256]),
        (0, 300, [300]),  # one chunk a little longer than PREFILL_CHUNK
        (0, 40, [40]),
        (100, 900, [356, 612, 900]),  # from a reused prefix
        (7, 7, []),  # nothing to prefill
    ],
)
def test_prefill_chunks_end_every_chunk_with_a_short_tail_joined(
    start: int, end: int, ends: list[int]
) -> None:
    assert chunk_ends(start, end) == ends
