"""End to end: `recipes/sft.py` on the micro recipe (full and LoRA), then a chat turn through `pipeline`."""

import json

import torch
import torch.nn.functional as F
import yaml
from conftest import (
    REPO,
    assert_every_hidden_matrix_moved,
    assert_only_the_adapter_trained,
    rescored,
    run_micro,
    tiny_optimizer,
    train_micro_in_process,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from deepdive.tasks import build_mixture


MICRO_SFT = yaml.safe_load((REPO / "recipes/micro/sft.yaml").read_text())


def test_writes_a_chat_model_with_its_template_and_the_accuracy_of_its_replies(micro_sft):
    tokenizer = AutoTokenizer.from_pretrained(micro_sft)
    assert tokenizer.chat_template is not None and tokenizer.eos_token == "<|im_end|>"
    metrics = json.loads((micro_sft / "metrics.json").read_text())
    assert metrics["test_prompts"] == 4 * len(MICRO_SFT["tasks"])
    # what the recipe recorded is what the saved model's replies, generated and scored again, give
    again = rescored(micro_sft, MICRO_SFT["tasks"], 4, MICRO_SFT["eval_max_new_tokens"], 16)
    assert {key: metrics[key] for key in again} == again


def test_with_tools_the_same_questions_are_scored_twice_and_the_tool_turns_train(micro_base, tmp_path):
    """`tool_share` mixes conversations that call a tool into the data; the model is then scored without tools and
    with them run, each figure what its saved model's replies give again, with the tool calls counted."""
    output_dir = tmp_path / "tools"
    run_micro("sft", micro_base, output_dir, "--tool_share", "0.5")
    metrics = json.loads((output_dir / "metrics.json").read_text())
    tasks, n, budget = MICRO_SFT["tasks"], 4, MICRO_SFT["eval_max_new_tokens"]
    again = rescored(output_dir, tasks, n, budget, 16)
    assert {key: metrics[key] for key in again} == again
    with_tools = rescored(output_dir, tasks, n, budget, 16, tools=True)
    assert {key: metrics[f"{key}_with_tools"] for key in with_tools} == with_tools
    assert metrics["tool_calls_per_question"] >= 0 and 0 <= metrics["tool_failure_rate"] <= 1
    assert AutoTokenizer.from_pretrained(output_dir).response_template is not None  # reads its calls back
    assert_every_hidden_matrix_moved(output_dir, micro_base)


def test_one_chat_turn_through_the_pipeline(micro_sft):
    chat = pipeline("text-generation", model=str(micro_sft), device="cpu")
    messages = [{"role": "user", "content": "Who are you?"}]
    output = chat(messages, max_new_tokens=6, do_sample=False)[0]["generated_text"]
    assert output[0] == messages[0] and output[-1]["role"] == "assistant"


@torch.no_grad()
def loss_drops(base_dir, model_dirs, conversations, tokenizer) -> list[dict[str, float]]:
    """For each model, how much its mean next-token loss on `conversations` fell below the base model's, on three
    kinds of target token: the assistant's (its replies and their `<|im_end|>`), all the others (user turns and
    the template around them) and `<|im_start|>` alone, which only ever opens a turn."""
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    encoded = [
        tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
        for messages in conversations
    ]

    def mean_losses(model_dir) -> dict[str, float]:
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        losses = {"assistant": [], "other": [], "im_start": []}
        for row in encoded:
            ids = torch.tensor(row["input_ids"])
            assistant = torch.tensor(row["assistant_masks"], dtype=torch.bool)[1:]
            nll = F.cross_entropy(model(ids[None]).logits[0, :-1], ids[1:], reduction="none")
            losses["assistant"].append(nll[assistant])
            losses["other"].append(nll[~assistant])
            losses["im_start"].append(nll[ids[1:] == im_start])
        return {kind: torch.cat(values).mean().item() for kind, values in losses.items()}

    base = mean_losses(base_dir)
    return [{kind: base[kind] - loss for kind, loss in mean_losses(model_dir).items()} for model_dir in model_dirs]


def test_only_assistant_tokens_carry_the_loss(micro_base, micro_sft, tmp_path):
    """The micro SFT run against the same run with the loss on every token (`assistant_only_loss: false`): on the
    conversations both trained on, the masked run lowered the loss of the assistant's tokens more than of the
    others, the unmasked one the other way round, and only the unmasked one learnt to predict `<|im_start|>`."""
    all_tokens = tmp_path / "all-tokens"
    run_micro("sft", micro_base, all_tokens, "--assistant_only_loss", "false", "--num_test_examples", "0")
    weights = dict.fromkeys(MICRO_SFT["tasks"], 1.0)
    trained_on = build_mixture(weights, MICRO_SFT["num_train_examples"], "train", seed=MICRO_SFT["seed"])["messages"]
    tokenizer = AutoTokenizer.from_pretrained(micro_sft)
    masked, unmasked = loss_drops(micro_base, [micro_sft, all_tokens], trained_on, tokenizer)
    assert masked["assistant"] > masked["other"] > 0 and unmasked["other"] > unmasked["assistant"] > 0
    assert unmasked["other"] > 2 * masked["other"]
    assert unmasked["im_start"] > 4 * masked["im_start"]


def test_lora_trains_an_adapter_that_merges(micro_base, tmp_path):
    adapter_dir = tmp_path / "lora"
    run_micro(
        "sft",
        micro_base,
        adapter_dir,
        "--use_peft",
        "true",
        "--lora_r",
        "4",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--num_test_examples",
        "0",
    )
    assert (adapter_dir / "adapter_config.json").is_file()
    assert not (adapter_dir / "model.safetensors").exists()
    from deepdive.hub import merge_adapter

    merged = merge_adapter(str(adapter_dir), str(tmp_path / "merged"))
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert not any("lora" in name for name in model.state_dict())
    assert AutoTokenizer.from_pretrained(merged).chat_template is not None


def test_lora_with_the_tiny_optimizer_trains_the_adapter_and_only_the_adapter(micro_base, tmp_path, monkeypatch):
    lora = ["--use_peft", "true", "--lora_r", "4", "--num_test_examples", "0", *tiny_optimizer("sft")]
    trainer = train_micro_in_process("sft", micro_base, tmp_path / "lora", *lora, monkeypatch=monkeypatch)
    assert_only_the_adapter_trained(trainer.model, micro_base)


def test_full_fine_tuning_with_the_tiny_optimizer_moves_every_hidden_matrix(micro_base, tmp_path, monkeypatch):
    output_dir = tmp_path / "full"
    train_micro_in_process(
        "sft", micro_base, output_dir, "--num_test_examples", "0", *tiny_optimizer("sft"), monkeypatch=monkeypatch
    )
    assert_every_hidden_matrix_moved(output_dir, micro_base)


def test_a_drill_is_trained_first_in_order_then_the_mixture(micro_base, tmp_path, monkeypatch):
    """`drill_task` / `num_drill_examples` (the tools stage's repeat drill): the trainer reads the drill's
    conversations first, in order, and every hidden matrix trains."""
    drill = ["--drill_task", "repeat", "--num_drill_examples", "16", "--train_sampling_strategy", "sequential"]
    output_dir = tmp_path / "drilled"
    trainer = train_micro_in_process(
        "sft",
        micro_base,
        output_dir,
        *drill,
        "--packing",
        "false",
        "--num_test_examples",
        "0",
        monkeypatch=monkeypatch,
    )
    weights = dict.fromkeys(MICRO_SFT["tasks"], 1.0)
    built = build_mixture(weights, MICRO_SFT["num_train_examples"], "train", MICRO_SFT["seed"], drill=("repeat", 16))
    assert built["task"][:16] == ["repeat"] * 16 and "repeat" not in built["task"][16:]
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    read = [
        tokenizer.decode([token for token, kept in zip(row, mask, strict=True) if kept])
        for batch in trainer.get_train_dataloader()
        for row, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), strict=True)
    ]
    assert len(read) == len(built)
    for text, messages in zip(read, built["messages"], strict=True):  # each cut at max_length, in the built order
        assert len(text) > 40 and tokenizer.apply_chat_template(messages, tokenize=False).startswith(text)
    assert_every_hidden_matrix_moved(output_dir, micro_base)
