"""Trainer overhead: pretraining tokens/s of deepdive's path against a bare PyTorch loop.

deepdive's side is the Trainer that `recipes/pretrain.py` builds (`build_trainer`: accelerate, the data
collator, logging, the NaN guard, the sample callback), on the tiny recipe's model, batch, dtype, compile
setting, optimizer and data. The bare side is `BareLoop`, the same step written by hand. Both train in the
same process: a callback pauses the Trainer every `steps` steps and runs as many bare steps, so the two
alternate. Evaluation is timed on its own (it runs every `eval_steps`, not every step).
"""

import statistics
import time

from transformers import TrainerCallback

from bench.common import load_recipe_script, print_table, timed_steps, write_result
from bench.tiny import BareLoop, parse_tiny, tiny_model, tokenizer_and_corpus, train_blocks
from deepdive.data import packed_dataset, tokenize_documents
from deepdive.runs import global_batch


class AlternateWithBareLoop(TrainerCallback):
    """Time every Trainer step, and every `steps` steps (after `warmup`) run `steps` bare-loop steps."""

    def __init__(self, bare: BareLoop, warmup: int, steps: int):
        self.bare, self.warmup, self.steps = bare, warmup, steps
        self.trainer_times, self.bare_times, self.last = [], [], None

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self.last is not None and state.global_step > self.warmup:
            self.trainer_times.append(now - self.last)
        if state.global_step == self.warmup:
            timed_steps(self.bare.step, self.warmup)
        if state.global_step >= self.warmup and (state.global_step - self.warmup) % self.steps == 0:
            if state.global_step < state.max_steps:
                self.bare_times += timed_steps(self.bare.step, self.steps)
        self.last = time.perf_counter()


def main(rounds: int = 6, steps: int = 10, warmup: int = 5, overrides: tuple[str, ...] = ()) -> dict:
    total = warmup + rounds * steps
    args, training_args = parse_tiny("--max_steps", str(total), *overrides)
    tokenizer, blocks = train_blocks(args)
    bare = BareLoop(tiny_model(args, training_args, tokenizer), training_args, args.muon_lr, blocks)
    timer = AlternateWithBareLoop(bare, warmup, steps)
    model = tiny_model(args, training_args, tokenizer)
    trainer = load_recipe_script("pretrain").build_trainer(
        args, training_args, model, tokenizer, blocks, None, callbacks=[timer]
    )
    trainer.train()

    # Evaluation as the recipe runs it: its validation blocks, bits per byte and the logged samples
    _, corpus = tokenizer_and_corpus(args.vocab_size)
    eval_blocks = packed_dataset(tokenize_documents(corpus["validation"], tokenizer), args.seq_len)
    trainer.eval_dataset = eval_blocks.select(range(min(args.max_eval_blocks or len(eval_blocks), len(eval_blocks))))
    started = time.perf_counter()
    trainer.evaluate()
    eval_seconds = time.perf_counter() - started

    tokens = global_batch(training_args) * args.seq_len
    deepdive_step, bare_step = statistics.median(timer.trainer_times), statistics.median(timer.bare_times)
    recipe_eval_steps = 190  # recipes/tiny/pretrain.yaml
    result = {
        "setup": f"tiny recipe: {tokens} tokens/step, bf16={training_args.bf16}, compile={training_args.torch_compile}",
        "rounds": rounds,
        "steps_per_round": steps,
        "deepdive_step_seconds": deepdive_step,
        "bare_step_seconds": bare_step,
        "deepdive_tokens_per_second": tokens / deepdive_step,
        "bare_tokens_per_second": tokens / bare_step,
        "ratio": bare_step / deepdive_step,
        "eval_seconds": eval_seconds,
        "eval_share_at_recipe_eval_steps": eval_seconds / (eval_seconds + recipe_eval_steps * deepdive_step),
    }
    print_table(
        "Trainer overhead (pretraining, tiny recipe)",
        ["path", "median step (s)", "tokens/s"],
        [
            ["deepdive (recipe -> Trainer -> accelerate)", deepdive_step, tokens / deepdive_step],
            ["bare PyTorch loop", bare_step, tokens / bare_step],
            ["ratio deepdive / bare", result["ratio"], ""],
        ],
    )
    print(
        f"one evaluation: {eval_seconds:.1f} s ({100 * result['eval_share_at_recipe_eval_steps']:.1f}% of time at eval_steps 190)"
    )
    write_result("trainer_overhead", result)
    return result


if __name__ == "__main__":
    main()
