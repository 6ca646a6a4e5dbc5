"""Training plumbing shared by the recipe scripts: metrics during eval, sample generations, saving a run.

The recipes stay linear (parse -> data -> tokenizer -> model -> trainer -> train -> save); what they have in
common lives here once: turning eval loss into bits per byte inside the Trainer's own eval loop, logging a
few sample generations at each eval so a person can watch the token simulator learn, and writing the
finished run (model, tokenizer, generation config, metrics JSON) in plain Hugging Face format.
"""

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GenerationConfig, TrainerCallback, set_seed

from deepdive.errors import RecipeError, TrainingError
from deepdive.optim import MuonAdamWTrainerMixin


logger = logging.getLogger("deepdive")


def collate_blocks(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Stack packed blocks; the labels are the inputs (the model shifts them by one itself)."""
    input_ids = torch.tensor([row["input_ids"] for row in rows], dtype=torch.long)
    return {"input_ids": input_ids, "labels": input_ids}


def sum_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row sum of next-token NLL in nats: `preprocess_logits_for_metrics`, so no logits are kept."""
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels[:, 1:], reduction="none")
    return nll.sum(dim=1)


def bits_per_byte_metric(token_bytes: list[int]):
    """`compute_metrics` for packed blocks: every target token of every block scored once."""
    byte_table = np.asarray(token_bytes, dtype=np.float64)

    def compute_metrics(eval_prediction) -> dict[str, float]:
        total_nll = float(np.sum(eval_prediction.predictions, dtype=np.float64))
        total_bytes = float(byte_table[eval_prediction.label_ids[:, 1:]].sum())
        return {"bits_per_byte": total_nll / (math.log(2) * total_bytes)}

    return compute_metrics


class SampleGenerationCallback(TrainerCallback):
    """At each evaluation, continue a few prompts and log the text (stdout, `samples.jsonl`, TensorBoard)."""

    def __init__(self, tokenizer, prompts: list[str], max_new_tokens: int = 64, seed: int = 0):
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self._writer = None

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not self.prompts or model is None or not state.is_world_process_zero:
            return
        samples = generate_samples(model, self.tokenizer, self.prompts, self.max_new_tokens, self.seed, args.bf16)
        output_dir = Path(args.output_dir)
        with open(output_dir / "samples.jsonl", "a", encoding="utf-8") as file:
            for prompt, text in samples:
                file.write(json.dumps({"step": state.global_step, "prompt": prompt, "sample": text}) + "\n")
        print(f"\n--- samples at step {state.global_step} ---")
        for prompt, text in samples:
            print(f"{prompt}{text}\n")
        if "tensorboard" in (args.report_to or []):
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=os.environ["TENSORBOARD_LOGGING_DIR"])
            markdown = "\n\n".join(f"**{p}**{t}".replace("\n", "  \n") for p, t in samples)
            self._writer.add_text("samples", markdown, state.global_step)
            self._writer.flush()


@torch.no_grad()
def generate_samples(model, tokenizer, prompts, max_new_tokens: int, seed: int, bf16: bool):
    """Sampled continuations (top-k 50, temperature 0.8), reproducible through `seed`."""
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    samples = []
    device = next(model.parameters()).device
    for prompt in prompts:
        inputs = tokenizer(tokenizer.bos_token + prompt, return_tensors="pt", add_special_tokens=False).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, top_k=50, temperature=0.8)
        samples.append((prompt, tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)))
    model.train(was_training)
    return samples


def default_generation_config(tokenizer) -> GenerationConfig:
    """The generation settings saved with every model: sampling, stop at the tokenizer's EOS."""
    return GenerationConfig(
        do_sample=True,
        temperature=0.8,
        top_k=50,
        max_new_tokens=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def write_metrics(output_dir: str | Path, metrics: dict, name: str = "metrics.json") -> Path:
    """Write `metrics` as pretty JSON into the run folder and return the path."""
    path = Path(output_dir) / name
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_record(folder: str | Path, name: str) -> dict:
    """A record a run wrote into its folder (`metrics.json`, `eval.json`, `recipe.yaml`, ...); {} if absent."""
    path = Path(folder) / name
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if name.endswith(".yaml"):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text) or {}


def hardware() -> str:
    """The accelerator, or the CPU, a run trained on, in words."""
    import platform

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU"


def hub_target(training_args, hub_token: str | None = None) -> str | None:
    """The Hub repo a recipe pushes to when it finishes, checked before training; None when it does not push.

    `push_to_hub` is taken over from the Trainer (which would push every checkpoint): the finished folder,
    with its model card, metrics and recipe, is pushed once by `finish_run`.
    """
    if not training_args.push_to_hub:
        return None
    from deepdive.hub import check_push_settings

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


def save_model(trainer, output_dir) -> None:
    """Save the finished model as one plain Hugging Face folder. Under FSDP, whose checkpoints are saved
    sharded, the full state dict is gathered for this last save."""
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(output_dir))


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


@dataclass
class Run:
    """A recipe run's bookkeeping: where it writes, the checkpoint it resumes from, where it pushes (with the
    recipe's `hub_token`, if it gave one), when it began."""

    output_dir: Path
    resume_from: str | None
    push_to: str | None
    started: float
    hub_token: str | None = field(default=None, repr=False)
    resumed_step: int = 0  # the optimizer steps already taken in the checkpoint resumed from


def start_run(training_args, overwrite: bool = False) -> Run:
    """Everything a recipe settles before it loads data: the seed, a writable output folder that holds no
    finished run (unless `overwrite`), the newest complete checkpoint to resume from, the push settings.

    A `hub_token` is taken off `training_args` here, before any Trainer holds them: the Trainer pickles its
    arguments, token included, into every `training_args.bin`; the run keeps it for its own push only."""
    started = time.time()
    hub_token, training_args.hub_token = training_args.hub_token, None
    set_seed(training_args.seed)
    output_dir = prepare_output_dir(training_args.output_dir, overwrite)
    resume_from = None if overwrite else last_complete_checkpoint(output_dir)
    resumed_step = checkpoint_step(resume_from) if resume_from else 0
    if resume_from:
        logger.info("resuming from %s: step %d of %s", resume_from, resumed_step, training_args.max_steps or "all")
    return Run(output_dir, resume_from, hub_target(training_args, hub_token), started, hub_token, resumed_step)


def finish_run(trainer, run: Run, metrics: dict) -> dict:
    """Record a finished run beside its model: metrics.json (with wall-clock and hardware), the Trainer's log
    history (trainer_state.json), the recipe as run (recipe.yaml) and the model card (README.md); then push
    the folder if the recipe asked; last, close the processes' group."""
    from deepdive.cards import write_model_card
    from deepdive.configs import save_recipe
    from deepdive.distributed import check_replicas, end_processes, holds_replicas

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
        save_recipe(run.output_dir)
        write_metrics(run.output_dir, metrics)
        write_model_card(run.output_dir)
        if run.push_to:
            from deepdive.hub import push_folder

            metrics["hub_commit_url"] = push_folder(
                run.output_dir, run.push_to, trainer.args.hub_private_repo, token=run.hub_token
            )
    end_processes()
    return metrics


# --- Reliability: finished runs, checkpoints, non-finite values ------------------------------------------------


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
    found = [path for path in output_dir.glob("checkpoint-*") if path.is_dir() and path.name[11:].isdigit()]
    for checkpoint in sorted(found, key=lambda path: int(path.name[11:]), reverse=True):
        try:
            json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("skipping %s: its save did not finish", checkpoint)
            continue
        return str(checkpoint)
    return None


def checkpoint_step(checkpoint: str | Path) -> int:
    """The optimizer steps a complete checkpoint had taken (its `trainer_state.json`)."""
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])


class RecipeTrainerMixin(MuonAdamWTrainerMixin):
    """Listed before a `transformers.Trainer` or a TRL trainer in a recipe's trainer class: the recipe's
    optimizer (`MuonAdamWTrainerMixin`) and a resume that does not warn about tied weights.

    A checkpoint stores a tied output head once, as the embedding it shares (safetensors keeps no two names
    for one tensor), so loading it reports `lm_head.weight` missing although the head is restored with the
    embedding; only keys missing for another reason are worth a warning.
    """

    def _issue_warnings_after_load(self, load_result):
        tied = set(getattr(self.accelerator.unwrap_model(self.model), "all_tied_weights_keys", None) or ())
        missing = [key for key in load_result.missing_keys if key not in tied]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))


class NonFiniteGuard(TrainerCallback):
    """Stop training at the first non-finite gradient, before the optimizer applies it.

    A NaN or inf loss gives non-finite gradients; checking them just before the optimizer step means the
    weights never take a bad update and the last checkpoint stays the one to resume from.
    """

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [param.grad for param in model.parameters() if param.grad is not None]
        if grads and not torch.isfinite(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])).all():
            checkpoint = last_complete_checkpoint(args.output_dir)
            resume = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved yet"
            raise TrainingError(
                f"non-finite loss or gradient at step {state.global_step + 1}: training stopped before the update; "
                f"{resume}. Lower learning_rate, check the data, or use bf16 instead of fp16"
            )
