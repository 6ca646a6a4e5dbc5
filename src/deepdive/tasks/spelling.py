"""Spelling and letter counting: "how many r's are in 'strawberry'?" (the model sees tokens, not letters).

The tokenizer turns a word into one or a few tokens, so its letters are invisible to the model. The reply
first spells the word out with hyphens, then walks the letters again keeping a running count of the asked
one ("r=1 ... r=2 r=3"), and ends with `Answer: <count>`. Words are the 4-10 letter words of the Shakespeare
train plays, which the model has seen as tokens; the word is the key that is hashed into train or test.
About one question in five asks for a letter the word lacks, whose answer is 0. Users ask in their own words,
so there are many phrasings, and some are held out of training: test questions are worded in unseen ways.
"""

import functools
import random
import re

from deepdive.data import build_shakespeare
from deepdive.tasks.common import (
    IntegerAnswer,
    as_asked,
    check_split,
    conversation,
    phrasing_pattern,
    phrasings_of,
    sample_distinct,
    split_of,
)


# How people ask: with and without quotes, capitals or greetings, the letter bare, quoted or as "r's". A
# stable hash (`phrasings_of`) holds some of them out of training: those are asked only in the test split.
PHRASINGS = [
    "How many times does the letter {letter} appear in '{word}'?",
    "How many {letter}'s are in the word '{word}'?",
    "Count the letter '{letter}' in \"{word}\".",
    "How often does '{letter}' occur in '{word}'?",
    "In the word '{word}', how many times does {letter} appear?",
    "How many '{letter}' letters does \"{word}\" have?",
    "How many {letter}'s are in {word}?",
    "count the letter {letter} in '{word}'",
    "how many times is {letter} in {word}",
    "Spell out '{word}' and count the {letter}'s.",
    "In {word}, how many {letter}'s?",
    "number of {letter}'s in {word}",
    "Does '{word}' contain the letter {letter}? How many times?",
    "Hi! How many {letter}'s does the word {word} have?",
    "Quick question: how many times does {letter} occur in {word}?",
    "how many {letter} in {word}?",
    'What is the count of the letter "{letter}" in "{word}"?',
    "Can you count the {letter}'s in '{word}' for me?",
    "{word}: how many {letter}'s?",
    "How many copies of the letter {letter} are in {word}?",
    'Tell me how many {letter}\'s there are in "{word}".',
    "hey, how many {letter}'s in {word}?",
    "Please count how many times '{letter}' shows up in {word}.",
    'How many times does "{letter}" appear in the word {word}?',
    "Is the letter {letter} in {word}? How many times?",
    "Hello! Could you count the letter {letter} in the word '{word}'?",
    "letter count: how many {letter}'s in '{word}'",
    "What's the number of {letter}'s in {word}?",
    "How many times can you find {letter} in {word}?",
    "Spell {word} letter by letter and tell me how many {letter}'s it has.",
    "Quick question: does {word} have any {letter}'s? How many?",
    'Hi, count the {letter}\'s in the word "{word}" please.',
    "how many {letter}s are there in {word}",
    "Count how many times the letter {letter} appears in {word}.",
    "how many {letter}'s does {word} have",
    "Quick question: how many {letter}'s are in '{word}'?",
    "Hi! Count the {letter}'s in {word}.",
    "whats the count of {letter} in {word}",
    "count {letter} in {word}",
    # The letter in double quotes too: the 39 phrasings above quote it so only in two held-out ones, so training
    # never showed it, and those two were the tool-using model's worst (its calls counted some other letter).
    'How many "{letter}" are in "{word}"?',
    'How many times does the letter "{letter}" occur in {word}?',
    'In "{word}", how many "{letter}" are there?',
    'count "{letter}" in {word}',
    'How often is "{letter}" in the word "{word}"?',
    'Please count the letter "{letter}" in {word}.',
    'Number of times "{letter}" appears in "{word}"?',
    'How many "{letter}" letters are in the word {word}?',
    'Tell me the count of "{letter}" in {word}.',
    'hey, how many "{letter}" in {word}?',
]
ABSENT_LETTER_SHARE = 0.2
ALPHABET = "abcdefghijklmnopqrstuvwxyz"
WORD_IN_PHRASING = [phrasing_pattern(phrasing, word="[a-z]+", letter="[a-z]") for phrasing in PHRASINGS]


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
    card = "spelling"  # data_cards/spelling.md

    def split_key(self, example: dict) -> str:
        question = example["prompt"][0]["content"]
        return next(match["word"] for pattern in WORD_IN_PHRASING if (match := pattern.fullmatch(question)))

    def examples(self, split: str, n: int, seed: int = 0) -> list[dict]:
        check_split(self.name, split)
        rng = random.Random(f"{self.name}:{split}:{seed}")
        phrasings = phrasings_of(self.name, PHRASINGS, split)
        examples = []
        for word in sample_distinct(self.name, split, words_by_split()[split], n, rng):
            if rng.random() < ABSENT_LETTER_SHARE:
                letter = rng.choice([letter for letter in ALPHABET if letter not in word])
            else:
                letter = rng.choice(sorted(set(word)))
            phrasing = rng.choice(phrasings)
            question = phrasing.format(letter=letter, word=word)
            count = word.count(letter)
            code = f"'{as_asked(phrasing, 'word', word)}'.count('{letter}')"  # ' tempest' when asked bare
            call = {"name": "python", "arguments": {"code": code}}
            reply = counting_reply(word, letter)
            examples.append(conversation(self.name, question, reply, str(count), call, f"Answer: {count}"))
        return examples
