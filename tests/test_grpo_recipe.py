"""End to end: `recipes/grpo.py` on the micro recipe (full and LoRA), and what reaches the rewards."""

import json
import sys

import pytest
from conftest import (
    REPO,
    assert_every_hidden_matrix_moved,
    assert_only_the_adapter_trained,
    rescored,
    run_micro,
    tiny_optimizer,
    train_micro_in_process,
)
from transformers import AutoModelForCausalLM
from trl import GRPOConfig, ModelConfig, ScriptArguments

import deepdive.rewards as rewards
from deepdive.configs import GRPOArguments, parse_recipe


def test_writes_a_model_and_before_after_accuracy(micro_sft, tmp_path):
    output_dir = tmp_path / "grpo"
    run_micro("grpo", micro_sft, output_dir)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    # before: the SFT model it started from; after: the model it saved; each one's replies generated and scored again
    for prefix, model_dir in (("before_", micro_sft), ("after_", output_dir)):
        again = rescored(model_dir, ["arithmetic"], 4, max_new_tokens=8, batch_size=8)
        assert {key: metrics[prefix + key] for key in again} == again and metrics[f"{prefix}test_prompts"] == 4
    assert [entry["step"] for entry in metrics["reward_curve"]] == [1, 2]
    assert AutoModelForCausalLM.from_pretrained(output_dir).config.model_type == "llama"


def test_lora_saves_an_adapter(micro_sft, tmp_path):
    output_dir = tmp_path / "lora"
    lora = ["--use_peft", "true", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj"]
    run_micro("grpo", micro_sft, output_dir, *lora, "--num_test_examples", "0")
    assert (output_dir / "adapter_config.json").is_file() and not (output_dir / "model.safetensors").exists()


@pytest.fixture
def rewarded_pairs(monkeypatch) -> list[str]:
    """Arguments for a GRPO run whose rewards always tell the two replies of a group apart (1 for the first,
    0 for the second): the micro model earns none of the real rewards, which alone would leave no gradient."""

    def first_of_pair(completions, **kwargs):
        return [float(index % 2 == 0) for index in range(len(completions))]

    monkeypatch.setitem(rewards.REWARDS, "first_of_pair", first_of_pair)
    return ["--reward_funcs", "first_of_pair", "--num_test_examples", "0", *tiny_optimizer("grpo")]


def test_lora_with_the_tiny_optimizer_trains_the_adapter_and_only_the_adapter(
    micro_sft, tmp_path, monkeypatch, rewarded_pairs
):
    lora = ["--use_peft", "true", "--lora_r", "4"]
    trainer = train_micro_in_process(
        "grpo", micro_sft, tmp_path / "lora", *rewarded_pairs, *lora, monkeypatch=monkeypatch
    )
    assert_only_the_adapter_trained(trainer.model, micro_sft)


def test_full_training_with_the_tiny_optimizer_moves_every_hidden_matrix(
    micro_sft, tmp_path, monkeypatch, rewarded_pairs
):
    train_micro_in_process("grpo", micro_sft, tmp_path / "full", *rewarded_pairs, monkeypatch=monkeypatch)
    assert_every_hidden_matrix_moved(tmp_path / "full", micro_sft)


def test_practice_with_tools_runs_trl_tool_loop_and_logs_its_calls(micro_sft, tmp_path, monkeypatch, rewarded_pairs):
    """`tools: true` hands our python and search to TRL's tool loop, which accepts our template (prefix-preserving,
    with a response template to read calls back) and logs how often the model called them and how often a call
    failed; the model still trains."""
    trainer = train_micro_in_process(
        "grpo", micro_sft, tmp_path / "tools", *rewarded_pairs, "--tools", "true", monkeypatch=monkeypatch
    )
    assert [tool.__name__ for tool in trainer.tools] == ["python", "search"]
    logged = [entry for entry in trainer.state.log_history if "tools/call_frequency" in entry]
    assert len(logged) == 2 and all("tools/failure_frequency" in entry for entry in logged)
    assert_every_hidden_matrix_moved(tmp_path / "tools", micro_sft)


def test_task_and_answer_columns_reach_the_rewards(micro_sft, tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "recipes"))
    import grpo

    seen = []

    def spy(completions, task, answer, **kwargs):
        seen.append((len(completions), list(task), list(answer)))
        return [0.0] * len(completions)

    monkeypatch.setitem(rewards.REWARDS, "accuracy", spy)
    recipe = [
        "--config", str(REPO / "recipes/micro/grpo.yaml"), "--model_name_or_path", str(micro_sft),
        "--output_dir", str(tmp_path / "spy"), "--reward_funcs", "accuracy", "--num_test_examples", "0",
    ]  # fmt: skip
    grpo.main(*parse_recipe((ScriptArguments, GRPOArguments, GRPOConfig, ModelConfig), recipe))
    assert len(seen) == 2  # one call per step
    for count, tasks, answers in seen:
        assert count == 4 and tasks == ["arithmetic"] * 4
        assert all(answer.lstrip("-").isdigit() for answer in answers)
        assert answers[0] == answers[1] and answers[2] == answers[3]  # one group of 2 generations per prompt
