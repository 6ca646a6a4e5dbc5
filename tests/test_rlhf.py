"""RLHF's pieces: the simulated labeler (what a person would prefer in a line of verse), the verse task, the SFT pass
that teaches it, the preference pairs ranked from the model's own lines, the reward model learnt from them, GRPO
against the reward model, and DPO on the same pairs."""

import importlib
import json
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO, assert_only_the_adapter_trained, train_in_process, train_micro_in_process
from safetensors.torch import load_file
from test_seeds import make
from transformers import AutoModelForSequenceClassification

from deepdive import evaluation, preferences
from deepdive.errors import DataError, RecipeError
from deepdive.generation import Completion
from deepdive.labeler import RULES, VerseLabeler, meter_of, syllable_count, words_of
from deepdive.modeling import load_model_and_tokenizer
from deepdive.report import write_report
from deepdive.rewards import get_reward_funcs
from deepdive.tasks import build_mixture
from deepdive.tasks.verse import SYLLABLES, TOPICS, Verse, labeler, lines_by_topic, topics_of, training_lines


VERSE = Verse()
TINY_RLHF = yaml.safe_load((REPO / "recipes" / "tiny" / "rlhf.yaml").read_text())


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


@pytest.mark.parametrize(
    "better, worse, rule",
    [
        ("The silver moon doth climb the quiet sky", "moon moon moon moon moon moon moon moon moon moon", "form"),
        ("The silver moon doth climb the quiet sky", "", "form"),
        ("The silver moon doth climb the quiet sky", "The silver sun doth climb the quiet sky", "topic"),
        ("The pale moon rises over silent hills", "Xqzt blorf the moon gralk vrenn tosk", "real_words"),
        ("The silver moon doth climb the quiet sky", "The moon is big and it is in the sky at night", "length"),
        ("The silver moon doth climb the quiet sky", "Happy moon, silver, golden, bitter, lonely", "stress"),
    ],
)
def test_each_pair_is_told_apart_by_the_plainest_part_of_the_rule_that_differs(better, worse, rule):
    judge = VerseLabeler()
    assert judge.score(better, "moon").total > judge.score(worse, "moon").total
    assert judge.deciding_rule(better, worse, "moon") == rule


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


def test_sampled_lines_are_scored_against_their_own_prompt_s_topic(monkeypatch):
    topics = [example["answer"] for example in VERSE.examples("test", 2, seed=0)]
    sampled_line = "And {topic} shall rise upon the morning sky"

    def answer_in_shares(model, tokenizer, prompts, decoding, batch_size):
        assert [prompt[-1]["content"] for prompt in prompts] == [
            example["prompt"][-1]["content"] for example in VERSE.examples("test", 2, seed=0)
        ]
        if decoding.temperature == 0:
            return [Completion("no verse at all", True) for _ in topics]
        assert (decoding.temperature, decoding.num_samples) == (1.0, 3)
        return [Completion(sampled_line.format(topic=topic), True) for topic in topics for _ in range(3)]

    monkeypatch.setattr(evaluation, "answer_in_shares", answer_in_shares)
    metrics = evaluation.evaluate_verse(None, None, n=2, num_samples=3)
    scores = [labeler().score(sampled_line.format(topic=topic), topic) for topic in topics]
    assert all(score.on_topic for score in scores)  # a line scored against another prompt's topic would not be
    assert metrics["verse_sampled_score"] == pytest.approx(sum(score.total for score in scores) / 2)
    assert metrics["verse_sampled_score"] > metrics["verse_labeler_score"]


# --- Preference pairs ---------------------------------------------------------------------------------------------


def test_pairs_are_lines_the_labeler_tells_apart_better_first_each_train_line_in_one_pair(micro_sft, tmp_path):
    summary = preferences.preferences_folder(
        str(micro_sft), str(tmp_path / "prefs"), num_prompts=20, num_candidates=4, margin=0.05
    )
    records = [json.loads(line) for line in (tmp_path / "prefs" / preferences.PAIRS_FILE).read_text().splitlines()]
    assert summary["pairs"] == len(records) > 0 and summary["prompts"] == 20
    by_prompt = {}
    for record in records:
        candidates = {candidate["text"]: candidate["score"] for candidate in record["candidates"]}
        chosen, rejected = record["chosen"][0]["content"], record["rejected"][0]["content"]
        assert candidates[chosen] == record["chosen_score"] and candidates[rejected] == record["rejected_score"]
        assert record["chosen_score"] - record["rejected_score"] >= 0.05
        assert labeler().score(chosen, record["topic"]).total == record["chosen_score"]
        assert record["topic"] in topics_of("train")  # held-out topics stay unseen until the evaluation
        by_prompt.setdefault(json.dumps(record["prompt"]) + str(record["candidates"]), []).append(record)
    splits = {"train": 0, "test": 0}
    for pairs in by_prompt.values():
        lines = {candidate["text"]: candidate["score"] for candidate in pairs[0]["candidates"]}
        apart = [(a, b) for a in lines for b in lines if lines[a] - lines[b] >= 0.05]
        paired = [(pair["chosen"][0]["content"], pair["rejected"][0]["content"]) for pair in pairs]
        splits[pairs[0]["split"]] += 1
        if pairs[0]["split"] == "test":  # every comparison that clears the margin, once
            assert sorted(paired) == sorted(apart)
            continue
        # train: no line in two pairs, the widest gap among them, and no two unpaired lines left that are apart
        used = [line for pair in paired for line in pair]
        assert len(used) == len(set(used))
        assert max(lines[a] - lines[b] for a, b in paired) == max(lines[a] - lines[b] for a, b in apart)
        assert not [(a, b) for a, b in apart if a not in used and b not in used]
    assert splits["train"] > 0 and splits["test"] > 0
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


def test_the_pairs_rules_follow_the_pairs_in_order_and_pairs_without_a_topic_have_none(tmp_path):
    lines = {
        "form": "",
        "topic": "The silver sun doth climb the quiet sky",
        "stress": "Happy moon, silver, golden, bitter, lonely",
    }
    records = [
        {"prompt": [], "chosen": [{"role": "assistant", "content": "The silver moon doth climb the quiet sky"}],
         "rejected": [{"role": "assistant", "content": line}], "split": "test", "topic": "moon"}
        for line in lines.values()
    ]  # fmt: skip
    train = dict(records[0], split="train", rejected=[{"role": "assistant", "content": "The moon"}])
    (tmp_path / preferences.PAIRS_FILE).write_text(
        "".join(json.dumps(r) + "\n" for r in [records[0], train, *records[1:]])
    )
    assert preferences.pair_rules(tmp_path, "test") == list(lines)
    assert preferences.pair_rules(tmp_path, "train") == ["length"]
    del records[1]["topic"]
    (tmp_path / preferences.PAIRS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    assert preferences.pair_rules(tmp_path, "test") == []


def test_ranking_a_base_models_lines_is_a_one_line_error(micro_base, tmp_path):
    command = [sys.executable, "-m", "deepdive.cli", "prefs", "--model", str(micro_base), "--output", str(tmp_path)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert finished.returncode != 0
    assert finished.stderr.strip().splitlines()[-1] == (
        f"error: --model: {micro_base} has no chat template; sample candidates from an SFT model"
    )
    assert not (tmp_path / preferences.PAIRS_FILE).exists()


# --- Reward model, RLHF, DPO --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clear_pairs(tmp_path_factory):
    """A preference folder whose chosen line is always a real line of the plays about the topic and whose rejected
    one is always gibberish: a preference any reward model can learn in a few steps, held-out pairs included."""
    folder = tmp_path_factory.mktemp("pairs")
    records = []
    for split, n in (("train", 48), ("test", 16)):
        for example in VERSE.examples(split, n, seed=0):
            records.append(
                {
                    "prompt": example["prompt"],
                    "chosen": [{"role": "assistant", "content": example["messages"][-1]["content"]}],
                    "rejected": [{"role": "assistant", "content": "zq zq zq vrk zq"}],
                    "split": split,
                    "topic": example["answer"],
                }
            )
    (folder / preferences.PAIRS_FILE).write_text("".join(json.dumps(record) + "\n" for record in records))
    return folder


@pytest.fixture(scope="module")
def rlhf_run(micro_sft, clear_pairs, tmp_path_factory):
    """A run folder as `make rlhf` leaves it, on the micro recipes: the chat model standing in for the verse SFT
    pass, a reward model trained on `clear_pairs`, RLHF against it and DPO on the same pairs."""
    run = tmp_path_factory.mktemp("rlhf-run")
    (run / "sft-verse").symlink_to(micro_sft, target_is_directory=True)
    pairs = ["--prefs_dir", str(clear_pairs)]
    with pytest.MonkeyPatch.context() as monkeypatch:
        train_micro_in_process(
            "reward", micro_sft, run / "reward", *pairs, "--max_steps", "12", monkeypatch=monkeypatch
        )
        train_in_process(
            "grpo", "recipes/micro/rlhf.yaml", micro_sft, run / "rlhf", "--reward_model", str(run / "reward"),
            "--beta", str(TINY_RLHF["beta"]), monkeypatch=monkeypatch,
        )  # fmt: skip
        train_micro_in_process("dpo", micro_sft, run / "dpo", *pairs, monkeypatch=monkeypatch)
    return run


def test_the_reward_model_learns_the_rankings_and_ranks_held_out_pairs(micro_sft, rlhf_run):
    output_dir = rlhf_run / "reward"
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["stage"] == "reward" and metrics["test_pairs"] == 16 and metrics["train_pairs"] == 48
    assert metrics["reward_accuracy"] == 1.0 and metrics["reward_margin"] > 0
    # gibberish against a real line about the topic: every held-out pair is told apart by form (the gibberish
    # repeats itself), and the accuracy on them is the accuracy
    assert {key: value for key, value in metrics.items() if key.endswith(tuple(RULES))} == {
        "reward_accuracy_form": 1.0, "test_pairs_form": 16,
    }  # fmt: skip
    chat, trained = load_file(micro_sft / "model.safetensors"), load_file(output_dir / "model.safetensors")
    assert "score.weight" in trained and "lm_head.weight" not in trained  # a scalar head in place of the LM head
    hidden = [name for name in chat if ".layers." in name and chat[name].ndim == 2]
    assert hidden and [name for name in hidden if torch.equal(chat[name], trained[name])] == []
    # it scores a real line above gibberish for a topic it never saw
    model = AutoModelForSequenceClassification.from_pretrained(output_dir)
    _, tokenizer = load_model_and_tokenizer(str(output_dir), reward_head=True)
    example = VERSE.examples("test", 1, seed=5)[0]
    scores = []
    for reply in (example["messages"][-1]["content"], "zq zq zq vrk zq"):
        messages = [*example["prompt"], {"role": "assistant", "content": reply}]
        inputs = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)
        scores.append(model(**inputs).logits[0, 0].item())
    assert scores[0] > scores[1]
    card = (output_dir / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and "AutoModelForSequenceClassification" in card


def test_a_reward_model_is_not_a_chat_model_and_a_chat_model_is_not_a_reward_model(micro_sft, rlhf_run):
    output_dir = rlhf_run / "reward"
    with pytest.raises(DataError, match=f"--model: {output_dir} is a reward model: it scores replies and writes none"):
        load_model_and_tokenizer(str(output_dir))
    with pytest.raises(RecipeError, match=f"reward_model: {micro_sft} is a language model; train a reward model"):
        get_reward_funcs(["reward_model"], reward_model=str(micro_sft))


def test_lora_on_the_reward_model_trains_the_adapter_and_the_new_head_only(
    micro_sft, clear_pairs, tmp_path, monkeypatch
):
    trainer = train_micro_in_process(
        "reward", micro_sft, tmp_path / "lora", "--prefs_dir", str(clear_pairs), "--use_peft", "true",
        "--lora_r", "4", monkeypatch=monkeypatch,
    )  # fmt: skip
    chat = load_file(micro_sft / "model.safetensors")
    trained = {name.removeprefix("base_model.model."): tensor for name, tensor in trainer.model.state_dict().items()}
    lora_b = [name for name in trained if "lora_B" in name]
    assert lora_b and [name for name in lora_b if not trained[name].any()] == []
    frozen = {name.replace(".base_layer", ""): tensor for name, tensor in trained.items() if "lora_" not in name}
    assert [name for name in chat if name in frozen and not torch.equal(chat[name], frozen[name])] == []
    assert any("score" in name and "modules_to_save" in name for name in trained)  # the head trains in full


def test_rlhf_trains_on_the_reward_model_and_logs_the_labeler_beside_it(micro_sft, rlhf_run):
    metrics = json.loads((rlhf_run / "rlhf" / "metrics.json").read_text())
    assert metrics["stage"] == "rlhf" and [entry["step"] for entry in metrics["reward_curve"]] == [1, 2]
    for entry in metrics["reward_curve"]:
        assert set(entry["rewards"]) == {"reward", "labeler"}  # the reward model (its folder's name) and the labeler
        assert entry["reward"] == pytest.approx(entry["rewards"]["reward"], abs=1e-5)  # the labeler weighs 0
        assert 0 <= entry["rewards"]["labeler"] <= 1
    assert metrics["before_verse_prompts"] == metrics["after_verse_prompts"] == 4
    before, after = load_file(micro_sft / "model.safetensors"), load_file(rlhf_run / "rlhf" / "model.safetensors")
    assert [name for name in before if ".layers." in name and torch.equal(before[name], after[name])] == []
    assert "[verse](data_cards/verse.md)" in (rlhf_run / "rlhf" / "README.md").read_text()


def test_the_kl_penalty_holds_the_policy_to_a_frozen_copy_of_the_sft_model(micro_sft, rlhf_run, tmp_path, monkeypatch):
    assert TINY_RLHF["beta"] > 0  # the tiny recipe's RLHF runs on a leash
    trainer = train_in_process(
        "grpo", "recipes/micro/rlhf.yaml", micro_sft, tmp_path / "kl", "--reward_model", str(rlhf_run / "reward"),
        "--beta", str(TINY_RLHF["beta"]), "--num_test_examples", "0", monkeypatch=monkeypatch,
    )  # fmt: skip
    sft = load_file(micro_sft / "model.safetensors")
    reference, policy = trainer.ref_model.state_dict(), trainer.model.state_dict()
    hidden = [name for name in sft if ".layers." in name]
    assert hidden and [name for name in hidden if not torch.equal(sft[name], reference[name])] == []
    assert [name for name in hidden if torch.equal(sft[name], policy[name])] == []
    kl = [entry["kl"] for entry in json.loads((tmp_path / "kl" / "metrics.json").read_text())["reward_curve"]]
    assert len(kl) == 2 and kl[0] == pytest.approx(0, abs=1e-4) and kl[1] > 0  # moved away only after an update


def test_a_reward_of_weight_0_trains_nothing(micro_sft, tmp_path, monkeypatch):
    train_micro_in_process(
        "grpo", micro_sft, tmp_path / "watch", "--tasks", "verse", "--reward_funcs", "labeler",
        "--reward_weights", "0.0", "--num_test_examples", "0", monkeypatch=monkeypatch,
    )  # fmt: skip
    before, after = load_file(micro_sft / "model.safetensors"), load_file(tmp_path / "watch" / "model.safetensors")
    assert [name for name in before if not torch.equal(before[name], after[name])] == []


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--tasks", "verse", "arithmetic"], "tasks: verse has no checkable answer and trains alone"),
        (["--tasks", "verse", "--reward_funcs", "accuracy"], "reward_funcs: accuracy need a checkable answer"),
        (["--reward_funcs", "reward_model"], "reward_model: give the reward model's folder and name reward_model"),
        (["--reward_model", "runs/tiny/reward"], "reward_model: give the reward model's folder and name reward_model"),
    ],
)
def test_bad_rlhf_recipes_are_one_line_errors(micro_sft, tmp_path, monkeypatch, arguments, message):
    with pytest.raises(RecipeError, match=message):
        train_micro_in_process("grpo", micro_sft, tmp_path / "bad", *arguments, monkeypatch=monkeypatch)
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_dpo_trains_on_the_pairs_and_scores_held_out_topics(micro_sft, rlhf_run):
    metrics = json.loads((rlhf_run / "dpo" / "metrics.json").read_text())
    assert metrics["stage"] == "dpo" and metrics["before_verse_prompts"] == metrics["after_verse_prompts"] == 4
    assert 0 <= metrics["preference_accuracy"] <= 1
    before, after = load_file(micro_sft / "model.safetensors"), load_file(rlhf_run / "dpo" / "model.safetensors")
    assert [name for name in before if ".layers." in name and torch.equal(before[name], after[name])] == []


def test_the_report_card_shows_each_rlhf_stage_and_the_two_scores_per_step(rlhf_run):
    report = write_report(rlhf_run).read_text()
    rlhf = json.loads((rlhf_run / "rlhf" / "metrics.json").read_text())
    assert "| metric | verse sft | reward model | rlhf | dpo |" in report
    reward = json.loads((rlhf_run / "reward" / "metrics.json").read_text())["reward_accuracy"]
    assert f"| reward model: held-out pairs ranked right | – | {reward:.1%} | – | – |" in report
    assert f"{rlhf['after_verse_labeler_score']:.3f} after." in report  # the RLHF summary
    assert f"{rlhf['before_verse_sampled_score']:.3f} before, {rlhf['after_verse_sampled_score']:.3f} after" in report
    kl = [entry["kl"] for entry in rlhf["reward_curve"]]
    kl_line = f"the KL of its samples was {kl[0]:.3f} at step 1, {max(kl):.3f} at most and {kl[-1]:.3f} at step 2"
    assert kl_line in report and (rlhf_run / "report" / "rlhf.png").stat().st_size > 0
    assert "| prompt | verse sft | rlhf | dpo |" in report  # the reward model writes nothing
    verse_prompt = VERSE.examples("test", 1, seed=0)[0]["prompt"][-1]["content"]
    assert f"| {verse_prompt} |" in report.split("## The same prompts")[1]
    assert (rlhf_run / "report" / "rlhf.png").stat().st_size > 0


@pytest.mark.parametrize("beta, record", [(None, "long"), ("0.05", "long-beta0.05")])
def test_make_rlhf_long_runs_rlhf_on_from_the_run_s_models_and_records_its_report(tmp_path, beta, record):
    knobs = (f"RUNS={tmp_path}", f"RESULTS={tmp_path}/results", "SEED=2", "RLHF_LONG_STEPS=7")
    commands = make("-n", "-B", "rlhf-long", *knobs, *([f"RLHF_LONG_BETA={beta}"] if beta else [])).stdout
    run = f"{tmp_path}/tiny/seed-2"
    lines = [" ".join(line.split()) for line in commands.replace("\\\n", " ").splitlines()]
    assert [line.partition(" recipes/")[2] for line in lines if "recipes/grpo.py" in line] == [
        f"grpo.py --config recipes/tiny/rlhf.yaml --model_name_or_path {run}/sft-verse --reward_model {run}/reward "
        f"--output_dir {run}/{record}/rlhf --max_steps 7 --beta {beta or 0} --seed 2 --overwrite_output_dir true"
    ]  # by default without the recipe's KL penalty: free to game the reward model
    assert f"deepdive report --run {run}/{record}\n" in commands
    assert f"cp -r {run}/{record}/report.md {run}/{record}/report {tmp_path}/results/rlhf/{record}/" in commands


def test_lora_on_dpo_trains_the_adapter_and_only_the_adapter(micro_sft, clear_pairs, tmp_path, monkeypatch):
    trainer = train_micro_in_process(
        "dpo", micro_sft, tmp_path / "lora", "--prefs_dir", str(clear_pairs), "--use_peft", "true", "--lora_r", "4",
        "--num_test_examples", "0", monkeypatch=monkeypatch,
    )  # fmt: skip
    assert_only_the_adapter_trained(trainer.model, micro_sft)
