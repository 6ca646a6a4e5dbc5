"""Verse: "Write a line of verse about {topic}." (a task with no checkable answer: RLHF's lesson).

No checker can say a line of verse is right; a person can only prefer one line to another. The SFT replies are
real lines of the train plays that name the topic and have 9-11 syllables, so the model learns the form; what
a person would prefer among its own lines is `deepdive.labeler.VerseLabeler`'s judgement, which builds the
preference pairs of RLHF and scores held-out replies. The key is the topic: a stable hash holds some topics out
of training, and some phrasings too, so held-out prompts ask about topics, in words, never trained on.
"""

import functools
import random
import re

from deepdive.data import build_shakespeare
from deepdive.labeler import VerseLabeler, syllable_count, topic_forms, words_of
from deepdive.tasks.common import check_count, check_split, conversation, phrasings_of, split_of


PHRASINGS = [
    "Write a line of verse about {topic}.",
    "Give me one line of poetry about {topic}.",
    "A line of verse on {topic}, please.",
    "Compose a single line of verse about {topic}.",
    "write a line about {topic}",
    "Could you write me a line of verse about {topic}?",
    "One line of poetry on the theme of {topic}.",
    "Hi! Write a verse line about {topic}.",
    "Write one line in iambic pentameter about {topic}.",
    "verse about {topic}, one line",
    "I'd like a line of verse about {topic}.",
    "Quick: one poetic line about {topic}.",
    "Please write a line of poetry on {topic}.",
    "A single line of verse, about {topic}.",
    "Write a line a poet might write about {topic}.",
    "hey, a line of verse about {topic}?",
    "Make up a line of verse about {topic}.",
    "Line of poetry, topic: {topic}.",
    "Can you write one line about {topic} in verse?",
    "Give me a verse line on {topic}.",
]

# Themes the plays speak of in many lines of verse (each in at least 40 lines of 9-11 syllables of the train
# plays; `data_cards/verse.md` gives the counts).
TOPICS = [
    "age", "battle", "beauty", "blood", "crown", "daughter", "day", "death", "dream", "earth", "face", "fame",
    "father", "fear", "fire", "fool", "fortune", "friend", "gold", "grave", "grief", "hand", "heart", "heaven",
    "hell", "honour", "hope", "husband", "joy", "justice", "king", "lady", "law", "lord", "love", "maid", "mercy",
    "moon", "morning", "mother", "music", "night", "peace", "pride", "queen", "rose", "sea", "shame", "sleep",
    "son", "soul", "spring", "star", "storm", "summer", "sun", "sword", "tears", "throne", "time", "tongue",
    "truth", "war", "wife", "wind", "winter", "wit", "world", "youth",
]  # fmt: skip
SYLLABLES = (9, 11)
SPEAKER = re.compile(r"^[A-Z][A-Z .'-]*:$")


@functools.cache
def training_lines() -> tuple[str, ...]:
    """Every spoken line of the train plays (speaker headings and bracketed directions left out)."""
    lines = []
    for text in build_shakespeare()["train"]["text"]:
        for line in text.splitlines():
            line = line.strip()
            if line and not SPEAKER.match(line) and not line.startswith(("[", "#")):
                lines.append(line)
    return tuple(lines)


@functools.cache
def labeler() -> VerseLabeler:
    """The simulated person, who knows the train plays' lines (a copy of one is not a new line)."""
    return VerseLabeler(training_lines())


@functools.cache
def lines_by_topic() -> dict[str, tuple[str, ...]]:
    """Topic -> the train plays' lines of 9-11 syllables that name it, in play order, deduplicated."""
    found: dict[str, list[str]] = {topic: [] for topic in TOPICS}
    topic_of_form = {form: topic for topic in TOPICS for form in topic_forms(topic)}
    for line in dict.fromkeys(training_lines()):
        words = words_of(line)
        topics = {topic_of_form[word] for word in words if word in topic_of_form}
        if topics and SYLLABLES[0] <= syllable_count(words) <= SYLLABLES[1]:
            for topic in topics:
                found[topic].append(line)
    return {topic: tuple(lines) for topic, lines in found.items()}


def topics_of(split: str) -> list[str]:
    return [topic for topic in TOPICS if split_of(Verse.name, topic) == split]


class Verse:
    """SFT examples are (prompt, a real line about its topic); `score` is the labeler's score of a reply, `good`
    its verdict that the line is one a person would keep (a score of at least `GOOD`).

    Not one of `deepdive.tasks.TASKS`, the families with a checkable answer: nothing here is right or wrong.
    """

    name = "verse"
    card = "verse"  # data_cards/verse.md
    GOOD = 0.6
    SAMPLES = 8  # lines sampled per held-out prompt in evaluation, at the temperature RL and the preference pairs use

    def split_key(self, example: dict) -> str:
        return example["answer"]

    def prompts(self, split: str, n: int, seed: int = 0) -> list[dict]:
        """`n` prompts of `split` (topics cycled, phrasings drawn) as examples without a reply to learn."""
        return [{**example, "messages": example["prompt"]} for example in self.examples(split, n, seed)]

    def examples(self, split: str, n: int, seed: int = 0) -> list[dict]:
        check_split(self.name, split)
        check_count(self.name, n)
        rng = random.Random(f"{self.name}:{split}:{seed}")
        phrasings = phrasings_of(self.name, PHRASINGS, split)
        topics = topics_of(split)
        examples = []
        for index in range(n):
            if index % len(topics) == 0:
                rng.shuffle(topics)
            topic = topics[index % len(topics)]
            question = rng.choice(phrasings).format(topic=topic)
            examples.append(conversation(self.name, question, rng.choice(lines_by_topic()[topic]), topic))
        return examples

    def score(self, completion: str, answer: str) -> float:
        return labeler().score(completion, answer).total

    def good(self, completion: str, answer: str) -> bool:
        return self.score(completion, answer) >= self.GOOD
