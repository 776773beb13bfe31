"""The local metrics collector: counts, rates, percentiles, per language, across threads."""

from __future__ import annotations

import threading

import pytest

from lsp_server.stats import TRACKED_LANGUAGES, Stats, percentile


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([], 50, None),
        ([7.0], 95, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([float(v) for v in range(1, 101)], 95, 95.0),
        ([float(v) for v in range(100, 0, -1)], 50, 50.0),  # order does not matter
    ],
)
def test_percentile(values: list[float], p: float, expected: float | None) -> None:
    assert percentile(values, p) == expected


def test_empty_snapshot() -> None:
    snap = Stats().snapshot()
    assert snap["requests"] == 0 and snap["per_language"] == {}
    assert snap["acceptance_rate"] is None and snap["cache_hit_rate"] is None
    assert snap["latency_ms"] == {"p50": None, "p95": None}


def test_the_local_models_speed_from_the_timings_of_its_answers() -> None:
    stats = Stats()
    assert stats.snapshot()["model"]["decode_tokens_per_s"] is None  # nothing ran yet
    stats.record_model_work(
        {"prompt_tokens": 500, "reused_tokens": 0, "prefill": 500.0, "forward_passes": 9,
         "decode": 50.0}
    )  # fmt: skip
    stats.record_model_work(
        {"prompt_tokens": 501, "reused_tokens": 500, "prefill": 10.0, "forward_passes": 11,
         "decode": 50.0}
    )  # fmt: skip
    model = stats.snapshot()["model"]
    assert (model["prefilled_tokens"], model["forward_passes"]) == (501, 20)
    assert model["prefill_tokens_per_s"] == round(501 / 510 * 1000, 1)
    assert model["decode_tokens_per_s"] == 200.0


def test_requests_latency_engine_time_and_cache_hits() -> None:
    stats = Stats()
    for latency, engine, hit in [(10.0, 8.0, False), (30.0, 25.0, False), (2.0, 0.5, True)]:
        stats.record_request("python", latency, engine, hit)
    stats.record_request("go", 50.0, 40.0, False)
    stats.record_cancelled("go", engine_ms=6.0)  # the engine's time counts, its latency not
    snap = stats.snapshot()
    assert (snap["requests"], snap["cancelled"]) == (4, 1)
    assert snap["engine_ms_total"] == 79.5
    assert snap["cache_hit_rate"] == 0.25
    assert snap["latency_ms"] == {"p50": 10.0, "p95": 50.0}
    python = snap["per_language"]["python"]
    assert (python["requests"], python["cancelled"], python["engine_ms_total"]) == (3, 0, 33.5)
    assert python["cache_hit_rate"] == round(1 / 3, 4)
    assert python["latency_ms"] == {"p50": 10.0, "p95": 30.0}
    assert snap["per_language"]["go"]["cancelled"] == 1


def test_acceptance_events_count_once_per_item_and_per_language() -> None:
    stats = Stats()
    first, second, third = stats.issue("python", 3)
    (ts_item,) = stats.issue("typescript", 1)
    assert len({first, second, third, ts_item}) == 4
    for item in (first, second, third, ts_item):
        assert stats.shown(item)
    assert stats.shown(first)  # shown again: no double count
    assert stats.accepted(first) and stats.accepted(first)
    assert stats.partially_accepted(second) and stats.partially_accepted(second)
    snap = stats.snapshot()
    assert (snap["items"], snap["shown"], snap["accepted"], snap["partially_accepted"]) == (
        4,
        4,
        1,
        1,
    )
    assert snap["acceptance_rate"] == 0.25
    assert snap["per_language"]["python"]["acceptance_rate"] == round(1 / 3, 4)
    assert snap["per_language"]["typescript"]["accepted"] == 0


def test_accepting_an_item_never_reported_shown_counts_it_shown() -> None:
    stats = Stats()
    (item,) = stats.issue("rust", 1)
    assert stats.accepted(item)
    snap = stats.snapshot()
    assert (snap["shown"], snap["accepted"], snap["acceptance_rate"]) == (1, 1, 1.0)


def test_issue_can_mark_leading_items_shown() -> None:
    stats = Stats()
    stats.issue("c", 3, shown=1)
    assert stats.snapshot()["shown"] == 1


def test_unknown_and_forgotten_ids_are_ignored() -> None:
    stats = Stats(tracked_items=2)
    old, *_ = stats.issue("python", 3)  # three issued, two remembered
    assert not stats.accepted(old)
    assert not stats.shown("no-such-item")
    assert stats.snapshot()["accepted"] == 0


def test_ids_differ_between_collectors() -> None:
    assert Stats().issue("python", 1) != Stats().issue("python", 1)


def test_concurrent_recording_loses_nothing() -> None:
    stats = Stats()

    def work() -> None:
        for _ in range(200):
            stats.record_request("python", 1.0, 1.0, False)
            (item,) = stats.issue("python", 1)
            stats.accepted(item)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snap = stats.snapshot()
    assert (snap["requests"], snap["items"], snap["accepted"]) == (1600, 1600, 1600)
    assert snap["engine_ms_total"] == 1600.0


def test_issuing_nothing_leaves_no_trace() -> None:
    stats = Stats()
    assert stats.issue("", 0) == []
    assert stats.snapshot()["per_language"] == {}


def test_languages_counted_apart_are_bounded() -> None:
    stats = Stats()
    for number in range(TRACKED_LANGUAGES + 10):
        stats.record_request(f"lang{number}", 1.0, 1.0, False)
    per_language = stats.snapshot()["per_language"]
    assert len(per_language) == TRACKED_LANGUAGES + 1
    assert per_language["other"]["requests"] == 10
    assert stats.snapshot()["requests"] == TRACKED_LANGUAGES + 10


def test_a_serving_engines_time_and_the_overhead_over_it() -> None:
    stats = Stats()
    assert stats.snapshot()["server_latency_ms"] == {"p50": None, "p95": None}
    for latency, server in [(110.0, 100.0), (44.0, 40.0), (330.0, 300.0)]:
        stats.record_request("python", latency, latency - 2, False, server_ms=server)
    stats.record_request("python", 3.0, 1.0, True)  # from the cache: no engine time
    snap = stats.snapshot()
    assert snap["server_latency_ms"] == {"p50": 100.0, "p95": 300.0}
    assert snap["server_overhead_p50"] == 1.1
    assert snap["per_language"]["python"]["server_overhead_p50"] == 1.1
