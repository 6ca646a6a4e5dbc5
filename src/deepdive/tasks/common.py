"""What every task family shares: the hash split, input checks and the shape of one example.

A stable hash of each question's key decides its split whatever the seed, so a test question is never
trained on; a second hash holds out some phrasings, so the test split also asks in words never trained on.
Every family builds its examples with `conversation`, so SFT (messages), generation (prompt) and the
checkers (answer) always find the same columns.
"""

import hashlib
import json
import random
import re

from deepdive.errors import DataError


SPLITS = ("train", "test")
TEST_FRACTION = 0.15


def split_of(task: str, key: str) -> str:
    """`test` for about TEST_FRACTION of the keys, `train` for the rest; a SHA-256 hash, so any run agrees."""
    digest = hashlib.sha256(f"{task}:{key}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") < TEST_FRACTION * 2**64 else "train"


def phrasings_of(task: str, phrasings: list[str], split: str) -> list[str]:
    """The phrasings of `split`: a stable hash of each phrasing holds about TEST_FRACTION of them out of
    training, so held-out accuracy also measures questions worded in ways the model was never shown."""
    return [phrasing for phrasing in phrasings if split_of(f"{task}:phrasing", phrasing) == split]


def phrasing_pattern(phrasing: str, **fields: str) -> re.Pattern:
    """A regex that matches the questions of one phrasing and captures each `{field}` with its sub-pattern."""
    pattern = re.escape(phrasing)
    for field, sub_pattern in fields.items():
        pattern = pattern.replace(re.escape(f"{{{field}}}"), f"(?P<{field}>{sub_pattern})")
    return re.compile(pattern)


def as_asked(phrasing: str, field: str, value: str) -> str:
    """`value` as the question made from `phrasing` spells it: after a space when the phrasing puts one before
    `{field}`, bare when it comes first or in quotes. The tokenizer cuts " tempest" and "tempest" into different
    pieces (" tem" "p" "est" against "t" "em" "p" "est"), so a tool call that writes the value as asked copies the
    question's own tokens instead of spelling the word anew."""
    start = phrasing.index(f"{{{field}}}")
    return f" {value}" if start and phrasing[start - 1] == " " else value


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


def conversation(
    task: str, question: str, reply: str, answer: str, tool_call: dict | None = None, tool_reply: str | None = None
) -> dict:
    """One example: the full chat, the prompt alone (for generation) and the answer the checker wants.

    A family whose questions a tool answers also says how: `tool_call` ({"name", "arguments"}) is the call the
    assistant makes when tools are offered, and `tool_reply` its answer once the result is in its context
    (`deepdive.tasks.with_tools` builds that conversation).
    """
    user = {"role": "user", "content": question}
    return {
        "messages": [user, {"role": "assistant", "content": reply}],
        "prompt": [dict(user)],
        "answer": answer,
        "task": task,
        "tool_call": json.dumps(tool_call) if tool_call else None,
        "tool_reply": tool_reply,
    }


ANSWER_LINE = re.compile(r"answer:[ \t]*(.*)", re.IGNORECASE)
INTEGER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)")


def final_answer(text: str) -> str | None:
    """What follows the last `Answer:` on its line, stripped; None when there is no `Answer:`."""
    if not isinstance(text, str):
        return None
    found = ANSWER_LINE.findall(text)
    return found[-1].strip() if found else None


def integer_answer(text: str) -> int | None:
    """The whole number of the last `Answer:` line ("1,998" and a trailing period allowed), else None."""
    answer = final_answer(text)
    if answer is None:
        return None
    answer = answer.removesuffix(".").strip()
    return int(answer.replace(",", "")) if INTEGER.fullmatch(answer) else None


class IntegerAnswer:
    """`check` and `has_final_answer` for families whose reply ends with `Answer: <whole number>`."""

    def check(self, completion: str, answer: str) -> bool:
        value = integer_answer(completion)
        return value is not None and str(value) == str(answer).strip()

    def has_final_answer(self, completion: str) -> bool:
        return integer_answer(completion) is not None
