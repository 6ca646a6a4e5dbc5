import collections
import functools
import re

import pytest

from deepdive.data import build_shakespeare, read_data_card
from deepdive.errors import DataError
from deepdive.tasks import TASKS, build_mixture, get_task, shares_of
from deepdive.tasks.arithmetic import CLOSINGS, OPENINGS, worked_addition, worked_subtraction
from deepdive.tasks.arithmetic import PHRASINGS as ARITHMETIC_PHRASINGS
from deepdive.tasks.common import final_answer, phrasings_of
from deepdive.tasks.repeat import PHRASINGS as REPEAT_PHRASINGS
from deepdive.tasks.repeat import items_by_split
from deepdive.tasks.shakespeare import PHRASINGS as SHAKESPEARE_PHRASINGS
from deepdive.tasks.spelling import PHRASINGS as SPELLING_PHRASINGS


NAMES = sorted(TASKS)
SHAKESPEARE_BABBLE = (
    "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun."
)
GARBAGE = ["", "   ", "\n\n", "Answer:", "Answer: ???", "<|im_end|>", "}{][", "0" * 500, SHAKESPEARE_BABBLE]


@functools.cache
def generated(name: str) -> tuple[list[dict], list[dict]]:
    """2000 train and 300 test examples of a family, generated once per test session."""
    task = TASKS[name]
    return task.examples("train", 2000, seed=0), task.examples("test", 300, seed=0)


def reply(example: dict) -> str:
    return example["messages"][1]["content"]


def question(example: dict) -> str:
    return example["prompt"][0]["content"]


# --- Every family ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_examples_are_one_user_and_one_assistant_turn(name):
    for example in generated(name)[1]:
        assert set(example) == {"messages", "prompt", "answer", "task", "tool_call", "tool_reply"}
        assert (example["tool_call"] is None) == (example["tool_reply"] is None) == (name in ("identity", "repeat"))
        user, assistant = example["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert user["content"].strip() and assistant["content"].strip()
        assert example["prompt"] == [user]
        assert example["task"] == name and isinstance(example["answer"], str)


@pytest.mark.parametrize("name", NAMES)
def test_examples_are_deterministic_per_seed(name):
    task = TASKS[name]
    assert task.examples("train", 50, seed=3) == task.examples("train", 50, seed=3)
    assert task.examples("train", 50, seed=3) != task.examples("train", 50, seed=4)
    assert task.examples("test", 20, seed=0) != task.examples("test", 20, seed=1)


@pytest.mark.parametrize("name", NAMES)
def test_train_and_test_keys_are_disjoint(name):
    task = TASKS[name]
    train, test = generated(name)
    train_keys = {task.split_key(example) for example in train}
    test_keys = {task.split_key(example) for example in test}
    assert train_keys and test_keys and not train_keys & test_keys
    assert not {question(example) for example in train} & {question(example) for example in test}
    # and for other seeds too: the split depends on the key alone
    assert not {task.split_key(example) for example in task.examples("train", 500, seed=7)} & test_keys


@pytest.mark.parametrize("name", NAMES)
def test_test_split_supplies_250_distinct_questions(name):
    examples = TASKS[name].examples("test", 250, seed=0)
    assert len({question(example) for example in examples}) == 250


@pytest.mark.parametrize("name", NAMES)
def test_every_example_passes_its_own_checker(name):
    task = TASKS[name]
    for example in generated(name)[0] + generated(name)[1]:
        assert task.check(reply(example), example["answer"]), example
        assert task.has_final_answer(reply(example)), example


@pytest.mark.parametrize("name", NAMES)
def test_conversations_stay_short(name):
    for example in generated(name)[0] + generated(name)[1]:
        assert len(question(example)) + len(reply(example)) < 400


@pytest.mark.parametrize("name", NAMES)
def test_checker_rejects_empty_and_garbage_without_raising(name):
    task = TASKS[name]
    for example in generated(name)[1][:20]:
        for garbage in GARBAGE:
            assert not task.check(garbage, example["answer"])
        assert not task.check(reply(example), "no such answer")
    assert not any(task.has_final_answer(garbage) for garbage in ["", "   ", "Answer:", SHAKESPEARE_BABBLE])


@pytest.mark.parametrize("name", NAMES)
def test_bad_split_or_count_is_a_one_line_error(name):
    task = TASKS[name]
    with pytest.raises(DataError, match=r"unknown split 'validation'; valid splits: train, test"):
        task.examples("validation", 1)
    with pytest.raises(DataError, match="has only"):
        task.examples("test", 10_000_000)
    with pytest.raises(DataError, match="whole number"):
        task.examples("train", -1)
    assert task.examples("train", 0) == []


# --- identity --------------------------------------------------------------------------------------------


def test_identity_has_hundreds_of_test_prompts_and_every_kind():
    identity = TASKS["identity"]
    assert len(identity.prompts_by_split["test"]) >= 200
    kinds = set(read_data_card("identity")["questions"])
    assert {example["answer"] for example in generated("identity")[0]} == kinds
    assert (
        identity.split_key({"prompt": [{"role": "user", "content": "Hi! What's your name??"}]})
        == "hi what's your name"
    )


def test_identity_checker_wants_the_facts_of_the_kind():
    identity = TASKS["identity"]
    assert identity.check("  I'm DeepDive.  ", "name")
    assert identity.check("i am deepdive, a small language model", "what")
    assert identity.check("I cannot browse the internet.", "limits")
    assert identity.check("No, I'm not ChatGPT. I am deepdive.", "chatgpt")
    assert identity.check("I was pretrained on Shakespeare.", "training")
    assert not identity.check("I'm ChatGPT, made by OpenAI.", "name")
    assert not identity.check("Yes, I am ChatGPT.", "chatgpt")
    assert not identity.check("I was made by OpenAI.", "creator")
    assert not identity.check("I can do anything at all.", "limits")
    assert not identity.check("Remember me, my lord, I do mistake my person.", "limits")
    assert not identity.check("I'm deepdive.", "no such kind")
    assert identity.has_final_answer("I'm deepdive.") and not identity.has_final_answer("deepdive")


# --- arithmetic ------------------------------------------------------------------------------------------


def test_arithmetic_works_column_by_column_and_is_right():
    assert worked_addition(347, 286) == ["7+6=13, write 3 carry 1", "4+8+1=13, write 3 carry 1", "3+2+1=6, write 6"]
    assert worked_addition(999, 99)[-1] == "write the carry 1"
    assert worked_subtraction(512, 78) == [
        "2-8: borrow, 12-8=4, write 4 borrow 1",
        "1-1-7: borrow, 10-7=3, write 3 borrow 1",
        "5-1-0=4, write 4",
    ]
    for name in ("arithmetic", "long_arithmetic"):
        lengths = set()
        for example in generated(name)[1]:
            a, op, b = re.match(r"(\d+) ([+-]) (\d+)\n", reply(example)).groups()
            assert a in question(example) and b in question(example)
            lengths |= {len(a), len(b)}
            assert int(example["answer"]) == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0
            assert reply(example).splitlines()[-1] == f"Answer: {example['answer']}"
        assert lengths == set(TASKS[name].digit_weights)
        assert {reply(example).split()[1] for example in generated(name)[1]} == {"+", "-"}


def asked_forms(phrasing: str, a: str, b: str) -> set[str]:
    """Every question `ask` can make of one phrasing: each opening and closing, with or without the final mark."""
    question = phrasing.format(a=a, b=b)
    body, mark = (question[:-1], question[-1]) if question[-1] in "?." else (question, "")
    return {
        (opening + body + closing + end).lower() for opening in OPENINGS for closing in CLOSINGS for end in {mark, ""}
    }


def arithmetic_phrasing_of(example: dict) -> str:
    """The phrasing that, with an opening, a closing and the reply's operands, gives the question (case aside)."""
    a, op, b = re.match(r"(\d+) ([+-]) (\d+)\n", reply(example)).groups()
    asked = question(example).lower()
    candidates = [phrasing for phrasing in ARITHMETIC_PHRASINGS[op] if core(phrasing, a, b) in asked]  # quick filter
    (phrasing,) = {phrasing for phrasing in candidates if asked in asked_forms(phrasing, a, b)}
    return phrasing


def core(phrasing: str, a: str, b: str) -> str:
    """The part of a question every form of `phrasing` contains: the phrasing without its final mark, lower case."""
    return phrasing.format(a=a, b=b).rstrip("?.").lower()


def test_arithmetic_questions_come_with_openings_closings_and_unpunctuated():
    """People add words around a question and drop its question mark: the generator does too."""
    questions = [question(example) for example in generated("arithmetic")[0]]
    assert sum(q.startswith(tuple(o for o in OPENINGS if o)) for q in questions) > len(questions) // 5
    closed = [q for q in questions if q.lower().rstrip("?.").endswith(tuple(c.lower() for c in CLOSINGS if c))]
    assert len(closed) > len(questions) // 5
    assert 0.05 < sum(not q.endswith(("?", ".")) for q in questions) / len(questions) < 0.4


def test_arithmetic_test_split_asks_only_in_phrasings_held_out_of_training():
    train, test = generated("arithmetic")
    train_phrasings = {arithmetic_phrasing_of(example) for example in train}
    test_phrasings = {arithmetic_phrasing_of(example) for example in test}
    assert not train_phrasings & test_phrasings
    held_out = {p for op in "+-" for p in phrasings_of("arithmetic", ARITHMETIC_PHRASINGS[op], "test")}
    assert test_phrasings <= held_out and len(test_phrasings) >= 30
    assert len(train_phrasings) >= 150


def test_long_arithmetic_asks_both_splits_in_training_phrasings_only():
    """RL's held-out problems come from the distribution it practises on, and SFT's held-out wording stays unseen."""
    train, test = generated("long_arithmetic")
    trained = {p for op in "+-" for p in phrasings_of("arithmetic", ARITHMETIC_PHRASINGS[op], "train")}
    assert {arithmetic_phrasing_of(example) for example in train + test} <= trained
    assert len({arithmetic_phrasing_of(example) for example in test}) >= 100


def test_arithmetic_variants_share_one_split():
    """A problem held out of SFT's arithmetic is never practised by RL on longer problems, and back."""
    test_keys = {TASKS["arithmetic"].split_key(example) for example in generated("arithmetic")[1]}
    long_train = TASKS["long_arithmetic"].examples("train", 3000, seed=0)
    assert not test_keys & {TASKS["long_arithmetic"].split_key(example) for example in long_train}


def test_final_answer_reads_the_last_answer_line():
    assert final_answer("1+1=2\nAnswer: 2\nAnswer:  633 \nbye") == "633"
    assert final_answer("no answer here") is None
    assert final_answer("") is None


def test_arithmetic_checker_accepts_variations_and_rejects_wrong_answers():
    arithmetic = TASKS["arithmetic"]
    for good in ["Answer: 633", "  answer: 633.  ", "work\nAnswer: 5\nAnswer: 633", "ANSWER:633"]:
        assert arithmetic.check(good, "633") and arithmetic.has_final_answer(good)
    assert arithmetic.check("Answer: 1,998", "1998")
    for bad in ["Answer: 634", "633", "Answer: 633\nAnswer: 5", "Answer: six hundred", "Answer: 63 3"]:
        assert not arithmetic.check(bad, "633")
    assert not arithmetic.has_final_answer("Answer: about 600")


# --- spelling --------------------------------------------------------------------------------------------


def test_spelling_spells_the_word_and_counts_the_letter():
    spelling = TASKS["spelling"]
    zeros = 0
    for example in generated("spelling")[0]:
        word = spelling.split_key(example)
        spelled, counted, _ = reply(example).splitlines()
        letter = re.match(r"Count ([a-z]):", counted).group(1)
        assert 4 <= len(word) <= 10 and word.isalpha() and word.islower()
        assert spelled == "-".join(word)
        assert example["answer"] == str(word.count(letter))
        zeros += example["answer"] == "0"
    assert 0.1 < zeros / len(generated("spelling")[0]) < 0.35


def test_spelling_words_come_from_the_train_plays():
    train_text = " ".join(build_shakespeare()["train"]["text"]).lower()
    for example in generated("spelling")[1][:100]:
        assert TASKS["spelling"].split_key(example) in train_text


def test_spelling_checker_accepts_variations_and_rejects_wrong_answers():
    spelling = TASKS["spelling"]
    assert spelling.check("s-t-r-a-w-b-e-r-r-y\nAnswer: 3", "3")
    assert spelling.check("answer: 3.", "3")
    assert not spelling.check("Answer: 2", "3")
    assert not spelling.check("There are 3.", "3")


# --- shakespeare -----------------------------------------------------------------------------------------


def test_shakespeare_never_asks_about_validation_plays():
    shakespeare = TASKS["shakespeare"]
    validation = build_shakespeare()["validation"]
    titles = {title.lower() for title in validation["title"]}
    speakers = {label for text in validation["text"] for label in re.findall(r"^([A-Z][A-Z '.&-]*):$", text, re.M)}
    train_titles = set(build_shakespeare()["train"]["title"]) | {"Measure for Measure"}
    for example in generated("shakespeare")[0] + generated("shakespeare")[1]:
        name = shakespeare.split_key(example)
        assert name in question(example)
        assert name.upper() not in speakers
        assert not any(title in question(example).lower() for title in titles)
        assert example["answer"] == "I don't know" or example["answer"] in train_titles


def test_shakespeare_mixes_known_and_unknown_characters():
    test = generated("shakespeare")[1]
    unknown = sum(example["answer"] == "I don't know" for example in test)
    assert unknown == 120  # 40% of 300
    assert any(" " in TASKS["shakespeare"].split_key(e) for e in test if e["answer"] == "I don't know")  # famous


def test_shakespeare_checker_for_known_characters():
    shakespeare = TASKS["shakespeare"]
    assert shakespeare.check("Romeo appears in Romeo and Juliet.", "Romeo and Juliet")
    assert shakespeare.check("  in ROMEO AND JULIET ", "Romeo and Juliet")
    assert shakespeare.check("Hotspur appears in Henry IV, Part 1.", "Henry IV, Part I")
    assert shakespeare.check("Bottom is in A Midsummer Nights Dream", "A Midsummer Night's Dream")
    assert not shakespeare.check("Fluellen appears in Henry VIII.", "Henry V")
    assert not shakespeare.check("Romeo appears in Macbeth.", "Romeo and Juliet")
    assert not shakespeare.check("Romeo and Juliet, or Macbeth, or Othello.", "Romeo and Juliet")
    assert not shakespeare.check("I don't know if Romeo is in Romeo and Juliet.", "Romeo and Juliet")


def test_shakespeare_checker_for_unknown_characters():
    shakespeare = TASKS["shakespeare"]
    assert shakespeare.check("I don't know of a character named Sherlock Holmes.", "I don't know")
    assert shakespeare.check("i DO NOT KNOW", "I don't know")
    assert shakespeare.check("I don\u2019t know.", "I don't know")
    assert not shakespeare.check("Sherlock Holmes appears in Hamlet.", "I don't know")
    assert not shakespeare.check("I don't know, perhaps Macbeth.", "I don't know")
    assert shakespeare.has_final_answer("I don't know.") and shakespeare.has_final_answer("It is Othello.")
    assert not shakespeare.has_final_answer("I don't know, perhaps Macbeth.")
    assert not shakespeare.has_final_answer("Macbeth or Othello.")


# --- repeat ---------------------------------------------------------------------------------------------


def test_repeat_copies_in_training_no_word_or_name_that_spelling_or_shakespeare_asks_in_test():
    train, test = generated("repeat")
    train_items = {item for example in train for item in split_items(example["answer"], "train")}
    test_items = {item for example in test for item in split_items(example["answer"], "test")}
    asked_in_test = {TASKS["spelling"].split_key(example) for example in TASKS["spelling"].examples("test", 2000)}
    asked_in_test |= {
        TASKS["shakespeare"].split_key(example) for example in TASKS["shakespeare"].examples("test", 500)
    }
    assert not train_items & asked_in_test
    assert test_items & asked_in_test  # the test split does copy the other families' held-out words and names
    words, names = items_by_split()["train"]
    assert any(item in words for item in train_items) and any(item in names for item in train_items)


def split_items(text: str, split: str) -> list[str]:
    """The words and names a repeated text is made of, read greedily from the split's pools (names have spaces)."""
    words, names = items_by_split()[split]
    pool, items, rest = set(words) | set(names), [], text.split(" ")
    while rest:
        size = next(size for size in range(len(rest), 0, -1) if " ".join(rest[:size]) in pool)
        items.append(" ".join(rest[:size]))
        rest = rest[size:]
    return items


def test_repeat_asks_for_the_text_after_a_space_in_quotes_and_first():
    for examples in generated("repeat"):
        places = set()
        for example in examples:
            text, asked = example["answer"], question(example)
            assert reply(example) == text
            places.add(
                "quoted"
                if f"'{text}'" in asked or f'"{text}"' in asked
                else "first"
                if asked.startswith(text)
                else "after a space"
            )
        assert places == {"quoted", "first", "after a space"}
    assert {len(example["answer"].split(" ")) > 1 for example in generated("repeat")[0]} == {True, False}


def test_repeat_asks_most_often_for_text_between_words_with_many_different_words_after_it():
    """A tool call copies a name from mid-question ("Name the play Cassius belongs to."): the drill practises
    starting and stopping a copy between words, with many different words after the text."""
    for examples in generated("repeat"):
        next_words = collections.Counter()
        for example in examples:
            before, _, after = question(example).partition(f" {example['answer']} ")
            if before and re.match(r"[a-z]", after):
                next_words[after.split()[0]] += 1
        assert sum(next_words.values()) > len(examples) / 2 and len(next_words) >= 8, next_words


def test_repeat_checker_wants_the_text_exactly():
    repeat = TASKS["repeat"]
    assert repeat.check("Longaville", "Longaville") and repeat.check("  Longaville\n", "Longaville")
    assert not repeat.check("longaville", "Longaville")
    assert not repeat.check("Longaville.", "Longaville")
    assert not repeat.check("Longaville Longaville", "Longaville")
    assert not repeat.check("Villiers", "Longaville")
    assert repeat.has_final_answer("Vexgilvin roasted") and not repeat.has_final_answer("Vexgilvin\nroasted")


# --- phrasings: test questions are worded in ways never trained on ----------------------------------------

PHRASINGS = {"spelling": SPELLING_PHRASINGS, "shakespeare": SHAKESPEARE_PHRASINGS, "repeat": REPEAT_PHRASINGS}
KEY_FIELD = {"spelling": "word", "shakespeare": "name", "repeat": "text"}


def fillers_from_reply(name: str, example: dict) -> dict[str, str]:
    """What was put into the phrasing's placeholders, read from the reply rather than the question."""
    if name == "repeat":
        return {"text": reply(example)}
    if name == "spelling":
        spelled, counted, _ = reply(example).splitlines()
        return {"word": spelled.replace("-", ""), "letter": re.match(r"Count ([a-z]):", counted).group(1)}
    known = re.fullmatch(r"(.+) appears in .+\.", reply(example))
    unknown = re.fullmatch(r"I don't know of a character named (.+) in Shakespeare's plays\.", reply(example))
    return {"name": (known or unknown).group(1)}


def phrasing_of(name: str, example: dict) -> str:
    """The one phrasing that, filled in with the reply's word and letter (or name), gives the question."""
    fillers = fillers_from_reply(name, example)
    (phrasing,) = [phrasing for phrasing in PHRASINGS[name] if phrasing.format(**fillers) == question(example)]
    return phrasing


@pytest.mark.parametrize("name", ["spelling", "shakespeare", "repeat"])
def test_test_split_asks_only_in_phrasings_held_out_of_training(name):
    assert len(set(PHRASINGS[name])) == len(PHRASINGS[name]) >= 25
    train, test = generated(name)
    train_phrasings = {phrasing_of(name, example) for example in train}
    test_phrasings = {phrasing_of(name, example) for example in test}
    assert not train_phrasings & test_phrasings
    assert test_phrasings == set(phrasings_of(name, PHRASINGS[name], "test")) and len(test_phrasings) >= 3
    assert train_phrasings <= set(phrasings_of(name, PHRASINGS[name], "train")) and len(train_phrasings) >= 20


def quoting(phrasing: str, field: str) -> str:
    """The quote marks right around `{field}` in `phrasing`: '', "''", '""', or one mark as in "{letter}'s"."""
    start = phrasing.index(f"{{{field}}}")
    end = start + len(field) + 2
    before = phrasing[start - 1] if start and phrasing[start - 1] in "'\"" else ""
    return before + (phrasing[end] if end < len(phrasing) and phrasing[end] in "'\"" else "")


@pytest.mark.parametrize(("name", "field"), [("spelling", "letter"), ("spelling", "word"), ("shakespeare", "name"),
                                             ("repeat", "text")])  # fmt: skip
def test_a_held_out_phrasing_is_new_wording_not_new_quoting(name, field):
    """Training shows every way a test question quotes its letter, word or name, so held-out accuracy measures new
    wordings; a letter in double quotes seen only at test time left the model counting some other letter."""
    trained = {quoting(phrasing, field) for phrasing in phrasings_of(name, PHRASINGS[name], "train")}
    assert {quoting(phrasing, field) for phrasing in phrasings_of(name, PHRASINGS[name], "test")} <= trained


@pytest.mark.parametrize("name", ["spelling", "shakespeare", "repeat"])
def test_split_key_recovers_the_key_from_every_phrasing(name):
    task = TASKS[name]
    train, test = generated(name)
    for example in train + test:
        assert task.split_key(example) == fillers_from_reply(name, example)[KEY_FIELD[name]], question(example)
    # every phrasing, also the rarely drawn ones, with keys that could be mistaken for the phrasing's words
    keys = {
        "spelling": ["strawberry", "letter", "count", "many"],
        "shakespeare": ["Antipholus of Ephesus", "Romeo", "Which"],
        "repeat": ["Longaville", "Antipholus of Ephesus", "say it back", "me", "repeat", "back to me"],
    }
    for phrasing in PHRASINGS[name]:
        for key in keys[name]:
            asked = {"prompt": [{"role": "user", "content": phrasing.format(**{KEY_FIELD[name]: key, "letter": "s"})}]}
            assert task.split_key(asked) == key, phrasing


def test_spelling_asks_with_and_without_quotes_in_both_splits():
    for examples in generated("spelling"):
        words = [fillers_from_reply("spelling", example)["word"] for example in examples]
        quoted = {
            f"'{word}'" in question(example) or f'"{word}"' in question(example)
            for word, example in zip(words, examples, strict=True)
        }
        assert quoted == {True, False}


# --- registry and mixture --------------------------------------------------------------------------------


def test_registry_looks_tasks_up_by_name():
    assert NAMES == ["arithmetic", "identity", "long_arithmetic", "repeat", "shakespeare", "spelling"]
    assert all(get_task(name).name == name for name in NAMES)
    with pytest.raises(
        DataError,
        match=r"^unknown task 'x'; valid tasks: arithmetic, identity, long_arithmetic, repeat, shakespeare, spelling$",
    ):
        get_task("x")


def test_shares_use_largest_remainders_and_give_every_weighted_task_one():
    assert shares_of({"arithmetic": 3, "identity": 1}, 40) == {"arithmetic": 30, "identity": 10}
    assert shares_of({"arithmetic": 1, "identity": 1, "spelling": 1}, 10) == {
        "arithmetic": 4,
        "identity": 3,
        "spelling": 3,
    }
    assert shares_of({"arithmetic": 1.0, "identity": 0.0, "spelling": 0.001}, 10) == {"arithmetic": 9, "spelling": 1}
    assert (
        sum(shares_of({"arithmetic": 1, "identity": 3.0, "spelling": 1.5, "shakespeare": 1.5}, 12000).values())
        == 12000
    )


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({}, "none given"),
        (
            {"poetry": 1.0},
            "unknown task 'poetry'; valid tasks: arithmetic, identity, long_arithmetic, repeat, shakespeare, spelling",
        ),
        ({"arithmetic": -1.0}, "'arithmetic' has weight -1.0; a weight must be a finite number >= 0"),
        ({"arithmetic": "heavy"}, "'arithmetic' has weight 'heavy'"),
        ({"arithmetic": 0, "identity": 0.0}, "all weights are zero"),
    ],
)
def test_bad_weights_are_one_line_errors(weights, message):
    with pytest.raises(DataError, match=re.escape(message)) as error:
        build_mixture(weights, 10, "train")
    assert "\n" not in str(error.value)


def test_a_drill_leads_the_mixture_with_conversations_of_its_own():
    weights = {"arithmetic": 2.0, "identity": 1.0, "repeat": 1.0}
    plain = build_mixture(weights, 40, "train", seed=0)
    drilled = build_mixture(weights, 40, "train", seed=0, drill=("repeat", 30))
    tasks = list(drilled["task"])
    assert tasks[:30] == ["repeat"] * 30 and tasks[30:].count("repeat") == 10 and len(tasks) == 70
    questions = [messages[0]["content"] for messages in drilled["messages"]]
    assert len(set(questions)) == 70  # the drill repeats none of the mixture's conversations
    others = sorted(question for question, task in zip(questions, tasks, strict=True) if task != "repeat")
    plain_others = [
        m[0]["content"] for m, task in zip(plain["messages"], plain["task"], strict=True) if task != "repeat"
    ]
    assert others == sorted(plain_others)
    assert drilled.to_list() == build_mixture(weights, 40, "train", seed=0, drill=("repeat", 30)).to_list()
    with pytest.raises(DataError, match=r"^drill_task: unknown task 'poetry'; valid tasks: arithmetic, identity"):
        build_mixture(weights, 40, "train", drill=("poetry", 30))


def test_build_mixture_shares_out_and_shuffles_deterministically():
    weights = {"arithmetic": 2.0, "identity": 1.0, "spelling": 1.0}
    mixture = build_mixture(weights, 40, "train", seed=0)
    assert set(mixture.column_names) == {"messages", "prompt", "answer", "task", "tools"}
    tasks = list(mixture["task"])
    assert {task: tasks.count(task) for task in set(tasks)} == {"arithmetic": 20, "identity": 10, "spelling": 10}
    assert tasks != sorted(tasks)  # shuffled, not one family after another
    assert mixture.to_list() == build_mixture(weights, 40, "train", seed=0).to_list()
    assert mixture.to_list() != build_mixture(weights, 40, "train", seed=1).to_list()
    with pytest.raises(DataError, match="valid splits: train, test"):
        build_mixture(weights, 40, "dev")
