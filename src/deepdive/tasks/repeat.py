"""Repeating: "Repeat after me: Longaville" answered "Longaville" (the context window is working memory).

What sits in the context window the model can read back exactly, unlike what it half-remembers from
pretraining. Reading back is also what a tool call needs: the search for "which play is Longaville in?" has
to name Longaville, and the code that counts the e's of 'tempest' has to spell 'tempest'. A model that has
never practised copying a rare word writes one it knows instead (the tiny model's calls turned Virgilia into
Villiers), so the tools stage (`make tools`) mixes in this drill. The words are those of the spelling family
and the names those of the shakespeare family, each from the same split, so no test word or name of either
is ever copied in training; the reply is the text alone, and a test split asks in held-out phrasings too.
"""

import functools
import random
import re

from deepdive.tasks.common import check_split, check_supply, conversation, phrasing_pattern, phrasings_of
from deepdive.tasks.shakespeare import ShakespeareQA
from deepdive.tasks.spelling import words_by_split


# The text after a space, in single or double quotes, or first; with a greeting or a closing word or none.
PHRASINGS = [
    "Repeat after me: {text}",
    "Say this back exactly: {text}",
    "Please repeat: {text}",
    "Repeat exactly what I write: {text}",
    'Copy this word for word: "{text}"',
    "Echo this: '{text}'",
    "repeat {text}",
    "Can you say '{text}' back to me?",
    "Write {text} back to me.",
    "Type this exactly: {text}",
    'Quote me exactly: "{text}"',
    'Say "{text}".',
    "Just say {text}",
    "Repeat '{text}' and nothing else.",
    "Hi! Please repeat after me: {text}",
    "Copy: {text}",
    "say {text} back",
    "Write exactly this: '{text}'",
    "Can you repeat {text}?",
    "Echo back: {text}",
    "Repeat the following words exactly: {text}",
    'Say back, word for word: "{text}"',
    "Hello! Repeat '{text}' for me.",
    "Write out {text} exactly as I typed it.",
    "Please say '{text}'.",
    "{text}: repeat that.",
    "{text} -- say it back.",
]
# A tool call copies a name from the middle of a question ("In what play do we meet Roderigo?", "Name the play
# Cassius belongs to."), where the words around it differ from question to question; the model copied the
# first piece wrong after words it had not practised ("Eoderigo") and ran on into the next word ("Cassius
# Brongs"). So most questions put the text between an opening and a closing, in every pairing of the two.
OPENINGS = ["Please say", "Now repeat", "Could you write", "I'd like you to say", "Kindly type", "Try to repeat",
            "Go ahead and write", "Let me hear you say", "Please copy", "Type out"]  # fmt: skip
CLOSINGS = ["back to me.", "for me, please.", "and nothing else.", "exactly as written.", "one more time.",
            "word for word.", "again, please.", "without changing a letter.", "so I can check it.", "out loud.",
            "right now.", "if you would."]  # fmt: skip
PHRASINGS += [f"{opening} {{text}} {closing}" for opening in OPENINGS for closing in CLOSINGS]
TEXT = r"[A-Za-z]+(?: [A-Za-z]+)*"
TEXT_IN_PHRASING = [phrasing_pattern(phrasing, text=TEXT) for phrasing in PHRASINGS]
ITEMS_PER_TEXT = {1: 0.6, 2: 0.25, 3: 0.15}  # how many words or names one question asks to repeat
MAX_REPLY_CHARS = 200


@functools.cache
def items_by_split() -> dict[str, tuple[list[str], list[str]]]:
    """(words, names) of each split: the spelling family's words and the shakespeare family's known, famous and
    invented names of that split."""
    by_split = {}
    for split in ("train", "test"):
        pools = ShakespeareQA().questions(split)
        names = sorted({name for kind in ("known", "famous", "invented") for name, _ in pools[kind]})
        by_split[split] = (words_by_split()[split], names)
    return by_split


class Repeat:
    name = "repeat"
    card = "repeat"  # data_cards/repeat.md

    def split_key(self, example: dict) -> str:
        question = example["prompt"][0]["content"]
        return next(match["text"] for pattern in TEXT_IN_PHRASING if (match := pattern.fullmatch(question)))

    def examples(self, split: str, n: int, seed: int = 0) -> list[dict]:
        check_split(self.name, split)
        words, names = items_by_split()[split]
        check_supply(self.name, split, n, len(words) + len(names), what="words and names to repeat")
        rng = random.Random(f"{self.name}:{split}:{seed}")
        phrasings = phrasings_of(self.name, PHRASINGS, split)
        sizes, weights = zip(*ITEMS_PER_TEXT.items(), strict=True)
        texts = {}
        while len(texts) < n:  # the pools hold thousands of items: repeats of a whole text are rare
            pool = words if rng.random() < 0.5 else names
            text = " ".join(rng.choice(pool) for _ in range(rng.choices(sizes, weights)[0]))
            texts.setdefault(text, None)
        return [conversation(self.name, rng.choice(phrasings).format(text=text), text, text) for text in texts]

    def check(self, completion: str, answer: str) -> bool:
        return isinstance(completion, str) and isinstance(answer, str) and completion.strip() == answer.strip() != ""

    def has_final_answer(self, completion: str) -> bool:
        """A repetition: one line of words (letters and single spaces), at most MAX_REPLY_CHARS long."""
        if not isinstance(completion, str):
            return False
        reply = completion.strip()
        return len(reply) <= MAX_REPLY_CHARS and re.fullmatch(TEXT, reply) is not None
