"""GGUF export: a model exported and read back by transformers' own GGUF loader gives the same token ids, chat
template, logits (within each output type's tolerance) and greedy replies; bad inputs stop with one line.

Two models go through it: the micro SFT model (trained, with the chat tokens and template; tied embeddings, one
layer), and a random model on its tokenizer for what the micro one lacks: grouped-query attention, an untied
head, two layers, a rotary base and norms that are not the defaults, and a greedy reply of varied tokens (the
micro model's six SFT steps taught it to answer with newlines only, which any export would reproduce).
"""

import json
import re

import gguf
import pytest
import torch
from jinja2 import Environment
from llama_cpp import Llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from deepdive.errors import DataError
from deepdive.export import OUT_TYPES, export_gguf, portable_chat_template, pre_tokenizer_name
from deepdive.modeling import build_llama_config, build_model, load_model_and_tokenizer


# Digits, punctuation, apostrophes, Unicode and the chat tokens. No run of two or more spaces before a digit:
# transformers' GGUF loader knows no `smollm` split (llama.cpp does) and falls back to GPT-2's, which keeps such a
# run's last space with the digit ("a  12" -> a, Ġ, Ġ, 1, 2 where deepdive's tokenizer gives a, ĠĠ, 1, 2).
TEXT = (
    "It's 2024: naïve café — ☕ costs $3.50 (ok?) and I'd say 12,345 times\n"
    "<|im_start|>user\nWhat's 12 + 7?<|im_end|>\n<|im_start|>assistant\n19<|im_end|>"
)
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What's 12 + 7?"}]
# Largest |logit difference| allowed on TEXT for the micro SFT model, per output type. Measured: f32 0 (the
# weights are copied bit for bit), f16 1.8e-4, q8_0 3.6e-3, against logits within ±0.9; the weights themselves
# come back with a relative RMS error of 2e-4 (f16) and 5e-3 (q8_0).
LOGIT_TOLERANCE = {"f32": 1e-4, "f16": 1e-3, "q8_0": 2e-2}
ARGMAX_AGREEMENT = {"f32": 1.0, "f16": 0.9, "q8_0": 0.9}  # share of positions whose top token must match
WIDE_TOLERANCE = {"f32": 1e-4, "f16": 1e-2}  # the wide random model below; measured: 0 and 3e-3
REPLY_TOKENS = 24


def read_back(model_dir, folder, out_type: str):
    """Export `model_dir` into `folder` and load it again from the GGUF alone: (path, model, tokenizer)."""
    path = export_gguf(model_dir, folder / f"model-{out_type}.gguf", out_type)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=path.name)
    return path, model.eval(), tokenizer


def logits(model, input_ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids).logits[0]


def greedy_reply(model, tokenizer) -> list[int]:
    """The token ids of the greedy reply to CHAT, stopping at `<|im_end|>`."""
    prompt = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(
        **prompt,
        do_sample=False,
        max_new_tokens=REPLY_TOKENS,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    return output[0, prompt["input_ids"].shape[1] :].tolist()


@pytest.fixture(scope="module")
def micro(micro_sft):
    """The micro SFT model and tokenizer as deepdive loads them."""
    return load_model_and_tokenizer(str(micro_sft))


@pytest.fixture(scope="module", params=list(OUT_TYPES))
def micro_gguf(request, micro_sft, tmp_path_factory):
    """(out_type, path, model, tokenizer): the micro SFT model read back from its GGUF export."""
    return request.param, *read_back(micro_sft, tmp_path_factory.mktemp(f"gguf-{request.param}"), request.param)


@pytest.fixture(scope="module")
def wide_dir(micro, tmp_path_factory):
    """A random chat model on the micro tokenizer: 2 layers, 4 query and 2 key/value heads, an untied head."""
    _, tokenizer = micro
    config = build_llama_config(
        tokenizer, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128, rope_theta=50000.0, tie_word_embeddings=False,
    )  # fmt: skip
    config.initializer_range = 0.05
    config.rms_norm_eps = 1e-5
    model = build_model(config, seed=6)  # seed 6: a greedy reply of 19 different tokens, each a clear first choice
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(6)  # logits of about ±2.5 instead of ±0.1: replies that vary
        model.lm_head.weight.mul_(6)
        for name, weight in model.named_parameters():
            if "norm" in name:  # not all ones, so a norm written under the wrong name changes the logits
                weight.uniform_(0.5, 1.5)
    folder = tmp_path_factory.mktemp("wide") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- The micro SFT model, per output type --------------------------------------------------------------------


def test_tokenizer_and_chat_template_survive(micro, micro_gguf):
    _, tokenizer = micro
    _, _, _, gguf_tokenizer = micro_gguf
    assert gguf_tokenizer(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") in tokenizer(TEXT)["input_ids"]  # kept whole
    assert gguf_tokenizer.decode(tokenizer(TEXT)["input_ids"]) == TEXT
    for token in ("bos_token", "eos_token", "pad_token"):
        assert getattr(gguf_tokenizer, token) == getattr(tokenizer, token)
    assert "generation %}" in tokenizer.chat_template  # what the export has to rewrite for other Jinja engines
    assert gguf_tokenizer.chat_template == portable_chat_template(tokenizer.chat_template)
    assert "generation %}" not in gguf_tokenizer.chat_template
    conversation = [*CHAT, {"role": "assistant", "content": "19"}, {"role": "user", "content": "And 2 + 2?"}]
    for add_generation_prompt in (False, True):
        settings = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
        rendered = tokenizer.apply_chat_template(conversation, **settings)
        assert gguf_tokenizer.apply_chat_template(conversation, **settings) == rendered


def test_logits_match_within_the_output_types_tolerance(micro, micro_gguf):
    model, tokenizer = micro
    out_type, _, gguf_model, _ = micro_gguf
    input_ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    original, exported = logits(model, input_ids), logits(gguf_model, input_ids)
    assert (exported - original).abs().max().item() <= LOGIT_TOLERANCE[out_type]
    agreement = (exported.argmax(-1) == original.argmax(-1)).float().mean().item()
    assert agreement >= ARGMAX_AGREEMENT[out_type]


def test_config_and_tensors_follow_llama_cpp(micro, micro_gguf):
    model, _ = micro
    out_type, path, gguf_model, _ = micro_gguf
    sizes = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    for field in (*sizes, "num_key_value_heads", "head_dim", "max_position_embeddings", "tie_word_embeddings"):
        assert getattr(gguf_model.config, field) == getattr(model.config, field), field
    assert gguf_model.config.rope_parameters["rope_theta"] == model.config.rope_parameters["rope_theta"]
    assert gguf_model.config.rms_norm_eps == pytest.approx(model.config.rms_norm_eps)
    reader = gguf.GGUFReader(path)
    types = {tensor.name: tensor.tensor_type.name for tensor in reader.tensors}
    assert "token_embd.weight" in types and "output.weight" not in types  # tied: llama.cpp reuses the embedding
    assert {types[name] for name in types if name.endswith("norm.weight")} == {"F32"}
    assert {types[name] for name in types if not name.endswith("norm.weight")} == {out_type.upper()}
    assert reader.fields["tokenizer.ggml.pre"].contents() == "smollm"  # single digits, then GPT-2's split
    assert reader.fields["general.file_type"].contents() == OUT_TYPES[out_type]


def test_smaller_types_give_smaller_files(micro_sft, tmp_path):
    paths = [export_gguf(micro_sft, tmp_path / f"{out_type}.gguf", out_type) for out_type in OUT_TYPES]
    sizes = dict(zip(OUT_TYPES, (path.stat().st_size for path in paths), strict=True))
    assert sizes["f32"] > sizes["f16"] > sizes["q8_0"]


# --- The wide random model: grouped-query attention, untied head, greedy replies ------------------------------


@pytest.mark.parametrize("out_type", ["f32", "f16"])
def test_greedy_reply_is_the_same(wide_dir, tmp_path, out_type):
    model, tokenizer = load_model_and_tokenizer(str(wide_dir))
    path, gguf_model, gguf_tokenizer = read_back(wide_dir, tmp_path, out_type)
    reply = greedy_reply(model, tokenizer)
    assert greedy_reply(gguf_model, gguf_tokenizer) == reply
    # Why equal replies are what a correct export must give, and not luck: along the reply, the original's top token
    # leads the runner-up by more than twice the tolerance, and the exported logits stay within the tolerance.
    prompt = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    conversation = torch.cat([prompt["input_ids"], torch.tensor([reply])], dim=1)
    original, exported = logits(model, conversation), logits(gguf_model, conversation)
    assert (exported - original).abs().max().item() <= WIDE_TOLERANCE[out_type]
    top_two = original[prompt["input_ids"].shape[1] - 1 : -1].topk(2, dim=-1).values
    assert (top_two[:, 0] - top_two[:, 1]).min().item() > 2 * WIDE_TOLERANCE["f16"]
    assert len(reply) == REPLY_TOKENS and len(set(reply)) > 5  # a reply that says something
    assert "output.weight" in {tensor.name for tensor in gguf.GGUFReader(path).tensors}
    assert not gguf_model.config.tie_word_embeddings
    assert (gguf_model.config.num_attention_heads, gguf_model.config.num_key_value_heads) == (4, 2)
    assert gguf_model.config.rope_parameters["rope_theta"] == 50000.0


# --- Bad inputs ------------------------------------------------------------------------------------------------


def test_an_unknown_out_type_names_the_valid_ones(tmp_path):
    with pytest.raises(DataError, match=r"^--out_type: 'q4_k' is not a GGUF output type; valid: f32, f16, q8_0$"):
        export_gguf(tmp_path, tmp_path / "model.gguf", "q4_k")


def test_a_folder_that_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(DataError, match="is not a model folder"):
        export_gguf(tmp_path, tmp_path / "model.gguf")
    assert not (tmp_path / "model.gguf").exists()


def test_a_lora_adapter_is_sent_to_merge_first(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "base", "r": 8}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"stand-in weights")
    with pytest.raises(DataError, match="is a LoRA adapter; `deepdive merge` it"):
        export_gguf(tmp_path, tmp_path / "model.gguf")


def test_a_non_llama_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "model.safetensors").write_bytes(b"stand-in weights")
    with pytest.raises(
        DataError, match=rf"only Llama-architecture models export to GGUF; {re.escape(str(tmp_path))} is gpt2$"
    ):
        export_gguf(tmp_path, tmp_path / "model.gguf")


@pytest.mark.parametrize("field, value", [("attention_bias", True), ("mlp_bias", True), ("hidden_act", "gelu")])
def test_a_llama_that_llama_cpp_would_run_differently_is_refused(tmp_path, field, value):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", field: value}))
    (tmp_path / "model.safetensors").write_bytes(b"stand-in weights")  # refused before any weight is read
    with pytest.raises(DataError, match=rf"^--model: .* has {field} = {value!r}; GGUF export supports Llama models"):
        export_gguf(tmp_path, tmp_path / "model.gguf")


def test_pre_tokenizers_are_named_as_llama_cpp_knows_them():
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    digits = {"type": "Digits", "individual_digits": True}
    assert pre_tokenizer_name({"pre_tokenizer": byte_level}, "m") == "gpt-2"
    assert pre_tokenizer_name({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [digits, byte_level]}}, "m") == (
        "smollm"
    )
    for unknown in (
        {"pre_tokenizer": {"type": "Metaspace", "replacement": "▁"}},
        {"pre_tokenizer": {**byte_level, "add_prefix_space": True}},
        {"pre_tokenizer": byte_level, "normalizer": {"type": "NFC"}},
    ):
        with pytest.raises(DataError, match="^--model: m splits text before BPE in a way GGUF export does not know"):
            pre_tokenizer_name(unknown, "m")


def test_generation_markers_become_blocks_that_render_the_same():
    template = "A{%- generation -%}  B  {% endgeneration %}C{% generation %}D{%- endgeneration %}"
    assert portable_chat_template(template) == "A{%- if true -%}  B  {% endif %}C{% if true %}D{%- endif %}"
    assert Environment().from_string(portable_chat_template(template)).render() == "AB  CD"


# --- llama.cpp itself (llama-cpp-python, compiled from PyPI's source) -----------------------------------------


@pytest.mark.parametrize("out_type", ["f32", "f16", "q8_0"])
def test_llama_cpp_reads_the_file_and_gives_the_same_tokens_and_greedy_reply(wide_dir, tmp_path, out_type):
    model, tokenizer = load_model_and_tokenizer(str(wide_dir))
    path = export_gguf(wide_dir, tmp_path / f"model-{out_type}.gguf", out_type)
    llama = Llama(model_path=str(path), n_ctx=128, n_threads=2, verbose=False)
    try:
        assert llama.tokenize(TEXT.encode(), add_bos=False, special=True) == tokenizer(TEXT)["input_ids"]
        prompt = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)["input_ids"]
        stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
        reply = []
        for token in llama.generate(prompt, temp=0.0, top_k=1):
            if token == stop or len(reply) == REPLY_TOKENS:
                break
            reply.append(token)
    finally:
        llama.close()
    assert reply == greedy_reply(model, tokenizer)
