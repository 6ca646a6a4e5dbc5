import json
import math
import shutil

import numpy as np
import pytest
import torch
from transformers.trainer_utils import EvalPrediction

from deepdive import evaluation
from deepdive.evaluation import bits_per_byte, bits_per_byte_metric, sum_token_nll, window_starts
from deepdive.generation import Completion, Exchange
from deepdive.tasks import get_task


class UnigramModel(torch.nn.Module):
    """Predicts the same distribution at every position, whatever the context."""

    def __init__(self, probabilities):
        super().__init__()
        self.log_probs = torch.nn.Parameter(torch.log(torch.tensor(probabilities)))

    def forward(self, input_ids):
        batch, length = input_ids.shape
        return type("Output", (), {"logits": self.log_probs.expand(batch, length, -1)})


@pytest.mark.parametrize("n_tokens, seq_len, stride", [(10, 4, 3), (10, 4, 2), (3, 4, 3), (57, 8, 1), (100, 16, 5)])
def test_windows_score_every_target_exactly_once(n_tokens, seq_len, stride):
    scored = []
    for start, first_target in window_starts(n_tokens, seq_len, stride):
        assert start <= first_target - 1  # the first scored target has its window's token before it
        scored += range(first_target, min(start + seq_len, n_tokens))
    assert scored == list(range(1, n_tokens))


def test_bits_per_byte_matches_a_hand_computed_case():
    # Vocabulary: 0 = separator (0 bytes), 1 = "a" (1 byte), 2 = "bc" (2 bytes), 3 = "é" (2 bytes).
    probabilities = [0.1, 0.5, 0.25, 0.15]
    token_bytes = [0, 1, 2, 2]
    tokens = [0, 1, 2, 3, 1, 1, 0, 2]
    # Targets are tokens[1:]; each costs -ln p(token) nats.
    nats = -sum(math.log(probabilities[t]) for t in tokens[1:])
    n_bytes = sum(token_bytes[t] for t in tokens[1:])  # 1 + 2 + 2 + 1 + 1 + 0 + 2 = 9
    expected = nats / (math.log(2) * n_bytes)
    model = UnigramModel(probabilities)
    for stride in (1, 2, 3):
        result = bits_per_byte(model, tokens, token_bytes, seq_len=4, stride=stride, batch_size=2)
        assert result["bits_per_byte"] == pytest.approx(expected, rel=1e-6)
        assert result["bytes"] == 9 and result["tokens"] == 7


def test_trainer_metric_agrees_with_the_stream_metric():
    probabilities = [0.1, 0.5, 0.25, 0.15]
    token_bytes = [0, 1, 2, 2]
    blocks = torch.tensor([[0, 1, 2, 3], [3, 1, 1, 0]])
    logits = torch.log(torch.tensor(probabilities)).expand(2, 4, -1)
    per_row = sum_token_nll(logits, blocks)
    metric = bits_per_byte_metric(token_bytes)(EvalPrediction(predictions=per_row.numpy(), label_ids=blocks.numpy()))
    targets = blocks[:, 1:].flatten().tolist()
    expected = -sum(math.log(probabilities[t]) for t in targets) / (math.log(2) * sum(token_bytes[t] for t in targets))
    assert metric["bits_per_byte"] == pytest.approx(expected, rel=1e-6)
    assert np.all(per_row.numpy() > 0)


def test_a_better_model_scores_fewer_bits():
    token_bytes = [0, 1, 1, 1]
    tokens = [0] + [1, 1, 1, 2] * 10
    good = bits_per_byte(UnigramModel([0.01, 0.74, 0.24, 0.01]), tokens, token_bytes, seq_len=8)
    uniform = bits_per_byte(UnigramModel([0.25] * 4), tokens, token_bytes, seq_len=8)
    assert uniform["bits_per_byte"] == pytest.approx(2.0)
    assert good["bits_per_byte"] < uniform["bits_per_byte"]


def test_task_accuracy_and_stop_rate_count_each_reply_against_its_own_answer(monkeypatch):
    """`evaluate_tasks` with the replies stood in for: right for the first 3 arithmetic and the first spelling
    prompt, stopped for the first 2 of each family."""
    examples = {name: get_task(name).examples("test", 4, seed=0) for name in ("arithmetic", "spelling")}
    right = {"arithmetic": 3, "spelling": 1}

    def canned_replies(model, tokenizer, prompts, decoding, batch_size=32, progress=False):
        name = next(name for name, found in examples.items() if [row["prompt"] for row in found] == list(prompts))
        answers = [int(row["answer"]) for row in examples[name]]
        replies = [f"Answer: {answer if index < right[name] else answer + 1}" for index, answer in enumerate(answers)]
        return [Completion(reply, index < 2) for index, reply in enumerate(replies)]

    monkeypatch.setattr(evaluation, "generate", canned_replies)
    metrics = evaluation.evaluate_tasks(None, None, ["arithmetic", "spelling"], 4)
    assert metrics == {"arithmetic_accuracy": 0.75, "spelling_accuracy": 0.25, "stop_rate": 0.5, "test_prompts": 8}


def test_with_tools_a_first_call_counts_as_asked_only_when_it_is_the_tasks_own(monkeypatch):
    """Canned exchanges: of 4 counting questions, the first 2 call the task's own code, the third miscopies the word
    and the fourth calls nothing; identity questions, which no tool answers, do not count."""
    examples = {name: get_task(name).examples("test", 4, seed=0) for name in ("identity", "spelling")}

    def canned_exchanges(model, tokenizer, prompts, decoding, batch_size=32, progress=False):
        name = next(name for name, found in examples.items() if [row["prompt"] for row in found] == list(prompts))
        exchanges = []
        for index, example in enumerate(examples[name]):
            call = json.loads(example["tool_call"]) if example["tool_call"] else None
            if call and index == 2:
                call["arguments"] = {"code": call["arguments"]["code"].replace("'", "'x", 1)}
            turns = [{"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": call}]}]
            exchanges.append(Exchange(Completion("Answer: 1", True), turns if call and index < 3 else []))
        return exchanges

    monkeypatch.setattr(evaluation, "generate_with_tools", canned_exchanges)
    metrics = evaluation.evaluate_tasks(None, None, ["identity", "spelling"], 4, tools=True)
    assert metrics["tool_calls_as_asked"] == 0.5
    assert metrics["tool_calls_per_question"] == 3 / 8


@pytest.mark.parametrize("has_bf16", [True, False])
def test_base_eval_autocasts_to_bf16_only_on_a_cpu_with_bf16_instructions(micro_base, tmp_path, monkeypatch, has_bf16):
    """Emulated bf16 runs many times slower than float32: `deepdive eval` scores in float32 on such a CPU."""
    folder = shutil.copytree(micro_base, tmp_path / "base")
    used = []

    def scored(*args, autocast_dtype=None, **kwargs):
        used.append(autocast_dtype)
        return {"bits_per_byte": 2.0, "bytes": 100}

    monkeypatch.setattr(evaluation, "cpu_has_bf16", lambda: has_bf16)
    monkeypatch.setattr(evaluation, "bits_per_byte", scored)
    evaluation.evaluate_folder(str(folder))
    assert used == [torch.bfloat16 if has_bf16 else None]
