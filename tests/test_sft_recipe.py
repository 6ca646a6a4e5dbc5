"""End to end: `recipes/sft.py` on the micro recipe (full and LoRA), then a chat turn through `pipeline`."""

import json

import torch
from conftest import (
    assert_every_hidden_matrix_moved,
    assert_only_the_adapter_trained,
    run_micro,
    tiny_optimizer,
    train_micro_in_process,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline


def test_writes_a_chat_model_with_its_template(micro_sft):
    tokenizer = AutoTokenizer.from_pretrained(micro_sft)
    assert tokenizer.chat_template is not None and tokenizer.eos_token == "<|im_end|>"
    metrics = json.loads((micro_sft / "metrics.json").read_text())
    for name in ("identity", "arithmetic", "spelling", "shakespeare"):
        assert 0.0 <= metrics[f"{name}_accuracy"] <= 1.0
    assert 0.0 <= metrics["stop_rate"] <= 1.0 and metrics["test_prompts"] == 16


def test_one_chat_turn_through_the_pipeline(micro_sft):
    chat = pipeline("text-generation", model=str(micro_sft), device="cpu")
    messages = [{"role": "user", "content": "Who are you?"}]
    output = chat(messages, max_new_tokens=6, do_sample=False)[0]["generated_text"]
    assert output[0] == messages[0] and output[-1]["role"] == "assistant"


def test_only_assistant_tokens_changed_the_model(micro_base, micro_sft):
    base = AutoModelForCausalLM.from_pretrained(micro_base).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(micro_sft).state_dict()
    assert any(not torch.equal(base[name], tuned[name]) for name in base)


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


def test_bad_input_stops_before_training(micro_base, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}) + "\n", encoding="utf-8")
    no_messages = tmp_path / "text.jsonl"
    no_messages.write_text(json.dumps({"text": "hi"}) + "\n", encoding="utf-8")
    cases = [
        (["--data_files", str(bad)], "error: train dataset row 0: unknown role 'wizard'; valid roles: system"),
        (["--data_files", str(no_messages)], f"error: data_files: {no_messages} line 1 has no 'messages' list"),
        (["--tasks", "identity", "poetry"], "error: tasks: unknown task 'poetry'; valid tasks: arithmetic, identity"),
        (["--task_weights", "1", "2"], "error: task_weights: 2 weights for 4 tasks"),
        (["--max_length", "4096"], "error: max_length: 4096 exceeds the model's 64 positions"),
    ]
    for extra, message in cases:
        output_dir = tmp_path / "never"
        result = run_micro("sft", micro_base, output_dir, *extra, check=False)
        assert result.returncode != 0
        assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-1500:]
        assert not output_dir.exists()
