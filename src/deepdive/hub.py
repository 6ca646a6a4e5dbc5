"""Moving models between deepdive runs and the Hugging Face ecosystem.

A LoRA run saves only its adapter (a few hundred kB) next to a pointer to its base model. `merge_adapter`
folds the adapter into the base weights and writes a plain Hugging Face model folder, tokenizer and chat
template included, which loads anywhere without `peft`.
"""

from pathlib import Path

from deepdive.errors import DataError


def merge_adapter(adapter_dir: str, output_dir: str) -> Path:
    """Merge the LoRA adapter in `adapter_dir` into its base model; save model + tokenizer to `output_dir`."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise DataError(f"--adapter: {adapter_dir} holds no adapter_config.json (not a LoRA run folder)")
    model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir, use_safetensors=True)
    merged = model.merge_and_unload()
    merged.save_pretrained(output_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(output_dir)
    return Path(output_dir)
