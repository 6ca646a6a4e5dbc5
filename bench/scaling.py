"""How cost grows: pretraining tokens/s for three model sizes, and step time against sequence length at a
fixed number of tokens per step (so what grows is attention's share). The bare training step with the tiny
recipe's settings; the variants of each table alternate in one process.
"""

import torch

from bench.common import Side, alternate, flops_per_token, print_table, timed_steps, write_result
from bench.tiny import BareLoop, parse_tiny, tiny_model, train_blocks
from deepdive.modeling import count_parameters


SIZES = {  # hidden size, blocks, heads (64-wide heads)
    "tiny (recipe)": None,
    "~8M": (320, 6, 5),
    "~30M": (512, 10, 8),
}
SEQ_LENS = (128, 256, 512, 1024)


def model_sizes(rounds: int, steps: int, warmup: int) -> dict:
    args, training_args = parse_tiny("--max_steps", "1000")
    tokenizer, blocks = train_blocks(args)
    sides, shapes = [], {}
    for name, shape in SIZES.items():
        fields = (
            {}
            if shape is None
            else dict(zip(("hidden_size", "num_hidden_layers", "num_attention_heads"), shape, strict=True))
        )
        model = tiny_model(args, training_args, tokenizer, **fields)
        config = model.config
        shapes[name] = (count_parameters(model), config.num_hidden_layers, config.hidden_size)
        bare = BareLoop(model, training_args, args.muon_lr, blocks)
        sides.append(Side(name, lambda n, bare=bare: timed_steps(bare.step, n)))
    alternate(sides, rounds, steps, warmup)
    tokens = training_args.per_device_train_batch_size * args.seq_len
    rows, record = [], {}
    for side in sides:
        parameters, layers, hidden = shapes[side.name]
        flops = flops_per_token(parameters, layers, hidden, args.seq_len)
        record[side.name] = {"parameters": parameters, "step_seconds": side.median,
                             "tokens_per_second": tokens / side.median,
                             "model_flops_per_second": flops * tokens / side.median}  # fmt: skip
        rows.append([side.name, f"{parameters / 1e6:.1f}M", side.median, tokens / side.median,
                     f"{flops * tokens / side.median / 1e9:.0f}"])  # fmt: skip
    print_table(
        f"Cost by model size ({tokens} tokens/step, sequence {args.seq_len})",
        ["model", "parameters", "step (s)", "tokens/s", "model GFLOP/s"],
        rows,
    )
    return record


def sequence_lengths(rounds: int, steps: int, warmup: int) -> dict:
    args, training_args = parse_tiny("--max_steps", "1000")
    tokens = training_args.per_device_train_batch_size * args.seq_len
    sides = []
    for seq_len in SEQ_LENS:
        tokenizer, blocks = train_blocks(args, seq_len)
        model = tiny_model(args, training_args, tokenizer, max_position_embeddings=seq_len)
        bare = BareLoop(model, training_args, args.muon_lr, blocks, batch_size=tokens // seq_len)
        sides.append(Side(str(seq_len), lambda n, bare=bare: timed_steps(bare.step, n)))
    alternate(sides, rounds, steps, warmup)
    base = sides[0].median
    rows, record = [], {}
    for side in sides:
        seq_len = int(side.name)
        record[side.name] = {"batch": tokens // seq_len, "step_seconds": side.median, "vs_128": side.median / base}
        rows.append([seq_len, tokens // seq_len, side.median, tokens / side.median, side.median / base])
    print_table(
        f"Step time by sequence length (tiny model, {tokens} tokens/step)",
        ["sequence", "batch", "step (s)", "tokens/s", "time vs 128"],
        rows,
    )
    return record


def main(rounds: int = 3, steps: int = 4, warmup: int = 3) -> dict:
    torch.manual_seed(0)
    result = {
        "model_sizes": model_sizes(rounds, steps, warmup),
        "sequence_lengths": sequence_lengths(rounds, steps, warmup),
    }
    write_result("scaling", result)
    return result


if __name__ == "__main__":
    main()
