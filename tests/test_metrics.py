"""The `evaluate` metric modules shipped in `deepdive/metrics/`, loaded from their local paths."""

import math
import random
from itertools import combinations

import pytest

from deepdive.evaluation import load_metric


def test_bits_per_byte_pools_spans_by_bytes():
    metric = load_metric("bits_per_byte")
    # 8 bits over 4 bytes and 8 bits over 12 bytes pool to 16 bits / 16 bytes, not the mean of 2.0 and 0.67
    result = metric.compute(predictions=[8 * math.log(2), 8 * math.log(2)], references=[4, 12])
    assert result == {"bits_per_byte": pytest.approx(1.0), "bytes": 16}


def test_bits_per_byte_refuses_zero_bytes():
    with pytest.raises(ValueError, match="references"):
        load_metric("bits_per_byte").compute(predictions=[1.0], references=[0])


def test_task_accuracy_uses_each_family_checker():
    result = load_metric("task_accuracy").compute(
        predictions=["12 + 30\n2+0=2, write 2\nAnswer: 42", "Answer: 41", "s-t-a-r\nAnswer: 1"],
        references=["42", "42", "1"],
        tasks=["arithmetic", "arithmetic", "spelling"],
    )
    assert result == {"accuracy": pytest.approx(2 / 3), "arithmetic_accuracy": 0.5, "spelling_accuracy": 1.0}


def brute_force_pass_at_k(outcomes: list[bool], k: int) -> float:
    """The share of all k-subsets of the samples that hold at least one correct reply."""
    subsets = list(combinations(outcomes, k))
    return sum(any(subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_pass_at_k_is_the_unbiased_estimate(k):
    rng = random.Random(k)
    outcomes = [[rng.random() < 0.3 for _ in range(5)] for _ in range(20)]
    predictions = [[f"Answer: {7 if ok else 8}" for ok in row] for row in outcomes]
    result = load_metric("pass_at_k").compute(
        predictions=predictions, references=["7"] * 20, tasks=["arithmetic"] * 20, k=[k]
    )
    expected = sum(brute_force_pass_at_k(row, k) for row in outcomes) / 20
    assert result[f"pass@{k}"] == pytest.approx(expected) and result["n"] == 5


def test_pass_at_k_matches_a_hand_computed_case():
    """Three problems, 5 samples each, 2, 0 and 4 of them right: pass@1 = (2/5 + 0 + 4/5) / 3 = 0.4;
    pass@2 = (1 - C(3, 2) / C(5, 2) + 0 + 1) / 3 = (0.7 + 0 + 1) / 3 (4 right leave no pair of wrong ones);
    pass@5 = (1 + 0 + 1) / 3."""
    predictions = [[f"Answer: {7 if sample < right else 8}" for sample in range(5)] for right in (2, 0, 4)]
    result = load_metric("pass_at_k").compute(
        predictions=predictions, references=["7"] * 3, tasks=["arithmetic"] * 3, k=[1, 2, 5]
    )
    assert result == {
        "pass@1": pytest.approx(0.4),
        "pass@2": pytest.approx(1.7 / 3),
        "pass@5": pytest.approx(2 / 3),
        "n": 5,
    }


def test_pass_at_k_refuses_k_above_the_samples():
    with pytest.raises(ValueError, match="k: each k must be between 1 and the 2 samples"):
        load_metric("pass_at_k").compute(
            predictions=[["Answer: 1", "Answer: 2"]], references=["1"], tasks=["arithmetic"], k=[4]
        )
