"""Spelling and letter counting: "how many r's are in 'strawberry'?" (the model sees tokens, not letters).

The tokenizer turns a word into one or a few tokens, so its letters are invisible to the model. The reply
first spells the word out with hyphens, then walks the letters again keeping a running count of the asked
one ("r=1 ... r=2 r=3"), and ends with `Answer: <count>`. Words are the 4-10 letter words of the Shakespeare
train plays, which the model has seen as tokens; the word is the key that is hashed into train or test.
About one question in five asks for a letter the word lacks, whose answer is 0.
"""

import functools
import random
import re

from deepdive.data import build_shakespeare
from deepdive.tasks.common import IntegerAnswer, check_split, conversation, sample_distinct, split_of


PHRASINGS = [
    "How many times does the letter {letter} appear in '{word}'?",
    "How many {letter}'s are in the word '{word}'?",
    "Count the letter '{letter}' in \"{word}\".",
    "How often does '{letter}' occur in '{word}'?",
    "In the word '{word}', how many times does {letter} appear?",
    "How many '{letter}' letters does \"{word}\" have?",
]
ABSENT_LETTER_SHARE = 0.2
ALPHABET = "abcdefghijklmnopqrstuvwxyz"
QUOTED_WORD = re.compile(r"['\"]([a-z]{4,10})['\"]")


@functools.cache
def words_by_split() -> dict[str, list[str]]:
    """The distinct lower-case alphabetic words of 4-10 letters in the Shakespeare train plays, by split."""
    words = set()
    for text in build_shakespeare()["train"]["text"]:
        words.update(token.lower() for token in re.findall(r"[A-Za-z']+", text) if 4 <= len(token) <= 10)
    by_split = {"train": [], "test": []}
    for word in sorted(word for word in words if re.fullmatch(r"[a-z]+", word)):
        by_split[split_of(Spelling.name, word)].append(word)
    return by_split


def counting_reply(word: str, letter: str) -> str:
    marks, count = [], 0
    for character in word:
        if character == letter:
            count += 1
            marks.append(f"{character}={count}")
        else:
            marks.append(character)
    counted = " ".join(marks) + ("" if count else ", none")
    return f"{'-'.join(word)}\nCount {letter}: {counted}\nAnswer: {count}"


class Spelling(IntegerAnswer):
    name = "spelling"

    def split_key(self, example: dict) -> str:
        return QUOTED_WORD.search(example["prompt"][0]["content"]).group(1)

    def examples(self, split: str, n: int, seed: int = 0) -> list[dict]:
        check_split(self.name, split)
        rng = random.Random(f"{self.name}:{split}:{seed}")
        examples = []
        for word in sample_distinct(self.name, split, words_by_split()[split], n, rng):
            if rng.random() < ABSENT_LETTER_SHARE:
                letter = rng.choice([letter for letter in ALPHABET if letter not in word])
            else:
                letter = rng.choice(sorted(set(word)))
            question = rng.choice(PHRASINGS).format(letter=letter, word=word)
            examples.append(conversation(self.name, question, counting_reply(word, letter), str(word.count(letter))))
        return examples
