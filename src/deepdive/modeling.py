"""The model: a small Llama-style decoder built from a config, or a model folder or Hub checkpoint loaded.

Llama's architecture (RoPE positions, RMSNorm, SwiGLU MLP, no biases) is what today's small open models
(SmolLM2, Qwen2.5) use, so a model pretrained here loads with plain `transformers` and the later stages treat
it exactly like a Hub checkpoint. Input and output embeddings are tied: at a few million parameters the
embedding table is a large share of the model and tying it is a clear win for quality per parameter.

Every stage and command loads a model through `load_model_and_tokenizer`: weights from safetensors only, and a
bad name is a one-line error before anything runs.
"""

from pathlib import Path

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
)

from deepdive.errors import DataError, RecipeError
from deepdive.tokenizer import add_chat_template


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


# --- Loading a model folder or a Hub checkpoint ---------------------------------------------------------------


def check_model_folder(folder: str | Path, where: str = "--model") -> Path:
    """`folder` if it holds a model (config.json and safetensors weights, or a LoRA adapter); else a one-line
    DataError, so that nothing writes an evaluation or a model card (README.md) into a folder that is not a
    model's, such as the repository itself."""
    folder = Path(folder)
    model = (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    adapter = (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    if not (model or adapter):
        raise DataError(
            f"{where}: {folder} is not a model folder (it holds no config.json with .safetensors weights, "
            "nor a LoRA adapter)"
        )
    return folder


def is_hub_id(name: str) -> bool:
    """Whether `name` has the form of a Hub model id: `name` or `owner/name` (e.g. `HuggingFaceTB/SmolLM2-135M`)."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def load_model_and_tokenizer(
    model_name_or_path: str,
    chat: bool = False,
    dtype: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    where: str = "--model",
    reward_head: bool = False,
):
    """(model, tokenizer) from a model folder or a Hub id, weights from safetensors only.

    `chat` gives a tokenizer without a chat template deepdive's own (what SFT does to a pretrained base model).
    `dtype` "auto" or None loads float32, which the recipes' mixed precision expects. A bad name is a one-line
    DataError that names `where` it came from. `reward_head` loads the transformer under a one-output linear head
    instead of the language-model head (`AutoModelForSequenceClassification`, a reward model): new and randomly
    initialised from a causal LM folder, the trained one from a reward model's folder.
    """
    if Path(model_name_or_path).is_dir():
        check_model_folder(model_name_or_path, where)
    elif not is_hub_id(model_name_or_path):
        raise DataError(f"{where}: {model_name_or_path} is not a model folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    except OSError as error:  # a Hub id the Hub does not serve, or no network: transformers' first line says which
        reason = str(error).strip().splitlines()[0]
        raise DataError(
            f"{where}: {model_name_or_path} is not a model folder nor loadable from the Hub ({reason})"
        ) from None
    if chat:
        add_chat_template(tokenizer, where)
    model_class = AutoModelForSequenceClassification if reward_head else AutoModelForCausalLM
    model = model_class.from_pretrained(
        model_name_or_path,
        **({"num_labels": 1} if reward_head else {}),
        dtype=None if dtype in (None, "auto") else dtype,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )
    if not reward_head and is_reward_model(model):
        raise DataError(f"{where}: {model_name_or_path} is a reward model: it scores replies and writes none")
    model.eval()
    return model, tokenizer


def is_reward_model(model) -> bool:
    """Whether `model` was saved as a reward model (a sequence classifier), not loaded as one from a language model."""
    return any(name.endswith("ForSequenceClassification") for name in model.config.architectures or ())


def load_recipe_model(model_args, trust_remote_code: bool = False, reward_head: bool = False):
    """(model, tokenizer) for the chat recipes from TRL's `ModelConfig`, with a chat template; `reward_head` as in
    `load_model_and_tokenizer`."""
    return load_model_and_tokenizer(
        model_args.model_name_or_path,
        chat=True,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=trust_remote_code,
        where="model_name_or_path",
        reward_head=reward_head,
    )
