import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaForCausalLM, TrainingArguments
from trl import DPOConfig, GRPOConfig, ModelConfig, RewardConfig, ScriptArguments, SFTConfig

from deepdive.configs import (
    GRPOArguments,
    PreferenceArguments,
    PretrainArguments,
    SFTArguments,
    parse_recipe,
    save_recipe,
)
from deepdive.errors import RecipeError


REPO = Path(__file__).resolve().parents[1]
PRETRAIN = (ScriptArguments, PretrainArguments, TrainingArguments)


def write(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


STAGES = {
    "pretrain": PRETRAIN,
    "sft": (ScriptArguments, SFTArguments, SFTConfig, ModelConfig),
    "grpo": (ScriptArguments, GRPOArguments, GRPOConfig, ModelConfig),
    "reward": (ScriptArguments, PreferenceArguments, RewardConfig, ModelConfig),
    "dpo": (ScriptArguments, PreferenceArguments, DPOConfig, ModelConfig),
}
# recipe file -> the stages it may start from (the micro recipes have no verse SFT pass)
PREVIOUS = {
    "sft": ("base",),
    "grpo": ("sft",),
    "sft-honest": ("sft",),
    "sft-tools": ("base",),
    "sft-verse": ("sft",),
    **dict.fromkeys(("reward", "rlhf", "dpo"), ("sft-verse", "sft")),
}
SECOND_PASSES = {
    "sft-honest": "sft",
    "sft-tools": "sft",
    "sft-verse": "sft",
    "rlhf": "grpo",
}  # recipe file -> the stage script it runs


@pytest.mark.parametrize("recipe", sorted(REPO.glob("recipes/**/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_recipe_parses(recipe):
    """Every shipped recipe goes through the real parsers (an unknown or ill-typed field fails), writes where
    its folder says and starts from its own previous stage. GPU recipes are parsed as on this CPU machine."""
    stage = SECOND_PASSES.get(recipe.stem, recipe.stem)
    assert stage in STAGES, f"{recipe}: a recipe is named after its stage ({', '.join(STAGES)})"
    on_cpu = [] if yaml.safe_load(recipe.read_text(encoding="utf-8")).get("use_cpu") else ["--use_cpu", "true"]
    parsed = parse_recipe(STAGES[stage], ["--config", str(recipe.relative_to(REPO)), *on_cpu])
    training_args = parsed[2]
    stage_dir = "base" if recipe.stem == "pretrain" else recipe.stem
    assert training_args.output_dir == f"runs/{recipe.parent.name}/{stage_dir}"
    assert training_args.max_steps > 0 or training_args.num_train_epochs > 0
    if recipe.stem in PREVIOUS and parsed[3].model_name_or_path.startswith("runs/"):
        assert parsed[3].model_name_or_path in [
            f"runs/{recipe.parent.name}/{stage}" for stage in PREVIOUS[recipe.stem]
        ]
    if getattr(training_args, "chat_template_path", None):
        assert (REPO / training_args.chat_template_path).is_file()


class Tokenizer:
    """The ids and length `build_llama_config` reads from a tokenizer (the d12 one is trained on the Hub data)."""

    bos_token_id, eos_token_id, pad_token_id = 0, 1, 1

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def test_d12_recipe_builds_a_100m_model():
    from deepdive.modeling import build_llama_config

    _, args, training_args = parse_recipe(
        PRETRAIN, ["--config", str(REPO / "recipes/d12-fineweb/pretrain.yaml"), "--use_cpu", "true"]
    )
    tokenizer = Tokenizer(args.vocab_size)
    config = build_llama_config(
        tokenizer, args.hidden_size, args.num_hidden_layers, args.num_attention_heads, vocab_size=args.vocab_size
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())
    assert 90e6 < parameters < 130e6
    tokens_per_step = (
        training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * args.seq_len
    )
    assert tokens_per_step == 524288 and training_args.max_steps * tokens_per_step > 15 * parameters  # ~Chinchilla


def test_yaml_values_get_their_field_types(tmp_path):
    config = write(tmp_path, "output_dir: out\nlearning_rate: 3e-4\nbf16: false\nsample_prompts: [a, b]\n")
    _, args, training_args = parse_recipe(PRETRAIN, ["--config", config])
    assert training_args.learning_rate == pytest.approx(3e-4)  # PyYAML alone would give the string '3e-4'
    assert training_args.bf16 is False
    assert args.sample_prompts == ["a", "b"]


def test_command_line_overrides_the_recipe(tmp_path):
    config = write(tmp_path, "output_dir: out\nhidden_size: 64\n")
    _, args, training_args = parse_recipe(PRETRAIN, ["--config", config, "--hidden_size", "32", "--output_dir", "x"])
    assert args.hidden_size == 32 and training_args.output_dir == "x"


@pytest.mark.parametrize(
    "text, message",
    [
        ("output_dir: out\nhiden_size: 64\n", r"recipe.yaml: unknown field 'hiden_size'; did you mean hidden_size"),
        ("output_dir: out\nlearning_rate: fast\n", r"field 'learning_rate' must be float, got 'fast'"),
        ("output_dir: out\nbf16: maybe\n", r"field 'bf16' must be bool"),
        ("output_dir: out\nlr_scheduler_type: wobbly\n", r"field 'lr_scheduler_type' is 'wobbly'; valid values: "),
        ("output_dir: out\nsample_prompts: hello\n", r"field 'sample_prompts' takes a list"),
        ("output_dir: out\nseq_len: [1, 2]\n", r"field 'seq_len' takes one value"),
        ("- a\n- b\n", r"a recipe is a mapping"),
        ("a: [\n", r"not valid YAML"),
    ],
)
def test_bad_recipes_fail_with_one_line(tmp_path, text, message):
    config = write(tmp_path, text)
    with pytest.raises(RecipeError, match=message) as error:
        parse_recipe(PRETRAIN, ["--config", config])
    assert "\n" not in str(error.value)


def test_missing_recipe_file():
    with pytest.raises(RecipeError, match="--config: nowhere.yaml does not exist"):
        parse_recipe(PRETRAIN, ["--config", "nowhere.yaml"])


def test_unknown_command_line_argument_is_named(tmp_path):
    config = write(tmp_path, "output_dir: out\n")
    with pytest.raises(RecipeError, match=r"unknown argument '--seq_lenn'; did you mean seq_len"):
        parse_recipe(PRETRAIN, ["--config", config, "--seq_lenn", "8"])


def test_the_saved_recipe_leaves_out_credentials(tmp_path, monkeypatch):
    for name in ("HF_TOKEN", "WANDB_PROJECT"):
        monkeypatch.setenv(name, "set before the test")  # the recipe's `env` block sets them; restored after it
    config = write(tmp_path, "learning_rate: 3e-4\nenv:\n  HF_TOKEN: hf_from_the_recipe\n  WANDB_PROJECT: deepdive\n")
    for hub_token in (["--hub_token", "hf_from_the_command_line"], ["--hub_token=hf_from_the_command_line"]):
        _, args, _ = parse_recipe(PRETRAIN, ["--config", config, *hub_token, "--output_dir", "x"])
        assert "hf_from" not in repr(args.recipe)  # the record the run keeps holds no credential either
        save_recipe(tmp_path / "run", args.recipe)
        text = (tmp_path / "run" / "recipe.yaml").read_text()
        assert "hf_from" not in text
        assert "# Left out, as credentials are never written: hub_token, env.HF_TOKEN\n" in text
        saved = yaml.safe_load(text)
        assert saved == {"learning_rate": 3e-4, "output_dir": "x", "seed": 42, "env": {"WANDB_PROJECT": "deepdive"}}


@dataclass
class ReadsTheEnvironment:
    """A config that reads the environment as it is built, as `TrainingArguments` does."""

    seen: str | None = field(default=None, init=False)

    def __post_init__(self):
        self.seen = os.environ.get("DEEPDIVE_RECIPE_VARIABLE")


def test_the_recipe_env_block_is_set_before_the_configs_are_built(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPDIVE_RECIPE_VARIABLE", "set before the test")  # restored after it
    config = write(tmp_path, "output_dir: out\nenv:\n  DEEPDIVE_RECIPE_VARIABLE: from the recipe\n")
    *_, read = parse_recipe((*PRETRAIN, ReadsTheEnvironment), ["--config", config])
    assert read.seen == "from the recipe" and os.environ["DEEPDIVE_RECIPE_VARIABLE"] == "from the recipe"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_the_saved_recipe_parses_to_the_same_configs(stage, tmp_path):
    """`recipe.yaml` is a recipe of its own: parsed again, it gives the configs the run was built from (the
    global batch fitted and the libraries' own derived fields included)."""
    overrides = ["--seed", "7", "--learning_rate", "2e-3", "--output_dir", str(tmp_path / "run")]
    parsed = parse_recipe(STAGES[stage], ["--config", str(REPO / f"recipes/micro/{stage}.yaml"), *overrides])
    path = save_recipe(tmp_path / "run", parsed[1].recipe)
    header = path.read_text().splitlines()[0]
    assert header.endswith("overrides applied: output_dir, learning_rate, seed"), header
    assert parse_recipe(STAGES[stage], ["--config", str(path)]) == parsed


def test_a_list_override_is_saved_whole(tmp_path):
    recipe = ["--config", str(REPO / "recipes/micro/sft.yaml"), "--tasks", "identity", "arithmetic"]
    _, args, _, _ = parse_recipe(STAGES["sft"], recipe)
    path = save_recipe(tmp_path, args.recipe)
    assert yaml.safe_load(path.read_text())["tasks"] == ["identity", "arithmetic"]
    assert parse_recipe(STAGES["sft"], ["--config", str(path)])[1].tasks == ["identity", "arithmetic"]


def test_an_in_process_parse_records_its_own_arguments_not_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--hidden_size", "7", "-k", "recipe"])  # the test runner's own
    config = write(tmp_path, "output_dir: out\nhidden_size: 64\n")
    _, args, _ = parse_recipe(PRETRAIN, ["--config", config, "--seq_len", "32"])
    saved = yaml.safe_load(save_recipe(tmp_path / "run", args.recipe).read_text())
    assert saved == {"output_dir": "out", "hidden_size": 64, "seq_len": 32, "seed": 42}
    assert list(saved) == ["output_dir", "hidden_size", "seq_len", "seed"]  # the recipe file's fields first


def test_an_ill_typed_command_line_argument_is_named_in_one_line(tmp_path):
    config = write(tmp_path, "output_dir: out\n")
    with pytest.raises(RecipeError, match=r"^argument --learning_rate/--learning-rate: invalid float value: 'fast'$"):
        parse_recipe(PRETRAIN, ["--config", config, "--learning_rate", "fast"])


@pytest.mark.parametrize("has_bf16", [True, False])
def test_bf16_on_a_cpu_without_bf16_instructions_trains_in_float32(tmp_path, monkeypatch, caplog, has_bf16):
    """Emulated bf16 autocast is many times slower than float32: such a CPU trains in float32, says so, and the
    run's record shows it; a CPU with AMX or AVX512-BF16 keeps the recipe's bf16."""
    monkeypatch.setattr("deepdive.configs.cpu_has_bf16", lambda: has_bf16)
    config = write(tmp_path, "output_dir: out\nuse_cpu: true\nbf16: true\n")
    _, args, training_args = parse_recipe(PRETRAIN, ["--config", config])
    assert training_args.bf16 is has_bf16
    assert training_args.mixed_precision == ("bf16" if has_bf16 else "no")
    assert args.recipe.values.get("bf16", False) is has_bf16  # what the run did, read back by a rerun
    assert ("no bf16 instructions" in caplog.text) is not has_bf16
