"""Shared fixtures: one micro pretraining run for the whole session (a few seconds on 2 cores); helpers that run
the recipes and check that training really changed what it should."""

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, TrainingArguments
from trl import DPOConfig, GRPOConfig, ModelConfig, RewardConfig, ScriptArguments, SFTConfig

from deepdive.configs import GRPOArguments, PreferenceArguments, PretrainArguments, SFTArguments, parse_recipe
from deepdive.generation import Decoding, generate, generate_with_tools
from deepdive.modeling import load_model_and_tokenizer
from deepdive.tasks import get_task


REPO = Path(__file__).resolve().parents[1]
STAGES = {
    "pretrain": (ScriptArguments, PretrainArguments, TrainingArguments),
    "sft": (ScriptArguments, SFTArguments, SFTConfig, ModelConfig),
    "grpo": (ScriptArguments, GRPOArguments, GRPOConfig, ModelConfig),
    "reward": (ScriptArguments, PreferenceArguments, RewardConfig, ModelConfig),
    "dpo": (ScriptArguments, PreferenceArguments, DPOConfig, ModelConfig),
}


def run_recipe(script: str, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `recipes/<script>` in a subprocess the way a user does, return the finished process."""
    return run_to_end([sys.executable, str(REPO / "recipes" / script), *args], env, script, check)


def launch(accelerate_config: str, script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `recipes/<script>` through `accelerate launch` with `accelerate_configs/<accelerate_config>.yaml`."""
    accelerate = Path(sys.executable).parent / "accelerate"
    config = REPO / "accelerate_configs" / f"{accelerate_config}.yaml"
    return run_to_end(
        [str(accelerate), "launch", "--config_file", str(config), str(REPO / "recipes" / script), *args], env, script
    )


def run_to_end(
    command: list[str], env: dict | None, name: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `command` from the repository root and wait for it; with `check`, one that fails fails the test with
    its output. One still running after `timeout` seconds fails the test with the Python stacks of all its
    processes (faulthandler prints them on SIGABRT), so a hung multi-process run shows where each process waits."""
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the signal reaches the workers `accelerate launch` starts
        env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})},
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # the launcher first, so that it does not stop its workers before they show where they are; one at a time
        for pid in sorted(process_group(process.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGABRT)
            time.sleep(1)  # so that the stacks of two processes do not interleave
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        raise AssertionError(
            f"{name} still ran after {timeout:.0f} s; its output, then where each process was:\n"
            f"{stdout[-3000:]}\n{stderr[-12000:]}"
        ) from None
    if check and process.returncode != 0:
        raise AssertionError(f"{name} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def process_group(group: int) -> list[int]:
    """The ids of the processes still alive in process group `group` (Linux: read from /proc)."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(int(entry.name)) == group:
                members.append(int(entry.name))
    return members


def run_micro(stage: str, model_dir, output_dir, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `recipes/<stage>.py` on its micro recipe from `model_dir` into `output_dir`."""
    return run_recipe(
        f"{stage}.py",
        "--config",
        f"recipes/micro/{stage}.yaml",
        "--model_name_or_path",
        str(model_dir),
        "--output_dir",
        str(output_dir),
        *extra,
        check=check,
    )


def tiny_optimizer(stage: str) -> list[str]:
    """The optimizer fields of `recipes/tiny/<stage>.yaml` as overrides: a micro run then trains as the tiny recipe."""
    recipe = yaml.safe_load((REPO / "recipes" / "tiny" / f"{stage}.yaml").read_text())
    fields = [name for name in ("muon_lr", "learning_rate", "weight_decay", "adam_beta2") if name in recipe]
    return [arg for name in fields for arg in (f"--{name}", str(recipe[name]))]


def train_in_process(stage: str, config: str, model_dir, output_dir, *extra: str, monkeypatch) -> object:
    """Run `recipes/<stage>.py`'s `main` on the recipe `config` (a path from the repository root) in this process
    and return the Trainer it trained with, so a test sees the model as training left it (a LoRA run saves only
    the adapter)."""
    sys.path.insert(0, str(REPO / "recipes"))
    recipe, trainers = importlib.import_module(stage), []
    build_trainer = recipe.build_trainer

    def keep_trainer(*args, **kwargs):
        trainers.append(build_trainer(*args, **kwargs))
        return trainers[-1]

    monkeypatch.setattr(recipe, "build_trainer", keep_trainer)
    recipe.main(*parse_recipe(STAGES[stage], ["--config", str(REPO / config), "--model_name_or_path", str(model_dir),
                                              "--output_dir", str(output_dir), *extra]))  # fmt: skip
    return trainers[0]


def train_micro_in_process(stage: str, model_dir, output_dir, *extra: str, monkeypatch) -> object:
    """`train_in_process` on the micro recipe of `stage`."""
    return train_in_process(
        stage, f"recipes/micro/{stage}.yaml", model_dir, output_dir, *extra, monkeypatch=monkeypatch
    )


def logged_losses(output_dir) -> list[float]:
    """The training losses a finished run logged, in order (its `trainer_state.json`)."""
    history = json.loads((Path(output_dir) / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def assert_only_the_adapter_trained(model, base_dir) -> None:
    """Every `lora_B` of the PEFT `model` left its initial zeros; every base weight equals `base_dir`'s, bit for bit."""
    base = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    lora_b = {name: tensor for name, tensor in model.state_dict().items() if "lora_B" in name}
    assert lora_b and [name for name, tensor in lora_b.items() if not tensor.any()] == []
    compared = set()
    for name, tensor in model.state_dict().items():
        if "lora_" not in name:
            base_name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(tensor, base[base_name]), f"{base_name} changed under LoRA"
            compared.add(base_name)
    assert compared == set(base)


def assert_every_hidden_matrix_moved(model_dir, base_dir) -> None:
    """Each 2-D weight inside the transformer blocks of `model_dir` differs from `base_dir`'s."""
    base = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    hidden = [name for name, tensor in base.items() if ".layers." in name and tensor.ndim == 2]
    assert hidden and [name for name in hidden if torch.equal(base[name], trained[name])] == []


def rescored(model_dir, tasks, n_per_task: int, max_new_tokens: int, batch_size: int, tools: bool = False) -> dict:
    """The held-out accuracy of each task family and the stop rate, recomputed for the model saved in `model_dir`:
    its greedy replies to each family's first `n_per_task` test prompts (answered in batches of `batch_size`, as
    the evaluation that recorded them did) generated again, and each one scored by its family's own checker. With
    `tools`, the replies are the answers written after the tools were offered and run."""
    model, tokenizer = load_model_and_tokenizer(str(model_dir))
    scores, stopped = {}, []
    for name in tasks:
        examples = get_task(name).examples("test", n_per_task, seed=0)
        prompts = [example["prompt"] for example in examples]
        if tools:
            exchanges = generate_with_tools(model, tokenizer, prompts, Decoding(max_new_tokens), batch_size)
            completions = [exchange.completion for exchange in exchanges]
        else:
            completions = generate(model, tokenizer, prompts, Decoding(max_new_tokens), batch_size)
        replies = [completion.text for completion in completions]
        answers = [example["answer"] for example in examples]
        correct = [get_task(name).check(reply, answer) for reply, answer in zip(replies, answers, strict=True)]
        scores[f"{name}_accuracy"] = sum(correct) / len(correct)
        stopped += [completion.stopped for completion in completions]
    scores["stop_rate"] = sum(stopped) / len(stopped)
    return scores


def fake_model_folder(folder: Path, recipe: dict, adapter_of: str | None = None) -> Path:
    """A finished run folder as far as cards and pushes look at it (records and stand-in weight files, no training):
    a full model, or with `adapter_of` a LoRA adapter on that base."""
    folder.mkdir(parents=True)
    if adapter_of:
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": adapter_of, "r": 8}))
        (folder / "adapter_model.safetensors").write_bytes(b"stand-in weights")
    else:
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 1}))
        (folder / "model.safetensors").write_bytes(b"stand-in weights")
    (folder / "metrics.json").write_text(json.dumps({"stage": "sft", "train_loss": 1.5}))
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return folder


@pytest.fixture(scope="session")
def micro_base(tmp_path_factory) -> Path:
    """A model folder written by `recipes/pretrain.py` on the micro recipe."""
    output_dir = tmp_path_factory.mktemp("micro") / "base"
    run_recipe("pretrain.py", "--config", "recipes/micro/pretrain.yaml", "--output_dir", str(output_dir))
    return output_dir


@pytest.fixture(scope="session")
def micro_sft(micro_base, tmp_path_factory) -> Path:
    """A chat model folder written by `recipes/sft.py` on the micro recipe, from `micro_base`."""
    output_dir = tmp_path_factory.mktemp("micro") / "sft"
    run_micro("sft", micro_base, output_dir)
    return output_dir
