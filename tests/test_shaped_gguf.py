"""tools/shaped_gguf.py: random-weight GGUF files at real models' shapes, read back."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType, GGUFReader

SCRIPT = Path(__file__).parents[1] / "tools" / "shaped_gguf.py"
CACHE = Path(os.environ.get("WISP_CI_CACHE") or Path.home() / ".cache" / "wisp-ci")
LLAMA_PYTHON = Path(
    os.environ.get("WISP_LLAMA_SERVER_PYTHON") or CACHE / "llama-server" / "bin" / "python"
)
CODE = (
    "import json\n\n\ndef load_config(path: str) -> dict:\n"
    '    """Read the settings file, héllo ✓."""\n'
    "    with open(path, encoding='utf-8') as handle:\n        return json.load(handle)\n"
)
# What the models' config.json files say, written out again so the test does not trust the script.
MODELS = {
    "smollm2-135m": dict(
        type="Q8_0", arch="llama", hidden=576, heads=9, kv_heads=3, ffn=1536, vocab=49152,
        context=8192, theta=100000.0, eps=1e-5, bias=False, pre="smollm", specials=5,
    ),
    "qwen2.5-coder-0.5b": dict(
        type="F16", arch="qwen2", hidden=896, heads=14, kv_heads=2, ffn=4864, vocab=151936,
        context=32768, theta=1e6, eps=1e-6, bias=True, pre="qwen2", specials=9,
    ),
}  # fmt: skip


def _load_script():
    spec = importlib.util.spec_from_file_location("shaped_gguf", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


shaped_gguf = _load_script()


def _make(folder: Path, preset: str, type_: str) -> Path:
    """The file, made by the script's main once per folder."""
    out = folder / f"{preset}-{type_}.gguf"
    if not out.exists():
        argv = ["--preset", preset, "--type", type_, "--layers", "2", "--out", str(out)]
        assert shaped_gguf.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shaped")


@pytest.fixture(scope="module", params=sorted(MODELS))
def made(request, folder: Path) -> tuple[dict, Path, GGUFReader]:
    model = MODELS[request.param]
    out = _make(folder, request.param, str(model["type"]))
    return model, out, GGUFReader(out)


def _value(reader: GGUFReader, key: str):
    return reader.fields[key].contents()


def test_tensor_names_shapes_and_types(made) -> None:
    model, out, reader = made
    hidden, ffn, vocab = model["hidden"], model["ffn"], model["vocab"]
    kv = model["kv_heads"] * hidden // model["heads"]
    weight = GGMLQuantizationType[model["type"]]
    expected = {
        "token_embd.weight": ([hidden, vocab], weight),
        "output_norm.weight": ([hidden], None),
    }
    for i in range(2):
        expected |= {
            f"blk.{i}.attn_norm.weight": ([hidden], None),
            f"blk.{i}.attn_q.weight": ([hidden, hidden], weight),
            f"blk.{i}.attn_k.weight": ([hidden, kv], weight),
            f"blk.{i}.attn_v.weight": ([hidden, kv], weight),
            f"blk.{i}.attn_output.weight": ([hidden, hidden], weight),
            f"blk.{i}.ffn_norm.weight": ([hidden], None),
            f"blk.{i}.ffn_gate.weight": ([hidden, ffn], weight),
            f"blk.{i}.ffn_up.weight": ([hidden, ffn], weight),
            f"blk.{i}.ffn_down.weight": ([ffn, hidden], weight),
        }
        if model["bias"]:
            for name, size in (("attn_q", hidden), ("attn_k", kv), ("attn_v", kv)):
                expected[f"blk.{i}.{name}.bias"] = ([size], None)
    found = {t.name: ([int(n) for n in t.shape], t.tensor_type) for t in reader.tensors}
    assert found == {
        name: (shape, kind or GGMLQuantizationType.F32) for name, (shape, kind) in expected.items()
    }
    norm = next(t for t in reader.tensors if t.name == "blk.0.ffn_norm.weight")
    assert (norm.data == 1).all()
    assert shaped_gguf.tensor_types(out) == Counter(t.tensor_type.name for t in reader.tensors)


def test_metadata(made) -> None:
    model, _, reader = made
    arch = model["arch"]
    assert _value(reader, "general.architecture") == arch
    assert _value(reader, f"{arch}.block_count") == 2
    assert _value(reader, f"{arch}.context_length") == model["context"]
    assert _value(reader, f"{arch}.embedding_length") == model["hidden"]
    assert _value(reader, f"{arch}.feed_forward_length") == model["ffn"]
    assert _value(reader, f"{arch}.attention.head_count") == model["heads"]
    assert _value(reader, f"{arch}.attention.head_count_kv") == model["kv_heads"]
    assert _value(reader, f"{arch}.rope.freq_base") == pytest.approx(model["theta"])
    eps = _value(reader, f"{arch}.attention.layer_norm_rms_epsilon")
    assert eps == pytest.approx(model["eps"])
    file_type = {"Q8_0": 7, "F16": 1}[model["type"]]
    assert _value(reader, "general.file_type") == file_type
    assert _value(reader, "tokenizer.ggml.model") == "gpt2"
    assert _value(reader, "tokenizer.ggml.pre") == model["pre"]


def test_vocabulary_is_valid_byte_level_bpe(made) -> None:
    model, _, reader = made
    tokens = _value(reader, "tokenizer.ggml.tokens")
    types = _value(reader, "tokenizer.ggml.token_type")
    merges = _value(reader, "tokenizer.ggml.merges")
    assert len(tokens) == len(types) == model["vocab"]
    assert len(set(tokens)) == len(tokens)
    assert types[-model["specials"] :] == [3] * model["specials"]  # control tokens last
    assert tokens[_value(reader, "tokenizer.ggml.eos_token_id")] == "<|endoftext|>"
    assert len(set(tokens[:256])) == 256 and all(len(t) == 1 for t in tokens[:256])
    known = set(tokens)
    pairs = [merge.split(" ") for merge in merges]
    assert all(len(p) == 2 and p[0] in known and p[1] in known for p in pairs)
    assert {a + b for a, b in pairs} == set(tokens[256 : -model["specials"]])


def test_transformers_loads_the_tokenizer(folder: Path) -> None:
    transformers = pytest.importorskip("transformers")
    out = _make(folder, "smollm2-135m", "Q8_0")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=out.name)
    ids = tokenizer.encode(CODE, add_special_tokens=False)
    assert tokenizer.decode(ids) == CODE
    assert 2.5 < len(CODE) / len(ids) < 6  # learned merges: code is not cut into bytes
    assert len(tokenizer) == 49152


LLAMA_CHECK = """
import sys, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=64, verbose=False)
ids = llm.tokenize(sys.argv[2].encode(), add_bos=False)
llm.eval(ids[:8])
print(llm.detokenize(ids).decode() == sys.argv[2])
"""


@pytest.mark.skipif(
    not LLAMA_PYTHON.is_file(),
    reason=f"no llama-cpp-python at {LLAMA_PYTHON}: run `bash .ci/install-llama-server`",
)
def test_k_quant_through_llama_cpp(tmp_path: Path) -> None:
    out = _make(tmp_path, "smollm2-135m", "Q4_K_M")
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # the F16 step is gone
    kinds = shaped_gguf.tensor_types(out)  # agrees with GGUFReader: see the first test
    assert kinds["Q4_K"] > 0 and kinds["Q6_K"] > 0
    run = subprocess.run(
        [str(LLAMA_PYTHON), "-c", LLAMA_CHECK, str(out), CODE],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.stdout.strip() == "True", run.stderr[-2000:]


def test_k_quant_without_llama_says_how_to_get_it(tmp_path: Path) -> None:
    argv = ["--preset", "smollm2-135m", "--type", "Q4_K_M", "--out", str(tmp_path / "x.gguf")]
    with pytest.raises(SystemExit, match="install-llama-server"):
        shaped_gguf.main([*argv, "--llama-python", str(tmp_path / "missing")])
