"""Identity: "who are you?" answered with deepdive's own facts (the lecture's "knowledge of self").

A pretrained model has no self; asked who it is, it continues the text with whatever its corpus suggests.
The assistant's identity is therefore taught with a few SFT conversations. Greetings, questions and answers
all come from `data_cards/identity.md`, so the card documents exactly what the model is told about itself.
The `answer` column is the question kind, and `check` wants that kind's key facts in the reply.
"""

import functools
import random
import re

from deepdive.data import read_data_card
from deepdive.tasks.common import check_split, conversation, sample_distinct, split_of


ENDINGS = ("?", "??", "?!", "")
FIRST_PERSON = re.compile(r"\b(i|i'm|i am|me|my)\b")
MAX_REPLY_CHARS = 300


@functools.cache
def identity_card() -> dict:
    return read_data_card("identity")


def normalize(text: str) -> str:
    """Lower case, curly apostrophes made straight, runs of whitespace made one space."""
    return " ".join(text.replace("\u2019", "'").lower().split())


def mentions(text: str, phrase: str) -> bool:
    """Whether `phrase` occurs in `text` as whole words (both already normalized)."""
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def prompt_key(prompt: str) -> str:
    """The split key of a prompt: its words without case or punctuation ("hi what is your name")."""
    return " ".join(re.findall(r"[a-z0-9']+", normalize(prompt)))


def render_prompt(greeting: str, question: str, ending: str, lower_case: bool) -> str:
    if not greeting or greeting.endswith(("! ", ". ")):
        question = question[0].upper() + question[1:]
    prompt = f"{greeting}{question}{ending}"
    return prompt.lower() if lower_case else prompt


class Identity:
    name = "identity"
    card = "identity"  # data_cards/identity.md

    @functools.cached_property
    def prompts_by_split(self) -> dict[str, list[tuple[str, str]]]:
        """Every distinct (prompt, kind), sorted, grouped by the split its key hashes to."""
        card = identity_card()
        prompts = {}
        for kind, questions in card["questions"].items():
            for greeting in card["greetings"]:
                for question in questions:
                    for ending in ENDINGS:
                        for lower_case in (False, True):
                            prompts[render_prompt(greeting, question, ending, lower_case)] = kind
        by_split = {"train": [], "test": []}
        for prompt, kind in sorted(prompts.items()):
            by_split[split_of(self.name, prompt_key(prompt))].append((prompt, kind))
        return by_split

    def split_key(self, example: dict) -> str:
        return prompt_key(example["prompt"][0]["content"])

    def examples(self, split: str, n: int, seed: int = 0) -> list[dict]:
        check_split(self.name, split)
        rng = random.Random(f"{self.name}:{split}:{seed}")
        answers = identity_card()["answers"]
        chosen = sample_distinct(self.name, split, self.prompts_by_split[split], n, rng)
        return [conversation(self.name, prompt, rng.choice(answers[kind]), kind) for prompt, kind in chosen]

    def check(self, completion: str, answer: str) -> bool:
        required = identity_card()["required"].get(answer)
        if not isinstance(completion, str) or required is None:
            return False
        reply = normalize(completion)
        return (
            all(mentions(reply, phrase) for phrase in required.get("all_of", []))
            and (not required.get("any_of") or any(mentions(reply, phrase) for phrase in required["any_of"]))
            and not any(mentions(reply, phrase) for phrase in required.get("none_of", []))
        )

    def has_final_answer(self, completion: str) -> bool:
        """A short first-person statement: at most 300 characters, with I/I'm/me/my, ending in . ! or ?."""
        if not isinstance(completion, str):
            return False
        reply = completion.strip()
        return (
            0 < len(reply) <= MAX_REPLY_CHARS
            and reply.endswith((".", "!", "?"))
            and FIRST_PERSON.search(normalize(reply)) is not None
        )
