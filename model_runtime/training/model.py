"""The model: a small Llama with tied embeddings, configured from a preset and a tokenizer."""

from __future__ import annotations

from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .presets import Preset

FIM_TEMPLATE = "wisp"


def build_config(preset: Preset, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """A LlamaConfig for `preset`; `fim_template` tells inference how to write prompts."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        num_key_value_heads=preset.heads,
        max_position_embeddings=preset.seq_len,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.fim_template = FIM_TEMPLATE
    return config


def build_model(preset: Preset, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return LlamaForCausalLM(build_config(preset, tokenizer))


def generation_config(tokenizer: PreTrainedTokenizerFast) -> GenerationConfig:
    """Generation stops at end of text; padding uses the FIM pad token."""
    return GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )


def parameter_count(model: LlamaForCausalLM) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
