"""Stage 3 of the lecture, reinforcement learning: practise on problems with checkable answers (GRPO), or, as
RLHF, write lines of verse that a reward model learnt from rankings scores.

    python recipes/grpo.py --config recipes/tiny/grpo.yaml
    accelerate launch recipes/grpo.py --config recipes/tiny/grpo.yaml --use_peft true
    accelerate launch recipes/grpo.py --config recipes/tiny/rlhf.yaml

SFT model (`runs/<recipe>/sft` or any Hub id) -> held-out accuracy before -> problems in TRL's conversational
`prompt` format with `task`/`answer` columns the rewards read -> TRL `GRPOTrainer` (a group of sampled
replies per problem, rewarded by the task checkers) -> held-out accuracy after, with the same evaluation code
-> a Hugging Face folder (`runs/<recipe>/grpo`). With `use_peft`, a LoRA adapter. RLHF (`tasks: [verse]`, the
reward model of recipes/reward.py among `reward_funcs`) scores the held-out lines with the simulated labeler
before and after, and records per step the reward model's and the labeler's mean score of the same samples.
"""

import logging
import time

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer, ModelConfig, ScriptArguments

from deepdive.configs import GRPOArguments, run_from_command_line
from deepdive.evaluation import evaluate_tasks, evaluate_verse
from deepdive.modeling import load_recipe_model
from deepdive.rewards import get_reward_funcs
from deepdive.runs import check_lora_targets, finish_run, save_model, start_run
from deepdive.tasks import build_mixture, check_task_names
from deepdive.tasks.verse import Verse
from deepdive.tools import TOOLS
from deepdive.trainer import RecipeTrainerMixin, chat_trainer_arguments


logger = logging.getLogger("deepdive.grpo")


class MuonGRPOTrainer(RecipeTrainerMixin, GRPOTrainer):
    """TRL's `GRPOTrainer` with Muon + AdamW when the recipe sets `muon_lr` (built after LoRA is added)."""


def main(script_args: ScriptArguments, args: GRPOArguments, training_args: GRPOConfig, model_args: ModelConfig):
    run = start_run(training_args, args.overwrite_output_dir, args.recipe)
    output_dir = run.output_dir
    rlhf = args.tasks == [Verse.name]
    reward_funcs = get_reward_funcs(args.reward_funcs, training_args.reward_weights, args.reward_model, args.tasks)

    # Data: problems (or verse topics) as conversational prompts; `task` and `answer` columns reach the rewards
    if rlhf:
        train_dataset = Dataset.from_list(Verse().examples("train", args.num_train_prompts, training_args.seed))
    else:
        check_task_names(args.tasks)
        weights = dict.fromkeys(args.tasks, 1.0)
        train_dataset = build_mixture(weights, args.num_train_prompts, "train", training_args.seed)
    train_dataset = train_dataset.select_columns(["prompt", "task", "answer"])

    # Model and tokenizer from the SFT stage (or the Hub)
    model, tokenizer = load_recipe_model(model_args, training_args.trust_remote_code)
    check_lora_targets(model_args, model)

    def held_out_accuracy(model) -> dict:  # the same evaluation before and after training (tools run if practised)
        if rlhf:  # the simulated person's view of held-out topics: the reward model never judges its own policy
            batch = training_args.per_device_eval_batch_size
            return evaluate_verse(model, tokenizer, args.num_test_examples, args.eval_max_new_tokens, batch)
        return evaluate_tasks(
            model, tokenizer, args.tasks, args.num_test_examples, args.eval_max_new_tokens,
            training_args.per_device_eval_batch_size, tools=args.tools,
        )  # fmt: skip

    metrics = {"stage": "rlhf" if rlhf else "grpo"}
    if args.num_test_examples:
        metrics.update({f"before_{key}": value for key, value in held_out_accuracy(model).items()})

    # Train: sample groups of replies, reward them, push towards the better ones
    trainer = build_trainer(args, training_args, model_args, model, tokenizer, reward_funcs, train_dataset)
    train_started = time.time()
    train_result = trainer.train(resume_from_checkpoint=run.resume_from)
    metrics.update(train_loss=train_result.training_loss, train_seconds=time.time() - train_started)
    save_model(trainer, output_dir)

    # Evaluate the trained model with the same code and prompts
    if args.num_test_examples:
        metrics.update({f"after_{key}": value for key, value in held_out_accuracy(trainer.model).items()})
    metrics["reward_curve"] = reward_curve(trainer.state.log_history)
    finish_run(trainer, run, metrics)
    logger.info("metrics: %s", {k: v for k, v in metrics.items() if k != "reward_curve"})
    return metrics


def reward_curve(log_history: list[dict]) -> list[dict]:
    """Per logged step: the total reward trained on, and under `rewards` each reward function's mean (TRL's
    `rewards/<name>/mean`), e.g. the reward model's and the labeler's score of the same samples in RLHF; with a
    KL penalty (`beta` > 0), `kl`: how far the policy's samples have moved from the reference model."""
    curve = []
    for entry in log_history:
        if "reward" in entry:
            means = {
                key.split("/")[1]: value
                for key, value in entry.items()
                if key.startswith("rewards/") and key.endswith("/mean")
            }
            point = {"step": entry["step"], "reward": entry["reward"], "rewards": means}
            curve.append(point | ({"kl": entry["kl"]} if "kl" in entry else {}))
    return curve


def build_trainer(
    args, training_args, model_args, model, tokenizer, reward_funcs, train_dataset, callbacks=()
) -> MuonGRPOTrainer:
    """The GRPO trainer: the recipe's optimizer, LoRA when asked, the NaN guard (`bench/` times this one)."""
    return MuonGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        tools=TOOLS if args.tools else None,
        **chat_trainer_arguments(args, training_args, model_args, tokenizer, train_dataset, callbacks),
    )


if __name__ == "__main__":
    run_from_command_line(main, (ScriptArguments, GRPOArguments, GRPOConfig, ModelConfig))
