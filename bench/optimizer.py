"""Muon's step with and without bf16 instructions: torch's Muon, which orthogonalises each update in bfloat16,
against `Float32Muon`, the same step in float32, with AdamW for scale, on the tiny recipe's block matrices (their
real shapes, fixed random gradients). The recipes use `muon_class`'s choice: torch's Muon where bf16 is native,
`Float32Muon` on a CPU without bf16 instructions."""

import torch

from bench.common import Side, alternate, print_table, timed_steps, write_result
from bench.tiny import parse_tiny, tiny_model, tokenizer_and_corpus
from deepdive.optim import Float32Muon, muon_class, split_muon_parameters
from deepdive.records import cpu_has_bf16


def optimizer_side(name: str, shapes: list[torch.Size], build) -> Side:
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]
    for param in params:
        param.grad = torch.randn(param.shape, generator=generator)
    optimizer = build(params)
    return Side(name, lambda steps: timed_steps(optimizer.step, steps))


def main(rounds: int = 5, steps: int = 5, warmup: int = 2) -> dict:
    args, training_args = parse_tiny()
    tokenizer, _ = tokenizer_and_corpus(args.vocab_size)
    muon_params, _ = split_muon_parameters(tiny_model(args, training_args, tokenizer))
    shapes = [param.shape for param in muon_params]
    settings = {"lr": args.muon_lr, "weight_decay": 0.0, "adjust_lr_fn": "match_rms_adamw"}
    sides = alternate(
        [
            optimizer_side("torch.optim.Muon (bfloat16 orthogonalisation)", shapes,
                           lambda params: torch.optim.Muon(params, **settings)),
            optimizer_side("Float32Muon (float32 orthogonalisation)", shapes,
                           lambda params: Float32Muon(params, **settings)),
            optimizer_side("AdamW", shapes, lambda params: torch.optim.AdamW(params, lr=training_args.learning_rate)),
        ],
        rounds,
        steps,
        warmup,
    )  # fmt: skip
    chosen = muon_class(muon_params).__name__
    result = {
        "setup": f"tiny recipe's {len(shapes)} block matrices, {sum(s.numel() for s in shapes):,} weights",
        "cpu_has_bf16": cpu_has_bf16(),
        "recipes_use": chosen,
        "step_seconds": {side.name: side.median for side in sides},
        "spread_seconds": {side.name: [min(side.times), max(side.times)] for side in sides},
        "speedup_float32_over_bfloat16": sides[0].median / sides[1].median,
    }
    print_table(
        f"Optimizer step, tiny recipe's block matrices (bf16 instructions: {'yes' if cpu_has_bf16() else 'no'}; "
        f"the recipes use {chosen})",
        ["optimizer", "median step (s)", "min-max (s)"],
        [[side.name, side.median, f"{min(side.times):.3f}-{max(side.times):.3f}"] for side in sides],
    )
    write_result("optimizer", result)
    return result


if __name__ == "__main__":
    main()
