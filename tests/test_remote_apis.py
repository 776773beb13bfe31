"""The remote backends' pure parts: request bodies, stream lines, token estimates, templates."""

from __future__ import annotations

import json

import pytest

from model_runtime.backend import SamplingParams
from model_runtime.remote.apis import (
    Ask,
    Event,
    MalformedReply,
    Piece,
    error_message,
    model_ids,
    parse_line,
    request_body,
    stop_reason,
)
from model_runtime.remote.tokens import EstimatingTokenizer
from model_runtime.templates import TEMPLATES, PromptParts, template_for_model_name

PARTS = PromptParts("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n", "m.py")
GREEDY = SamplingParams(max_new_tokens=16, num_candidates=1, temperature=0.2, seed=7)
SAMPLED = SamplingParams(max_new_tokens=16, num_candidates=3, temperature=0.4, top_p=0.9)


def _ask(params: SamplingParams = GREEDY, **kw) -> Ask:
    base = {"stops": ("<|endoftext|>",), "model": "m", "logprobs": True}
    return Ask(PARTS.prefix, PARTS, params, **{**base, **kw})


def test_openai_body_is_greedy_for_one_candidate_and_keeps_four_stops() -> None:
    stops = ("a", "b", "c", "d", "e")
    body = request_body("openai", _ask(stops=stops), TEMPLATES["prefix-only"])
    assert body == {
        "prompt": PARTS.prefix,
        "max_tokens": 16,
        "temperature": 0.0,
        "top_p": 0.95,
        "n": 1,
        "stream": True,
        "model": "m",
        "stop": ["a", "b", "c", "d"],
        "logprobs": 1,
        "seed": 7,
    }


def test_openai_body_samples_several_candidates_and_takes_extra_fields_last() -> None:
    body = request_body(
        "openai",
        _ask(SAMPLED, model=None, logprobs=False, stops=()),
        TEMPLATES["prefix-only"],
        {"repeat_penalty": 1.0, "n": 2},
    )
    assert body["temperature"] == 0.4 and body["top_p"] == 0.9
    assert body["n"] == 2 and body["repeat_penalty"] == 1.0  # extra wins
    assert not {"model", "stop", "logprobs", "seed"} & body.keys()


def test_llamacpp_infill_body_sends_prefix_and_suffix_apart() -> None:
    body = request_body("llamacpp", _ask(), TEMPLATES["qwen2.5-coder"])
    assert body["input_prefix"] == PARTS.prefix and body["input_suffix"] == PARTS.suffix
    assert body["cache_prompt"] is True and body["stream"] is True
    assert body["n_predict"] == 16 and body["n_probs"] == 1 and body["repeat_penalty"] == 1.0
    assert body["stop"] == ["<|endoftext|>"] and body["seed"] == 7


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("qwen2.5-coder", {"prompt": PARTS.prefix, "suffix": PARTS.suffix}),
        ("prefix-only", {"prompt": "RENDERED", "raw": True}),
    ],
)
def test_ollama_body_uses_suffix_for_fim_models_and_raw_prompts_otherwise(
    template: str, expected: dict
) -> None:
    ask = Ask("RENDERED", PARTS, GREEDY, ("\n\n",), "qwen2.5-coder:1.5b", False)
    body = request_body("ollama", ask, TEMPLATES[template])
    assert {k: body[k] for k in expected} == expected
    assert ("suffix" in body) == (template != "prefix-only")
    assert body["model"] == "qwen2.5-coder:1.5b"
    assert body["options"] == {
        "temperature": 0.0,
        "top_p": 0.95,
        "num_predict": 16,
        "repeat_penalty": 1.0,
        "stop": ["\n\n"],
        "seed": 7,
    }


def _data(obj: object) -> str:
    return "data: " + json.dumps(obj)


@pytest.mark.parametrize(
    ("api", "line", "events"),
    [
        ("openai", "", []),
        ("openai", ": ping - 2026-12-01", []),
        ("openai", "event: message", []),
        ("openai", "data: [DONE]", [Event(end_of_stream=True)]),
        (
            "openai",
            _data({"choices": [{"text": "x = 1", "index": 0, "finish_reason": None}]}),
            [Event(0, (Piece("x = 1"),))],
        ),
        (
            "openai",
            _data(
                {
                    "choices": [
                        {
                            "text": "ab",
                            "index": 1,
                            "logprobs": {"tokens": ["a", "b"], "token_logprobs": [-0.5, -1.5]},
                            "finish_reason": "length",
                        }
                    ]
                }
            ),
            [Event(1, (Piece("a", -0.5), Piece("b", -1.5)), "length")],
        ),
        (  # tokens that do not spell the text: one piece, their mean
            "openai",
            _data(
                {
                    "choices": [
                        {
                            "text": "é",
                            "logprobs": {"tokens": ["\\xc3", "\\xa9"], "token_logprobs": [-1, -3]},
                        }
                    ]
                }
            ),
            [Event(0, (Piece("é", -2.0),))],
        ),
        (  # logprobs that are null (vLLM for the first chunk, say): no score
            "openai",
            _data(
                {
                    "choices": [
                        {"text": "y", "logprobs": {"tokens": ["y"], "token_logprobs": [None]}}
                    ]
                }
            ),
            [Event(0, (Piece("y"),))],
        ),
        (
            "llamacpp",
            _data(
                {
                    "content": "ret",
                    "stop": False,
                    "completion_probabilities": [{"token": "ret", "logprob": -0.25}],
                }
            ),
            [Event(0, (Piece("ret", -0.25),))],
        ),
        (
            "llamacpp",
            _data(
                {
                    "content": "",
                    "stop": True,
                    "stop_type": "limit",
                    "timings": {"prompt_ms": 12.5, "predicted_ms": 30},
                }
            ),
            [Event(0, (), "limit", 42.5, end_of_stream=True)],
        ),
        ("ollama", "", []),
        ("ollama", json.dumps({"response": "a + b", "done": False}), [Event(0, (Piece("a + b"),))]),
        (
            "ollama",
            json.dumps(
                {
                    "response": "",
                    "done": True,
                    "done_reason": "length",
                    "total_duration": 81_000_000,
                }
            ),
            [Event(0, (), "length", 81.0, end_of_stream=True)],
        ),
    ],
)
def test_stream_lines(api, line: str, events: list[Event]) -> None:
    assert parse_line(api, line) == events


@pytest.mark.parametrize(
    ("api", "line", "says"),
    [
        ("openai", "data: {not json", "not JSON"),
        ("openai", "data: [1, 2]", "not a JSON object"),
        ("openai", _data({"object": "text_completion"}), "without `choices`"),
        ("openai", _data({"choices": [{"text": 5}]}), "not a string"),
        ("openai", _data({"error": {"message": "context full"}}), "context full"),
        ("llamacpp", _data({"content": None}), "not a string"),
        ("ollama", '{"error": "model \\"x\\" not found"}', 'model "x" not found'),
        ("ollama", "<html>", "not JSON"),
    ],
)
def test_malformed_lines_say_what_is_wrong(api, line: str, says: str) -> None:
    with pytest.raises(MalformedReply, match=says):
        parse_line(api, line)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"message": "Invalid API key", "type": "auth"}}, "Invalid API key"),
        ({"detail": "Invalid API key"}, "Invalid API key"),
        ({"error": "model not found"}, "model not found"),
        ("plain text", "plain text"),
    ],
)
def test_error_messages(body: object, message: str) -> None:
    assert error_message(body) == message


def test_stop_reasons_and_model_listing() -> None:
    assert [stop_reason(f) for f in ("length", "limit", "stop", "word", None)] == [
        "max_tokens",
        "max_tokens",
        "eos",
        "eos",
        "eos",
    ]
    assert model_ids({"data": [{"id": "a"}, {"id": "b"}, {"x": 1}]}) == ["a", "b"]
    assert model_ids({"models": []}) == [] and model_ids([1]) == []


@pytest.mark.parametrize(
    ("name", "template"),
    [
        ("Qwen/Qwen2.5-Coder-1.5B", "qwen2.5-coder"),
        ("qwen2.5-coder:7b-base", "qwen2.5-coder"),
        ("bigcode/starcoder2-3b", "starcoder2"),
        ("bigcode/starcoderbase-1b", "starcoder"),
        ("deepseek-ai/deepseek-coder-1.3b-base", "deepseek-coder"),
        ("codellama:7b-code", "codellama"),
        ("CodeGemma-2b", "codegemma"),
        ("codestral-latest", "codestral"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "prefix-only"),
        (None, "prefix-only"),
    ],
)
def test_templates_from_model_names(name: str | None, template: str) -> None:
    assert template_for_model_name(name).name == template


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("", 0),
        ("return", 1),
        ("return a + b", 7),  # return, " ", a, " ", +, " ", b
        ("    x", 2),
        ("        x", 3),
        ("1234567", 3),
        ("supercalifragilistic", 4),
        ("a\r\nb", 3),
    ],
)
def test_token_estimates(text: str, count: int) -> None:
    assert len(EstimatingTokenizer().encode(text)) == count


@pytest.mark.parametrize(
    "text", ["", "def f(x):\n\treturn x  # é ☃ 𝄞\r\n", "\x00\ud7ff", "a" * 100, " " * 9]
)
def test_token_estimates_round_trip_and_slices_decode_to_slices(text: str) -> None:
    tokenizer = EstimatingTokenizer()
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert "".join(tokenizer.decode([i]) for i in ids) == text


def test_a_full_table_spells_new_pieces_by_character() -> None:
    tokenizer = EstimatingTokenizer(capacity=2)
    assert len(tokenizer.encode("alpha beta")) == 3
    assert tokenizer.encode("gamma") == [ord(c) for c in "gamma"]
    assert tokenizer.decode(tokenizer.encode("alpha gamma beta")) == "alpha gamma beta"


def test_context_from_other_files_goes_ahead_of_the_prefix() -> None:
    parts = PromptParts("x = ", "\n", "m.py", context="# other.py\ndef helper(): ...\n")
    ask = Ask("RENDERED", parts, GREEDY, (), "qwen2.5-coder:1.5b")
    infill = request_body("llamacpp", ask, TEMPLATES["qwen2.5-coder"])
    assert infill["input_extra"] == [{"filename": "", "text": parts.context}]
    assert infill["input_prefix"] == "x = "
    ollama = request_body("ollama", ask, TEMPLATES["qwen2.5-coder"])
    assert ollama["prompt"] == parts.context + "x = "
    assert request_body("openai", ask, TEMPLATES["qwen2.5-coder"])["prompt"] == "RENDERED"
