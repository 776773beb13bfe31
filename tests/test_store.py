"""Packed weights kept between starts (`model_runtime.local.store`)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from model_runtime.backend import GenerationRequest, SamplingParams
from model_runtime.local import LoadOptions, load_backend, store
from model_runtime.local.fast_llama import FastLlama

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["<|fim_prefix|>def add(a, b):\n", "class Greeter:\n    def", "for i in range("]


@pytest.fixture
def kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The store on (the test session turns it off), in a folder of this test's own."""
    monkeypatch.setenv("WISP_PACKED_STORE", "1")
    monkeypatch.setattr(store, "cache_root", lambda: tmp_path / "cache")
    return tmp_path / "cache" / "packed"


def answers(backend) -> list[list[int]]:
    params = SamplingParams(max_new_tokens=10)
    return [
        backend.generate(GenerationRequest(prompt, params, cache_key="doc"), threading.Event())
        .candidates[0]
        .token_ids
        for prompt in PROMPTS
    ]


def logits(fast: FastLlama) -> torch.Tensor:
    ids = torch.arange(3, 40).unsqueeze(0) % 90
    with torch.inference_mode():
        cache, prefill = fast.forward(ids[:, :-1], None)
        _, step = fast.forward(ids[:, -1:], cache)
    return torch.cat([prefill, step], dim=1)


@pytest.mark.parametrize(("fixture", "scheme"), [("random_model", "q4"), ("x_model", "q8")])
def test_a_second_load_reads_the_packed_weights_and_computes_the_same(
    fixture: str, scheme: str, kept: Path, request: pytest.FixtureRequest
) -> None:
    folder = request.getfixturevalue(fixture)  # random_model's head is tied, x_model's is not
    first = load_backend(LoadOptions(str(folder), quantization=scheme))
    assert first.model is not None and first.fast is not None
    assert len(list(kept.glob("*/weights.safetensors"))) == 1
    second = load_backend(LoadOptions(str(folder), quantization=scheme))
    assert second.model is None and second.fast is not None  # transformers' model never built
    assert second.fast.new_cache(1).keys.dtype == torch.float16  # packed: half-float caches
    assert second.context_window == first.context_window == 2048
    assert torch.equal(logits(second.fast), logits(first.fast))
    assert answers(second) == answers(first)


def test_a_model_with_biases_and_a_tied_head_comes_back_whole(tmp_path: Path) -> None:
    torch.manual_seed(1)
    sizes = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2)
    model = Qwen2ForCausalLM(
        Qwen2Config(
            **sizes,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            rope_theta=500.0,
        )
    ).eval()
    with torch.no_grad():  # random biases: zeros would hide a missing one
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.normal_()
            layer.self_attn.k_proj.bias.normal_()
    fast = FastLlama(model, None, "q4")
    store.save(fast, tmp_path)
    back = store.load(tmp_path)
    assert back is not None and back.lm_head is back.embed
    assert back.layers[0].qkv_bias is not None
    assert torch.equal(logits(back), logits(fast))


def test_an_unreadable_copy_is_deleted_and_the_model_loaded_again(
    random_model: Path, kept: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = load_backend(LoadOptions(str(random_model), quantization="q4"))
    (saved,) = kept.glob("*/weights.safetensors")
    saved.write_bytes(saved.read_bytes()[:5000])  # cut short, as by a full disk
    with caplog.at_level(logging.WARNING):
        again = load_backend(LoadOptions(str(random_model), quantization="q4"))
    assert "unreadable" in caplog.text
    assert again.model is not None and answers(again) == answers(first)
    third = load_backend(LoadOptions(str(random_model), quantization="q4"))  # stored anew
    assert third.model is None and answers(third) == answers(first)


def test_the_copy_belongs_to_the_files_and_the_setting(
    random_model: Path, kept: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    for part in random_model.iterdir():
        (folder / part.name).write_bytes(part.read_bytes())
    place = store.place(str(folder), {"quantization": "q4"})
    assert place is not None and place.parent == kept
    assert store.place(str(folder), {"quantization": "q8"}) != place
    weights = next(folder.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert store.place(str(folder), {"quantization": "q4"}) != place  # the weights changed
    assert store.place("acme/some-coder", {"quantization": "q4"}) is None  # a hub id
    monkeypatch.setenv("WISP_PACKED_STORE", "0")
    assert store.place(str(folder), {"quantization": "q4"}) is None


def test_weights_not_packed_or_a_rope_that_changes_with_length_are_not_stored(
    random_model: Path, kept: Path, tmp_path: Path
) -> None:
    plain = load_backend(LoadOptions(str(random_model), quantization="none"))
    assert plain.fast is not None and not list(kept.glob("*/*"))
    packed = load_backend(LoadOptions(str(random_model), quantization="q4")).fast
    assert packed is not None
    packed.rotary.rope_type = "dynamic"
    store.save(packed, tmp_path / "dynamic")
    assert not (tmp_path / "dynamic").exists()


def test_a_stored_load_never_imports_transformers_model_classes(
    random_model: Path, kept: Path
) -> None:
    load_backend(LoadOptions(str(random_model), quantization="q4"))  # stores it
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from model_runtime.local import LoadOptions, load_backend, store
        store.cache_root = lambda: Path({str(kept.parent)!r})
        backend = load_backend(LoadOptions({str(random_model)!r}, quantization="q4"))
        assert backend.model is None, "not read from the store"
        classes = ("transformers.modeling_utils", "transformers.models.llama.modeling_llama")
        print(sorted(m for m in classes if m in sys.modules))
        """
    )
    env = {**os.environ, "WISP_PACKED_STORE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_a_failed_write_leaves_nothing_behind(
    random_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = load_backend(LoadOptions(str(random_model), quantization="q4")).fast
    assert fast is not None

    def full_disk(tensors, path, metadata=None):
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "save_file", full_disk)
    store.save(fast, tmp_path / "full")
    assert list((tmp_path / "full").iterdir()) == []
    assert store.load(tmp_path / "full") is None
