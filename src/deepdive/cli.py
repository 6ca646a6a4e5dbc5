"""The `deepdive` command: talk to what the recipes made.

    deepdive sample --model runs/tiny/base --prompt "ROMEO:" --temperature 0.8 --top_k 50 --seed 0

`sample` lets the base model do what pretraining taught it, continue text token by token (the lecture's
"token simulator"), streaming each token as it is drawn. The model folder is any Hugging Face causal LM, so
the same command samples a Hub model too.
"""

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="deepdive", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample", help="continue a prompt with a base model, streaming")
    sample.add_argument("--model", required=True, help="model folder or Hub id")
    sample.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    sample.add_argument("--max_new_tokens", type=int, default=200)
    sample.add_argument("--temperature", type=float, default=0.8, help="0 means greedy decoding")
    sample.add_argument("--top_k", type=int, default=50, help="0 means no top-k cut")
    sample.add_argument("--top_p", type=float, default=1.0)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--num_samples", type=int, default=1)

    args = parser.parse_args(argv)
    from transformers.utils import logging

    from deepdive.errors import DeepdiveError

    logging.disable_progress_bar()  # the streamed text is the output; no weight-loading bars around it
    try:
        _run(args)
    except DeepdiveError as error:
        sys.exit(f"error: {error}")


def _run(args: argparse.Namespace) -> None:
    if args.command == "sample":
        from deepdive.sampling import sample_text

        sample_text(
            args.model,
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            num_samples=args.num_samples,
            stream=sys.stdout,
        )


if __name__ == "__main__":
    main()
