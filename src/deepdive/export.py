"""Export a model folder to one GGUF file, the format llama.cpp and the apps built on it (LM Studio, Ollama) run.

A GGUF holds the weights, the architecture's numbers and the tokenizer in one file, under llama.cpp's names, so
the model a recipe trained can be chatted with on a laptop with no Python. Only Llama-architecture models with a
byte-level BPE tokenizer export (what deepdive trains, and e.g. SmolLM2): those llama.cpp runs as `llama`, and we
write what its own converter would: q/k rows reordered for its rotary layout, norms kept in f32, a tied output
head left out so that it shares `token_embd`. The chat template goes in too, with transformers' training-only
`{% generation %}` markers made plain `if` blocks, which other Jinja engines can parse and which render the same.
Output types: f32 (exact), f16 (half the size) and q8_0 (8-bit blocks, about a quarter of f32).
"""

import json
import re
from pathlib import Path

import gguf
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoConfig

from deepdive.errors import DataError
from deepdive.modeling import check_model_folder, load_model_and_tokenizer


OUT_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}
MATRIX_TYPES = {  # what each output type stores a 2-D weight in; 1-D weights (the norms) stay f32 as in llama.cpp
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
MANY_TENSORS = 100  # from this many tensors up, show progress bars while converting and writing


def export_gguf(model_dir: str | Path, output: str | Path, out_type: str = "f16") -> Path:
    """Write the model in `model_dir` to the GGUF file `output` with its 2-D weights in `out_type`; return the path."""
    if out_type not in OUT_TYPES:
        raise DataError(f"--out_type: {out_type!r} is not a GGUF output type; valid: {', '.join(OUT_TYPES)}")
    folder = check_exportable(model_dir)
    model, tokenizer = load_model_and_tokenizer(str(folder), where="--model")
    config = model.config
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)

    writer = gguf.GGUFWriter(output, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(folder.resolve().name)
    writer.add_file_type(OUT_TYPES[out_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_architecture(writer, config)
    add_tokenizer(writer, tokenizer, config.vocab_size, where=str(folder))
    n_tensors = add_tensors(writer, model, out_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=n_tensors >= MANY_TENSORS)
    writer.close()
    return output


def check_exportable(model_dir: str | Path) -> Path:
    """The folder, if it holds a full Llama-architecture model that llama.cpp runs as `llama`; else a DataError."""
    folder = check_model_folder(model_dir, where="--model")
    if not (folder / "config.json").is_file():
        raise DataError(f"--model: {folder} is a LoRA adapter; `deepdive merge` it into its base model, then export")
    model_type = json.loads((folder / "config.json").read_text()).get("model_type", "of no stated model_type")
    if model_type != "llama":
        raise DataError(f"--model: only Llama-architecture models export to GGUF; {folder} is {model_type}")
    config = AutoConfig.from_pretrained(folder)
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    unsupported = {
        "attention_bias": config.attention_bias,
        "mlp_bias": config.mlp_bias,
        "hidden_act": config.hidden_act != "silu",
        "rope_parameters": rope_type != "default",
    }
    for field, present in unsupported.items():
        if present:
            raise DataError(
                f"--model: {folder} has {field} = {getattr(config, field)!r}; GGUF export supports Llama models "
                "without biases, with silu and default rotary positions"
            )
    return folder


# --- Architecture: the numbers llama.cpp builds the graph from ---------------------------------------------------


def add_architecture(writer: gguf.GGUFWriter, config) -> None:
    """The `llama.*` keys: sizes, head counts, norm epsilon and rotary base (transformers reads them back too)."""
    head_dim = config.head_dim or config.hidden_size // config.num_attention_heads
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if head_dim != config.hidden_size // config.num_attention_heads:  # llama.cpp assumes hidden / heads otherwise
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


# --- Tokenizer: vocabulary, merges, special tokens and chat template ---------------------------------------------
# llama.cpp rebuilds a byte-level BPE tokenizer from its tokens and merges in order, and splits the text into words
# before BPE with a rule it knows by name (`tokenizer.ggml.pre`). The names below are llama.cpp's for the two
# byte-level splits a Hugging Face tokenizer.json can state without a regex of its own: GPT-2's, and GPT-2's after
# cutting out every digit, which deepdive's tokenizer (and SmolLM's, hence the name) uses. transformers' GGUF loader
# (5.24) knows no `smollm` and splits as GPT-2 does: it tokenizes a run of spaces before a digit differently.

PRE_TOKENIZERS = {
    "gpt-2": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        ],
    },
}


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer, vocab_size: int, where: str) -> None:
    """The `tokenizer.*` keys: one token per embedding row, its type, the merges, the special ids, the template."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    if backend["model"]["type"] != "BPE" or (backend.get("decoder") or {}).get("type") != "ByteLevel":
        raise DataError(f"--model: {where} has no byte-level BPE tokenizer, the only kind GGUF export writes")
    if len(tokenizer) > vocab_size:
        raise DataError(f"--model: {where} has {len(tokenizer)} tokens but only {vocab_size} embedding rows")
    tokens, token_types = vocabulary(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(pre_tokenizer_name(backend, where))
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    merges = backend["model"]["merges"]  # ["a b", ...] in older tokenizer.json files, [["a", "b"], ...] in newer
    writer.add_token_merges([merge if isinstance(merge, str) else " ".join(merge) for merge in merges])
    special_ids = {
        writer.add_bos_token_id: tokenizer.bos_token_id,
        writer.add_eos_token_id: tokenizer.eos_token_id,
        writer.add_unk_token_id: tokenizer.unk_token_id,
        writer.add_pad_token_id: tokenizer.pad_token_id,
    }
    for add_id, token_id in special_ids.items():
        if token_id is not None:
            add_id(token_id)
    probe = tokenizer("a")["input_ids"]  # whether encoding adds BOS/EOS itself; llama.cpp must do the same
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(tokenizer.eos_token_id is not None and probe[-1] == tokenizer.eos_token_id)
    if tokenizer.chat_template:
        writer.add_chat_template(portable_chat_template(tokenizer.chat_template))


def vocabulary(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """One token string and llama.cpp token type per embedding row: special added tokens are CONTROL, other added
    tokens USER_DEFINED; rows no token uses are `[PAD<id>]`, UNUSED, as llama.cpp's converter names them."""
    by_id = {token_id: token for token, token_id in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for token_id in range(vocab_size):
        if token_id not in by_id:
            tokens.append(f"[PAD{token_id}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[token_id])
            if token_id not in added:
                types.append(gguf.TokenType.NORMAL)
            else:
                types.append(gguf.TokenType.CONTROL if added[token_id].special else gguf.TokenType.USER_DEFINED)
    return tokens, types


def pre_tokenizer_name(backend: dict, where: str) -> str:
    """llama.cpp's name for how this tokenizer splits text before BPE; a DataError for a split it does not know."""
    if backend.get("normalizer") is None:
        stated = backend.get("pre_tokenizer") or {}
        for name, shape in PRE_TOKENIZERS.items():
            if same_shape(stated, shape):
                return name
    raise DataError(
        f"--model: {where} splits text before BPE in a way GGUF export does not know; it writes GPT-2's byte-level "
        "split, with or without single digits, and no normalizer"
    )


def same_shape(stated, shape) -> bool:
    """Whether the pre-tokenizer JSON `stated` has every field of `shape` (nested) with the same value."""
    if isinstance(shape, dict):
        return isinstance(stated, dict) and all(same_shape(stated.get(key), value) for key, value in shape.items())
    if isinstance(shape, list):
        return isinstance(stated, list) and len(stated) == len(shape) and all(map(same_shape, stated, shape))
    return stated == shape


GENERATION_TAG = re.compile(r"(\{%-?\s*)(end)?generation(\s*-?%\})")


def portable_chat_template(template: str | dict) -> str | list[dict]:
    """The chat template with transformers' `{% generation %}` ... `{% endgeneration %}` (which marks the tokens to
    train on and which other Jinja engines reject) turned into `{% if true %}` ... `{% endif %}`: the same text
    renders, whitespace control included. Named templates become the list GGUFWriter stores them from."""
    if isinstance(template, dict):
        return [{"name": name, "template": portable_chat_template(text)} for name, text in template.items()]
    return GENERATION_TAG.sub(lambda tag: tag[1] + ("endif" if tag[2] else "if true") + tag[3], template)


# --- Weights: renamed to llama.cpp's tensor names, reordered and converted ---------------------------------------


def add_tensors(writer: gguf.GGUFWriter, model, out_type: str) -> int:
    """Every weight under its llama.cpp name, 2-D matrices in `out_type` and the norms in f32; return how many."""
    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    weights = {
        name: tensor
        for name, tensor in model.state_dict().items()
        if not (name == "lm_head.weight" and config.tie_word_embeddings)  # llama.cpp reuses token_embd as the head
    }
    for name, tensor in tqdm(weights.items(), desc="converting to GGUF", disable=len(weights) < MANY_TENSORS):
        gguf_name = names.get_name(name.removesuffix(".weight"))
        if gguf_name is None or not name.endswith(".weight"):
            raise DataError(f"--model: the model's tensor {name} has no place in a Llama GGUF")
        array = tensor.detach().to(torch.float32).numpy()
        if name.endswith("self_attn.q_proj.weight"):
            array = rotary_pairs_interleaved(array, config.num_attention_heads)
        elif name.endswith("self_attn.k_proj.weight"):
            array = rotary_pairs_interleaved(array, config.num_key_value_heads)
        data, ggml_type = converted(array, out_type)
        writer.add_tensor(f"{gguf_name}.weight", data, raw_dtype=ggml_type)
    return len(weights)


def rotary_pairs_interleaved(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder a q or k projection's rows for llama.cpp's rotary embedding.

    Transformers rotates dimension i of a head with dimension i + head_dim/2 (two halves); llama.cpp rotates
    dimensions 2i and 2i+1 (adjacent pairs). Moving each head's row i to 2i and row i + head_dim/2 to 2i+1 makes
    llama.cpp's rotation compute what transformers' did.
    """
    rows, columns = weight.shape
    halves = weight.reshape(n_heads, 2, rows // n_heads // 2, columns)
    return halves.swapaxes(1, 2).reshape(rows, columns)


def converted(array: np.ndarray, out_type: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """(data, ggml type) for one tensor: f32 unless it is a matrix `out_type` can hold (q8_0 needs rows that are a
    whole number of 32-value blocks)."""
    ggml_type = MATRIX_TYPES[out_type] if array.ndim == 2 else gguf.GGMLQuantizationType.F32
    block_size, _ = gguf.GGML_QUANT_SIZES[ggml_type]
    if array.shape[-1] % block_size:
        ggml_type = gguf.GGMLQuantizationType.F32
    return gguf.quants.quantize(array, ggml_type), ggml_type
