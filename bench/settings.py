"""Settings that win: bf16 autocast, torch.compile, deterministic kernels, the attention kernel, threads for the
tiny pretraining step; the attention kernel and packing for the tiny SFT stage. Every variant runs in the same
process, in alternating blocks, against the default.

Model-FLOPs throughput is reported as a share of the machine's measured matmul peak in the default's precision
(bf16, or fp32 on a CPU without bf16 instructions, where the recipes train in fp32).
"""

import statistics
import tempfile

import torch

from bench.common import (
    Side,
    StepTimer,
    alternate,
    flops_per_token,
    load_recipe_script,
    matmul_peak,
    print_table,
    timed_steps,
    write_result,
)
from bench.tiny import BareLoop, parse_tiny, tiny_model, train_blocks, untrained_chat_model_dir
from deepdive.modeling import count_parameters


def with_threads(threads: int, run):
    def wrapped(steps):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run(steps)
        finally:
            torch.set_num_threads(before)

    return wrapped


def pretraining_step_settings(rounds: int = 4, steps: int = 6, warmup: int = 4) -> dict:
    args, training_args = parse_tiny("--max_steps", "1000")
    tokenizer, blocks = train_blocks(args)

    def loop(compile_model=None, bf16=None, deterministic=None, **shape):
        bare = BareLoop(tiny_model(args, training_args, tokenizer, **shape), training_args, args.muon_lr, blocks,
                        compile_model=compile_model, bf16=bf16, deterministic=deterministic)  # fmt: skip
        return lambda n: timed_steps(bare.step, n)

    threads = torch.get_num_threads()
    other_attention = "sdpa" if args.attn_implementation == "eager" else "eager"
    # The recipe's bf16 is on, unless this CPU has no bf16 instructions (the recipes then train in fp32): the other
    # precision is the comparison either way.
    precision, other_precision = ("bf16", "fp32") if training_args.bf16 else ("fp32", "bf16, emulated")
    variants = {
        f"default ({precision}, compile, {args.attn_implementation} attention, {threads} threads)": loop(),
        other_precision: loop(bf16=not training_args.bf16),
        "no torch.compile": loop(compile_model=False),
        f"full_determinism {'off' if training_args.full_determinism else 'on'}": loop(
            deterministic=not training_args.full_determinism
        ),
        f"{other_attention} attention": loop(attn_implementation=other_attention),
    }
    if threads > 1:
        variants[f"1 thread instead of {threads}"] = with_threads(1, loop())
    sides = alternate([Side(name, run) for name, run in variants.items()], rounds, steps, warmup)

    model = tiny_model(args, training_args, tokenizer)
    tokens = training_args.per_device_train_batch_size * args.seq_len
    flops = flops_per_token(count_parameters(model), args.num_hidden_layers, args.hidden_size, args.seq_len)
    peak = matmul_peak(torch.bfloat16 if training_args.bf16 else torch.float32)
    base = sides[0].median
    rows, record = [], {}
    for side in sides:
        tokens_per_second = tokens / side.median
        mfu = tokens_per_second * flops / peak
        rows.append([side.name, side.median, tokens_per_second, base / side.median, f"{100 * mfu:.1f}%"])
        record[side.name] = {
            "step_seconds": side.median,
            "tokens_per_second": tokens_per_second,
            "speed_vs_default": base / side.median,
            f"mfu_of_{precision}_matmul_peak": mfu,
        }
    print_table(
        f"Pretraining step settings (tiny model, {tokens} tokens/step; "
        f"{precision} matmul peak {peak / 1e12:.2f} TFLOP/s)",
        ["setting", "median step (s)", "tokens/s", "speed vs default", "MFU"],
        rows,
    )
    return {
        "variants": record,
        f"{precision}_matmul_peak_flops": peak,
        "flops_per_token": flops,
        "tokens_per_step": tokens,
    }


SFT_VARIANTS = {
    "default (recipes/tiny/sft.yaml)": [],
    "sdpa attention": ["--attn_implementation", "sdpa"],
    "packing": ["--packing", "true"],
}


def sft_settings(rounds: int = 2, steps: int = 6, warmup: int = 2, variants: dict | None = None) -> dict:
    """Conversations trained per second by the tiny SFT recipe under each variant (packing puts several
    conversations in a row, so it is compared per conversation, not per step)."""
    from trl import ModelConfig, ScriptArguments, SFTConfig

    from deepdive.configs import SFTArguments, parse_recipe
    from deepdive.modeling import load_recipe_model
    from deepdive.tasks import build_mixture

    model_dir = untrained_chat_model_dir()
    sft = load_recipe_script("sft")

    def run(overrides: list[str]) -> tuple[list[float], float]:
        _, args, training_args, model_args = parse_recipe(
            (ScriptArguments, SFTArguments, SFTConfig, ModelConfig),
            ["--config", "recipes/tiny/sft.yaml", "--model_name_or_path", model_dir, "--output_dir",
             tempfile.mkdtemp(), "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
             "--max_steps", str(warmup + steps), "--num_train_examples", "2000", *overrides],
        )  # fmt: skip
        model, tokenizer = load_recipe_model(model_args)
        data = build_mixture(
            dict(zip(args.tasks, args.task_weights, strict=True)), args.num_train_examples, "train", 0
        )
        timer = StepTimer()
        trainer = sft.build_trainer(
            args, training_args, model_args, model, tokenizer, data.select_columns(["messages"]), [timer]
        )
        rows = len(trainer.train_dataset)  # fewer than conversations when packed
        trainer.train()
        return timer.step_times[warmup:], args.num_train_examples / rows * training_args.per_device_train_batch_size

    variants = variants or SFT_VARIANTS
    times, per_step = {name: [] for name in variants}, {}
    for _ in range(rounds):
        for name, overrides in variants.items():
            step_times, per_step[name] = run(overrides)
            times[name] += step_times
    rows, record = [], {}
    for name, step_times in times.items():
        step = statistics.median(step_times)
        record[name] = {"step_seconds": step, "conversations_per_step": per_step[name],
                        "conversations_per_second": per_step[name] / step}  # fmt: skip
        rows.append([name, step, per_step[name], per_step[name] / step])
    print_table(
        "SFT settings (tiny recipe, batch 32 rows of up to 256 tokens)",
        ["setting", "median step (s)", "conversations/step", "conversations/s"],
        rows,
    )
    return record


def main(quick: bool = False) -> dict:
    if quick:
        result = {"pretraining": pretraining_step_settings(1, 1, 1), "sft": sft_settings(1, 1, 1)}
    else:
        result = {"pretraining": pretraining_step_settings(), "sft": sft_settings()}
    write_result("settings", result)
    return result


if __name__ == "__main__":
    main()
