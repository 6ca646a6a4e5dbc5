"""Rewards for reinforcement learning on verifiable answers, chosen by name from a registry.

The lecture's third stage: the model practises on problems whose answers can be checked, and is rewarded for
what works. The checkers that graded SFT are the rewards here, so "correct" means the same thing in both
stages. Each function follows TRL's convention: it takes the `completions` and the dataset's columns as
keyword arguments (here `task` and `answer`) and returns one float per completion. A recipe names them,
`reward_funcs: [accuracy, format]`; adding a reward is one function and one line in `REWARDS`.
"""

from deepdive.errors import RecipeError
from deepdive.tasks import get_task


def completion_text(completion) -> str:
    """The reply text of a completion, plain (a string) or conversational (a list of messages): there, the last
    assistant turn, the answer, after any tool calls and results that came before it."""
    if isinstance(completion, list):
        turns = [m for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        return (turns[-1].get("content") or "") if turns else ""
    return completion if isinstance(completion, str) else ""


def accuracy(completions, task, answer, **kwargs) -> list[float]:
    """1.0 when the task's checker accepts the reply, else 0.0."""
    return [
        float(get_task(name).check(completion_text(completion), expected))
        for completion, name, expected in zip(completions, task, answer, strict=True)
    ]


def format(completions, task, **kwargs) -> list[float]:  # noqa: A001 - the name a recipe uses
    """1.0 when the reply carries the task's final-answer format (e.g. a parseable `Answer: <n>` line)."""
    return [
        float(get_task(name).has_final_answer(completion_text(completion)))
        for completion, name in zip(completions, task, strict=True)
    ]


def length(completions, completion_ids=None, max_tokens: int = 96, **kwargs) -> list[float]:
    """A penalty growing linearly from 0 at `max_tokens` completion tokens to -1 at twice as many."""
    if completion_ids is None:
        sizes = [len(completion_text(completion)) // 3 for completion in completions]  # ~3 characters a token
    else:
        sizes = [len(ids) for ids in completion_ids]
    return [-min(max(size - max_tokens, 0) / max_tokens, 1.0) for size in sizes]


REWARDS = {"accuracy": accuracy, "format": format, "length": length}


def get_reward_funcs(names: list[str], weights: list[float] | None = None) -> list:
    """The reward functions named in a recipe; one-line errors for unknown names or mismatched weights."""
    if not names:
        raise RecipeError(f"reward_funcs: name at least one reward; valid rewards: {', '.join(REWARDS)}")
    for name in names:
        if name not in REWARDS:
            raise RecipeError(f"reward_funcs: unknown reward '{name}'; valid rewards: {', '.join(REWARDS)}")
    if weights is not None and len(weights) != len(names):
        raise RecipeError(f"reward_weights: {len(weights)} weights for {len(names)} reward_funcs")
    return [REWARDS[name] for name in names]
