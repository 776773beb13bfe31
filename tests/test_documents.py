"""Documents' kept caches: keys turned to where they moved, edits taken over moved and made exact
again in idle time, and requests anywhere in a document starting from its cache."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType as T
from test_idle_prefill import CODE, CancelAfterChecks
from tiny_gguf import write_tiny_gguf

from model_runtime.backend import GenerationRequest, GenerationResult, SamplingParams
from model_runtime.local import IDLE_PREFILL_CHUNK, LoadOptions, LocalBackend, load_backend
from model_runtime.local.documents import MIN_CHUNK, SLOW_CHUNKS, DocumentCaches

EDITED = CODE.replace("def area3(", "MARGIN = 2\n\n\ndef area3(")
CURSOR = CODE.index("def area9(")  # below the edit


@pytest.fixture(scope="module", params=["transformers", "llama", "qwen2"])
def model(request: pytest.FixtureRequest, random_model: Path, tmp_path_factory) -> Path:
    """A folder through transformers (rotation by halves), and GGUF files run from their blocks
    in native code, with neighbouring weights rotating together (llama) or halves (qwen2)."""
    if request.param == "transformers":
        return random_model
    path = tmp_path_factory.mktemp("gguf") / f"{request.param}.gguf"
    return write_tiny_gguf(path, request.param, T.Q8_0)


def _backend(model: Path, keep: bool = True) -> LocalBackend:
    backend = load_backend(LoadOptions(str(model)))
    assert backend.fast is not None and backend.documents is not None
    backend.documents.settle_s = 0  # no waiting for the user to stop typing
    backend.documents.chunk_ms = None  # chunks of IDLE_PREFILL_CHUNK, whatever they take
    if not keep:
        backend.slots.size, backend.documents = 0, None
    return backend


def _ask(text: str) -> GenerationRequest:
    return GenerationRequest(text, SamplingParams(max_new_tokens=8, seed=0), cache_key="doc")


def _same(ours: GenerationResult, theirs: GenerationResult, backend: LocalBackend) -> None:
    """The same answer; with weights in blocks (half-float caches, bf16 prefill products, and
    logits of random weights nearly tied) only where the cache is a fresh prefill's."""
    if backend.fast is not None and backend.fast.packing is not None:
        return
    assert [c.token_ids for c in ours.candidates] == [c.token_ids for c in theirs.candidates]
    for mine, fresh in zip(ours.candidates, theirs.candidates, strict=True):
        assert mine.logprobs == pytest.approx(fresh.logprobs, abs=1e-4)


def _fresh(backend: LocalBackend, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of `ids` computed in one pass from nothing."""
    assert backend.fast is not None
    with torch.inference_mode():
        cache, _ = backend.fast.forward(torch.tensor([ids]), None)
    return cache.keys[:, :, :, : len(ids)].float(), cache.values[:, :, :, : len(ids)].float()


def _matches_fresh(backend: LocalBackend) -> bool:
    """Whether the document's kept cache is what a fresh prefill computes (up to rounding)."""
    kept = backend.documents.get("doc")
    assert kept is not None and backend.fast is not None
    close = 0.05 if backend.fast.packing is not None else 1e-4  # half floats and bf16, or fp32
    held = kept.cache.keys[:, :, :, : len(kept.ids)], kept.cache.values[:, :, :, : len(kept.ids)]
    return all(
        torch.allclose(a.float(), b, atol=close, rtol=close)
        for a, b in zip(held, _fresh(backend, kept.ids), strict=True)
    )


def test_turned_keys_are_the_keys_computed_there(model: Path) -> None:
    """The first layer's keys depend on the token and its position only: computed at one place
    and turned by a distance, they are the keys computed that far on."""
    decoder = _backend(model, keep=False).fast
    assert decoder is not None
    ids = list(range(40, 80))
    with torch.inference_mode():
        alone, _ = decoder.forward(torch.tensor([ids]), None)
        later, _ = decoder.forward(torch.tensor([ids[:7] + ids]), None)
    first = alone.keys[0, 0, :, : len(ids)]
    turned = decoder.turn_keys(first, 7).float()
    assert torch.allclose(turned, later.keys[0, 0, :, 7 : 7 + len(ids)].float(), atol=3e-2)
    assert not torch.allclose(turned, first.float(), atol=3e-2)  # it did turn them


def test_a_request_anywhere_starts_from_the_documents_cache(model: Path) -> None:
    warm, cold = _backend(model), _backend(model, keep=False)
    warm.prefill(_ask(CODE), threading.Event())
    for cursor in (CURSOR, CODE.index("def area2("), len(CODE) - 40):  # down, up, further down
        asked = _ask(CODE[:cursor])
        answer = warm.generate(asked, threading.Event())
        assert answer.timings_ms["reused_tokens"] == answer.timings_ms["prompt_tokens"] - 1
        _same(answer, cold.generate(asked, threading.Event()), warm)


def test_an_edit_is_taken_moved_then_made_exact_in_idle_time(model: Path) -> None:
    warm, cold = _backend(model), _backend(model, keep=False)
    warm.prefill(_ask(CODE), threading.Event())
    length = len(warm.encode(EDITED))
    # the code above taken, the edited line computed, the code after it moved (a look at the
    # cancel before each); stopped before making it exact
    computed = warm.prefill(_ask(EDITED), CancelAfterChecks(3))
    kept = warm.documents.get("doc")
    assert kept is not None and len(kept.ids) == length - 1 and kept.exact < length - 40
    assert 0 < computed <= 16  # the edited line
    assert not _matches_fresh(warm)  # what moved was computed after other text
    asked = _ask(EDITED[: EDITED.index("def area9(")])
    moved = warm.generate(asked, threading.Event())
    assert moved.timings_ms["reused_tokens"] == moved.timings_ms["prompt_tokens"] - 1
    # idle time makes it exact: from then on, answers are a fresh prefill's
    moved_from = kept.exact
    assert warm.prefill(_ask(EDITED), threading.Event()) == length - 1 - moved_from
    kept = warm.documents.get("doc")
    assert kept is not None and kept.exact == length - 1 and _matches_fresh(warm)
    warm.slots.forget("doc")  # the request's own prompt (moved) is not what is tested here
    _same(warm.generate(asked, threading.Event()), cold.generate(asked, threading.Event()), warm)


def test_idle_chunks_halve_when_slow_and_double_when_quick(model: Path) -> None:
    backend = _backend(model)
    documents = backend.documents
    assert documents is not None
    run = documents.run
    documents.chunk_ms, documents.run = 10.0, lambda ids, cache: (time.sleep(0.05), run(ids, cache))
    backend.prefill(_ask(CODE), CancelAfterChecks(1))  # one chunk, five times too slow
    assert documents.chunk == IDLE_PREFILL_CHUNK // 2
    documents.chunk_ms, documents.run = 1000.0, run
    backend.prefill(_ask(CODE), CancelAfterChecks(1))
    assert documents.chunk == IDLE_PREFILL_CHUNK


def _smallest_chunks(model: Path, slow: Iterator[bool]) -> tuple[LocalBackend, DocumentCaches]:
    """A backend whose idle chunks are the smallest, each far too slow where `slow` says so."""
    backend = _backend(model)
    documents = backend.documents
    assert documents is not None
    run = documents.run
    documents.chunk, documents.chunk_ms = MIN_CHUNK, 10.0
    documents.run = lambda ids, cache: (time.sleep(0.05 if next(slow) else 0), run(ids, cache))
    return backend, documents


def test_idle_work_stops_for_good_where_the_smallest_chunk_is_far_too_slow(model: Path) -> None:
    backend, documents = _smallest_chunks(model, itertools.repeat(True))
    # SLOW_CHUNKS chunks, then no more
    assert backend.prefill(_ask(CODE), threading.Event()) == SLOW_CHUNKS * MIN_CHUNK
    assert documents.too_slow and backend.prefill(_ask(EDITED), threading.Event()) == 0


def test_a_few_slow_chunks_among_quick_ones_do_not_stop_idle_work(model: Path) -> None:
    # a busy moment, twice, then a quick chunk
    backend, documents = _smallest_chunks(model, itertools.cycle([True, True, False]))
    assert backend.prefill(_ask(CODE), threading.Event()) > SLOW_CHUNKS * MIN_CHUNK
    assert not documents.too_slow


def test_a_document_closed_while_its_idle_work_runs_stays_closed(model: Path) -> None:
    backend = _backend(model)
    documents = backend.documents
    assert documents is not None
    run = documents.run

    def closing(ids: list[int], cache: object) -> object:
        backend.forget("doc")  # didClose, from another thread, between two chunks
        return run(ids, cache)

    documents.run = closing
    assert backend.prefill(_ask(CODE), threading.Event()) > 0
    assert documents.get("doc") is None
    documents.run = run
    assert backend.prefill(_ask(CODE), threading.Event()) > 0  # reopened: kept again
    assert documents.get("doc") is not None
