"""Bits per byte: the pretraining metric that does not depend on the tokenizer.

Per-token loss cannot compare models with different vocabularies: a tokenizer with longer tokens has higher
loss per token for the same text. Bits per byte divides the total negative log-likelihood of a text by its
size in UTF-8 bytes, so any two models can be compared on the same validation text.

    bpb = sum over scored tokens of NLL (nats) / (ln 2 * UTF-8 bytes of those tokens)

How windows are laid: the split is one token stream (each document closed by <|endoftext|>, which counts 0
bytes). Windows of `seq_len` tokens start every `stride` tokens; the first window scores all its predictions
and every later window scores only its last `stride` predictions, so each token after the first is scored
exactly once, with at least `seq_len - stride` tokens of context (except near the start). `stride = seq_len - 1`
gives non-overlapping windows (cheapest); a smaller stride gives more context at more compute.
"""

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


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
    """Score `token_ids` (one stream) with `model`; return bits per byte, mean token loss and counts."""
    stride = stride or seq_len - 1
    device = next(model.parameters()).device
    ids = torch.tensor(token_ids, dtype=torch.long)
    byte_table = torch.tensor(token_bytes, dtype=torch.float64)
    windows = window_starts(len(ids), seq_len, stride)
    total_nll, total_bytes, total_tokens = 0.0, 0.0, 0
    was_training = model.training
    model.eval()
    batches = range(0, len(windows), batch_size)
    for first in tqdm(batches, desc="bits per byte", disable=not progress):
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
        mask = score.flatten()
        total_nll += nll[mask].double().sum().item()
        total_bytes += byte_table[targets.flatten()[mask]].sum().item()
        total_tokens += int(mask.sum())
    model.train(was_training)
    return {
        "bits_per_byte": total_nll / (math.log(2) * total_bytes),
        "loss": total_nll / total_tokens,
        "tokens": total_tokens,
        "bytes": int(total_bytes),
    }


# --- Chat models: task accuracy and stop rate --------------------------------------------------------------


@torch.no_grad()
def generate_replies(model, tokenizer, conversations, max_new_tokens: int, batch_size: int = 32, progress=False):
    """Greedy replies to each conversation's prompt; returns (reply texts, whether each reply stopped)."""
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    texts, stopped = [], []
    try:
        for first in tqdm(range(0, len(conversations), batch_size), desc="replies", disable=not progress):
            batch = conversations[first : first + batch_size]
            inputs = tokenizer.apply_chat_template(
                batch, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
            ).to(model.device)
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_k=None,
                top_p=None,
                eos_token_id=end_of_turn,
                pad_token_id=tokenizer.pad_token_id,
            )
            for row in output[:, inputs["input_ids"].shape[1] :]:
                tokens = row.tolist()
                stopped.append(end_of_turn in tokens)
                if end_of_turn in tokens:
                    tokens = tokens[: tokens.index(end_of_turn)]
                texts.append(tokenizer.decode(tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return texts, stopped


def evaluate_tasks(model, tokenizer, task_names, n_per_task: int, max_new_tokens: int = 160, batch_size: int = 32):
    """Per-task accuracy (the task's own checker) and the share of replies that end with `<|im_end|>`."""
    from deepdive.tasks import get_task

    metrics, all_stopped = {}, []
    for name in task_names:
        task = get_task(name)
        examples = task.examples("test", n_per_task, seed=0)
        replies, stopped = generate_replies(
            model, tokenizer, [example["prompt"] for example in examples], max_new_tokens, batch_size, progress=True
        )
        correct = [task.check(reply, example["answer"]) for reply, example in zip(replies, examples, strict=True)]
        metrics[f"{name}_accuracy"] = sum(correct) / len(correct)
        all_stopped += stopped
    metrics["stop_rate"] = sum(all_stopped) / len(all_stopped)
    metrics["test_prompts"] = len(all_stopped)
    return metrics
