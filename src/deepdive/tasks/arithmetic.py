"""Arithmetic: addition and subtraction worked column by column ("models need tokens to think").

A transformer spends a fixed amount of computation per token, so a tiny model cannot produce 347 + 286 in
one token. The reply restates the problem, then spreads the work over one short line per column, from the
right, with its carry or borrow ("7+6=13, write 3 carry 1"), and ends with `Answer: <number>`, which `check`
parses (the last such line counts) and `has_final_answer` looks for. Subtraction never goes below zero.
Keys are the problems themselves, with addition unordered: 286 + 347 is held out together with 347 + 286.
Two variants differ in operand length: `arithmetic` (1 to 4 digits, for SFT) and `long_arithmetic` (4 digits
on both sides, the RL stage's frontier).
"""

import random
import re
from itertools import zip_longest

from deepdive.tasks.common import IntegerAnswer, check_split, check_supply, conversation, phrasings_of, split_of


# What a person might type. A question is a lead ("What is", "Work out", ...) around an expression of the
# operation ("{a} + {b}", "the difference between {a} and {b}", ...), or a sentence of its own. Every lead
# goes with both operations, so the words that say add or subtract are the expression's, never the lead's.
# The reply always restates the problem as `a + b` or `a - b`, so every wording maps to one worked solution.
EXPRESSIONS = {
    "+": {
        "symbols": ["{a} + {b}", "{a}+{b}"],
        "words": [
            "{a} plus {b}",
            "the sum of {a} and {b}",
            "the total of {a} and {b}",
            "{a} and {b} added together",
            "{b} added to {a}",
            "{a} increased by {b}",
            "{a} with {b} added",
            "{a} and {b} combined",
        ],
    },
    "-": {
        "symbols": ["{a} - {b}", "{a}-{b}"],
        "words": [
            "{a} minus {b}",
            "the difference between {a} and {b}",
            "{b} subtracted from {a}",
            "{a} take away {b}",
            "{a} decreased by {b}",
            "{a} less {b}",
            "{a} with {b} taken away",
            "{a} without {b}",
        ],
    },
}
ASKING = [
    "What is {x}?",
    "What's {x}?",
    "Whats {x}?",
    "How much is {x}?",
    "Do you know {x}?",
    "What do you get for {x}?",
    "What is the result of {x}?",
    "Can you tell me {x}?",
    "Any idea what {x} is?",
    "How much does {x} come to?",
    "What does {x} make?",
]
TELLING = ["Compute {x}.", "Calculate {x}.", "Work out {x}.", "Find {x}.", "Evaluate {x}.", "Solve {x}.",
           "Figure out {x}.", "Give me {x}.", "Please compute {x}.", "Tell me {x}.", "I need {x}.",
           "Show me {x}.", "Do {x}.", "Quick one: {x}."]  # fmt: skip
BARE = ["{x}", "{x} = ?", "{x}=?", "{x} equals what?"]  # only with symbols: "the sum of 3 and 4 = ?" is no question
SENTENCES = {
    "+": [
        "Add {a} and {b}.",
        "Add {b} to {a}.",
        "Sum {a} and {b}.",
        "Increase {a} by {b}.",
        "What do you get when you add {a} and {b}?",
        "What number is {b} more than {a}?",
        "Can you add {a} and {b} for me?",
        "I have {a} apples and get {b} more. How many apples do I have?",
        "A shelf holds {a} books and {b} more arrive. How many books are there now?",
        "If you put {a} and {b} together, how many is that?",
        "Start at {a} and count on {b}. Where do you end?",
        "{a} people came in the morning and {b} in the afternoon. How many came in all?",
        "Add up {a} and {b}.",
        "How much do {a} and {b} make together?",
        "Put {a} and {b} together.",
        "{a} and {b} make what?",
        "What's the total if I add {b} to {a}?",
        "I scored {a} points, then {b} more. What is my score?",
        "The first box weighs {a} grams and the second {b} grams. What do they weigh together?",
    ],
    "-": [
        "Subtract {b} from {a}.",
        "Take {b} away from {a}.",
        "Take {b} from {a}.",
        "Decrease {a} by {b}.",
        "What do you get when you subtract {b} from {a}?",
        "What number is {b} less than {a}?",
        "How much more is {a} than {b}?",
        "Can you subtract {b} from {a} for me?",
        "I have {a} coins and spend {b}. How many coins are left?",
        "A tank holds {a} litres and {b} are drained. How many litres remain?",
        "By how much does {a} exceed {b}?",
        "{a} people came and {b} left. How many stayed?",
        "Deduct {b} from {a}.",
        "Remove {b} from {a}.",
        "What is left if you take {b} from {a}?",
        "How far is {b} from {a}?",
        "{a} minus {b} makes what?",
        "I had {a} stamps and gave away {b}. How many do I have now?",
        "A road is {a} metres long and {b} are paved. How many metres are not?",
    ],
}


def all_phrasings(op: str) -> list[str]:
    """Every phrasing of one operation: each lead with each expression, then the sentences."""
    expressions = EXPRESSIONS[op]
    led = [lead.format(x=x) for lead in ASKING + TELLING for x in expressions["symbols"] + expressions["words"]]
    bare = [form.format(x=x) for form in BARE for x in expressions["symbols"]]
    return led + bare + SENTENCES[op]


# About 15% of each operation's phrasings never reach training (`phrasings_of`): the test split asks only those.
PHRASINGS = {op: all_phrasings(op) for op in EXPRESSIONS}

# Openings and case a question may come in, crossed with every phrasing above.
OPENINGS = (
    "",
    "",
    "",
    "",
    "Hi! ",
    "Quick question: ",
    "Hey, ",
    "Math time. ",
    "Help me with this: ",
    "Ok so ",
    "Question: ",
    "Hello. ",
)
# Words a person may add at the end ("... 789 for me?"): the number is over where its digits stop.
CLOSINGS = ("", "", "", "", "", " please", " for me", ", thanks", ", please", " quickly", " now", " again")
# One call samples at most this many problems without repeats, which keeps rejection sampling quick.
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


def ask(rng: random.Random, phrasings: list[str], a: int, b: int) -> str:
    """One question: a phrasing of the split with an opening and a closing; now and then in lower case or
    without its final punctuation, as people type."""
    opening, question, closing = rng.choice(OPENINGS), rng.choice(phrasings).format(a=a, b=b), rng.choice(CLOSINGS)
    if opening.endswith((", ", "so ")):
        question = question[0].lower() + question[1:]
    body, mark = (question[:-1], question[-1]) if question[-1] in "?." else (question, "")
    if rng.random() < 0.15:
        mark = ""
    question = opening + body + closing + mark
    return question.lower() if rng.random() < 0.2 and not question.startswith("I ") else question


class Arithmetic(IntegerAnswer):
    """Addition and subtraction whose operands have a number of digits drawn from `digit_weights`.

    Every variant shares one split namespace ("arithmetic"), so a problem held out of one variant is held
    out of all of them: RL on longer problems never practises a problem that SFT's test split asks. With
    `held_out_phrasings` the test split asks in phrasings never trained on (SFT: does it understand new
    wording?); without, both splits ask in the training phrasings and differ only in the problems (RL: held-out
    problems from the very distribution it practised on, and the phrasings SFT holds out stay unseen).
    """

    card = "arithmetic"  # data_cards/arithmetic.md

    def __init__(self, name: str, digit_weights: dict[int, float], held_out_phrasings: bool = True):
        self.name = name
        self.digit_weights = digit_weights
        self.held_out_phrasings = held_out_phrasings

    def split_key(self, example: dict) -> str:
        a, op, b = PROBLEM.match(example["messages"][1]["content"]).groups()
        return problem_key(int(a), op, int(b))

    def random_operand(self, rng: random.Random) -> int:
        digits = rng.choices(list(self.digit_weights), weights=list(self.digit_weights.values()))[0]
        return rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits)

    def examples(self, split: str, n: int, seed: int = 0) -> list[dict]:
        check_split(self.name, split)
        check_supply(self.name, split, n, MAX_EXAMPLES, what="problems this family samples without repeats")
        rng = random.Random(f"{self.name}:{split}:{seed}")
        asked_in = split if self.held_out_phrasings else "train"
        phrasings = {op: phrasings_of("arithmetic", PHRASINGS[op], asked_in) for op in PHRASINGS}
        examples, seen = [], set()
        while len(examples) < n:
            op, a, b = rng.choice("+-"), self.random_operand(rng), self.random_operand(rng)
            if op == "-" and a < b:
                a, b = b, a
            key = problem_key(a, op, b)
            if key in seen or split_of("arithmetic", key) != split:
                continue
            seen.add(key)
            result = a + b if op == "+" else a - b
            steps = worked_addition(a, b) if op == "+" else worked_subtraction(a, b)
            reply = "\n".join([f"{a} {op} {b}", *steps, f"Answer: {result}"])
            call = {"name": "python", "arguments": {"code": f"{a} {op} {b}"}}
            question = ask(rng, phrasings[op], a, b)
            examples.append(conversation(self.name, question, reply, str(result), call, f"Answer: {result}"))
        return examples
