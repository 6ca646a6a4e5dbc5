"""Synthetic conversations for supervised fine-tuning: one task family per lesson of the lecture.

identity (knowledge of self), arithmetic (models need tokens to think), spelling (the model sees tokens, not
letters) and shakespeare (knowledge lives in the parameters; say "I don't know" rather than hallucinate).
Each family generates short user/assistant conversations and owns the checker that scores a reply, so the
same `check` grades SFT on held-out prompts and later serves as the RL reward (`has_final_answer` as the
format reward). Every question has a key, and a stable hash of that key decides its split whatever the
seed: a test question is never trained on, so held-out accuracy measures skill, not memory.
"""

import hashlib
import math
import random

from datasets import Dataset

from deepdive.errors import DataError


SPLITS = ("train", "test")
TEST_FRACTION = 0.15


def split_of(task: str, key: str) -> str:
    """`test` for about TEST_FRACTION of the keys, `train` for the rest; a SHA-256 hash, so any run agrees."""
    digest = hashlib.sha256(f"{task}:{key}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") < TEST_FRACTION * 2**64 else "train"


def check_split(task: str, split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"{task}: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def check_count(task: str, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DataError(f"{task}: the number of examples must be a whole number >= 0, got {n!r}")


def check_supply(task: str, split: str, n: int, supply: int, what: str = "distinct questions") -> None:
    check_count(task, n)
    if n > supply:
        raise DataError(f"{task}: asked for {n} examples but the {split} split has only {supply} {what}")


def sample_distinct(task: str, split: str, pool: list, n: int, rng: random.Random) -> list:
    """`n` different items of `pool`, in random order (an error when the pool is too small)."""
    check_supply(task, split, n, len(pool))
    return rng.sample(pool, n)


def conversation(task: str, question: str, reply: str, answer: str) -> dict:
    """One example: the full chat, the prompt alone (for generation) and the answer the checker wants."""
    user = {"role": "user", "content": question}
    return {
        "messages": [user, {"role": "assistant", "content": reply}],
        "prompt": [dict(user)],
        "answer": answer,
        "task": task,
    }


# The families import the helpers above, so they are imported after them.
from deepdive.tasks.arithmetic import Arithmetic  # noqa: E402
from deepdive.tasks.identity import Identity  # noqa: E402
from deepdive.tasks.shakespeare import ShakespeareQA  # noqa: E402
from deepdive.tasks.spelling import Spelling  # noqa: E402


TASKS: dict[str, object] = {task.name: task for task in (Arithmetic(), Identity(), ShakespeareQA(), Spelling())}


def get_task(name: str):
    """The task family registered under `name`."""
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def shares_of(weights: dict[str, float], n: int) -> dict[str, int]:
    """Split `n` by weight with largest-remainder rounding; every family with a positive weight gets >= 1."""
    valid = ", ".join(sorted(TASKS))
    if not isinstance(weights, dict) or not weights:
        raise DataError(f"task weights: none given; give a weight to at least one of {valid}")
    for name, weight in weights.items():
        if name not in TASKS:
            raise DataError(f"task weights: unknown task {name!r}; valid tasks: {valid}")
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not (math.isfinite(weight) and weight >= 0)
        ):
            raise DataError(f"task weights: {name!r} has weight {weight!r}; a weight must be a finite number >= 0")
    positive = {name: float(weight) for name, weight in weights.items() if weight > 0}
    if not positive:
        raise DataError(f"task weights: all weights are zero; give at least one of {', '.join(weights)} a weight > 0")
    if not isinstance(n, int) or n < len(positive):
        raise DataError(f"n: {n!r} examples cannot give one to each of the {len(positive)} weighted tasks")
    total = sum(positive.values())
    quotas = {name: n * weight / total for name, weight in positive.items()}
    shares = {name: int(quota) for name, quota in quotas.items()}
    by_remainder = sorted(positive, key=lambda name: (shares[name] - quotas[name], name))
    for name in by_remainder[: n - sum(shares.values())]:
        shares[name] += 1
    for name in sorted(positive):
        if shares[name] == 0:  # a tiny weight still gets one example, taken from the largest share
            shares[max(shares, key=lambda other: (shares[other], other))] -= 1
            shares[name] = 1
    return shares


def build_mixture(weights: dict[str, float], n: int, split: str, seed: int = 0) -> Dataset:
    """`n` conversations of the weighted families, shuffled with `seed`: columns messages, prompt, answer, task."""
    check_split("build_mixture", split)
    examples = []
    for name, count in sorted(shares_of(weights, n).items()):
        examples += TASKS[name].examples(split, count, seed=seed)
    random.Random(f"mixture:{split}:{seed}").shuffle(examples)
    return Dataset.from_list(examples)
