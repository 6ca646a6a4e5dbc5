"""Arithmetic: 2- and 3-digit addition and subtraction, worked column by column ("models need tokens to think").

A transformer spends a fixed amount of computation per token, so a tiny model cannot produce 347 + 286 in
one token. The reply restates the problem, then spreads the work over one short line per column, from the
right, with its carry or borrow ("7+6=13, write 3 carry 1"), and ends with `Answer: <number>`, which `check`
parses (the last such line counts) and `has_final_answer` looks for. Subtraction never goes below zero.
Keys are the problems themselves, with addition unordered: 286 + 347 is held out together with 347 + 286.
"""

import random
import re
from itertools import zip_longest

from deepdive.tasks.common import IntegerAnswer, check_split, check_supply, conversation, split_of


PHRASINGS = {
    "+": [
        "What is {a} + {b}?",
        "Compute {a} + {b}.",
        "What's {a} plus {b}?",
        "Add {a} and {b}.",
        "{a} + {b} = ?",
        "Please work out {a} + {b}.",
        "What is the sum of {a} and {b}?",
    ],
    "-": [
        "What is {a} - {b}?",
        "Compute {a} - {b}.",
        "What's {a} minus {b}?",
        "Subtract {b} from {a}.",
        "{a} - {b} = ?",
        "Please work out {a} - {b}.",
        "Take {b} away from {a}. What is left?",
    ],
}
# About 981,000 distinct problems, 147,000 of them in test: this cap keeps sampling without repeats quick.
MAX_EXAMPLES = 100_000


def digits_from_the_right(number: int) -> list[int]:
    return [int(digit) for digit in reversed(str(number))]


def worked_addition(a: int, b: int) -> list[str]:
    lines, carry = [], 0
    for x, y in zip_longest(digits_from_the_right(a), digits_from_the_right(b), fillvalue=0):
        total = x + y + carry
        line = f"{x}+{y}{'+1' if carry else ''}={total}, write {total % 10}"
        carry = total // 10
        lines.append(line + (" carry 1" if carry else ""))
    if carry:
        lines.append("write the carry 1")
    return lines


def worked_subtraction(a: int, b: int) -> list[str]:
    lines, borrow = [], 0
    for x, y in zip_longest(digits_from_the_right(a), digits_from_the_right(b), fillvalue=0):
        top = x - borrow
        start = f"{x}-1-{y}" if borrow else f"{x}-{y}"
        if top >= y:
            lines.append(f"{start}={top - y}, write {top - y}")
            borrow = 0
        else:
            lines.append(f"{start}: borrow, {top + 10}-{y}={top + 10 - y}, write {top + 10 - y} borrow 1")
            borrow = 1
    return lines


def problem_key(a: int, op: str, b: int) -> str:
    return f"{min(a, b)}+{max(a, b)}" if op == "+" else f"{a}-{b}"


PROBLEM = re.compile(r"(\d+) ([+-]) (\d+)")  # the restated problem on a reply's first line


def random_operand(rng: random.Random) -> int:
    digits = rng.choice((2, 3))
    return rng.randrange(10 ** (digits - 1), 10**digits)


class Arithmetic(IntegerAnswer):
    name = "arithmetic"

    def split_key(self, example: dict) -> str:
        a, op, b = PROBLEM.match(example["messages"][1]["content"]).groups()
        return problem_key(int(a), op, int(b))

    def examples(self, split: str, n: int, seed: int = 0) -> list[dict]:
        check_split(self.name, split)
        check_supply(self.name, split, n, MAX_EXAMPLES, what="problems this family samples without repeats")
        rng = random.Random(f"{self.name}:{split}:{seed}")
        examples, seen = [], set()
        while len(examples) < n:
            op, a, b = rng.choice("+-"), random_operand(rng), random_operand(rng)
            if op == "-" and a < b:
                a, b = b, a
            key = problem_key(a, op, b)
            if key in seen or split_of(self.name, key) != split:
                continue
            seen.add(key)
            result = a + b if op == "+" else a - b
            steps = worked_addition(a, b) if op == "+" else worked_subtraction(a, b)
            reply = "\n".join([f"{a} {op} {b}", *steps, f"Answer: {result}"])
            examples.append(conversation(self.name, rng.choice(PHRASINGS[op]).format(a=a, b=b), reply, str(result)))
        return examples
