"""The model: a small Llama-style decoder built from a config, never downloaded.

Llama's architecture (RoPE positions, RMSNorm, SwiGLU MLP, no biases) is what today's small open models
(SmolLM2, Qwen2.5) use, so a model pretrained here loads with plain `transformers` and the later stages treat
it exactly like a Hub checkpoint. Input and output embeddings are tied: at a few million parameters the
embedding table is a large share of the model and tying it is a clear win for quality per parameter.
"""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from deepdive.errors import RecipeError


def build_llama_config(
    tokenizer,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int | None = None,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    rope_theta: float = 10000.0,
    tie_word_embeddings: bool = True,
    vocab_size: int | None = None,
    attn_implementation: str = "sdpa",
) -> LlamaConfig:
    """A LlamaConfig sized by the recipe, with the tokenizer's special token ids.

    `vocab_size` defaults to the tokenizer's length; a larger one leaves unused embedding rows (e.g. to round
    up to a multiple of 64), a smaller one is an error.
    """
    vocab_size = vocab_size or len(tokenizer)
    if vocab_size < len(tokenizer):
        raise RecipeError(f"vocab_size: {vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens")
    if intermediate_size is None:  # SwiGLU keeps the MLP's parameter count near 8/3 x hidden, rounded to 64
        intermediate_size = 64 * round(8 * hidden_size / 3 / 64)
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads or num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_bias=False,
        mlp_bias=False,
        attn_implementation=attn_implementation,
    )


def build_model(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    """A freshly initialised model (weights depend only on the config and the seed)."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def count_parameters(model) -> int:
    """Parameters the model trains (a tied embedding is counted once)."""
    return sum(p.numel() for p in model.parameters())
