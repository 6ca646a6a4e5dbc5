"""Recipe parsing: YAML recipes and command-line overrides into the libraries' own dataclasses.

A recipe is a flat YAML list of fields of `transformers.TrainingArguments` / TRL's configs plus the one
small dataclass of ours below for what the libraries lack (corpus, tokenizer and model shape). Parsing goes
through TRL's `TrlParser`, so `--config recipe.yaml` and `--field value` overrides behave as in TRL's own
scripts. On top, every YAML value is converted with its field's type (PyYAML reads `3e-4` as a string) and a
bad field stops the run with one line naming the file, the field and what is valid.
"""

import argparse
import difflib
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from trl import TrlParser

from deepdive.errors import RecipeError


@dataclass
class RecipeArguments:
    """What every recipe shares beyond the libraries' configs: permission to train over a finished run, a global
    batch that does not depend on the number of processes, and the Muon optimizer (`optim` has none)."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train over a finished run in `output_dir` (by default it is kept and the run stops)."},
    )
    # Training
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Sequences per optimizer step over all processes (pretraining: packed blocks; SFT: "
            "conversations or packed rows; GRPO: sampled replies). Set, `gradient_accumulation_steps` and the "
            "per-device batch are derived from it for any number of processes, `per_device_train_batch_size` "
            "being the most one device holds at once. Unset: per device x accumulation x processes."
        },
    )
    muon_lr: float | None = field(
        default=None,
        metadata={
            "help": "Train the 2-D weights inside the blocks with Muon at this learning rate (AdamW units); "
            "embeddings and norms keep AdamW at `learning_rate`. Unset: AdamW everywhere (`optim`)."
        },
    )


@dataclass
class PretrainArguments(RecipeArguments):
    """What pretraining needs beyond `TrainingArguments` and TRL's `ScriptArguments`."""

    # Data
    data_files: list[str] | None = field(
        default=None, metadata={"help": "Local .txt/.jsonl files to pretrain on instead of `dataset_name`."}
    )
    text_column: str = field(default="text", metadata={"help": "Column (or JSONL key) that holds the text."})
    validation_size: float = field(
        default=0.05, metadata={"help": "Share of documents held out when the data has no validation split."}
    )
    # Tokenizer
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Use this tokenizer (folder or Hub id) instead of training one."}
    )
    tokenizer_documents: int = field(
        default=100_000, metadata={"help": "With a streamed corpus, the first documents the tokenizer trains on."}
    )
    vocab_size: int | None = field(
        default=None,
        metadata={
            "help": "BPE vocabulary size, special tokens included (4096 when a tokenizer is trained). With "
            "`tokenizer_name_or_path`, the model's embedding size (default: the tokenizer's length)."
        },
    )
    # Model
    hidden_size: int = field(default=256, metadata={"help": "Width of the residual stream."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Number of transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Query heads per block."})
    num_key_value_heads: int | None = field(default=None, metadata={"help": "Key/value heads (GQA); default: all."})
    intermediate_size: int | None = field(default=None, metadata={"help": "SwiGLU width; default ~8/3 x hidden."})
    seq_len: int = field(default=256, metadata={"help": "Tokens per packed training block (the context length)."})
    rope_theta: float = field(default=10000.0, metadata={"help": "RoPE base frequency."})
    attn_implementation: str = field(
        default="sdpa",
        metadata={
            "help": "Attention kernel: sdpa (PyTorch's fused attention, flash kernels on GPU), eager, or "
            "flash_attention_2 (needs the flash-attn package and a GPU).",
            "choices": ["sdpa", "eager", "flash_attention_2", "flex_attention"],
        },
    )
    # Evaluation
    eval_stride: int | None = field(
        default=None, metadata={"help": "Window stride of the final val bits-per-byte pass; default seq_len // 2."}
    )
    max_eval_blocks: int | None = field(
        default=None, metadata={"help": "Validation blocks used by the periodic evals; default: all of them."}
    )
    sample_prompts: list[str] = field(
        default_factory=list, metadata={"help": "Prompts continued and logged at every evaluation."}
    )
    sample_max_new_tokens: int = field(default=64, metadata={"help": "Length of each logged sample."})


def parse_recipe(dataclass_types: tuple, args: list[str] | None = None) -> tuple:
    """Parse `--config <yaml>` plus command-line overrides into instances of `dataclass_types`, and fit the
    recipe's global batch to the processes it was launched with."""
    check_sharding_has_gpus()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and not torch.cuda.is_available():  # torchrun without GPUs: the processes join over gloo
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    parser = TrlParser(dataclass_types)
    args = list(sys.argv[1:] if args is None else args)
    if "--config" in args:
        at = args.index("--config")
        if at + 1 >= len(args):
            raise RecipeError("--config: give the path of a YAML recipe")
        config_path = args[at + 1]
        recipe = read_recipe(config_path, parser)
        args = args[:at] + args[at + 2 :]
        parser.set_defaults_with_config(**recipe)
    try:
        *parsed, remaining = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
    except ValueError as error:  # a library config's own check, e.g. GRPOConfig's batch arithmetic
        raise RecipeError(str(error).strip().splitlines()[0]) from None
    unknown = [arg for arg in remaining if arg.startswith("--")]
    if remaining:
        flag = (unknown or remaining)[0]
        raise RecipeError(f"unknown argument '{flag}'{_did_you_mean(flag.lstrip('-'), parser)}")
    recipe_args = next(item for item in parsed if isinstance(item, RecipeArguments))
    training_args = next(item for item in parsed if hasattr(item, "gradient_accumulation_steps"))
    if launched != training_args.world_size:
        raise RecipeError(
            f"{launched} processes were launched but they did not join one run (world size "
            f"{training_args.world_size}); on a machine without GPUs set use_cpu: true"
        )
    if not training_args.should_log:  # one process speaks for the run
        logging.getLogger("deepdive").setLevel(logging.WARNING)
    fit_global_batch(training_args, recipe_args.global_batch_size)
    return tuple(parsed)


# accelerate's launch flags for sharded training, and the config a CPU user wants instead
SHARDING = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed ZeRO"}


def check_sharding_has_gpus() -> None:
    """Stop a sharded launch (`accelerate_configs/fsdp.yaml`, `zero*.yaml`) on a machine without GPUs: accelerate
    shards only GPU processes, and on CPU processes it would quietly run plain data parallel instead."""
    for flag, name in SHARDING.items():
        if os.environ.get(flag, "").lower() == "true" and not torch.cuda.is_available():
            raise RecipeError(
                f"accelerate config: {name} shards the model over GPUs and this machine has none; "
                "launch with accelerate_configs/cpu_ddp.yaml (or cpu.yaml) instead"
            )


def fit_global_batch(training_args, global_batch_size: int | None) -> None:
    """Derive the per-device batch and gradient accumulation that give `global_batch_size` sequences per
    optimizer step on `training_args.world_size` processes, the per-device batch at most the recipe's
    `per_device_train_batch_size`; raise RecipeError when the processes cannot share the batch evenly."""
    processes = training_args.world_size
    if global_batch_size is not None:
        if global_batch_size < 1:
            raise RecipeError(f"global_batch_size: must be a positive number of sequences, got {global_batch_size}")
        if global_batch_size % processes:
            raise RecipeError(
                f"global_batch_size: {global_batch_size} sequences do not split evenly over {processes} processes; "
                f"use a multiple of {processes}"
            )
        per_process = global_batch_size // processes
        accumulation = math.ceil(per_process / training_args.per_device_train_batch_size)
        while per_process % accumulation:  # the smallest accumulation whose micro-batches are all equal
            accumulation += 1
        _set_batch(training_args, per_process // accumulation, accumulation)
    per_device, accumulation = training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps
    logging.getLogger("deepdive").info(
        "global batch %d = %d per device x %d accumulation step(s) x %d process(es)",
        per_device * accumulation * processes, per_device, accumulation, processes,
    )  # fmt: skip


def _set_batch(training_args, per_device: int, accumulation: int) -> None:
    if getattr(training_args, "steps_per_generation", None) is not None:  # GRPO: replies generated at once
        per_generation, rest = divmod(training_args.steps_per_generation, training_args.gradient_accumulation_steps)
        if rest:
            raise RecipeError(
                f"steps_per_generation: {training_args.steps_per_generation} is not a whole number of optimizer "
                f"steps of {training_args.gradient_accumulation_steps} accumulation steps; with global_batch_size "
                "give it as optimizer steps per generation x gradient_accumulation_steps"
            )
        generation_batch = per_device * accumulation * training_args.world_size * per_generation
        if generation_batch % training_args.num_generations:
            raise RecipeError(
                f"global_batch_size: {generation_batch} replies per generation do not make whole groups of "
                f"num_generations {training_args.num_generations}; use a multiple of it"
            )
        training_args.steps_per_generation = accumulation * per_generation
        training_args.generation_batch_size = generation_batch
    training_args.per_device_train_batch_size = per_device
    training_args.gradient_accumulation_steps = accumulation


def _did_you_mean(name: str, parser) -> str:
    close = difflib.get_close_matches(name, [action.dest for action in parser._actions], n=3)
    return f"; did you mean {', '.join(close)}?" if close else "; see `--help` for the valid fields"


def read_recipe(config_path: str, parser) -> dict:
    """Load a YAML recipe and convert each value with its field's type; raise RecipeError on a bad field."""
    try:
        with open(config_path, encoding="utf-8") as file:
            recipe = yaml.safe_load(file) or {}
    except FileNotFoundError:
        raise RecipeError(f"--config: {config_path} does not exist") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{config_path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"{config_path}: a recipe is a mapping of field: value")
    actions = {action.dest: action for action in parser._actions}
    converted = {}
    for name, value in recipe.items():
        if name == "env":
            continue
        action = actions.get(name)
        if action is None or name == "help":
            raise RecipeError(f"{config_path}: unknown field '{name}'{_did_you_mean(name, parser)}")
        converted[name] = _convert(config_path, name, value, action)
    return converted


def _convert(config_path: str, name: str, value, action):
    if value is None:
        return None
    many = action.nargs in ("+", "*")
    if many and not isinstance(value, list):
        raise RecipeError(f"{config_path}: field '{name}' takes a list, got {value!r}")
    if not many and isinstance(value, (list, dict)):
        if action.type in (None, str):  # fields typed `str | list[str]` or `dict | str` (e.g. report_to)
            return value
        raise RecipeError(f"{config_path}: field '{name}' takes one value, got {value!r}")
    values = value if many else [value]
    if action.type is not None:
        try:
            values = [action.type(str(item) if not isinstance(item, bool) else str(item).lower()) for item in values]
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            kind = getattr(action.type, "__name__", str(action.type)).replace("string_to_bool", "bool")
            raise RecipeError(f"{config_path}: field '{name}' must be {kind}, got {value!r}") from None
    if action.choices is not None:
        for item in values:
            if item not in action.choices:
                valid = ", ".join(str(choice) for choice in action.choices)
                raise RecipeError(f"{config_path}: field '{name}' is {item!r}; valid values: {valid}")
    return values if many else values[0]


@dataclass
class SFTArguments(RecipeArguments):
    """What supervised fine-tuning needs beyond TRL's `SFTConfig`, `ModelConfig` and `ScriptArguments`."""

    # Data
    tasks: list[str] = field(
        default_factory=lambda: ["identity", "arithmetic", "spelling", "shakespeare"],
        metadata={"help": "Synthetic task families to train on (see deepdive.tasks); ignored with data_files."},
    )
    task_weights: list[float] | None = field(
        default=None, metadata={"help": "Mixture weight of each task, in the order of `tasks`; default equal."}
    )
    num_train_examples: int = field(default=20000, metadata={"help": "Conversations generated for training."})
    data_files: list[str] | None = field(
        default=None, metadata={"help": "Local JSONL files of conversations (a `messages` list per line)."}
    )
    # Evaluation
    num_test_examples: int = field(
        default=200, metadata={"help": "Held-out prompts per task scored after training (greedy decoding)."}
    )
    eval_max_new_tokens: int = field(default=160, metadata={"help": "Reply budget of the held-out evaluation."})


@dataclass
class GRPOArguments(RecipeArguments):
    """What GRPO needs beyond TRL's `GRPOConfig`, `ModelConfig` and `ScriptArguments`."""

    # Data
    tasks: list[str] = field(
        default_factory=lambda: ["long_arithmetic"],
        metadata={"help": "Task families whose problems are practised."},
    )
    num_train_prompts: int = field(default=4000, metadata={"help": "Problems generated for practice."})
    # Rewards
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={"help": "Rewards by name (deepdive.rewards.REWARDS); weights go in `reward_weights`."},
    )
    # Evaluation
    num_test_examples: int = field(
        default=500, metadata={"help": "Held-out problems per task scored before and after RL (greedy)."}
    )
    eval_max_new_tokens: int = field(default=120, metadata={"help": "Reply budget of the held-out evaluation."})


# Credentials a recipe may carry: used by the run, never written into its folder, its card or a push.
SECRET_FIELDS = ("hub_token",)
SECRET_ENV_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD")  # HF_TOKEN, WANDB_API_KEY, ...


def without_secrets(recipe: dict) -> tuple[dict, list[str]]:
    """`recipe` less its credentials (`hub_token`, and `env` variables such as HF_TOKEN), and the names left out."""
    kept = {name: value for name, value in recipe.items() if name not in SECRET_FIELDS}
    left_out = [name for name in recipe if name in SECRET_FIELDS]
    if isinstance(recipe.get("env"), dict):
        secret = [name for name in recipe["env"] if any(word in str(name).upper() for word in SECRET_ENV_WORDS)]
        kept["env"] = {name: value for name, value in recipe["env"].items() if name not in secret}
        left_out += [f"env.{name}" for name in secret]
    return kept, left_out


def save_recipe(output_dir, args: list[str] | None = None) -> Path:
    """Write the recipe a run used, its YAML file with the command-line overrides applied, as `recipe.yaml`;
    credentials (`hub_token`, a token in `env`) are left out and only named."""
    args = list(sys.argv[1:] if args is None else args)
    recipe, overrides = {}, {}
    if "--config" in args:
        at = args.index("--config")
        with open(args[at + 1], encoding="utf-8") as file:
            recipe = yaml.safe_load(file) or {}
        args = args[:at] + args[at + 2 :]
    for index, arg in enumerate(args):
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            if not value:
                following = args[index + 1] if index + 1 < len(args) else "true"
                value = "true" if following.startswith("--") else following
            overrides[name] = yaml.safe_load(value)
    recipe.update(overrides)
    recipe, secrets = without_secrets(recipe)
    path = Path(output_dir) / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# The recipe this folder was trained with (deepdive), overrides applied: {sorted(overrides) or 'none'}\n"
    )
    if secrets:
        header += f"# Left out, as credentials are never written: {', '.join(secrets)}\n"
    path.write_text(header + yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path
