"""What the recipes plug into the Hugging Face Trainer: our trainer mixin and our callbacks.

Each recipe's trainer class is `RecipeTrainerMixin` listed before `Trainer`, `SFTTrainer` or `GRPOTrainer`: it
brings the recipe's optimizer (Muon + AdamW, `deepdive.optim`) and a resume that does not warn about tied
weights; `chat_trainer_arguments` wires the SFT and GRPO trainers the same way. The callbacks hook in where the
Trainer expects them: `SampleGenerationCallback` logs a few sampled continuations at each evaluation, so a person
can watch the token simulator learn, and `NonFiniteGuard` stops training at the first non-finite gradient, before
the optimizer applies it.
"""

import json
import os
from dataclasses import replace
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import get_peft_config

from deepdive.distributed import is_sharded
from deepdive.errors import TrainingError
from deepdive.generation import SAMPLING, generate
from deepdive.optim import MuonAdamWTrainerMixin
from deepdive.runs import last_complete_checkpoint


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


def chat_trainer_arguments(args, training_args, model_args, tokenizer, train_dataset, callbacks=()) -> dict:
    """What the SFT and GRPO trainers are built with besides the model (and GRPO's rewards): the recipe's
    optimizer (Muon + AdamW when it sets `muon_lr`), LoRA when `model_args` ask for it, and the NaN guard."""
    return dict(
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        muon_lr=args.muon_lr,
        callbacks=[NonFiniteGuard(), *callbacks],
    )


class SampleGenerationCallback(TrainerCallback):
    """At each evaluation, continue a few prompts and log the text (stdout, `samples.jsonl`, TensorBoard)."""

    def __init__(self, tokenizer, prompts: list[str], max_new_tokens: int = 64, seed: int = 0):
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self._writer = None

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        # The main process writes the samples; under FSDP or ZeRO-3 every process must take part in generating them
        if not self.prompts or model is None or not (state.is_world_process_zero or is_sharded()):
            return
        decoding = replace(SAMPLING, max_new_tokens=self.max_new_tokens, seed=self.seed)
        completions = generate(model, self.tokenizer, self.prompts, decoding, bf16=args.bf16)
        samples = [(prompt, completion.text) for prompt, completion in zip(self.prompts, completions, strict=True)]
        if not state.is_world_process_zero:
            return
        output_dir = Path(args.output_dir)
        with open(output_dir / "samples.jsonl", "a", encoding="utf-8") as file:
            for prompt, text in samples:
                file.write(json.dumps({"step": state.global_step, "prompt": prompt, "sample": text}) + "\n")
        print(f"\n--- samples at step {state.global_step} ---")
        for prompt, text in samples:
            print(f"{prompt}{text}\n")
        if "tensorboard" in (args.report_to or []):
            if self._writer is None:
                # imported only when a run reports to TensorBoard, as the Trainer's own TensorBoard callback does
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=os.environ["TENSORBOARD_LOGGING_DIR"])
            markdown = "\n\n".join(f"**{p}**{t}".replace("\n", "  \n") for p, t in samples)
            self._writer.add_text("samples", markdown, state.global_step)
            self._writer.flush()


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
