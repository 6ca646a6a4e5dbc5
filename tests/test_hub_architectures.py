"""The Hub recipes (`recipes/smollm2-135m/`, `recipes/qwen2.5-0.5b/`) end to end, without the Hub.

Their models cannot be downloaded here, so the tests build stand-ins with the same architectures, special tokens
and chat templates (SmolLM2-Instruct: Llama blocks, tied embeddings, ChatML; Qwen2.5-Instruct: Qwen2 blocks with
q/k/v biases, ChatML with a default system turn), randomly initialised at tens of thousands of parameters, and run
the real recipe scripts on them with CPU overrides for a few steps, full and LoRA. They check what a GPU run would
only reveal hours in: that only the replies carry loss, that generation stops at the model's own end token, that
training moved what it should, and that the saved folder reloads with plain `transformers` (and `peft`).
"""

import re
from pathlib import Path

import pytest
import torch
from conftest import (
    REPO,
    assert_every_hidden_matrix_moved,
    assert_only_the_adapter_trained,
    run_recipe,
    train_in_process,
)
from peft import AutoPeftModelForCausalLM
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import deepdive.rewards as rewards
from deepdive.generation import Decoding, generate
from deepdive.tasks import build_mixture
from deepdive.tokenizer import END_OF_TEXT, IM_END, IM_START, train_tokenizer


# Every recipe setting a CPU cannot run is overridden here: bf16 weights and autocast (slow or unsupported on
# CPU) become float32, TensorBoard logging is off, and the batches, step counts and reply lengths are cut to a
# few sequences so each run takes seconds.
CPU = ["--use_cpu", "true", "--bf16", "false", "--dtype", "float32", "--report_to", "none"]
SFT_STEPS = ["--max_steps", "3", "--num_train_examples", "16", "--global_batch_size", "4",
             "--per_device_train_batch_size", "4"]  # fmt: skip
GRPO_STEPS = ["--max_steps", "3", "--num_train_prompts", "8", "--num_generations", "2", "--global_batch_size", "4",
              "--per_device_train_batch_size", "4", "--max_completion_length", "8", "--num_test_examples", "0"]  # fmt: skip
NO_VLLM = ["--use_vllm", "false"]  # vLLM needs a GPU; TRL then generates with transformers, same rewards and loss

QWEN_SYSTEM = "You are a helpful assistant."
QWEN_TEMPLATE = (  # Qwen2.5-Instruct's ChatML for plain conversations: a system turn is always there
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + QWEN_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def smollm2_template() -> str:
    """SmolLM2-Instruct's own template: the recipe's less its comment and the `{% generation %}` markers it adds."""
    template = (REPO / "recipes" / "smollm2-135m" / "chat_template.jinja").read_text()
    template = re.sub(r"\{#.*?#\}", "", template, flags=re.DOTALL)
    template = template.replace("{%- generation %}", "").replace("{%- endgeneration %}", "")
    assert "generation %}" not in template
    return template


def write_stand_in(folder: Path, model, tokenizer, generation_config: GenerationConfig) -> Path:
    """Save `model` with the generation settings its Hub folder ships, and `tokenizer`, as one model folder."""
    model.generation_config = generation_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, Path]:
    """Model folders standing in for the Hub models of `recipes/<name>/`, by recipe folder name: deepdive's BPE
    tokenizer (trained on the task conversations) with the Hub models' special tokens and templates, random weights.
    """
    folder = tmp_path_factory.mktemp("hub")
    conversations = build_mixture(
        dict.fromkeys(["identity", "arithmetic", "spelling", "shakespeare"], 1.0), 200, "train"
    )
    tokenizer = train_tokenizer([m["content"] for row in conversations["messages"] for m in row], vocab_size=400)
    start, end, text_end = (tokenizer.convert_tokens_to_ids(token) for token in (IM_START, IM_END, END_OF_TEXT))
    shape = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    torch.manual_seed(0)

    # SmolLM2-135M-Instruct: <|im_start|> opens and <|im_end|> ends (and pads) every turn; embeddings tied
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = IM_START, IM_END, IM_END
    tokenizer.chat_template = smollm2_template()
    llama = LlamaForCausalLM(
        LlamaConfig(
            **shape,
            max_position_embeddings=8192,
            tie_word_embeddings=True,
            rope_theta=100000.0,
            bos_token_id=start,
            eos_token_id=end,
            pad_token_id=end,
        )
    )
    smollm2 = write_stand_in(
        folder / "smollm2", llama, tokenizer, GenerationConfig(bos_token_id=start, eos_token_id=end)
    )

    # Qwen2.5-0.5B-Instruct: no BOS, <|endoftext|> pads, either end token stops generation. (The 0.5B ties its
    # embeddings and the larger Qwen2.5 do not; untied here, the layout the Llama stand-in does not cover.)
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = None, IM_END, END_OF_TEXT
    tokenizer.chat_template = QWEN_TEMPLATE
    qwen2 = Qwen2ForCausalLM(
        Qwen2Config(
            **shape,
            max_position_embeddings=32768,
            tie_word_embeddings=False,
            rope_theta=1000000.0,
            bos_token_id=text_end,
            eos_token_id=end,
        )
    )
    assert qwen2.model.layers[0].self_attn.q_proj.bias is not None
    generation = GenerationConfig(bos_token_id=text_end, eos_token_id=[end, text_end], pad_token_id=text_end,
                                  do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)  # fmt: skip
    qwen = write_stand_in(folder / "qwen2", qwen2, tokenizer, generation)
    return {"smollm2-135m": smollm2, "qwen2.5-0.5b": qwen}


@pytest.fixture(scope="module")
def smollm2_sft(stand_ins, tmp_path_factory) -> Path:
    """`recipes/sft.py` run as a user runs it, on `recipes/smollm2-135m/sft.yaml`, full fine-tuning of the
    SmolLM2 stand-in; a held-out prompt per task is answered after training, as the recipe does."""
    output_dir = tmp_path_factory.mktemp("smollm2") / "sft"
    run_recipe(
        "sft.py", "--config", "recipes/smollm2-135m/sft.yaml", "--model_name_or_path", str(stand_ins["smollm2-135m"]),
        "--output_dir", str(output_dir), *CPU, *SFT_STEPS, "--num_test_examples", "1", "--eval_max_new_tokens", "8",
    )  # fmt: skip
    return output_dir


@pytest.fixture
def rewarded_first_replies(monkeypatch) -> None:
    """Make `accuracy` reward the first reply of each pair: a random model earns none of the real rewards, and
    equal rewards give GRPO no gradient. The recipe's own reward list and weights are kept."""

    def first_of_pair(completions, **kwargs):
        return [float(index % 2 == 0) for index in range(len(completions))]

    monkeypatch.setitem(rewards.REWARDS, "accuracy", first_of_pair)


class ForceTokens(LogitsProcessor):
    """Leave only `tokens[i]` possible as the i-th new token after a prompt of `prompt_length` tokens."""

    def __init__(self, tokens: list[int], prompt_length: int):
        self.tokens, self.prompt_length = tokens, prompt_length

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.tokens[input_ids.shape[1] - self.prompt_length]] = 0.0
        return forced


def assert_stops_at_end_of_turn(folder: Path) -> None:
    """With the folder's own generation settings (no `eos_token_id` passed), a reply ends at its `<|im_end|>`."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    end = tokenizer.convert_tokens_to_ids(IM_END)
    assert tokenizer.eos_token == IM_END
    stops = model.generation_config.eos_token_id
    assert end in (stops if isinstance(stops, list) else [stops])
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    words = tokenizer("five", add_special_tokens=False)["input_ids"][:1] * 2
    length = prompt["input_ids"].shape[1]
    script = LogitsProcessorList([ForceTokens([*words, end, *words], length)])
    output = model.generate(**prompt, max_new_tokens=5, logits_processor=script)
    assert output[0, length:].tolist() == [*words, end]


def assert_reloads_with_the_same_logits(folder: Path, trained, adapter: bool = False) -> None:
    """The saved folder loads with plain `transformers` (`peft` for an adapter) into exactly the weights of `trained`
    and computes what it does."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    loaded = (AutoPeftModelForCausalLM if adapter else AutoModelForCausalLM).from_pretrained(folder).eval()
    weights, trained_weights = loaded.state_dict(), trained.state_dict()
    assert weights.keys() == trained_weights.keys()
    assert [name for name in weights if not torch.equal(weights[name], trained_weights[name])] == []
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Spell cat."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, trained.eval()(**inputs).logits)


def test_held_out_replies_are_greedy_whatever_the_folder_samples_with(stand_ins):
    """The recipes' held-out evaluation decodes the model's own argmax, not through the repetition penalty a Qwen2.5
    folder's generation config carries (made extreme here, so that any repeated token would show)."""
    folder = stand_ins["qwen2.5-0.5b"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    model.generation_config.repetition_penalty = 1000.0
    prompt = [{"role": "user", "content": "Spell cat."}]
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids, argmax = ids["input_ids"], []
    with torch.no_grad():
        for _ in range(24):
            argmax.append(int(model(ids).logits[0, -1].argmax()))
            ids = torch.cat([ids, torch.tensor([argmax[-1:]])], dim=1)
    argmax = argmax[: argmax.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in argmax else argmax
    assert len(set(argmax)) < len(argmax)  # the argmax reply repeats a token: the penalty would change it
    completions = generate(model, tokenizer, [prompt], Decoding(max_new_tokens=24))
    assert [completion.text for completion in completions] == [tokenizer.decode(argmax, skip_special_tokens=True)]


def test_sft_marks_exactly_the_replies_for_the_loss(smollm2_sft):
    """The template the SmolLM2 recipe trains (and saves) with marks each reply and its `<|im_end|>`, and nothing
    of the system or user turns, when TRL tokenises a conversation for `assistant_only_loss`."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_sft)
    messages = [
        {"role": "user", "content": "What is 12 + 7?"},
        {"role": "assistant", "content": "12 + 7 = 19.\nAnswer: 19"},
        {"role": "user", "content": "Spell cat."},
        {"role": "assistant", "content": "c-a-t"},
    ]
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    spans, previous = [], 0
    for token, marked in zip(ids, mask, strict=True):
        if marked:
            if not previous:
                spans.append([])
            spans[-1].append(token)
        previous = marked
    assert [tokenizer.decode(span) for span in spans] == [messages[1]["content"] + IM_END, "c-a-t" + IM_END]
    assert "You are a helpful AI assistant named SmolLM" in tokenizer.decode(ids)  # the system turn is there, unmarked


def test_sft_full_moves_every_hidden_matrix_and_stops_at_im_end(stand_ins, smollm2_sft):
    """Full SFT of the Llama (SmolLM2) stand-in trains every weight matrix of its blocks, and the saved model stops
    its replies at `<|im_end|>`."""
    assert_every_hidden_matrix_moved(smollm2_sft, stand_ins["smollm2-135m"])
    assert_stops_at_end_of_turn(smollm2_sft)


def test_sft_full_reloads_with_plain_transformers_and_keeps_its_head_tied(smollm2_sft):
    """The SFT folder is a plain Llama checkpoint with its recipe's template; the tied output head (SmolLM2's) is
    still the embedding, not a second matrix saved beside it."""
    model = AutoModelForCausalLM.from_pretrained(smollm2_sft)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_sft)
    assert type(model) is LlamaForCausalLM and model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tokenizer.chat_template == (REPO / "recipes" / "smollm2-135m" / "chat_template.jinja").read_text()


def test_sft_lora_trains_only_the_adapter_which_reloads_with_peft(stand_ins, tmp_path, monkeypatch):
    """LoRA SFT on the SmolLM2 recipe (rank 16 on every linear layer) moves every `lora_B` and no base weight; the
    saved adapter loads with `peft` onto the stand-in and computes what the trained model computed."""
    output_dir = tmp_path / "lora"
    lora = [*CPU, *SFT_STEPS, "--num_test_examples", "0", "--use_peft", "true"]
    base = stand_ins["smollm2-135m"]
    trainer = train_in_process(
        "sft", "recipes/smollm2-135m/sft.yaml", base, output_dir, *lora, monkeypatch=monkeypatch
    )
    assert_only_the_adapter_trained(trainer.model, base)
    assert_reloads_with_the_same_logits(output_dir, trainer.model, adapter=True)


# The Qwen2.5 recipe starts from the Hub model (and answers a held-out problem before and after, as it does); the
# SmolLM2 recipe starts from its SFT run, as the two recipes chain.
GRPO_FULL = {"qwen2.5-0.5b": [*NO_VLLM, "--num_test_examples", "1", "--eval_max_new_tokens", "8"], "smollm2-135m": []}


@pytest.mark.parametrize("recipe", GRPO_FULL)
def test_grpo_full_moves_every_hidden_matrix_and_reloads(
    recipe, stand_ins, request, tmp_path, monkeypatch, rewarded_first_replies
):
    """Full GRPO with each Hub recipe trains every weight matrix of the blocks; the saved folder reloads with plain
    `transformers`, computes what the trained model did and stops at `<|im_end|>`."""
    start = stand_ins[recipe] if recipe == "qwen2.5-0.5b" else request.getfixturevalue("smollm2_sft")
    output_dir = tmp_path / "grpo"
    trainer = train_in_process(
        "grpo", f"recipes/{recipe}/grpo.yaml", start, output_dir, *CPU, *GRPO_STEPS, *GRPO_FULL[recipe],
        monkeypatch=monkeypatch,
    )  # fmt: skip
    assert_every_hidden_matrix_moved(output_dir, start)
    assert_reloads_with_the_same_logits(output_dir, trainer.model)
    assert_stops_at_end_of_turn(output_dir)


def test_grpo_lora_on_qwen2_trains_only_the_adapter(stand_ins, tmp_path, monkeypatch, rewarded_first_replies):
    """LoRA GRPO on the Qwen2.5 recipe (rank 32 on every linear layer, q/k/v biases included in the base) moves
    every `lora_B` and no base weight, and the adapter reloads with `peft`."""
    base = stand_ins["qwen2.5-0.5b"]
    output_dir = tmp_path / "lora"
    trainer = train_in_process(
        "grpo", "recipes/qwen2.5-0.5b/grpo.yaml", base, output_dir, *CPU, *GRPO_STEPS, *NO_VLLM, "--use_peft", "true",
        monkeypatch=monkeypatch,
    )  # fmt: skip
    assert_only_the_adapter_trained(trainer.model, base)
    assert_reloads_with_the_same_logits(output_dir, trainer.model, adapter=True)
