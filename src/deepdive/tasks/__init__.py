"""Synthetic conversations for supervised fine-tuning: one task family per lesson of the lecture.

identity (knowledge of self), arithmetic (models need tokens to think), spelling (the model sees tokens, not
letters), shakespeare (knowledge lives in the parameters; say "I don't know" rather than hallucinate) and
repeat (the context window is working memory, read back exactly: what a tool call that copies the question needs).
Each family generates short user/assistant conversations and owns the checker that scores a reply, so the
same `check` grades SFT on held-out prompts and later serves as the RL reward (`has_final_answer` as the
format reward). Every question has a key, and a stable hash of that key decides its split whatever the
seed: a test question is never trained on, so held-out accuracy measures skill, not memory.
"""

import json
import math
import random

from datasets import Dataset

from deepdive.errors import DataError
from deepdive.tasks.arithmetic import Arithmetic
from deepdive.tasks.common import check_split
from deepdive.tasks.identity import Identity
from deepdive.tasks.repeat import Repeat
from deepdive.tasks.shakespeare import ShakespeareQA
from deepdive.tasks.spelling import Spelling
from deepdive.tools import TOOL_SCHEMAS, run_tool_call


TASKS: dict[str, object] = {
    task.name: task
    for task in (
        Arithmetic("arithmetic", {1: 0.10, 2: 0.35, 3: 0.45, 4: 0.10}),
        Arithmetic("long_arithmetic", {4: 1.0}, held_out_phrasings=False),
        Identity(),
        Repeat(),
        ShakespeareQA(),
        Spelling(),
    )
}
LESSONS = ("identity", "arithmetic", "spelling", "shakespeare")  # what SFT teaches by default, in the lecture's order


def check_task_names(names: list[str]) -> None:
    """One-line error, naming the recipe field, for a task name that is not registered."""
    for name in names:
        if name not in TASKS:
            raise DataError(f"tasks: unknown task '{name}'; valid tasks: {', '.join(sorted(TASKS))}")


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


def with_tools(example: dict) -> dict:
    """`example` asked with the tools offered (its `tools` column): a family that names a tool call makes it, reads
    the result in a `tool` turn and answers from it; any other (identity) answers as it would without tools."""
    example = {**example, "tools": TOOL_SCHEMAS}
    if example["tool_call"] is None:
        return example
    call = json.loads(example["tool_call"])
    user, *_ = example["messages"]
    example["messages"] = [
        user,
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": call}]},
        {"role": "tool", "content": run_tool_call(call["name"], call["arguments"])},
        {"role": "assistant", "content": example["tool_reply"]},
    ]
    return example


def build_mixture(
    weights: dict[str, float],
    n: int,
    split: str,
    seed: int = 0,
    tool_share: float = 0.0,
    extra: list[dict] = (),
    drill: tuple[str, int] | None = None,
) -> Dataset:
    """`n` conversations of the weighted families and the `extra` examples (built with `conversation`), shuffled
    with `seed`: columns messages, prompt, answer, task, and tools (the JSON of the tools offered, or None). A
    `tool_share` of the conversations is asked with the tools offered (`with_tools`), so one model learns to
    answer both ways. A `drill` (family, count) puts that many more conversations of one family first, before the
    shuffled rest, all different from the family's share of the mixture: the dataset is then in training order."""
    check_split("build_mixture", split)
    if not 0 <= tool_share <= 1:
        raise DataError(f"tool_share: {tool_share!r} is not a share between 0 and 1")
    drill_name, drill_count = drill or (None, 0)
    if drill_name is not None and drill_name not in TASKS:
        raise DataError(f"drill_task: unknown task {drill_name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    shares = shares_of(weights, n)
    examples, drilled = list(extra), []
    for name in sorted(set(shares) | ({drill_name} if drill_count else set())):
        lead = drill_count if name == drill_name else 0
        generated = TASKS[name].examples(split, shares.get(name, 0) + lead, seed=seed)
        drilled += generated[:lead]
        examples += generated[lead:]
    random.Random(f"mixture:{split}:{seed}").shuffle(examples)
    offered = random.Random(f"tools:{split}:{seed}")
    examples = [
        with_tools(example) if tool_share and offered.random() < tool_share else {**example, "tools": None}
        for example in drilled + examples
    ]
    return Dataset.from_list(examples).remove_columns(["tool_call", "tool_reply"])
