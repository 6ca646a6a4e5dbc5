from pathlib import Path

import pytest
from transformers import TrainingArguments
from trl import ScriptArguments

from deepdive.configs import PretrainArguments, parse_recipe
from deepdive.errors import RecipeError


REPO = Path(__file__).resolve().parents[1]
PRETRAIN = (ScriptArguments, PretrainArguments, TrainingArguments)


def write(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("recipe", sorted(REPO.glob("recipes/*/pretrain.yaml")), ids=lambda p: p.parent.name)
def test_every_pretrain_recipe_parses(recipe):
    script_args, args, training_args = parse_recipe(PRETRAIN, ["--config", str(recipe)])
    assert training_args.output_dir.startswith("runs/")
    assert args.seq_len > 1 and training_args.max_steps > 0


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
