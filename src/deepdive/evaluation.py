"""Evaluation: bits per byte for a base model; task accuracy, stop rate and pass@k for a chat model.

Bits per byte is the pretraining metric that does not depend on the tokenizer. Per-token loss cannot compare
models with different vocabularies: a tokenizer with longer tokens has higher loss per token for the same text.
Bits per byte divides the total negative log-likelihood of a text by its size in UTF-8 bytes, so any two models
can be compared on the same validation text.

    bpb = sum over scored tokens of NLL (nats) / (ln 2 * UTF-8 bytes of those tokens)

How windows are laid: the split is one token stream (each document closed by <|endoftext|>, which counts 0
bytes). Windows of `seq_len` tokens start every `stride` tokens; the first window scores all its predictions
and every later window scores only its last `stride` predictions, so each token after the first is scored
exactly once, with at least `seq_len - stride` tokens of context (except near the start). `stride = seq_len - 1`
gives non-overlapping windows (cheapest); a smaller stride gives more context at more compute. During
pretraining the Trainer's own eval loop reports the same figure on packed blocks (`sum_token_nll` and
`bits_per_byte_metric`). A chat model is scored instead by task accuracy, stop rate and pass@k, and, where it
learnt the Shakespeare questions, by where its knowledge ends (`evaluate_knowledge`).
"""

import functools
import json
import math
import random
import time
from pathlib import Path

import evaluate
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from deepdive.data import build_shakespeare, tokenize_documents
from deepdive.distributed import gather_shares, is_main_process, process_share
from deepdive.generation import Completion, Decoding, Exchange, generate, generate_with_tools
from deepdive.modeling import check_model_folder, load_model_and_tokenizer
from deepdive.records import cpu_has_bf16, read_record, trained_with_tools, write_metrics
from deepdive.tasks import TASKS, check_task_names, get_task
from deepdive.tasks.shakespeare import OUTCOMES
from deepdive.tasks.verse import Verse, labeler
from deepdive.tokenizer import token_byte_lengths


METRICS_DIR = Path(__file__).parent / "metrics"


@functools.cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """One of the `evaluate` metric modules shipped in `deepdive/metrics/`, loaded from its local path."""
    return evaluate.load(str(METRICS_DIR / name))


def window_starts(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int]]:
    """(start, first scored target) of each window so that targets 1..n_tokens-1 are each scored once."""
    if not 0 < stride < seq_len:
        raise ValueError(f"stride must be in [1, seq_len - 1], got stride={stride}, seq_len={seq_len}")
    windows = [(0, 1)]
    scored_up_to = min(seq_len, n_tokens)  # exclusive end of the targets scored so far
    while scored_up_to < n_tokens:
        end = min(scored_up_to + stride, n_tokens)
        windows.append((max(end - seq_len, 0), scored_up_to))
        scored_up_to = end
    return windows


@torch.no_grad()
def bits_per_byte(
    model,
    token_ids: list[int],
    token_bytes: list[int],
    seq_len: int,
    stride: int | None = None,
    batch_size: int = 16,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Score `token_ids` (one stream) with `model`; return bits per byte, mean token loss and counts. Several
    processes each score a share of the windows."""
    stride = stride or seq_len - 1
    device = next(model.parameters()).device
    ids = torch.tensor(token_ids, dtype=torch.long)
    byte_table = torch.tensor(token_bytes, dtype=torch.float64)
    windows = process_share(window_starts(len(ids), seq_len, stride))
    window_nll, window_bytes, window_tokens = [], [], []
    was_training = model.training
    model.eval()
    batches = range(0, len(windows), batch_size)
    for first in tqdm(batches, desc="bits per byte", disable=not (progress and is_main_process())):
        chunk = windows[first : first + batch_size]
        length = max(min(start + seq_len, len(ids)) - start for start, _ in chunk)
        inputs = torch.full((len(chunk), length), 0, dtype=torch.long)
        score = torch.zeros((len(chunk), length - 1), dtype=torch.bool)
        for row, (start, first_target) in enumerate(chunk):
            window = ids[start : start + length]
            inputs[row, : len(window)] = window
            score[row, first_target - start - 1 : len(window) - 1] = True
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model(input_ids=inputs.to(device)).logits[:, :-1]
        targets = inputs[:, 1:]
        nll = F.cross_entropy(logits.float().flatten(0, 1), targets.to(device).flatten(), reduction="none").cpu()
        nll = nll.view(len(chunk), -1).double() * score
        window_nll += nll.sum(dim=1).tolist()
        window_bytes += (byte_table[targets] * score).sum(dim=1).long().tolist()
        window_tokens += score.sum(dim=1).tolist()
    model.train(was_training)
    window_nll, window_bytes, window_tokens = map(gather_shares, (window_nll, window_bytes, window_tokens))
    total_tokens = int(sum(window_tokens))
    result = load_metric("bits_per_byte").compute(predictions=window_nll, references=window_bytes)
    return {**result, "loss": sum(window_nll) / total_tokens, "tokens": total_tokens}


def sum_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row sum of next-token NLL in nats: `preprocess_logits_for_metrics`, so no logits are kept."""
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels[:, 1:], reduction="none")
    return nll.sum(dim=1)


def bits_per_byte_metric(token_bytes: list[int]):
    """`compute_metrics` for packed blocks: every target token of every block scored once."""
    byte_table = np.asarray(token_bytes, dtype=np.float64)

    def compute_metrics(eval_prediction) -> dict[str, float]:
        total_nll = float(np.sum(eval_prediction.predictions, dtype=np.float64))
        total_bytes = float(byte_table[eval_prediction.label_ids[:, 1:]].sum())
        return {"bits_per_byte": total_nll / (math.log(2) * total_bytes)}

    return compute_metrics


# --- Chat models: task accuracy and stop rate --------------------------------------------------------------


def answer_in_shares(
    model, tokenizer, conversations, decoding: Decoding, batch_size: int, tools: bool = False
) -> list[Completion | Exchange]:
    """The completions of every conversation (exchanges with the tools run, when `tools`) when several processes
    each answer a share of them."""
    share = process_share(list(conversations))
    if tools:
        return gather_shares(generate_with_tools(model, tokenizer, share, decoding, batch_size, progress=True))
    return gather_shares(generate(model, tokenizer, share, decoding, batch_size, progress=True))


def evaluate_tasks(
    model,
    tokenizer,
    task_names,
    n_per_task: int,
    max_new_tokens: int = 160,
    batch_size: int = 32,
    tools: bool = False,
):
    """Per-task greedy accuracy (each task's own checker, through the `task_accuracy` metric) and the share of
    replies that end with `<|im_end|>`.

    With `tools` the same questions are asked with the tools offered and run (`generate_with_tools`): each key
    ends in `_with_tools`, and the tool calls per question, the share of calls that failed and, of the questions a
    tool answers, the share whose first call is the task's own (`tool_calls_as_asked`: the word or the name copied
    right) are added.
    """
    replies, answers, tasks, stopped, exchanges, own_calls = [], [], [], [], [], []
    for name in task_names:
        examples = get_task(name).examples("test", n_per_task, seed=0)
        prompts = [example["prompt"] for example in examples]
        answered = answer_in_shares(model, tokenizer, prompts, Decoding(max_new_tokens), batch_size, tools)
        if tools:
            exchanges += answered
            answered = [exchange.completion for exchange in answered]
        replies += [completion.text for completion in answered]
        stopped += [completion.stopped for completion in answered]
        answers += [example["answer"] for example in examples]
        tasks += [name] * len(examples)
        own_calls += [example["tool_call"] for example in examples]
    metrics = load_metric("task_accuracy").compute(predictions=replies, references=answers, tasks=tasks)
    del metrics["accuracy"]  # the families differ in kind; each one's accuracy is reported on its own
    metrics["stop_rate"] = sum(stopped) / len(stopped)
    if not tools:
        metrics["test_prompts"] = len(stopped)
        return metrics
    calls = sum(exchange.calls for exchange in exchanges)
    metrics["tool_calls_per_question"] = calls / len(exchanges)
    metrics["tool_failure_rate"] = sum(exchange.failures for exchange in exchanges) / calls if calls else 0.0
    asked = [(exchange, json.loads(call)) for exchange, call in zip(exchanges, own_calls, strict=True) if call]
    if asked:
        metrics["tool_calls_as_asked"] = sum(exchange.first_call == call for exchange, call in asked) / len(asked)
    return {f"{key}_with_tools" if not key.startswith("tool_") else key: value for key, value in metrics.items()}


KNOWLEDGE_GROUPS = ("real", "seen", "unseen", "made_up")


def evaluate_knowledge(
    model, tokenizer, n_per_group: int = 200, max_new_tokens: int = 40, batch_size: int = 64
) -> dict[str, float]:
    """Where the model's knowledge ends, on held-out "which play?" questions: the share of replies that name the
    right play, that hallucinate (a wrong play, or a play for someone in none) and that decline, per group.

    `seen`: real characters of the train plays (in pretraining, never asked in SFT); `unseen`: real characters of
    the validation plays, which pretraining never showed, so declining is the one honest answer; `real`: both;
    `made_up`: famous characters of other books and invented names. Each group asks up to `n_per_group` of its
    held-out questions, the same ones for every model (greedy). Keys: `knowledge_<group>_<outcome>` and
    `knowledge_<group>_questions`.
    """
    task = get_task("shakespeare")
    pools = task.questions("test")
    pools = {"seen": pools["known"], "unseen": pools["unseen"], "made_up": pools["famous"] + pools["invented"]}
    outcomes = {}
    for group, pool in pools.items():
        questions = random.Random(f"knowledge:{group}").sample(pool, min(n_per_group, len(pool)))
        prompts = [[{"role": "user", "content": phrasing.format(name=name)}] for name, phrasing in questions]
        replies = answer_in_shares(model, tokenizer, prompts, Decoding(max_new_tokens), batch_size)
        answers = [task.play_of(name) for name, _ in questions]
        outcomes[group] = [task.outcome(reply.text, answer) for reply, answer in zip(replies, answers, strict=True)]
    outcomes["real"] = outcomes["seen"] + outcomes["unseen"]
    metrics = {}
    for group in KNOWLEDGE_GROUPS:
        found = outcomes[group]
        metrics[f"knowledge_{group}_questions"] = len(found)
        for outcome in OUTCOMES:
            metrics[f"knowledge_{group}_{outcome}"] = found.count(outcome) / len(found) if found else 0.0
    return metrics


def evaluate_verse(
    model, tokenizer, n: int = 200, max_new_tokens: int = 40, batch_size: int = 64, num_samples: int = Verse.SAMPLES
) -> dict:
    """The simulated labeler's view of `n` held-out "a line of verse about {topic}" prompts (topics and phrasings
    never trained on; the same prompts for every model). Of the greedy replies: `verse_labeler_score` (mean, in
    [0, 1]), `verse_good` (share the labeler would keep), `verse_copied` (share copied from the plays), and
    `verse_meter` / `verse_on_topic` (means of those parts of the score). Of `num_samples` lines sampled at
    temperature 1 for each prompt (with a fixed seed), what RL practises on: `verse_sampled_score` (mean)."""
    verse = Verse()
    examples = verse.examples("test", n, seed=0)
    prompts = [example["prompt"] for example in examples]
    replies = answer_in_shares(model, tokenizer, prompts, Decoding(max_new_tokens), batch_size)
    scores = [labeler().score(reply.text, example["answer"]) for reply, example in zip(replies, examples, strict=True)]
    share = len(scores) or 1
    metrics = {
        "verse_labeler_score": sum(score.total for score in scores) / share,
        "verse_good": sum(score.total >= Verse.GOOD for score in scores) / share,
        "verse_copied": sum(score.copied for score in scores) / share,
        "verse_meter": sum(score.meter for score in scores) / share,
        "verse_on_topic": sum(score.on_topic for score in scores) / share,
        "verse_prompts": len(scores),
    }
    if num_samples:
        sampling = Decoding(max_new_tokens, temperature=1.0, num_samples=num_samples)
        sampled = answer_in_shares(model, tokenizer, prompts, sampling, batch_size)
        topics = [example["answer"] for example in examples for _ in range(num_samples)]
        totals = [labeler().score(reply.text, topic).total for reply, topic in zip(sampled, topics, strict=True)]
        metrics["verse_sampled_score"] = sum(totals) / (len(totals) or 1)
    return metrics


def evaluate_pass_at_k(
    model,
    tokenizer,
    task_name: str,
    n_problems: int,
    num_samples: int,
    ks: list[int],
    temperature: float = 1.0,
    max_new_tokens: int = 160,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, float]:
    """pass@k of `task_name`'s held-out problems from `num_samples` sampled replies each (the `pass_at_k` metric)."""
    examples = get_task(task_name).examples("test", n_problems, seed=0)
    decoding = Decoding(max_new_tokens, temperature, num_samples=num_samples, seed=seed)
    completions = answer_in_shares(model, tokenizer, [example["prompt"] for example in examples], decoding, batch_size)
    replies = [completion.text for completion in completions]
    grouped = [replies[index : index + num_samples] for index in range(0, len(replies), num_samples)]
    result = load_metric("pass_at_k").compute(
        predictions=grouped,
        references=[example["answer"] for example in examples],
        tasks=[task_name] * len(examples),
        k=ks,
    )
    return {f"{task_name}_{key}_sampled": value for key, value in result.items() if key != "n"}


# --- A finished run folder: `deepdive eval` ------------------------------------------------------------------


def token_stream(documents: list[list[int]], separator: int) -> list[int]:
    """Tokenized documents (each closed by `separator`) as one stream that also opens with `separator`."""
    return [separator] + [token for document in documents for token in document]


def evaluate_folder(
    model_dir: str,
    tasks: list[str] | None = None,
    n_per_task: int = 200,
    pass_task: str = "arithmetic",
    num_samples: int = 8,
    ks: tuple[int, ...] = (1, 8),
    temperature: float = 1.0,
    max_new_tokens: int = 160,
    batch_size: int = 64,
    bf16: bool | None = None,
) -> dict:
    """Evaluate a model folder by kind and write `eval.json` beside it.

    Base models (no chat template): validation bits per byte of the Shakespeare corpus, windows of the
    model's context with half-context stride, as the pretraining recipe scores it, under bf16 autocast where that
    is fast (`bf16` None: a GPU, or a CPU with bf16 instructions). Chat models: greedy
    accuracy per task family, stop rate, and pass@k of `pass_task` from `num_samples` sampled replies; a chat
    model trained with tools (its `recipe.yaml` sets `tool_share`) answers the same prompts again with the tools
    offered and run.
    """
    started = time.time()
    model, tokenizer = load_model_and_tokenizer(str(check_model_folder(model_dir)))  # a folder: eval.json goes in it
    folder = Path(model_dir)
    stage = read_record(folder, "metrics.json").get("stage")
    metrics = {"model": str(model_dir), "stage": stage, "parameters": sum(p.numel() for p in model.parameters())}
    if tokenizer.chat_template is None:
        if bf16 is None:
            bf16 = model.device.type != "cpu" or cpu_has_bf16()
        seq_len = model.config.max_position_embeddings
        documents = tokenize_documents(build_shakespeare()["validation"], tokenizer)["input_ids"]
        result = bits_per_byte(
            model,
            token_stream(list(documents), tokenizer.eos_token_id),
            token_byte_lengths(tokenizer),
            seq_len=seq_len,
            stride=seq_len // 2,
            batch_size=batch_size // 2,
            autocast_dtype=torch.bfloat16 if bf16 else None,
            progress=True,
        )
        metrics.update(kind="base", val_bits_per_byte=result["bits_per_byte"], val_bytes=result["bytes"])
    else:
        tasks = list(tasks or TASKS)
        check_task_names([*tasks, pass_task])
        metrics.update(kind="chat", **evaluate_tasks(model, tokenizer, tasks, n_per_task, max_new_tokens, batch_size))
        if trained_with_tools(folder):  # scored with the tools too
            metrics.update(evaluate_tasks(model, tokenizer, tasks, n_per_task, max_new_tokens, batch_size, tools=True))
        if "shakespeare" in tasks:
            metrics.update(evaluate_knowledge(model, tokenizer, n_per_task, batch_size=batch_size))
        if pass_task in tasks:
            metrics[f"{pass_task}_pass@1"] = metrics[f"{pass_task}_accuracy"]  # greedy
        if num_samples:
            metrics.update(
                evaluate_pass_at_k(
                    model,
                    tokenizer,
                    pass_task,
                    n_per_task,
                    num_samples,
                    list(ks),
                    temperature,
                    max_new_tokens,
                    batch_size,
                )  # fmt: skip
            )
        metrics.update(temperature=temperature, num_samples=num_samples)
    metrics["eval_seconds"] = time.time() - started
    write_metrics(folder, metrics, "eval.json")
    return metrics
