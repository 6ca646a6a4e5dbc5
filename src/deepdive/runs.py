"""A recipe run from start to finish: what is settled before training and what is recorded after it.

Every recipe opens with `start_run` (the seed, an output folder checked to be writable, the newest complete
checkpoint to resume from, push settings checked before any training) and closes with `finish_run` (metrics
with wall-clock and hardware, the recipe as run, the model card, one push of the finished folder). The
checkpoint rules live here too: a finished run is never trained over by accident, and a checkpoint cut off
mid-save is skipped, never resumed from. Written once, so the three recipes stay linear.
"""

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import set_seed

from deepdive.cards import write_model_card
from deepdive.configs import RecipeRecord, save_recipe
from deepdive.distributed import check_replicas, end_processes, holds_replicas
from deepdive.errors import RecipeError
from deepdive.hub import check_push_settings, push_folder
from deepdive.records import hardware, write_metrics


logger = logging.getLogger("deepdive")


@dataclass
class Run:
    """A recipe run's bookkeeping: where it writes, the checkpoint it resumes from, where it pushes (with the
    recipe's `hub_token`, if it gave one), when it began, and the recipe as parsed, to be recorded."""

    output_dir: Path
    resume_from: str | None
    push_to: str | None
    started: float
    hub_token: str | None = field(default=None, repr=False)
    resumed_step: int = 0  # the optimizer steps already taken in the checkpoint resumed from
    recipe: RecipeRecord | None = field(default=None, repr=False)


def start_run(training_args, overwrite: bool = False, recipe: RecipeRecord | None = None) -> Run:
    """Everything a recipe settles before it loads data: the seed, a writable output folder that holds no
    finished run (unless `overwrite`), the newest complete checkpoint to resume from, the push settings; the
    run keeps `recipe` (`RecipeArguments.recipe`, as `parse_recipe` left it) to record when it finishes.

    A `hub_token` is taken off `training_args` here, before any Trainer holds them: the Trainer pickles its
    arguments, token included, into every `training_args.bin`; the run keeps it for its own push only."""
    started = time.time()
    hub_token, training_args.hub_token = training_args.hub_token, None
    set_seed(training_args.seed)
    output_dir = prepare_output_dir(training_args.output_dir, overwrite)
    resume_from = None if overwrite else last_complete_checkpoint(output_dir)
    resumed_step = checkpoint_step(resume_from) if resume_from else 0
    if resume_from:
        total = (
            training_args.max_steps if training_args.max_steps > 0 else f"{training_args.num_train_epochs:g} epoch(s)"
        )
        logger.info("resuming from %s: step %d of %s", resume_from, resumed_step, total)
    push_to = hub_target(training_args, hub_token)
    return Run(output_dir, resume_from, push_to, started, hub_token, resumed_step, recipe)


def hub_target(training_args, hub_token: str | None = None) -> str | None:
    """The Hub repo a recipe pushes to when it finishes, checked before training; None when it does not push.

    `push_to_hub` is taken over from the Trainer (which would push every checkpoint): the finished folder,
    with its model card, metrics and recipe, is pushed once by `finish_run`.
    """
    if not training_args.push_to_hub:
        return None
    repo_id = check_push_settings(training_args.hub_model_id, token=hub_token)
    training_args.push_to_hub = False
    return repo_id


def global_batch(training_args) -> int:
    """Sequences per optimizer step over all processes."""
    return (
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * training_args.world_size
    )


def check_lora_targets(model_args, model) -> None:
    """With `use_peft`, stop before training unless every name in `lora_target_modules` matches a module of
    `model` by PEFT's rule: PEFT alone trains on when some names of a list match nothing, and stops with a
    traceback only when none does."""
    targets = model_args.lora_target_modules
    if not model_args.use_peft or targets is None or str(targets).lower() == "all-linear":  # PEFT chooses
        return
    names = [name for name, _ in model.named_modules()]
    if isinstance(targets, str):  # TRL passes one name on as a string, which PEFT reads as a regular expression
        unmatched = [] if any(re.fullmatch(targets, name) for name in names) else [targets]
    else:  # a list: each entry is a module's whole name or its last dotted parts
        unmatched = [
            target for target in targets if not any(name == target or name.endswith(f".{target}") for name in names)
        ]
    if unmatched:
        layers = (torch.nn.Linear, torch.nn.Embedding)
        adaptable = sorted(
            {name.split(".")[-1] for name, module in model.named_modules() if isinstance(module, layers)}
        )
        regex_note = " (one value is a regular expression over whole module names, e.g. '.*\\.q_proj')"
        raise RecipeError(
            f"lora_target_modules: {', '.join(unmatched)} matches no module of the model"
            f"{regex_note if isinstance(targets, str) else ''}; its linear and embedding modules are "
            f"{', '.join(adaptable)}"
        )


def save_model(trainer, output_dir) -> None:
    """Save the finished model as one plain Hugging Face folder. Under FSDP, whose checkpoints are saved
    sharded, the full state dict is gathered for this last save."""
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(output_dir))


def finish_run(trainer, run: Run, metrics: dict) -> dict:
    """Record a finished run beside its model: metrics.json (with wall-clock and hardware), the Trainer's log
    history (trainer_state.json), the recipe as parsed (recipe.yaml, when the run was given one) and the model
    card (README.md); then push the folder if the recipe asked; last, close the processes' group."""
    if run.resume_from:
        metrics["resumed_from_step"] = run.resumed_step
    metrics.update(
        wall_seconds=time.time() - run.started,
        hardware=hardware(),
        processes=trainer.args.world_size,
        global_batch_size=global_batch(trainer.args),
    )
    if holds_replicas():
        metrics["replicas_identical"] = check_replicas(trainer.model)
    if trainer.is_world_process_zero():
        trainer.save_state()
        if run.recipe is not None:
            save_recipe(run.output_dir, run.recipe)
        write_metrics(run.output_dir, metrics)
        write_model_card(run.output_dir)
        if run.push_to:
            metrics["hub_commit_url"] = push_folder(
                run.output_dir, run.push_to, trainer.args.hub_private_repo, token=run.hub_token
            )
    end_processes()
    return metrics


# --- Checkpoints: finished runs kept, cut-off saves skipped --------------------------------------------------

CHECKPOINT = "checkpoint-"  # the Trainer's prefix of a checkpoint folder's name, before its global step


def prepare_output_dir(output_dir: str | Path, overwrite: bool = False) -> Path:
    """Check, before anything is trained, that `output_dir` can be written and holds no finished run.

    A finished run (its `metrics.json` written) is only trained over with `overwrite_output_dir: true`; an
    unfinished one (checkpoints, no metrics) is resumed.
    """
    output_dir = Path(output_dir)
    if (output_dir / "metrics.json").is_file() and not overwrite:
        raise RecipeError(
            f"output_dir: {output_dir} holds a finished run; pass --overwrite_output_dir true to train over it, "
            "or choose another output_dir"
        )
    existing = output_dir.absolute()
    while not existing.exists():  # nothing is created here: the first write is the Trainer's
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise RecipeError(f"output_dir: cannot write to {output_dir} ({existing} is not a writable folder)")
    return output_dir


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest `checkpoint-<step>` whose save finished, or None.

    The Trainer writes `trainer_state.json` last, after the weights, optimizer, scheduler and RNG states, so a
    checkpoint without a readable one was cut off mid-save (a crash, `kill -9`) and is skipped, never loaded.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = [
        path for path in output_dir.glob(f"{CHECKPOINT}*") if path.is_dir() and path.name[len(CHECKPOINT) :].isdigit()
    ]
    for checkpoint in sorted(found, key=checkpoint_step, reverse=True):
        try:
            json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("skipping %s: its save did not finish", checkpoint)
            continue
        return str(checkpoint)
    return None


def checkpoint_step(checkpoint: str | Path) -> int:
    """The optimizer steps a checkpoint had taken: the Trainer names each `checkpoint-<global step>`."""
    return int(Path(checkpoint).name[len(CHECKPOINT) :])
