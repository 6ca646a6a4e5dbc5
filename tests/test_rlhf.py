"""RLHF's pieces: the simulated labeler (what a person would prefer in a line of verse), the verse task, the SFT pass
that teaches it, and the preference pairs ranked from the model's own lines."""

import importlib
import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, train_micro_in_process
from safetensors.torch import load_file

from deepdive import preferences
from deepdive.errors import DataError
from deepdive.labeler import VerseLabeler, meter_of, syllable_count, words_of
from deepdive.tasks import build_mixture
from deepdive.tasks.verse import SYLLABLES, TOPICS, Verse, labeler, lines_by_topic, topics_of, training_lines


VERSE = Verse()


# --- The simulated labeler ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "better, worse",
    [
        ("The silver moon doth climb the quiet sky", "The moon is big and it is in the sky at night"),  # meter
        ("The silver moon doth climb the quiet sky", "The silver sun doth climb the quiet sky"),  # on topic
        ("The pale moon rises over silent hills", "Xqzt blorf the moon gralk vrenn tosk"),  # real words
        ("The pale moon rises over silent hills", "moon moon moon moon moon moon moon moon moon moon"),  # repetition
        ("And look'd upon the moon with weeping eyes", "The moon"),  # length; elisions are words
    ],
)
def test_the_labeler_prefers_what_a_person_would(better, worse):
    judge = VerseLabeler()
    assert judge.score(better, "moon").total > judge.score(worse, "moon").total
    assert judge.rank([worse, better], "moon") == [1, 0]


def test_pentameter_scans_and_prose_does_not():
    assert meter_of(words_of("The silver moon doth climb the quiet sky")) == (1.0, 10)
    assert meter_of(words_of("And look'd upon the moon with weeping eyes")) == (1.0, 10)
    assert meter_of(words_of("Happy, silver, golden, bitter, lonely")) == (0.0, 10)  # trochees: every beat missed
    assert meter_of(words_of("And then the silver moon")) == (pytest.approx(0.2), 6)  # in step, 4 syllables short


def test_a_copy_of_the_plays_an_empty_reply_and_two_lines_score_nothing():
    line = "Chanting faint hymns to the cold fruitless moon."
    judge = VerseLabeler([line])
    assert judge.score(line.upper().replace(".", "!"), "moon").copied and judge.score(line, "moon").total == 0
    assert VerseLabeler().score(line, "moon").total > 0.5  # the same line is good to a labeler who never read it
    for reply in ("", "   ", "!!!", "The silver moon doth climb\nthe quiet sky", None):
        assert judge.score(reply, "moon").total == 0


def test_every_score_lies_between_0_and_1():
    for lines in list(lines_by_topic().values())[:10]:
        for line in lines[:20]:
            score = VerseLabeler().score(line, "love")
            assert 0 <= score.total <= 1 and 0 <= score.meter <= 1 and 0 <= score.real_words <= 1


# --- The verse task -----------------------------------------------------------------------------------------------


def test_held_out_topics_and_phrasings_are_never_trained_on():
    train, test = set(topics_of("train")), set(topics_of("test"))
    assert train and test and not train & test and train | test == set(TOPICS)
    examples = VERSE.examples("train", 2000, seed=0)
    held_out = VERSE.examples("test", 300, seed=0)
    assert {VERSE.split_key(example) for example in examples} == train
    assert {VERSE.split_key(example) for example in held_out} == test
    assert not {e["prompt"][0]["content"] for e in examples} & {e["prompt"][0]["content"] for e in held_out}


def test_sft_replies_are_real_lines_of_the_plays_that_name_the_topic():
    plays = set(training_lines())
    for example in VERSE.examples("train", 500, seed=1):
        user, assistant = example["messages"]
        line, topic = assistant["content"], example["answer"]
        assert line in plays and topic in user["content"]
        assert labeler().score(line, topic).on_topic and labeler().score(line, topic).copied  # a quote, not a new line
        assert SYLLABLES[0] <= syllable_count(words_of(line)) <= SYLLABLES[1]
    assert VERSE.examples("train", 50, seed=3) == VERSE.examples("train", 50, seed=3)
    assert VERSE.examples("train", 50, seed=3) != VERSE.examples("train", 50, seed=4)
    with pytest.raises(DataError, match="whole number"):
        VERSE.examples("train", -1)


def test_an_sft_pass_with_verse_trains_on_it_and_scores_held_out_topics(micro_sft, tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "recipes"))
    sft, built = importlib.import_module("sft"), []
    monkeypatch.setattr(
        sft, "build_mixture", lambda *args, **kwargs: built.append(build_mixture(*args, **kwargs)) or built[0]
    )
    train_micro_in_process(
        "sft", micro_sft, tmp_path / "verse", "--num_verse_examples", "16", "--num_train_examples", "16",
        "--max_steps", "3", monkeypatch=monkeypatch,
    )  # fmt: skip
    assert [row["task"] for row in built[0]].count("verse") == 16 and len(built[0]) == 32
    before, after = load_file(micro_sft / "model.safetensors"), load_file(tmp_path / "verse" / "model.safetensors")
    assert [name for name in before if ".layers." in name and torch.equal(before[name], after[name])] == []
    metrics = json.loads((tmp_path / "verse" / "metrics.json").read_text())
    assert metrics["verse_prompts"] == 4  # num_test_examples of the micro recipe
    assert 0 <= metrics["verse_labeler_score"] <= 1 and 0 <= metrics["verse_good"] <= 1
    assert "[verse](data_cards/verse.md)" in (tmp_path / "verse" / "README.md").read_text()  # its model card


# --- Preference pairs ---------------------------------------------------------------------------------------------


def test_pairs_are_the_labelers_best_and_worst_line_when_it_tells_them_apart(micro_sft, tmp_path):
    summary = preferences.preferences_folder(
        str(micro_sft), str(tmp_path / "prefs"), num_prompts=20, num_candidates=4, margin=0.05
    )
    records = [json.loads(line) for line in (tmp_path / "prefs" / preferences.PAIRS_FILE).read_text().splitlines()]
    assert summary["pairs"] == len(records) > 0 and summary["prompts"] == 20
    for record in records:
        scores = [candidate["score"] for candidate in record["candidates"]]
        assert len(scores) == 4 and record["chosen_score"] == max(scores) and record["rejected_score"] == min(scores)
        assert record["chosen_score"] - record["rejected_score"] >= 0.05
        assert labeler().score(record["chosen"][0]["content"], record["topic"]).total == record["chosen_score"]
        assert (record["split"] == "test") == (record["topic"] in topics_of("test"))
    train = preferences.read_pairs(tmp_path / "prefs", "train")
    assert train.column_names == ["prompt", "chosen", "rejected"]
    assert train[0]["prompt"][0]["role"] == "user" and train[0]["chosen"][0]["role"] == "assistant"
    card = (tmp_path / "prefs" / "README.md").read_text()
    assert card.startswith("---\npretty_name: deepdive verse preferences") and "**Rule:**" in card
    assert f"**Counts:** {summary['pairs']} pairs" in card


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"num_prompts": 0}, r"--num_prompts: 0; a whole number >= 1"),
        ({"num_candidates": 1}, r"--num_candidates: 1; a whole number >= 2"),
        ({"temperature": 0.0}, r"--temperature: 0.0; sampling candidates needs a temperature > 0"),
        ({"margin": 1.0}, r"--margin: 1.0; the labeler's score gap that makes a pair, in \[0, 1\)"),
    ],
)
def test_bad_preference_settings_are_one_line_errors(arguments, message):
    with pytest.raises(DataError, match=message):
        preferences.preference_pairs(None, None, **arguments)


def test_missing_or_broken_pairs_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match=f"prefs_dir: {tmp_path} holds no pairs.jsonl"):
        preferences.read_pairs(tmp_path, "train")
    (tmp_path / preferences.PAIRS_FILE).write_text('{"prompt": []}\nnot json\n')
    with pytest.raises(DataError, match="line 1 lacks prompt, chosen, rejected or split"):
        preferences.read_pairs(tmp_path, "train")
    (tmp_path / preferences.PAIRS_FILE).write_text("not json\n")
    with pytest.raises(DataError, match="line 1 is not JSON"):
        preferences.read_pairs(tmp_path, "train")


def test_ranking_a_base_models_lines_is_a_one_line_error(micro_base, tmp_path):
    command = [sys.executable, "-m", "deepdive.cli", "prefs", "--model", str(micro_base), "--output", str(tmp_path)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert finished.returncode != 0
    assert finished.stderr.strip().splitlines()[-1] == (
        f"error: --model: {micro_base} has no chat template; sample candidates from an SFT model"
    )
    assert not (tmp_path / preferences.PAIRS_FILE).exists()
