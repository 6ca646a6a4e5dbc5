"""Hallucination: the three-way split by character, the knowledge evaluation's outcomes, `deepdive probe` and its
rule, and the second SFT pass that teaches the model to decline what it does not know."""

import importlib
import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, run_micro, train_micro_in_process
from safetensors.torch import load_file
from test_seeds import make, write_run

from deepdive import evaluation, probe
from deepdive.errors import DataError
from deepdive.generation import Completion
from deepdive.report import write_report
from deepdive.seeds import markdown, seeds_table
from deepdive.tasks import TASKS, build_mixture
from deepdive.tasks.common import phrasings_of
from deepdive.tasks.shakespeare import DONT_KNOW, PHRASINGS, SECOND_PASS_PHRASINGS, corpus_characters, says_dont_know


SHAKESPEARE = TASKS["shakespeare"]


def names_of(split: str) -> dict[str, set[str]]:
    return {kind: {name for name, _ in questions} for kind, questions in SHAKESPEARE.questions(split).items()}


# --- Who is asked where ---------------------------------------------------------------------------------------


def test_probed_characters_are_neither_trained_on_nor_held_out_nor_another_label_of_one():
    characters = corpus_characters()
    probed = set(characters.minor)
    train, test = names_of("train"), names_of("test")
    asked = train["known"] | test["known"] | test["unseen"]
    assert len(probed) >= 80 and not probed & asked
    assert not {word for name in probed for word in name.split()} & {word for name in asked for word in name.split()}
    assert {name for name, _ in SHAKESPEARE.probe_questions()} == probed
    asked_in_sft = {SHAKESPEARE.split_key(example) for example in SHAKESPEARE.examples("train", 3000, seed=0)}
    assert asked_in_sft and not asked_in_sft & probed
    assert all(SHAKESPEARE.play_of(name) == characters.minor[name] for name in probed)


def test_held_out_questions_include_real_characters_pretraining_never_showed():
    characters = corpus_characters()
    unseen = names_of("test")["unseen"]
    assert unseen == set(characters.unseen) and len(unseen) >= 20
    assert {characters.unseen[name] for name in unseen} == {
        "Hamlet", "The Tempest", "Much Ado About Nothing", "Richard II"
    }  # fmt: skip
    assert not unseen & (set(characters.known) | set(characters.minor))
    assert SHAKESPEARE.play_of("Caliban") == "The Tempest" and SHAKESPEARE.play_of("Frodo Baggins") == DONT_KNOW


def test_a_reply_is_correct_hallucinated_or_declined():
    play = "Romeo and Juliet"
    assert SHAKESPEARE.outcome("Romeo appears in Romeo and Juliet.", play) == "correct"
    assert SHAKESPEARE.outcome("Romeo appears in Macbeth.", play) == "hallucinated"
    assert SHAKESPEARE.outcome("I don't know which play Romeo is in.", play) == "declined"
    assert SHAKESPEARE.outcome("I don't know, perhaps Macbeth.", play) == "hallucinated"  # a guess is an answer
    assert SHAKESPEARE.outcome("", play) == "hallucinated"
    assert SHAKESPEARE.outcome("I do not know of Frodo Baggins.", DONT_KNOW) == "declined"
    assert SHAKESPEARE.outcome("Frodo Baggins appears in Hamlet.", DONT_KNOW) == "hallucinated"


# --- The knowledge evaluation ---------------------------------------------------------------------------------


def test_the_knowledge_evaluation_counts_each_outcome_per_group(monkeypatch):
    """Replies stood in for: seen characters get their own play, unseen ones a wrong play, made-up names half a
    refusal and half a play; each group's shares must say exactly that."""

    def canned_replies(model, tokenizer, prompts, decoding, batch_size=32, progress=False):
        replies = []
        for index, prompt in enumerate(prompts):
            name = SHAKESPEARE.split_key({"prompt": prompt})
            play = SHAKESPEARE.play_of(name)
            if name in corpus_characters().known:
                replies.append(f"{name} appears in {play}.")
            elif name in corpus_characters().unseen:
                replies.append(f"{name} appears in {'Macbeth' if play != 'Macbeth' else 'Othello'}.")
            else:
                replies.append("I don't know." if index % 2 == 0 else f"{name} appears in Othello.")
        return [Completion(reply, True) for reply in replies]

    monkeypatch.setattr(evaluation, "generate", canned_replies)
    metrics = evaluation.evaluate_knowledge(None, None, n_per_group=30)
    assert metrics["knowledge_seen_questions"] == metrics["knowledge_unseen_questions"] == 30
    assert metrics["knowledge_seen_correct"] == 1.0 and metrics["knowledge_unseen_hallucinated"] == 1.0
    assert metrics["knowledge_real_questions"] == 60
    assert (metrics["knowledge_real_correct"], metrics["knowledge_real_hallucinated"]) == (0.5, 0.5)
    assert metrics["knowledge_made_up_declined"] == metrics["knowledge_made_up_hallucinated"] == 0.5
    assert metrics["knowledge_made_up_correct"] == 0.0


# --- The probe and its rule -------------------------------------------------------------------------------------


def test_a_character_is_known_when_enough_of_its_answers_name_its_play(monkeypatch):
    """Greedy replies right for every character, sampled ones right for the first of each prompt's samples only:
    1 + 1 of 1 + 3 answers per question are right (50%), so threshold 0.5 knows every character and 0.6 none."""

    def canned_replies(model, tokenizer, prompts, decoding, batch_size=32, progress=False):
        replies = []
        for prompt in prompts:
            name = SHAKESPEARE.split_key({"prompt": prompt})
            for sample in range(decoding.num_samples):
                right = decoding.temperature == 0 or sample == 0
                replies.append(f"{name} appears in {SHAKESPEARE.play_of(name) if right else 'Othello'}.")
        return [Completion(reply, True) for reply in replies]

    monkeypatch.setattr(probe, "generate", canned_replies)
    records = probe.probe(None, None, phrasings_per_name=2, num_samples=3, threshold=0.5)
    assert {record["name"] for record in records} == set(corpus_characters().minor)
    for record in records:
        assert (record["answers"], record["correct"]) == (8, 4 if record["play"] != "Othello" else 8)
        assert record["known"] and record["reply"] == f"{record['name']} appears in {record['play']}."
    stricter = probe.probe(None, None, phrasings_per_name=2, num_samples=3, threshold=0.6)
    assert {record["name"] for record in stricter if record["known"]} == {
        record["name"] for record in records if record["play"] == "Othello"
    }


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"threshold": 0.0}, "--threshold: 0.0"),
        ({"num_samples": -1}, "--num_samples: -1"),
        ({"temperature": 0.0}, "--temperature: 0.0"),
        ({"phrasings_per_name": 0}, "--phrasings: 0"),
    ],
)
def test_bad_probe_settings_are_one_line_errors(arguments, message):
    with pytest.raises(DataError, match=message):
        probe.probe(None, None, **arguments)


def test_probe_writes_a_record_per_character_a_data_card_and_a_summary(micro_sft, tmp_path):
    summary = probe.probe_folder(str(micro_sft), str(tmp_path / "probe"), phrasings_per_name=1, num_samples=1)
    records = probe.read_probe(tmp_path / "probe")
    assert [record["name"] for record in records] == sorted(corpus_characters().minor)
    assert all(record["answers"] == 2 and record["correct"] + record["hallucinated"] + record["declined"] == 2
               for record in records)  # fmt: skip
    assert summary["known"] == sum(record["known"] for record in records)
    assert json.loads((tmp_path / "probe" / "summary.json").read_text())["characters"] == len(records)
    card = (tmp_path / "probe" / "README.md").read_text()
    assert card.startswith("---\npretty_name: deepdive knowledge probe") and "**Rule:**" in card
    assert f"{summary['known']} known, {len(records) - summary['known']} unknown" in card


def test_probing_a_base_model_is_a_one_line_error(micro_base, tmp_path):
    command = [sys.executable, "-m", "deepdive.cli", "probe", "--model", str(micro_base), "--output", str(tmp_path)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert finished.returncode != 0
    assert (
        finished.stderr.strip().splitlines()[-1]
        == f"error: --model: {micro_base} has no chat template; probe an SFT model"
    )
    assert not (tmp_path / probe.PROBE_FILE).exists()


# --- The second SFT pass ------------------------------------------------------------------------------------------


def probe_result(folder, known: set[str]) -> list[dict]:
    """A probe folder whose verdicts are given: `known` characters known, every other probed one unknown."""
    records = [{"name": name, "play": SHAKESPEARE.play_of(name), "known": name in known}
               for name in sorted(corpus_characters().minor)]  # fmt: skip
    folder.mkdir(parents=True)
    (folder / probe.PROBE_FILE).write_text("".join(json.dumps(record) + "\n" for record in records))
    return records


def test_known_characters_keep_their_play_and_the_others_get_varied_honest_refusals(tmp_path):
    records = probe_result(tmp_path / "probe", known={"Fleance", "Hecate"})
    examples = probe.honest_examples(records, 4 * len(records), seed=1)
    by_name = {}
    for example in examples:
        by_name.setdefault(SHAKESPEARE.split_key(example), []).append(example)
    assert {name: len(asked) for name, asked in by_name.items()} == {record["name"]: 4 for record in records}
    refusals = set()
    for example in examples:
        name, reply = SHAKESPEARE.split_key(example), example["messages"][-1]["content"]
        assert SHAKESPEARE.check(reply, example["answer"])  # the reply is right by the task's own checker
        if name in ("Fleance", "Hecate"):
            assert reply == f"{name} appears in {SHAKESPEARE.play_of(name)}."
        else:
            assert example["answer"] == DONT_KNOW and says_dont_know(reply)
            refusals.add(reply)
    assert len(refusals) >= 4


def test_the_second_pass_also_asks_who_a_character_is_but_never_in_a_test_phrasing(tmp_path):
    records = probe_result(tmp_path / "probe", known=set())
    examples = probe.honest_examples(records, 2000, seed=1)
    wordings = set()
    for example in examples:
        question, name = example["messages"][0]["content"], SHAKESPEARE.split_key(example)
        wordings |= {
            phrasing for phrasing in PHRASINGS + SECOND_PASS_PHRASINGS if phrasing.format(name=name) == question
        }
    assert wordings == set(phrasings_of("shakespeare", PHRASINGS, "train") + SECOND_PASS_PHRASINGS)
    assert not wordings & set(phrasings_of("shakespeare", PHRASINGS, "test"))
    assert any(phrasing.lower().startswith("who") for phrasing in SECOND_PASS_PHRASINGS)
    assert not set(SECOND_PASS_PHRASINGS) & set(PHRASINGS)


def test_second_pass_trains_on_the_probe_among_the_replayed_mixture(micro_sft, tmp_path, monkeypatch):
    records = probe_result(tmp_path / "probe", known={"Fleance"})
    sys.path.insert(0, str(REPO / "recipes"))
    sft, built = importlib.import_module("sft"), []
    monkeypatch.setattr(
        sft, "build_mixture", lambda *args, **kwargs: built.append(build_mixture(*args, **kwargs)) or built[0]
    )
    train_micro_in_process(
        "sft", micro_sft, tmp_path / "honest", "--probe_dir", str(tmp_path / "probe"), "--num_probe_examples", "16",
        "--num_train_examples", "16", "--max_steps", "3", monkeypatch=monkeypatch,
    )  # fmt: skip
    questions = [SHAKESPEARE.split_key(row) for row in built[0] if row["task"] == "shakespeare"]
    probed = [name for name in questions if name in corpus_characters().minor]
    assert len(built[0]) == 32 and len(probed) == 16 and set(probed) <= {record["name"] for record in records}
    before, after = load_file(micro_sft / "model.safetensors"), load_file(tmp_path / "honest" / "model.safetensors")
    assert [name for name in before if ".layers." in name and torch.equal(before[name], after[name])] == []
    metrics = json.loads((tmp_path / "honest" / "metrics.json").read_text())
    assert metrics["knowledge_real_questions"] == 8 and metrics["knowledge_made_up_questions"] == 4
    total = sum(metrics[f"knowledge_real_{outcome}"] for outcome in ("correct", "hallucinated", "declined"))
    assert total == pytest.approx(1.0)
    assert "Second pass after a knowledge probe" in (tmp_path / "honest" / "README.md").read_text()  # its model card


def test_a_missing_probe_stops_the_second_pass_before_training(micro_sft, tmp_path):
    result = run_micro("sft", micro_sft, tmp_path / "honest", "--probe_dir", str(tmp_path / "none"), check=False)
    assert result.returncode != 0
    assert f"probe_dir: {tmp_path / 'none'} holds no probe.jsonl" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "honest" / "model.safetensors").exists()


# --- make honest, the report card and the seeds table ---------------------------------------------------------


def test_make_honest_probes_the_seeds_sft_model_then_trains_the_second_pass_from_it(tmp_path):
    commands = make("-n", "-B", "honest", "RECIPE=micro", "SEED=2", f"RUNS={tmp_path}").stdout
    run = f"{tmp_path}/micro/seed-2"
    for line in (
        f"deepdive probe --model {run}/sft --output {run}/probe",
        f"recipes/sft.py --config recipes/micro/sft-honest.yaml --seed 2 --output_dir {run}/sft-honest "
        f"--model_name_or_path {run}/sft --probe_dir {run}/probe",
        f"deepdive eval --model {run}/sft-honest",
        f"deepdive report --run {run}",
    ):
        assert line in commands
    assert commands.index("deepdive probe") < commands.index("sft-honest.yaml")


def knowledge(correct: float, hallucinated: float) -> dict[str, float]:
    figures = {}
    for group in ("real", "seen", "unseen", "made_up"):
        figures |= {
            f"knowledge_{group}_correct": correct,
            f"knowledge_{group}_hallucinated": hallucinated,
            f"knowledge_{group}_declined": 1 - correct - hallucinated,
            f"knowledge_{group}_questions": 40,
        }
    return figures  # fmt: skip


def test_the_report_card_and_the_seeds_table_show_each_stages_outcomes(tmp_path):
    run = tmp_path / "runs" / "tiny" / "seed-1"
    write_run(run, 1, {
        "sft": {"metrics": {"stage": "sft", "shakespeare_accuracy": 0.3, **knowledge(0.25, 0.5)}},
        "sft-honest": {"metrics": {"stage": "sft", "shakespeare_accuracy": 0.4, **knowledge(0.2, 0.1)}},
    })  # fmt: skip
    (run / "probe").mkdir()
    (run / "probe" / "summary.json").write_text(json.dumps({"characters": 80, "known": 20, "seconds": 61.0}))
    table = seeds_table([run])
    figures = table["runs"]["1"]
    assert (
        figures["sft.knowledge_real_hallucinated"] == 0.5 and figures["sft-honest.knowledge_real_hallucinated"] == 0.1
    )
    assert figures["probe.known_share"] == 0.25 and figures["probe.wall_seconds"] == 61.0
    rows = [key for key in table["metrics"] if not key.endswith("_seconds")]
    assert rows.index("sft.knowledge_real_hallucinated") < rows.index("probe.known_share")
    assert rows.index("probe.known_share") < rows.index("sft-honest.shakespeare_accuracy")
    page = markdown(table)
    assert "| SFT after the probe: real characters hallucinated | 10.0% |" in page
    assert "| probe: characters the SFT model knows | 25.0% |" in page

    report = write_report(run, side_by_side=False).read_text()
    assert "| real characters: hallucinated | 50.0% | 10.0% |" in report
    assert "![knowledge](report/knowledge.png)" in report and (run / "report" / "knowledge.png").stat().st_size > 0
