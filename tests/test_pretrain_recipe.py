"""End to end: `recipes/pretrain.py` on the micro recipe, as a user runs it, and the result loaded anywhere."""

import json
import math
import sys

import pytest
import torch
import yaml
from conftest import REPO, logged_losses, run_recipe
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainingArguments, pipeline
from trl import ScriptArguments

from deepdive.configs import PretrainArguments, parse_recipe
from deepdive.data import build_shakespeare
from deepdive.modeling import build_model


def test_writes_a_hugging_face_model_folder(micro_base):
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "metrics.json"):
        assert (micro_base / name).is_file(), name
    assert not list(micro_base.glob("*.bin")) or [p.name for p in micro_base.glob("*.bin")] == ["training_args.bin"]
    metrics = json.loads((micro_base / "metrics.json").read_text())
    assert math.isfinite(metrics["val_bits_per_byte"]) and 0 < metrics["val_bits_per_byte"] < 8
    assert metrics["val_bytes"] == 527014  # the whole validation split, every byte scored
    assert metrics["train_tokens"] == 6 * 8 * 64  # max_steps x global batch x seq_len


def test_loads_and_generates_with_plain_transformers(micro_base):
    model = AutoModelForCausalLM.from_pretrained(micro_base)
    tokenizer = AutoTokenizer.from_pretrained(micro_base)
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tokenizer) == 512
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    inputs = tokenizer("ROMEO:\n", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 5
    generator = pipeline("text-generation", model=str(micro_base), device="cpu")
    assert generator("HAMLET:", max_new_tokens=4, do_sample=False)[0]["generated_text"].startswith("HAMLET:")


def test_logs_eval_bits_per_byte_and_samples(micro_base):
    state = json.loads(sorted(micro_base.glob("checkpoint-*"))[-1].joinpath("trainer_state.json").read_text())
    evals = [entry for entry in state["log_history"] if "eval_bits_per_byte" in entry]
    assert [entry["step"] for entry in evals] == [3, 6]
    samples = [json.loads(line) for line in (micro_base / "samples.jsonl").read_text().splitlines()]
    assert {sample["step"] for sample in samples} == {3, 6} and samples[0]["prompt"] == "ROMEO:\n"


def test_same_seed_same_losses_and_model(micro_base, tmp_path):
    run_recipe("pretrain.py", "--config", "recipes/micro/pretrain.yaml", "--output_dir", str(tmp_path / "again"))
    losses = [logged_losses(run) for run in (micro_base, tmp_path / "again")]
    assert len(losses[0]) == 6 and losses[0] == losses[1]
    first = AutoModelForCausalLM.from_pretrained(micro_base).state_dict()
    second = AutoModelForCausalLM.from_pretrained(tmp_path / "again").state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)


@pytest.mark.slow
def test_tiny_numerics_give_one_model_per_seed(tmp_path):
    """The tiny recipe compiles the model and trains in bf16; a compiled backward may add in a different order
    each run, so two runs of the micro model with the tiny recipe's numerics must still agree to the bit."""
    tiny = yaml.safe_load((REPO / "recipes/tiny/pretrain.yaml").read_text())
    numerics = [
        f"--{key}={str(tiny[key]).lower()}" for key in ("torch_compile", "bf16", "full_determinism") if key in tiny
    ]
    assert "--torch_compile=true" in numerics
    models = []
    for name in ("first", "second"):
        run_recipe("pretrain.py", "--config", "recipes/micro/pretrain.yaml", *numerics, "--max_steps", "2",
                   "--eval_strategy", "no", "--save_strategy", "no", "--output_dir", str(tmp_path / name))  # fmt: skip
        models.append(AutoModelForCausalLM.from_pretrained(tmp_path / name).state_dict())
    initial = build_model(AutoConfig.from_pretrained(tmp_path / "first"), seed=42).state_dict()  # micro recipe's seed
    assert all(not torch.equal(initial[name], models[0][name]) for name in models[0])  # every weight trained
    assert all(torch.equal(models[0][name], models[1][name]) for name in models[0])


def test_trains_on_a_local_text_file(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"text": f"Line {i}: the quick brown fox jumps over the lazy dog. " * 8}) for i in range(60)]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output_dir = tmp_path / "own"
    run_recipe(
        "pretrain.py",
        "--config",
        "recipes/micro/pretrain.yaml",
        "--data_files",
        str(corpus),
        "--vocab_size",
        "300",
        "--output_dir",
        str(output_dir),
    )
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["val_bytes"] > 0 and math.isfinite(metrics["val_bits_per_byte"])


def test_trains_on_a_streamed_dataset(tmp_path):
    """`dataset_streaming`: the tokenizer trains on the stream's first documents, the first 1,000 documents are
    held out (in memory) and the rest is tokenized and packed as training reads it."""
    folder = tmp_path / "stream"
    folder.mkdir()
    lines = [json.dumps({"text": f"Document {i}: the quick brown fox jumps over the lazy dog."}) for i in range(1500)]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    output_dir = tmp_path / "streamed"
    common = ["--config", "recipes/micro/pretrain.yaml", "--dataset_name", str(folder), "--vocab_size", "300"]
    run_recipe("pretrain.py", *common, "--dataset_streaming", "true", "--tokenizer_documents", "200",
               "--output_dir", str(output_dir))  # fmt: skip
    metrics = json.loads((output_dir / "metrics.json").read_text())
    held_out = sum(len(line.encode()) - len('{"text": ""}') for line in lines[:1000])
    assert metrics["val_bytes"] == held_out and math.isfinite(metrics["val_bits_per_byte"])
    assert metrics["train_tokens"] == 6 * 8 * 64
    result = run_recipe("pretrain.py", *common, "--dataset_streaming", "true", "--max_steps", "-1",
                        "--num_train_epochs", "1", "--output_dir", str(tmp_path / "endless"), check=False)  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: max_steps: a streamed corpus has no length; set the number of optimizer steps"
    )


class StopBeforeTraining(Exception):
    pass


def test_tokenizer_never_sees_the_validation_plays(monkeypatch, tmp_path):
    sys.path.insert(0, str(REPO / "recipes"))
    import pretrain

    seen = []
    original = pretrain.train_tokenizer
    monkeypatch.setattr(pretrain, "train_tokenizer", lambda texts, size: seen.extend(texts) or original(texts, size))
    monkeypatch.setattr(pretrain.Trainer, "train", lambda self, **kwargs: (_ for _ in ()).throw(StopBeforeTraining))
    recipe = ["--config", str(REPO / "recipes/micro/pretrain.yaml"), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(StopBeforeTraining):
        pretrain.main(*parse_recipe((ScriptArguments, PretrainArguments, TrainingArguments), recipe))
    assert len(seen) == 34
    assert not set(seen) & set(build_shakespeare()["validation"]["text"])
