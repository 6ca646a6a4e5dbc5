"""Sampling from a causal LM: load a model folder, continue a prompt, stream tokens as they are drawn.

Temperature, top-k and top-p are the knobs the lecture shows on the token simulator; the seed makes a draw
repeatable. Streaming goes through `transformers.TextStreamer`, so what a person sees is exactly what
`generate` produces. The same settings (top-k 50, temperature 0.8) continue the sample prompts logged during
pretraining and go into the generation config saved with every model.
"""

from pathlib import Path

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, TextStreamer

from deepdive.errors import DataError


def check_model_folder(folder: str | Path) -> Path:
    """`folder` if it holds a model (config.json and safetensors weights, or a LoRA adapter); else a one-line
    DataError, so that nothing writes an evaluation or a model card (README.md) into a folder that is not a
    model's, such as the repository itself."""
    folder = Path(folder)
    model = (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    adapter = (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    if not (model or adapter):
        raise DataError(
            f"--model: {folder} is not a model folder (it holds no config.json with .safetensors weights, "
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


def load_model_and_tokenizer(model_name_or_path: str, chat: bool = False):
    """Load a model folder or a Hub id for inference, weights from safetensors only."""
    if Path(model_name_or_path).is_dir():
        check_model_folder(model_name_or_path)
    elif not is_hub_id(model_name_or_path):
        raise DataError(f"--model: {model_name_or_path} is not a model folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    except OSError as error:  # a Hub id the Hub does not serve, or no network: transformers' first line says which
        reason = str(error).strip().splitlines()[0]
        raise DataError(
            f"--model: {model_name_or_path} is not a model folder nor loadable from the Hub ({reason})"
        ) from None
    if chat and tokenizer.chat_template is None:
        raise DataError(f"--model: {model_name_or_path} has no chat template; chat with an SFT or GRPO model")
    model = AutoModelForCausalLM.from_pretrained(model_name_or_path, use_safetensors=True)
    model.eval()
    return model, tokenizer


class _FlushingStreamer(TextStreamer):
    def __init__(self, tokenizer, stream):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.stream = stream

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.stream.write(text + ("\n" if stream_end else ""))
        self.stream.flush()


@torch.no_grad()
def sample_text(
    model_name_or_path: str,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 1.0,
    seed: int = 0,
    num_samples: int = 1,
    stream=None,
) -> list[str]:
    """Continue `prompt` `num_samples` times; write each token to `stream` as it comes; return the texts."""
    model, tokenizer = load_model_and_tokenizer(model_name_or_path)
    bos = tokenizer.bos_token or ""
    inputs = tokenizer(bos + prompt, return_tensors="pt", add_special_tokens=False)
    greedy = temperature == 0
    texts = []
    for index in range(num_samples):
        torch.manual_seed(seed + index)
        if stream is not None:
            stream.write(prompt)
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else temperature,
            top_k=None if greedy or top_k == 0 else top_k,
            top_p=None if greedy else top_p,
            streamer=_FlushingStreamer(tokenizer, stream) if stream is not None else None,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts.append(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
    return texts


@torch.no_grad()
def generate_samples(model, tokenizer, prompts, max_new_tokens: int, seed: int, bf16: bool):
    """Sampled continuations (top-k 50, temperature 0.8) of each prompt by a model in training, reproducible
    through `seed`: the samples logged at each evaluation."""
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    samples = []
    device = next(model.parameters()).device
    for prompt in prompts:
        inputs = tokenizer(tokenizer.bos_token + prompt, return_tensors="pt", add_special_tokens=False).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, top_k=50, temperature=0.8)
        samples.append((prompt, tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)))
    model.train(was_training)
    return samples


def default_generation_config(tokenizer) -> GenerationConfig:
    """The generation settings saved with every model: sampling, stop at the tokenizer's EOS."""
    return GenerationConfig(
        do_sample=True,
        temperature=0.8,
        top_k=50,
        max_new_tokens=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
