"""Recipe parsing: YAML recipes and command-line overrides into the libraries' own dataclasses, and back.

A recipe is a flat YAML list of fields of `transformers.TrainingArguments` / TRL's configs plus the one
small dataclass of ours below for what the libraries lack (corpus, tokenizer and model shape). TRL's `TrlParser`
parses it (`parse_args_and_config`), so `--config recipe.yaml`, `--field value` overrides and the recipe's `env:`
block (environment variables set before the configs are built) behave as in TRL's own scripts. Ours are thin
checks around it: every YAML value is converted with its field's type (PyYAML reads `3e-4` as a string), and a
bad field or argument stops the run with one line naming the file, the field and what is valid. The values
parsed travel with the run (`RecipeArguments.recipe`), which writes them as its `recipe.yaml`: a recipe itself.
"""

import argparse
import copy
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

from deepdive.errors import DeepdiveError, RecipeError
from deepdive.records import cpu_has_bf16
from deepdive.tasks import LESSONS


# Fields a run's records are read by (the card's base model, the seed table): recorded even at their defaults
ALWAYS_RECORDED = ("model_name_or_path", "output_dir", "seed")


@dataclass
class RecipeRecord:
    """A recipe as its run records it (`recipe.yaml`): the fields whose parsed values differ from their defaults,
    plus ALWAYS_RECORDED, the recipe file's fields first and in its order, then its `env` block; credentials left
    out and only named. Parsed again (`--config recipe.yaml`), it gives the same configs."""

    values: dict
    source: str | None = None  # the recipe file it was parsed from
    overrides: list[str] = field(default_factory=list)  # fields the command line changed from the file's value
    left_out: list[str] = field(default_factory=list)  # credentials, named only


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
    recipe: RecipeRecord | None = field(
        default=None,
        init=False,
        repr=False,
        compare=False,
        metadata={"help": "Set by `parse_recipe`, not a recipe field: the recipe as parsed, for the run's record."},
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


def run_from_command_line(main, dataclass_types: tuple) -> None:
    """What a recipe script does when run: log with the time, parse its recipe (`parse_recipe`), run `main` on it,
    and end in one line naming the field or file at fault when the recipe or its data is bad."""
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO, datefmt="%H:%M:%S")
    try:
        main(*parse_recipe(dataclass_types))
    except DeepdiveError as error:
        sys.exit(f"error: {error}")


def parse_recipe(dataclass_types: tuple, args: list[str] | None = None) -> tuple:
    """Parse `--config <yaml>` plus command-line overrides into instances of `dataclass_types` with TRL's parser
    (the recipe's `env:` block set before the configs are built), fit the recipe's global batch to the processes
    it was launched with, and hand the recipe as parsed to its `RecipeArguments` (`.recipe`) for the run's record."""
    check_sharding_has_gpus()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and not torch.cuda.is_available():  # torchrun without GPUs: the processes join over gloo
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    args = list(sys.argv[1:] if args is None else args)
    config_path = None
    if "--config" in args:
        at = args.index("--config")
        if at + 1 >= len(args):
            raise RecipeError("--config: give the path of a YAML recipe")
        config_path = args[at + 1]
    env = check_recipe_file(config_path) if config_path else {}
    parser = RecipeParser(dataclass_types, config_path)
    try:
        *parsed, remaining = parser.parse_args_and_config(args, return_remaining_strings=True)
    except ValueError as error:  # a library config's own check, e.g. GRPOConfig's batch arithmetic
        raise RecipeError(str(error).strip().splitlines()[0]) from None
    if remaining:
        flag = next((arg for arg in remaining if arg.startswith("--")), remaining[0])
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
    if training_args.bf16 and trains_on_cpu(training_args) and not cpu_has_bf16():
        logging.getLogger("deepdive").warning(
            "bf16: this CPU has no bf16 instructions (AMX, AVX512-BF16), so bf16 autocast would run many times "
            "slower than float32; training in float32 instead (bf16: false in the recipe silences this)"
        )
        return parse_recipe(dataclass_types, [*args, "--bf16", "false"])  # so mixed precision and the record agree
    recipe_args.recipe = parser.record(env)  # the values given, not those fitted or derived from them
    fit_global_batch(training_args, recipe_args.global_batch_size)
    return tuple(parsed)


def trains_on_cpu(training_args) -> bool:
    """Whether the Trainer will run on the CPU: asked to, or no GPU to run on."""
    return training_args.use_cpu or not (torch.cuda.is_available() or torch.backends.mps.is_available())


class RecipeParser(TrlParser):
    """TRL's parser, which merges the recipe file and the command line and sets the file's `env:` block, with the
    checks it lacks: each recipe field converted with its field's type or stopped in one line, a bad command-line
    argument stopped in one line (argparse prints its usage of every field, then exits), and the values the
    configs are built from kept for the run's record."""

    def __init__(self, dataclass_types, config_path: str | None = None):
        super().__init__(dataclass_types)
        self.config_path = config_path
        self.file_values = {}  # the recipe file's fields, converted
        self.parsed_values = {}  # every field as parsed, before the configs' own `__post_init__` derives others
        # what each field parses to when neither a recipe nor the command line gives it (not always the
        # dataclass default: HfArgumentParser reads `include_num_input_tokens_seen: str | bool = "no"` as False)
        self.defaults = dict(vars(super().parse_known_args([])[0]))

    def set_defaults_with_config(self, **recipe) -> list[str]:
        """`parse_args_and_config` hands the recipe file's fields here (its `env` already set): each is checked and
        converted with its field's type, then made the field's default, which the command line overrides."""
        fields = _fields_of(self)
        for name, value in recipe.items():
            if name not in fields:
                raise RecipeError(f"{self.config_path}: unknown field '{name}'{_did_you_mean(name, self)}")
            self.file_values[name] = _convert(self.config_path, name, value, fields[name])
        return super().set_defaults_with_config(**self.file_values)

    def parse_known_args(self, args=None, namespace=None):
        namespace, remaining = super().parse_known_args(args, namespace)
        self.parsed_values = dict(vars(namespace))  # copied: HfArgumentParser empties it as it builds the configs
        return namespace, remaining

    def error(self, message: str):  # argparse would print its usage, every field of the configs, and exit
        raise RecipeError(message)

    def record(self, env: dict) -> RecipeRecord:
        """The recipe as parsed, to be written as the run's `recipe.yaml`: the fields that differ from their defaults
        (and ALWAYS_RECORDED), the recipe file's first and in its order, then its `env` block; credentials out."""
        defaults = self.defaults
        parsed = {name: value for name, value in self.parsed_values.items() if name in defaults}
        changed = {
            name: value
            for name, value in parsed.items()
            if value != defaults[name] or (name in ALWAYS_RECORDED and value is not None)
        }
        values = {**{name: changed[name] for name in self.file_values if name in changed}, **changed}
        if env:
            values["env"] = env
        values, left_out = without_secrets(copy.deepcopy(values))  # a copy: the configs' lists may change later
        overrides = [name for name, value in parsed.items() if value != self.file_values.get(name, defaults[name])]
        return RecipeRecord(values, self.config_path, overrides, left_out)


def check_recipe_file(config_path: str) -> dict:
    """Stop a recipe file TRL's parser would stop with a traceback (missing, not YAML, not a mapping, an `env`
    that is not one) with one line instead; return its `env` block."""
    try:
        with open(config_path, encoding="utf-8") as file:
            recipe = yaml.safe_load(file)
    except FileNotFoundError:
        raise RecipeError(f"--config: {config_path} does not exist") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{config_path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"{config_path}: a recipe is a mapping of field: value")
    for name in recipe:
        if not isinstance(name, str):
            raise RecipeError(f"{config_path}: unknown field {name!r}; field names are words, as in learning_rate")
    env = recipe.get("env", {})
    if not isinstance(env, dict):
        raise RecipeError(f"{config_path}: field 'env' takes a mapping of environment variable: value, got {env!r}")
    return env


def _fields_of(parser) -> dict:
    """The parser's argparse actions by field name (a true-by-default field's `--no_<field>` switch shares its name
    and is not kept). argparse keeps its actions private (`_actions`); they are read here, and only here, because
    they hold how each field is parsed (HfArgumentParser's type, nargs and choices), which a YAML value must be
    converted with, as TRL's own `set_defaults_with_config` reads them."""
    fields = {}
    for action in parser._actions:
        if action.dest != "help":
            fields.setdefault(action.dest, action)
    return fields


def _did_you_mean(name: str, parser) -> str:
    close = difflib.get_close_matches(name, list(_fields_of(parser)), n=3)
    return f"; did you mean {', '.join(close)}?" if close else "; see `--help` for the valid fields"


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


@dataclass
class SFTArguments(RecipeArguments):
    """What supervised fine-tuning needs beyond TRL's `SFTConfig`, `ModelConfig` and `ScriptArguments`."""

    # Data
    tasks: list[str] = field(
        default_factory=lambda: list(LESSONS),
        metadata={"help": "Synthetic task families to train on (see deepdive.tasks); ignored with data_files."},
    )
    task_weights: list[float] | None = field(
        default=None, metadata={"help": "Mixture weight of each task, in the order of `tasks`; default equal."}
    )
    num_train_examples: int = field(default=20000, metadata={"help": "Conversations generated for training."})
    tool_share: float = field(
        default=0.0,
        metadata={
            "help": "Share of the conversations asked with the tools offered (python, search): the assistant calls "
            "one and answers from its result. 0 trains without tools."
        },
    )
    drill_task: str | None = field(
        default=None,
        metadata={
            "help": "A task family practised on its own first, before the shuffled mixture: `num_drill_examples` "
            "conversations of it lead the training data (the tools stage drills `repeat`, copying, before the "
            "tool calls that copy). Needs train_sampling_strategy: sequential."
        },
    )
    num_drill_examples: int = field(default=0, metadata={"help": "Conversations of drill_task trained first."})
    probe_dir: str | None = field(
        default=None,
        metadata={
            "help": "A `deepdive probe` folder: its characters join the mixture, the ones the probed model knows with "
            "their play, the others with an honest refusal (the second SFT pass of `make honest`)."
        },
    )
    num_probe_examples: int = field(
        default=2000, metadata={"help": "Conversations about the probed characters, with probe_dir."}
    )
    num_verse_examples: int = field(
        default=0,
        metadata={
            "help": "Conversations asking for a line of verse about a topic, answered with a real line of the train "
            "plays (deepdive.tasks.verse), joining the mixture; the held-out verse prompts are then scored by the "
            "simulated labeler. The SFT pass before RLHF."
        },
    )
    data_files: list[str] | None = field(
        default=None, metadata={"help": "Local JSONL files of conversations (a `messages` list per line)."}
    )
    # Evaluation
    num_test_examples: int = field(
        default=200,
        metadata={
            "help": "Held-out prompts per task scored after training (greedy decoding), and per group of the "
            "knowledge evaluation when shakespeare is a task."
        },
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
    tools: bool = field(
        default=False,
        metadata={
            "help": "Offer the python and search tools during practice (TRL's tool loop runs the calls) and in the "
            "before/after evaluation; for a model SFT trained with tools (tool_share)."
        },
    )
    # Rewards
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={
            "help": "Rewards by name (deepdive.rewards.REWARDS, or reward_model for the model in `reward_model`); "
            "weights go in `reward_weights`, and a weight of 0 logs a reward without training on it."
        },
    )
    reward_model: str | None = field(
        default=None,
        metadata={
            "help": "A reward model folder written by recipes/reward.py, the `reward_model` of `reward_funcs` (RLHF: "
            "with tasks [verse], whose lines have no checkable answer)."
        },
    )
    # Evaluation
    num_test_examples: int = field(
        default=500, metadata={"help": "Held-out problems per task scored before and after RL (greedy)."}
    )
    eval_max_new_tokens: int = field(default=120, metadata={"help": "Reply budget of the held-out evaluation."})


@dataclass
class PreferenceArguments(RecipeArguments):
    """What the reward model and DPO recipes need beyond TRL's `RewardConfig` / `DPOConfig` and `ModelConfig`."""

    # Data
    prefs_dir: str = field(
        default="runs/tiny/prefs",
        metadata={"help": "A `deepdive prefs` folder: its train pairs train, its held-out pairs score the model."},
    )
    # Evaluation
    num_test_examples: int = field(
        default=200,
        metadata={
            "help": "Held-out verse prompts (topics never trained on) whose greedy lines the simulated labeler scores "
            "before and after DPO; 0 skips it. The reward model is scored on the held-out pairs."
        },
    )
    eval_max_new_tokens: int = field(default=40, metadata={"help": "Reply budget of the held-out verse lines."})


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


def save_recipe(output_dir, recipe: RecipeRecord) -> Path:
    """Write a run's recipe into its folder as `recipe.yaml`, a recipe in its own right: `--config` on it parses to
    the configs the run was built from. Credentials (`hub_token`, a token in `env`) are not in it, only named."""
    path = Path(output_dir) / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    overrides = ", ".join(recipe.overrides) or "none"
    source = f"{recipe.source}, command-line overrides applied: {overrides}" if recipe.source else "the command line"
    header = f"# The recipe this folder was trained with (deepdive), from {source}\n"
    header += "# Fields left at their defaults are not listed\n"
    if recipe.left_out:
        header += f"# Left out, as credentials are never written: {', '.join(recipe.left_out)}\n"
    path.write_text(header + yaml.safe_dump(recipe.values, sort_keys=False), encoding="utf-8")
    return path
