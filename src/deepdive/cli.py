"""The `deepdive` command: talk to what the recipes made.

    deepdive sample --model runs/tiny/base --prompt "ROMEO:" --temperature 0.8 --top_k 50 --seed 0
    deepdive chat --model runs/tiny/sft                      # multi-turn; --prompt "..." for one reply
    deepdive merge --adapter runs/tiny/sft-lora --output_dir runs/tiny/sft-merged
    deepdive eval --model runs/tiny/sft                      # writes runs/tiny/sft/eval.json
    deepdive probe --model runs/tiny/sft --output runs/tiny/probe   # what it knows: probe.jsonl + data card
    deepdive prefs --model runs/tiny/sft-verse --output runs/tiny/prefs   # RLHF's rankings: pairs.jsonl + card
    deepdive report --run runs/tiny                          # writes runs/tiny/report.md + plots
    deepdive seeds --runs runs/tiny/seed-1 runs/tiny/seed-2 --output results/tiny-seeds   # spread over seeds
    deepdive card --model runs/tiny/sft                      # rewrites the model card (README.md)
    deepdive push --model runs/tiny/sft --repo_id you/deepdive-tiny-sft [--private]
    deepdive serve --model runs/tiny/grpo --port 8000         # chat page at /, OpenAI API at /v1
    deepdive export --model runs/tiny/grpo --gguf runs/tiny/grpo-f16.gguf --out_type f16   # for llama.cpp apps

`sample` lets the base model do what pretraining taught it, continue text token by token (the lecture's
"token simulator"), streaming each token as it is drawn. The model folder is any Hugging Face causal LM, so
the same command samples a Hub model too. `chat` talks to an SFT/GRPO model through its chat template;
`merge` folds a LoRA adapter into its base model. `eval` scores a finished folder by kind (bits per byte for a
base model; held-out task accuracy, stop rate and pass@k for a chat model), `probe` asks a chat model about
characters it was never trained on and marks which it knows (the data for teaching it "I don't know"), `prefs`
samples several lines of verse per prompt and lets the simulated labeler rank them (RLHF's preference pairs),
`report` gathers a whole run into
one report card, `seeds` puts one recipe's runs with several seeds in one table of per-seed figures, mean and
range (JSON + Markdown, and `seeds.md` beside the runs: the multi-seed run's report card), `card` rebuilds a
folder's model card and `push` uploads a folder to the Hugging Face Hub. `serve` runs a chat model behind an
OpenAI-compatible API (`deepdive.serve`), with a chat page for the browser; `export` writes a model as one
GGUF file, which llama.cpp and the apps built on it (LM Studio, Ollama) run.

Each command imports the deepdive modules it runs when it runs, the one place in the package that imports
inside functions: `deepdive --help` (or a typo) answers in 0.03 s instead of the 4-5 s that importing torch,
transformers, datasets and evaluate for every command would take, and `sample` loads less than `report` does.
"""

import argparse
import sys
from pathlib import Path

from deepdive.errors import DataError, DeepdiveError


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
    chat.add_argument("--tools", action="store_true", help="offer the python and search tools, run the calls")

    merge = commands.add_parser("merge", help="merge a LoRA adapter into its base model, save a plain HF model")
    merge.add_argument("--adapter", required=True, help="folder written by a recipe with use_peft: true")
    merge.add_argument("--output_dir", required=True)

    evaluate = commands.add_parser("eval", help="evaluate a finished model folder; writes eval.json beside it")
    evaluate.add_argument("--model", required=True, help="model folder, e.g. runs/tiny/sft")
    evaluate.add_argument("--tasks", nargs="+", help="task families of a chat model (default: all)")
    evaluate.add_argument("--num_test_examples", type=int, default=200, help="held-out prompts per task family")
    evaluate.add_argument("--pass_task", default="arithmetic", help="the task family scored with pass@k")
    evaluate.add_argument("--num_samples", type=int, default=8, help="sampled replies per problem for pass@k")
    evaluate.add_argument("--k", type=int, nargs="+", default=[1, 8], help="the k of pass@k, each <= num_samples")
    evaluate.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for pass@k")
    evaluate.add_argument("--batch_size", type=int, default=64)

    probe = commands.add_parser("probe", help="find which characters a chat model knows; writes probe.jsonl + card")
    probe.add_argument("--model", required=True, help="chat model folder, e.g. runs/tiny/sft")
    probe.add_argument(
        "--output", required=True, help="folder for probe.jsonl and its data card, e.g. runs/tiny/probe"
    )
    probe.add_argument("--phrasings", type=int, default=3, help="questions per character, in different words")
    probe.add_argument("--num_samples", type=int, default=4, help="sampled answers per question, besides the greedy")
    probe.add_argument("--temperature", type=float, default=1.0, help="temperature of the sampled answers")
    probe.add_argument("--threshold", type=float, default=0.5, help="share of right answers that makes it known")
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--batch_size", type=int, default=64)

    prefs = commands.add_parser("prefs", help="rank a chat model's lines of verse into preference pairs (RLHF)")
    prefs.add_argument("--model", required=True, help="chat model folder, e.g. runs/tiny/sft-verse")
    prefs.add_argument(
        "--output", required=True, help="folder for pairs.jsonl and its data card, e.g. runs/tiny/prefs"
    )
    prefs.add_argument(
        "--num_prompts", type=int, default=6000, help="prompts asked (train topics; the pairs of a fifth are held out)"
    )
    prefs.add_argument("--num_candidates", type=int, default=4, help="lines sampled per prompt, ranked by the labeler")
    prefs.add_argument("--temperature", type=float, default=1.0, help="temperature of the sampled lines")
    prefs.add_argument("--margin", type=float, default=0.1, help="labeler score gap that makes two lines a pair")
    prefs.add_argument("--seed", type=int, default=0)
    prefs.add_argument("--batch_size", type=int, default=64)

    report = commands.add_parser("report", help="write the report card of a run: report.md with plots")
    report.add_argument("--run", default="runs/tiny", help="the run folder holding base/, sft/, grpo/")
    report.add_argument("--no_side_by_side", action="store_true", help="skip answering the prompts per stage")

    seeds = commands.add_parser("seeds", help="the spread over seeds: several runs of a recipe in one table")
    seeds.add_argument("--runs", nargs="+", required=True, help="run folders, one per seed (runs/tiny/seed-1 ...)")
    seeds.add_argument(
        "--output",
        help="write <output>.json and <output>.md (default: seeds in the folder holding the runs); the page is "
        "also written as seeds.md beside the runs",
    )
    seeds.add_argument("--generated_by", help="the command that regenerates the table, for its header")

    card = commands.add_parser("card", help="rewrite a finished folder's model card (README.md)")
    card.add_argument("--model", required=True)

    push = commands.add_parser("push", help="upload a finished folder, its card and the run's report to the Hub")
    push.add_argument("--model", required=True, help="model folder, e.g. runs/tiny/sft")
    push.add_argument("--repo_id", required=True, help="Hub repo, e.g. your-name/deepdive-tiny-sft")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--report", help="report card to include (default: report.md of the run folder, if any)")

    serve = commands.add_parser("serve", help="serve a chat model: OpenAI-compatible API and a chat page")
    serve.add_argument("--model", required=True, help="chat model folder, e.g. runs/tiny/grpo")
    serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to let other machines (a phone) connect")
    serve.add_argument("--port", type=int, default=8000)

    export = commands.add_parser("export", help="write a model as one GGUF file for llama.cpp-based apps")
    export.add_argument("--model", required=True, help="model folder, e.g. runs/tiny/grpo")
    export.add_argument("--gguf", required=True, help="the GGUF file to write, e.g. runs/tiny/grpo-f16.gguf")
    export.add_argument("--out_type", default="f16", help="f32, f16 (half the size) or q8_0 (8-bit, a quarter)")

    args = parser.parse_args(argv)
    from transformers.utils import logging

    logging.disable_progress_bar()  # the streamed text is the output; no weight-loading bars around it
    try:
        _run(args)
    except DeepdiveError as error:
        sys.exit(f"error: {error}")


def _run(args: argparse.Namespace) -> None:
    if args.command == "chat":
        from deepdive.chat import chat_loop, reply
        from deepdive.modeling import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(args.model)
        if tokenizer.chat_template is None:
            raise DataError(f"--model: {args.model} has no chat template; chat with an SFT or GRPO model")
        if args.prompt is not None:
            messages = [{"role": "user", "content": args.prompt}]
            reply(
                model, tokenizer, messages, args.max_new_tokens, args.temperature, args.top_k, sys.stdout, args.seed,
                tools=args.tools,
            )  # fmt: skip
        else:
            chat_loop(
                model, tokenizer, args.temperature, args.top_k, args.max_new_tokens, args.seed, tools=args.tools
            )  # fmt: skip
    elif args.command == "merge":
        from deepdive.hub import merge_adapter

        merge_adapter(args.adapter, args.output_dir)
        print(f"merged model written to {args.output_dir}")
    elif args.command == "eval":
        from deepdive.cards import write_model_card
        from deepdive.evaluation import evaluate_folder

        if args.num_samples and max(args.k) > args.num_samples:
            raise DataError(f"--k: {max(args.k)} is more than the {args.num_samples} samples per problem")
        metrics = evaluate_folder(
            args.model,
            args.tasks,
            args.num_test_examples,
            args.pass_task,
            args.num_samples,
            tuple(args.k),
            args.temperature,
            batch_size=args.batch_size,
        )
        write_model_card(args.model)
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
        print(f"{args.model}/eval.json: {shown}")
    elif args.command == "probe":
        from deepdive.probe import probe_folder

        summary = probe_folder(
            args.model, args.output, args.phrasings, args.num_samples, args.temperature, args.threshold, args.seed,
            args.batch_size,
        )  # fmt: skip
        print(
            f"{args.output}: {summary['known']} of {summary['characters']} characters known, "
            f"{summary['correct']}/{summary['answers']} answers right ({summary['seconds']:.0f} s)"
        )
    elif args.command == "prefs":
        from deepdive.preferences import preferences_folder

        summary = preferences_folder(
            args.model, args.output, args.num_prompts, args.num_candidates, args.temperature, args.margin, args.seed,
            args.batch_size,
        )  # fmt: skip
        print(
            f"{args.output}: {summary['pairs']} pairs from {summary['prompts']} prompts ({summary['train_pairs']} "
            f"train, {summary['test_pairs']} held-out), labeler score chosen {summary['mean_chosen_score']:.3f} vs "
            f"rejected {summary['mean_rejected_score']:.3f} ({summary['seconds']:.0f} s)"
        )
    elif args.command == "report":
        from deepdive.report import write_report

        print(f"report card written to {write_report(args.run, side_by_side=not args.no_side_by_side)}")
    elif args.command == "seeds":
        from deepdive.seeds import write_seeds_table

        paths = write_seeds_table(args.runs, args.output, args.generated_by)
        print(f"seeds table written to {', '.join(path.as_posix() for path in paths)}")
    elif args.command == "card":
        from deepdive.cards import write_model_card

        print(f"model card written to {write_model_card(args.model)}")
    elif args.command == "push":
        from deepdive.hub import push_folder

        report = args.report or Path(args.model).parent / "report.md"
        url = push_folder(args.model, args.repo_id, args.private, report)
        print(f"pushed {args.model} to https://huggingface.co/{args.repo_id} ({url})")
    elif args.command == "serve":
        from deepdive.serve import serve

        serve(args.model, args.host, args.port)
    elif args.command == "export":
        from deepdive.export import export_gguf

        path = export_gguf(args.model, args.gguf, args.out_type)
        print(f"{path} written ({path.stat().st_size / 1e6:.1f} MB, {args.out_type})")
    elif args.command == "sample":
        from deepdive.generation import Decoding, sample_text

        decoding = Decoding(
            args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.num_samples, args.seed
        )  # fmt: skip
        sample_text(args.model, args.prompt, decoding, stream=sys.stdout)


if __name__ == "__main__":
    main()
