"""Stage 2 of the lecture, supervised fine-tuning: from token simulator to assistant.

    python recipes/sft.py --config recipes/tiny/sft.yaml
    accelerate launch recipes/sft.py --config recipes/tiny/sft.yaml --use_peft true

Base model (`runs/<recipe>/base` or any Hub id) + chat template -> a mixture of synthetic conversations
(identity, arithmetic with worked steps, spelling, Shakespeare knowledge with honest "I don't know") ->
TRL `SFTTrainer` with assistant-only loss -> per-task accuracy and stop rate on held-out prompts -> a Hugging
Face folder (`runs/<recipe>/sft`) with the tokenizer and chat template. With `use_peft`, a LoRA adapter.
"""

import logging
import time

from trl import ModelConfig, ScriptArguments, SFTConfig, SFTTrainer

from deepdive.chat import validate_conversations
from deepdive.configs import SFTArguments, run_from_command_line
from deepdive.data import load_conversations
from deepdive.errors import DataError, RecipeError
from deepdive.evaluation import evaluate_knowledge, evaluate_tasks, evaluate_verse
from deepdive.modeling import load_recipe_model
from deepdive.probe import honest_examples, read_probe
from deepdive.runs import check_lora_targets, finish_run, save_model, start_run
from deepdive.tasks import build_mixture, check_task_names
from deepdive.tasks.verse import Verse
from deepdive.trainer import RecipeTrainerMixin, chat_trainer_arguments


logger = logging.getLogger("deepdive.sft")


class MuonSFTTrainer(RecipeTrainerMixin, SFTTrainer):
    """TRL's `SFTTrainer` with Muon + AdamW when the recipe sets `muon_lr` (built after LoRA is added)."""


def main(script_args: ScriptArguments, args: SFTArguments, training_args: SFTConfig, model_args: ModelConfig):
    run = start_run(training_args, args.overwrite_output_dir, args.recipe)
    output_dir = run.output_dir

    # Data: generated task conversations, or the user's own
    if args.data_files or script_args.dataset_name:
        train_dataset = load_conversations(args.data_files, script_args.dataset_name, script_args.dataset_train_split)
    else:
        check_task_names(args.tasks)
        if args.task_weights and len(args.task_weights) != len(args.tasks):
            raise DataError(f"task_weights: {len(args.task_weights)} weights for {len(args.tasks)} tasks")
        weights = dict(zip(args.tasks, args.task_weights or [1.0] * len(args.tasks), strict=True))
        extra = []  # the second pass of `make honest`: what the probe found the model knows, and does not
        if args.probe_dir:
            extra += honest_examples(read_probe(args.probe_dir), args.num_probe_examples, seed=training_args.seed)
        extra += Verse().examples("train", args.num_verse_examples, seed=training_args.seed)  # before RLHF
        drill = None
        if args.num_drill_examples:
            if not args.drill_task:
                raise RecipeError("num_drill_examples: no drill_task to drill; name one, e.g. drill_task: repeat")
            if training_args.train_sampling_strategy != "sequential":
                raise RecipeError(
                    "num_drill_examples: the drill leads only when the data is read in order; set "
                    "train_sampling_strategy: sequential (the mixture after it is already shuffled with the seed)"
                )
            drill = (args.drill_task, args.num_drill_examples)
        train_dataset = build_mixture(
            weights, args.num_train_examples, "train", training_args.seed, args.tool_share, extra=extra, drill=drill
        )
    validate_conversations(train_dataset, "train dataset")
    train_dataset = train_dataset.select_columns([c for c in ("messages", "tools") if c in train_dataset.column_names])

    # Tokenizer with the chat template; model from the pretraining stage (or the Hub)
    model, tokenizer = load_recipe_model(model_args, training_args.trust_remote_code)
    if training_args.max_length and training_args.max_length > model.config.max_position_embeddings:
        raise DataError(
            f"max_length: {training_args.max_length} exceeds the model's {model.config.max_position_embeddings} "
            "positions"
        )
    check_lora_targets(model_args, model)

    # Train: only assistant tokens (and their <|im_end|>) carry loss
    trainer = build_trainer(args, training_args, model_args, model, tokenizer, train_dataset)
    train_started = time.time()
    train_result = trainer.train(resume_from_checkpoint=run.resume_from)
    train_seconds = time.time() - train_started
    save_model(trainer, output_dir)

    # Evaluate: greedy replies to held-out prompts of each task, scored by the task's checker; a model trained with
    # tools answers the same prompts again with the tools offered and run
    metrics = {"stage": "sft", "train_loss": train_result.training_loss, "train_seconds": train_seconds}
    if args.num_test_examples and not (args.data_files or script_args.dataset_name):
        eval_started = time.time()
        for tools in (False, True) if args.tool_share else (False,):
            metrics.update(
                evaluate_tasks(
                    trainer.model,
                    tokenizer,
                    args.tasks,
                    args.num_test_examples,
                    max_new_tokens=args.eval_max_new_tokens,
                    batch_size=training_args.per_device_eval_batch_size,
                    tools=tools,
                )
            )
        if "shakespeare" in args.tasks:
            metrics.update(
                evaluate_knowledge(
                    trainer.model,
                    tokenizer,
                    args.num_test_examples,
                    batch_size=training_args.per_device_eval_batch_size,
                )
            )
        if args.num_verse_examples:
            metrics.update(
                evaluate_verse(
                    trainer.model,
                    tokenizer,
                    args.num_test_examples,
                    batch_size=training_args.per_device_eval_batch_size,
                )
            )
        metrics["eval_seconds"] = time.time() - eval_started
    finish_run(trainer, run, metrics)
    logger.info("metrics: %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    return metrics


def build_trainer(args, training_args, model_args, model, tokenizer, train_dataset, callbacks=()) -> MuonSFTTrainer:
    """The SFT trainer: the recipe's optimizer, LoRA when asked, the NaN guard (`bench/` times this one)."""
    return MuonSFTTrainer(
        model=model, **chat_trainer_arguments(args, training_args, model_args, tokenizer, train_dataset, callbacks)
    )


if __name__ == "__main__":
    run_from_command_line(main, (ScriptArguments, SFTArguments, SFTConfig, ModelConfig))
