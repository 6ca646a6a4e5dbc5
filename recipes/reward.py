"""RLHF, first step: a reward model learns to imitate the simulated person's rankings (TRL's `RewardTrainer`).

    python recipes/reward.py --config recipes/tiny/reward.yaml
    accelerate launch recipes/reward.py --config recipes/tiny/reward.yaml --use_peft true

A chat model (`runs/<recipe>/sft-verse`) with a new one-output head in place of its language-model head
(`AutoModelForSequenceClassification`) + the train pairs of `deepdive prefs` (chosen / rejected lines of verse)
-> `RewardTrainer` (the chosen line's score pushed above the rejected one's) -> pairwise accuracy on the held-out
prompts' pairs, before and after, and after on the pairs each part of the labeler's rule tells apart -> a Hugging
Face folder (`runs/<recipe>/reward`) that recipes/grpo.py loads as `reward_model`. It is a lossy simulation of the
person: RL against it works for a while, then finds its blind spots (recipes/tiny/rlhf.yaml). With `use_peft`, a
LoRA adapter and the head.
"""

import logging
import time

from trl import ModelConfig, RewardConfig, RewardTrainer, ScriptArguments

from deepdive.configs import PreferenceArguments, run_from_command_line
from deepdive.labeler import RULES
from deepdive.modeling import load_recipe_model
from deepdive.preferences import pair_rules, read_pairs
from deepdive.runs import check_lora_targets, finish_run, save_model, start_run
from deepdive.trainer import RecipeTrainerMixin, chat_trainer_arguments


logger = logging.getLogger("deepdive.reward")


class MuonRewardTrainer(RecipeTrainerMixin, RewardTrainer):
    """TRL's `RewardTrainer` with Muon + AdamW when the recipe sets `muon_lr` (built after LoRA is added)."""


def main(
    script_args: ScriptArguments, args: PreferenceArguments, training_args: RewardConfig, model_args: ModelConfig
):
    run = start_run(training_args, args.overwrite_output_dir, args.recipe)

    # Data: the labeler's pairs; the held-out prompts' pairs score the model
    train_dataset, test_dataset = read_pairs(args.prefs_dir, "train"), read_pairs(args.prefs_dir, "test")

    # Model: the chat model under a new scalar head (LoRA: the head trains in full beside the adapter)
    model, tokenizer = load_recipe_model(model_args, training_args.trust_remote_code, reward_head=True)
    model_args.lora_task_type = "SEQ_CLS"
    check_lora_targets(model_args, model)

    trainer = build_trainer(args, training_args, model_args, model, tokenizer, train_dataset, test_dataset)
    metrics = {"stage": "reward", "test_pairs": len(test_dataset), "train_pairs": len(train_dataset)}
    metrics["before_reward_accuracy"] = trainer.evaluate()["eval_accuracy"]  # the untrained head: a coin toss
    train_started = time.time()
    train_result = trainer.train(resume_from_checkpoint=run.resume_from)
    metrics.update(train_loss=train_result.training_loss, train_seconds=time.time() - train_started)
    save_model(trainer, run.output_dir)

    held_out = trainer.evaluate()
    metrics.update(reward_accuracy=held_out["eval_accuracy"], reward_margin=held_out["eval_margin"])
    metrics.update(accuracy_by_rule(trainer, test_dataset, pair_rules(args.prefs_dir, "test")))
    finish_run(trainer, run, metrics)
    logger.info("metrics: %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    return metrics


def accuracy_by_rule(trainer, test_dataset, rules: list[str]) -> dict:
    """The held-out accuracy on the pairs that each part of the labeler's rule tells apart (`rules`, one per pair),
    and how many pairs that is: what of the person the reward model has learnt, and what RL may find it missed."""
    metrics = {}
    for rule in RULES:
        told_apart = [index for index, found in enumerate(rules) if found == rule]
        if told_apart:
            metrics[f"reward_accuracy_{rule}"] = trainer.evaluate(test_dataset.select(told_apart))["eval_accuracy"]
            metrics[f"test_pairs_{rule}"] = len(told_apart)
    return metrics


def build_trainer(
    args, training_args, model_args, model, tokenizer, train_dataset, eval_dataset=None, callbacks=()
) -> MuonRewardTrainer:
    """The reward model trainer: the recipe's optimizer, LoRA when asked, the NaN guard."""
    return MuonRewardTrainer(
        model=model,
        eval_dataset=eval_dataset,
        **chat_trainer_arguments(args, training_args, model_args, tokenizer, train_dataset, callbacks),
    )


if __name__ == "__main__":
    run_from_command_line(main, (ScriptArguments, PreferenceArguments, RewardConfig, ModelConfig))
