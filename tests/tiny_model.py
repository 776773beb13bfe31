"""A tiny random-weight Llama and BPE tokenizer, saved like any model folder on disk."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
           "<|file_sep|>", "<|repo_name|>"]  # fmt: skip
SAMPLE = '''
def add(a, b):
    """Add two numbers."""
    return a + b


class Greeter:
    def __init__(self, name: str) -> None:
        self.name = name

    def greet(self) -> str:
        return f"Hello, {self.name}! 😀"

for i in range(10):
    print(add(i, i * 2))
'''


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\s+(?!\S)|\s+|\w+|[^\s\w]+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([SAMPLE] * 20, trainer)
    return tok


def build_tiny_model(
    out: Path, fim_template: str | None = "wisp", seed: int = 0, emit: str | None = None
) -> Path:
    """Save a tiny LlamaForCausalLM and its tokenizer to `out` and return it.

    Weights are random, or, with `emit`, set so that the model writes that one token forever
    (every layer's output projections are zero, so the last hidden state is the input
    embedding, which all tokens share, and only `emit`'s output row points along it).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(), eos_token="<|endoftext|>", pad_token="<|fim_pad|>"
    )
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=emit is None,
    )
    if fim_template:
        config.fim_template = fim_template
    model = LlamaForCausalLM(config)
    if emit is not None:
        _always_emit(model, tok.convert_tokens_to_ids(tok.tokenize(emit)))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _always_emit(model, ids: list[int]) -> None:
    import torch

    assert len(ids) == 1, f"emit must be one token, got {ids}"
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        direction = torch.ones(model.config.hidden_size)
        model.model.embed_tokens.weight.copy_(direction.expand_as(model.model.embed_tokens.weight))
        model.lm_head.weight.zero_()
        model.lm_head.weight[ids[0]] = direction * 4.0
