"""RLHF without a reward model: direct preference optimisation on the same pairs (TRL's `DPOTrainer`).

    python recipes/dpo.py --config recipes/tiny/dpo.yaml
    accelerate launch recipes/dpo.py --config recipes/tiny/dpo.yaml --use_peft true

A chat model (`runs/<recipe>/sft-verse`) + the train pairs of `deepdive prefs` -> `DPOTrainer` (the chosen
line made likelier than the rejected one, relative to a frozen copy of the starting model) -> the simulated
labeler's score of greedy lines about held-out topics, before and after (the same evaluation as RLHF's), and
the preference accuracy of DPO's implicit reward on the held-out pairs -> a Hugging Face folder
(`runs/<recipe>/dpo`). With `use_peft`, a LoRA adapter (the reference is the model with the adapter off).
"""

import logging
import time

from trl import DPOConfig, DPOTrainer, ModelConfig, ScriptArguments

from deepdive.configs import PreferenceArguments, run_from_command_line
from deepdive.evaluation import evaluate_verse
from deepdive.modeling import load_recipe_model
from deepdive.preferences import read_pairs
from deepdive.runs import check_lora_targets, finish_run, save_model, start_run
from deepdive.trainer import RecipeTrainerMixin, chat_trainer_arguments


logger = logging.getLogger("deepdive.dpo")


class MuonDPOTrainer(RecipeTrainerMixin, DPOTrainer):
    """TRL's `DPOTrainer` with Muon + AdamW when the recipe sets `muon_lr` (built after LoRA is added)."""


def main(script_args: ScriptArguments, args: PreferenceArguments, training_args: DPOConfig, model_args: ModelConfig):
    run = start_run(training_args, args.overwrite_output_dir, args.recipe)

    # Data: the labeler's pairs; the held-out prompts' pairs score the implicit reward
    train_dataset, test_dataset = read_pairs(args.prefs_dir, "train"), read_pairs(args.prefs_dir, "test")

    model, tokenizer = load_recipe_model(model_args, training_args.trust_remote_code)
    check_lora_targets(model_args, model)

    def held_out_verse(model) -> dict:  # the simulated person's view of held-out topics, before and after
        return evaluate_verse(
            model,
            tokenizer,
            args.num_test_examples,
            args.eval_max_new_tokens,
            training_args.per_device_eval_batch_size,
        )

    metrics = {"stage": "dpo", "test_pairs": len(test_dataset), "train_pairs": len(train_dataset)}
    if args.num_test_examples:
        metrics.update({f"before_{key}": value for key, value in held_out_verse(model).items()})

    trainer = build_trainer(args, training_args, model_args, model, tokenizer, train_dataset, test_dataset)
    train_started = time.time()
    train_result = trainer.train(resume_from_checkpoint=run.resume_from)
    metrics.update(train_loss=train_result.training_loss, train_seconds=time.time() - train_started)
    save_model(trainer, run.output_dir)

    metrics["preference_accuracy"] = trainer.evaluate()["eval_rewards/accuracies"]
    if args.num_test_examples:
        metrics.update({f"after_{key}": value for key, value in held_out_verse(trainer.model).items()})
    finish_run(trainer, run, metrics)
    logger.info("metrics: %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    return metrics


def build_trainer(
    args, training_args, model_args, model, tokenizer, train_dataset, eval_dataset=None, callbacks=()
) -> MuonDPOTrainer:
    """The DPO trainer: the recipe's optimizer, LoRA when asked, the NaN guard."""
    return MuonDPOTrainer(
        model=model,
        eval_dataset=eval_dataset,
        **chat_trainer_arguments(args, training_args, model_args, tokenizer, train_dataset, callbacks),
    )


if __name__ == "__main__":
    run_from_command_line(main, (ScriptArguments, PreferenceArguments, DPOConfig, ModelConfig))
