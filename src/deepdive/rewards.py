"""Rewards for reinforcement learning on verifiable answers, chosen by name from a registry.

The lecture's third stage: the model practises on problems whose answers can be checked, and is rewarded for
what works. The checkers that graded SFT are the rewards here, so "correct" means the same thing in both
stages. Each function follows TRL's convention: it takes the `completions` and the dataset's columns as
keyword arguments (here `task` and `answer`) and returns one float per completion. A recipe names them,
`reward_funcs: [accuracy, format]`; adding a reward is one function and one line in `REWARDS`.

RLHF (the lecture's last RL chapter) rewards what no checker can grade, a line of verse, with a reward model
trained on rankings (`reward_funcs: [reward_model, labeler]` with `reward_model: <folder>`): TRL scores each
conversation with the model itself. `labeler` is the simulated person's score of the same lines; given a weight
of 0 it trains nothing and is logged beside the reward model's score at every step, which shows when the policy
starts to please the reward model rather than the person.
"""

from deepdive.errors import RecipeError
from deepdive.modeling import is_reward_model, load_model_and_tokenizer
from deepdive.tasks import get_task
from deepdive.tasks.verse import Verse
from deepdive.tasks.verse import labeler as verse_labeler


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


def labeler(completions, answer, **kwargs) -> list[float]:
    """The simulated labeler's score in [0, 1] of a line of verse about the topic in `answer` (deepdive.labeler)."""
    return [
        verse_labeler().score(completion_text(completion), topic).total
        for completion, topic in zip(completions, answer, strict=True)
    ]


REWARDS = {"accuracy": accuracy, "format": format, "length": length, "labeler": labeler}
REWARD_MODEL = "reward_model"  # the name that stands for the recipe's `reward_model` folder


def get_reward_funcs(
    names: list[str], weights: list[float] | None = None, reward_model: str | None = None, tasks: list[str] = ()
) -> list:
    """The rewards named in a recipe: the functions of `REWARDS`, and `reward_model` loaded from its folder (TRL
    scores with the tokenizer saved beside it). One-line errors for unknown names, mismatched weights, a reward
    model named without its folder (or given and never named), and verse (no checkable answer) mixed with checkable
    `tasks` or rewarded by a checker."""
    if Verse.name in tasks:
        if list(tasks) != [Verse.name]:
            raise RecipeError(
                "tasks: verse has no checkable answer and trains alone (RLHF); valid: [verse] or checkable tasks"
            )
        checked = [name for name in names if name in ("accuracy", "format")]
        if checked:
            raise RecipeError(
                f"reward_funcs: {', '.join(checked)} need a checkable answer; verse takes reward_model, labeler"
            )
    valid = ", ".join([*REWARDS, REWARD_MODEL])
    if not names:
        raise RecipeError(f"reward_funcs: name at least one reward; valid rewards: {valid}")
    for name in names:
        if name not in REWARDS and name != REWARD_MODEL:
            raise RecipeError(f"reward_funcs: unknown reward '{name}'; valid rewards: {valid}")
    if weights is not None and len(weights) != len(names):
        raise RecipeError(f"reward_weights: {len(weights)} weights for {len(names)} reward_funcs")
    if (REWARD_MODEL in names) != bool(reward_model):
        raise RecipeError(
            "reward_model: give the reward model's folder and name reward_model in reward_funcs, both or neither"
        )
    return [load_reward_model(reward_model) if name == REWARD_MODEL else REWARDS[name] for name in names]


def load_reward_model(folder: str):
    """The reward model recipes/reward.py saved in `folder`; a one-line error for a language model's folder."""
    model, _ = load_model_and_tokenizer(folder, reward_head=True, where="reward_model")
    if not is_reward_model(model):
        raise RecipeError(f"reward_model: {folder} is a language model; train a reward model with recipes/reward.py")
    return model
