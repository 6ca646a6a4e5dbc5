"""Reliability: kill -9 and resume to the same result, finished runs kept, non-finite values stopped early,
determinism, and a table of bad inputs that each stop a recipe in one line before anything is written."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, logged_losses, run_recipe
from safetensors.torch import load_file

from deepdive.records import read_record
from deepdive.runs import last_complete_checkpoint


LONG_MICRO = [
    "--config", "recipes/micro/pretrain.yaml", "--max_steps", "240", "--save_steps", "40", "--eval_strategy", "no",
    "--logging_steps", "10", "--sample_prompts", "[]",
]  # fmt: skip


def final_state(output_dir):
    return load_file(output_dir / "model.safetensors"), logged_losses(output_dir)


def test_pretraining_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path):
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    run_recipe("pretrain.py", *LONG_MICRO, "--output_dir", str(reference_dir))

    command = [sys.executable, str(REPO / "recipes/pretrain.py"), *LONG_MICRO, "--output_dir", str(killed_dir)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while last_complete_checkpoint(killed_dir) is None and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "metrics.json").exists(), "the run finished before it could be killed"
    killed_at = last_complete_checkpoint(killed_dir)

    resumed = run_recipe("pretrain.py", *LONG_MICRO, "--output_dir", str(killed_dir))  # the same command again
    reference_weights, reference_losses = final_state(reference_dir)
    resumed_weights, resumed_losses = final_state(killed_dir)
    step = int(killed_at.rsplit("-", 1)[1])
    assert step < 240
    for name, weight in reference_weights.items():
        assert torch.allclose(weight, resumed_weights[name], atol=1e-3), name
    assert resumed_losses == pytest.approx(reference_losses, abs=1e-3)

    # It says so, does not warn about the tied output head, and counts only the tokens it trained itself
    assert f"resuming from {killed_at}: step {step} of 240" in resumed.stderr
    assert "missing keys" not in resumed.stderr
    reference, record = read_record(reference_dir, "metrics.json"), read_record(killed_dir, "metrics.json")
    assert record["resumed_from_step"] == step and "resumed_from_step" not in reference
    assert record["train_tokens"] == reference["train_tokens"] * (240 - step) // 240


def test_a_checkpoint_cut_off_mid_save_is_never_loaded(tmp_path):
    complete, cut_off = tmp_path / "checkpoint-40", tmp_path / "checkpoint-80"
    complete.mkdir()
    (complete / "trainer_state.json").write_text(json.dumps({"global_step": 40}))
    cut_off.mkdir()
    (cut_off / "model.safetensors").write_bytes(b"partial")  # killed before trainer_state.json
    (tmp_path / "checkpoint-120").mkdir()
    (tmp_path / "checkpoint-120" / "trainer_state.json").write_text('{"global_step": 1')  # killed mid-write
    assert last_complete_checkpoint(tmp_path) == str(complete)


def test_a_finished_run_is_kept_unless_overwrite_is_asked(micro_base):
    model = micro_base / "model.safetensors"
    before = model.stat().st_mtime_ns
    result = run_recipe(
        "pretrain.py", "--config", "recipes/micro/pretrain.yaml", "--output_dir", str(micro_base), check=False
    )
    assert result.returncode != 0 and model.stat().st_mtime_ns == before
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: output_dir: {micro_base} holds a finished run; pass --overwrite_output_dir true to train over it, "
        "or choose another output_dir"
    )


def test_a_non_finite_loss_stops_training_before_the_update(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "recipes"))
    import pretrain
    from transformers import Trainer, TrainingArguments
    from trl import ScriptArguments

    from deepdive.configs import PretrainArguments, parse_recipe
    from deepdive.errors import TrainingError

    compute_loss = Trainer.compute_loss

    def poisoned(self, model, inputs, *args, **kwargs):  # step 5 (after the checkpoint at step 3) goes NaN
        loss = compute_loss(self, model, inputs, *args, **kwargs)
        return loss * float("nan") if self.state.global_step == 4 else loss

    monkeypatch.setattr(Trainer, "compute_loss", poisoned)
    recipe = ["--config", str(REPO / "recipes/micro/pretrain.yaml"), "--output_dir", str(tmp_path / "nan")]
    with pytest.raises(TrainingError) as error:
        pretrain.main(*parse_recipe((ScriptArguments, PretrainArguments, TrainingArguments), recipe))
    message = str(error.value)
    assert message.startswith("non-finite loss or gradient at step 5: training stopped before the update")
    assert f"the last good checkpoint is {tmp_path / 'nan' / 'checkpoint-3'}" in message
    assert "\n" not in message and not (tmp_path / "nan" / "metrics.json").exists()
    saved = load_file(tmp_path / "nan" / "checkpoint-3" / "model.safetensors")
    assert all(torch.isfinite(weight).all() for weight in saved.values())


def test_the_hub_token_is_never_written(micro_base, tmp_path):
    token, override = "hf_fake_token_that_must_not_leak", "hf_fake_override_that_must_not_leak"
    output_dir = tmp_path / "sft"
    args = [
        "--config",
        "recipes/micro/sft.yaml",
        "--model_name_or_path",
        str(micro_base),
        "--output_dir",
        str(output_dir),
        "--hub_token",
        override,
    ]
    result = run_recipe("sft.py", *args, "--save_strategy", "steps", "--save_steps", "2", env={"HF_TOKEN": token})
    written = [path for path in output_dir.rglob("*") if path.is_file()]
    assert any(path.name == "README.md" for path in written) and any("checkpoint-2" in str(path) for path in written)
    assert any(path.name == "training_args.bin" for path in written)  # the Trainer pickles its arguments there
    for path in written:
        assert token.encode() not in path.read_bytes() and override.encode() not in path.read_bytes(), path
    assert token not in result.stdout + result.stderr and override not in result.stdout + result.stderr


def test_a_hub_token_override_is_kept_for_the_push_only(tmp_path, monkeypatch):
    from transformers import TrainingArguments
    from trl import ScriptArguments

    from deepdive.configs import PretrainArguments, parse_recipe
    from deepdive.runs import start_run

    monkeypatch.setattr("deepdive.hub.get_token", lambda: None)  # no login: the override is the only token
    token = "hf_fake_override_that_must_not_leak"
    recipe = ["--config", str(REPO / "recipes/micro/pretrain.yaml"), "--output_dir", str(tmp_path / "run"),
              "--push_to_hub", "true", "--hub_model_id", "someone/tiny", "--hub_token", token]  # fmt: skip
    _, _, training_args = parse_recipe((ScriptArguments, PretrainArguments, TrainingArguments), recipe)
    run = start_run(training_args)
    assert run.push_to == "someone/tiny" and run.hub_token == token
    assert training_args.hub_token is None  # what the Trainer saves into training_args.bin holds no token
    assert token not in repr(run)


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_remote_code_is_off_unless_the_recipe_says_so(stage):
    from trl import GRPOConfig, ModelConfig, ScriptArguments, SFTConfig

    from deepdive.configs import GRPOArguments, SFTArguments, parse_recipe

    types = {"sft": (SFTArguments, SFTConfig), "grpo": (GRPOArguments, GRPOConfig)}[stage]
    for recipe in sorted(REPO.glob(f"recipes/*/{stage}.yaml")):
        _, _, training_args, _ = parse_recipe(
            (ScriptArguments, *types, ModelConfig), ["--config", str(recipe), "--use_cpu", "true"]
        )
        assert training_args.trust_remote_code is False, recipe
