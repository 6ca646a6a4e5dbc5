"""GRPO rollouts: generation speed and the step-time split between generating replies and optimising, for the
tiny GRPO recipe, and what TRL offers to generate faster on the CPU.

Each variant is a GRPOTrainer built as `recipes/grpo.py` builds it (from `runs/tiny/sft` when it exists, else
an untrained tiny chat model, whose replies run to the length limit), trained a few steps; the variants run
in turn, twice (A B C ... A B C ...), and the first step of each run is a warm-up. Step times are means over
the other steps (with 2 steps per generation, every other step generates).
"""

import statistics
import tempfile
import time

from bench.common import REPO, StepTimer, load_recipe_script, print_table, write_result
from bench.tiny import untrained_chat_model_dir


SFT_MODEL = REPO / "runs" / "tiny" / "sft"

VARIANTS = {
    "default (recipes/tiny/grpo.yaml)": [],
    "sdpa attention": ["--attn_implementation", "sdpa"],
    "no activation checkpointing": ["--activation_checkpointing", "false"],
    "2 steps per generation (512 replies at once)": ["--steps_per_generation", "2"],
    "transformers paged generation": ["--use_transformers_paged", "true"],
}


class GenerationTimer(StepTimer):
    """Seconds of each optimizer step and of the generation inside it (TRL's `_generate`), replies and
    tokens generated."""

    def __init__(self, trainer):
        super().__init__()
        self.generation_times, self.replies, self.tokens, self._generation = [], 0, 0, 0.0
        generate = trainer._generate

        def timed_generate(prompts):
            started = time.perf_counter()
            output = generate(prompts)
            self._generation += time.perf_counter() - started
            completion_ids = output[1]
            self.replies += len(completion_ids)
            self.tokens += sum(len(ids) for ids in completion_ids)
            return output

        trainer._generate = timed_generate

    def on_step_begin(self, args, state, control, **kwargs):
        super().on_step_begin(args, state, control, **kwargs)
        self._generation = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        super().on_step_end(args, state, control, **kwargs)
        self.generation_times.append(self._generation)


def chat_model_dir() -> str:
    """runs/tiny/sft when it exists (its replies have realistic lengths), else an untrained tiny chat model."""
    return str(SFT_MODEL) if (SFT_MODEL / "model.safetensors").is_file() else untrained_chat_model_dir()


def run_variant(model_dir: str, overrides: list[str], steps: int) -> GenerationTimer:
    from trl import GRPOConfig, ModelConfig, ScriptArguments

    from deepdive.configs import GRPOArguments, parse_recipe
    from deepdive.modeling import load_recipe_model
    from deepdive.rewards import get_reward_funcs
    from deepdive.tasks import build_mixture

    _, args, training_args, model_args = parse_recipe(
        (ScriptArguments, GRPOArguments, GRPOConfig, ModelConfig),
        ["--config", "recipes/tiny/grpo.yaml", "--model_name_or_path", model_dir, "--output_dir", tempfile.mkdtemp(),
         "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--log_completions", "false",
         "--max_steps", str(steps), *overrides],
    )  # fmt: skip
    model, tokenizer = load_recipe_model(model_args)
    data = build_mixture(dict.fromkeys(args.tasks, 1.0), args.num_train_prompts, "train", training_args.seed)
    rewards = get_reward_funcs(args.reward_funcs, training_args.reward_weights)
    trainer = load_recipe_script("grpo").build_trainer(
        args, training_args, model_args, model, tokenizer, rewards, data.select_columns(["prompt", "task", "answer"])
    )
    timer = GenerationTimer(trainer)
    trainer.add_callback(timer)
    trainer.train()
    return timer


def main(rounds: int = 2, steps: int = 3, variants: dict | None = None, overrides: tuple[str, ...] = ()) -> dict:
    variants = variants or VARIANTS
    model_dir = chat_model_dir()
    timings = {name: [] for name in variants}
    failed = {}
    for _ in range(rounds):
        for name, variant in variants.items():
            if name in failed:
                continue
            try:
                timings[name].append(run_variant(model_dir, [*overrides, *variant], steps))
            except Exception as error:  # a generation option this machine lacks: recorded, not fatal
                failed[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    rows, record = [], {"model": "runs/tiny/sft" if model_dir == str(SFT_MODEL) else "untrained tiny"}
    base = None
    for name, timers in timings.items():
        if name in failed:
            record[name] = {"failed": failed[name]}
            rows.append([name, "failed", failed[name], "", "", "", ""])
            continue
        step = statistics.mean(t for timer in timers for t in timer.step_times[1:])
        generation = statistics.mean(t for timer in timers for t in timer.generation_times[1:])
        replies = sum(timer.replies for timer in timers)
        tokens = sum(timer.tokens for timer in timers)
        all_generation = sum(sum(timer.generation_times) for timer in timers)
        base = base or step
        entry = {
            "step_seconds": step,
            "generation_seconds_per_step": generation,
            "optimisation_seconds_per_step": step - generation,
            "replies_per_second": replies / all_generation,
            "generated_tokens_per_second": tokens / all_generation,
            "mean_reply_tokens": tokens / replies,
            "speed_vs_default": base / step,
        }
        record[name] = entry
        rows.append([name, step, generation, step - generation, entry["replies_per_second"],
                     entry["generated_tokens_per_second"], base / step])  # fmt: skip
    print_table(
        "GRPO rollouts (tiny recipe: 32 problems x 8 replies per step, up to 96 tokens each)",
        ["variant", "step (s)", "generation (s)", "optimisation (s)", "replies/s", "tokens/s", "speed vs default"],
        rows,
    )
    write_result("grpo_rollouts", record)
    return record


if __name__ == "__main__":
    main()
