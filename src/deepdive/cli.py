"""The `deepdive` command: talk to what the recipes made.

    deepdive sample --model runs/tiny/base --prompt "ROMEO:" --temperature 0.8 --top_k 50 --seed 0
    deepdive chat --model runs/tiny/sft                      # multi-turn; --prompt "..." for one reply
    deepdive merge --adapter runs/tiny/sft-lora --output_dir runs/tiny/sft-merged

`sample` lets the base model do what pretraining taught it, continue text token by token (the lecture's
"token simulator"), streaming each token as it is drawn. The model folder is any Hugging Face causal LM, so
the same command samples a Hub model too. `chat` talks to an SFT/GRPO model through its chat template;
`merge` folds a LoRA adapter into its base model.
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

    chat = commands.add_parser("chat", help="talk to a chat model: multi-turn, streaming, /reset and /quit")
    chat.add_argument("--model", required=True, help="model folder (e.g. runs/tiny/sft) or Hub id")
    chat.add_argument("--prompt", help="answer this one message and exit (for scripts)")
    chat.add_argument("--max_new_tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 means greedy decoding")
    chat.add_argument("--top_k", type=int, default=50)
    chat.add_argument("--seed", type=int, default=0)

    merge = commands.add_parser("merge", help="merge a LoRA adapter into its base model, save a plain HF model")
    merge.add_argument("--adapter", required=True, help="folder written by a recipe with use_peft: true")
    merge.add_argument("--output_dir", required=True)

    args = parser.parse_args(argv)
    from transformers.utils import logging

    from deepdive.errors import DeepdiveError

    logging.disable_progress_bar()  # the streamed text is the output; no weight-loading bars around it
    try:
        _run(args)
    except DeepdiveError as error:
        sys.exit(f"error: {error}")


def _run(args: argparse.Namespace) -> None:
    if args.command == "chat":
        from deepdive.chat import chat_loop, reply
        from deepdive.sampling import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(args.model, chat=True)
        if args.prompt is not None:
            messages = [{"role": "user", "content": args.prompt}]
            reply(model, tokenizer, messages, args.max_new_tokens, args.temperature, args.top_k, sys.stdout, args.seed)
        else:
            chat_loop(model, tokenizer, args.temperature, args.top_k, args.max_new_tokens, args.seed)
    elif args.command == "merge":
        from deepdive.hub import merge_adapter

        merge_adapter(args.adapter, args.output_dir)
        print(f"merged model written to {args.output_dir}")
    elif args.command == "sample":
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
