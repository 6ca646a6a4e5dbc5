"""Preference pairs for RLHF: the SFT model writes several lines per prompt, the simulated labeler ranks them.

Where no checker exists, a person ranks a few candidates rather than writing the ideal answer: ranking is easier.
`deepdive prefs --model runs/tiny/sft-verse` asks the model "Write a line of verse about {topic}." for prompts of
the train topics (the held-out topics stay unseen by every RLHF stage, for the labeler's evaluation), samples
`num_candidates` replies to each, lets
`deepdive.labeler.VerseLabeler` rank them, and makes two of them a pair (chosen, rejected) when the labeler tells
them apart by at least `margin`. A held-out prompt gives every such comparison. A train prompt gives each of its lines
to one pair at most, the widest gaps first: the comparisons of one prompt share its lines, and a reward model that
meets a line in several pairs learns that line rather than the preference, so that it overfits within an epoch;
asking more prompts gives it the same number of pairs with fresh lines in each. The folder it writes holds
`pairs.jsonl` in TRL's conversational preference format
(`prompt`, `chosen`, `rejected`, each a list of messages; plus the topic, the split and both scores), a data card
(`README.md`: how it was built, the rule, the counts, examples) and `summary.json`. The reward model trains on the
train pairs and is scored on the held-out ones (a fifth of the prompts, whose sampled lines it never saw); DPO
trains on the same train pairs.
"""

import itertools
import json
import time
from pathlib import Path

from datasets import Dataset

from deepdive.errors import DataError
from deepdive.generation import Decoding, generate
from deepdive.modeling import check_model_folder, load_model_and_tokenizer
from deepdive.records import write_metrics
from deepdive.tasks.verse import Verse, labeler


PAIRS_FILE = "pairs.jsonl"
FIELDS = ("prompt", "chosen", "rejected")  # TRL's preference format
SPLITS = ("train", "test")


def check_settings(num_prompts: int, num_candidates: int, temperature: float, margin: float) -> None:
    for flag, value, least in (("--num_prompts", num_prompts, 1), ("--num_candidates", num_candidates, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise DataError(f"{flag}: {value!r}; a whole number >= {least}")
    if not temperature > 0:
        raise DataError(f"--temperature: {temperature!r}; sampling candidates needs a temperature > 0")
    if not 0 <= margin < 1:
        raise DataError(f"--margin: {margin!r}; the labeler's score gap that makes a pair, in [0, 1)")


def preference_pairs(
    model,
    tokenizer,
    num_prompts: int = 6000,
    num_candidates: int = 4,
    temperature: float = 1.0,
    margin: float = 0.1,
    test_share: float = 0.2,
    seed: int = 0,
    batch_size: int = 64,
    max_new_tokens: int = 40,
) -> list[dict]:
    """One record per pair of a prompt's candidates that the labeler tells apart by at least `margin` (up to
    k(k-1)/2 per prompt, each comparison a person's ranking of k lines gives): prompt, chosen, rejected
    (conversational), topic, split, chosen_score, rejected_score and every candidate of the prompt with its score."""
    check_settings(num_prompts, num_candidates, temperature, margin)
    held_out = round(num_prompts * test_share)
    examples = Verse().examples("train", num_prompts, seed=seed)  # held-out topics stay unseen for evaluation
    decoding = Decoding(max_new_tokens, temperature, num_samples=num_candidates, seed=seed)
    replies = generate(
        model, tokenizer, [example["prompt"] for example in examples], decoding, batch_size, progress=True
    )
    records = []
    for index, example in enumerate(examples):
        candidates = [reply.text.strip() for reply in replies[index * num_candidates : (index + 1) * num_candidates]]
        scores = [labeler().score(candidate, example["answer"]).total for candidate in candidates]
        ranked = sorted(range(num_candidates), key=lambda i: -scores[i])
        comparisons = [
            (better, worse)
            for better, worse in itertools.combinations(ranked, 2)
            if scores[better] - scores[worse] >= max(margin, 1e-9)
        ]
        split = "test" if index >= len(examples) - held_out else "train"
        if split == "train":
            comparisons = each_line_once(comparisons, candidates, scores)
        for better, worse in comparisons:
            records.append(
                {
                    "prompt": example["prompt"],
                    "chosen": [{"role": "assistant", "content": candidates[better]}],
                    "rejected": [{"role": "assistant", "content": candidates[worse]}],
                    "topic": example["answer"],
                    "split": split,
                    "chosen_score": scores[better],
                    "rejected_score": scores[worse],
                    "candidates": [{"text": t, "score": score} for t, score in zip(candidates, scores, strict=True)],
                }
            )
    return records


def each_line_once(
    comparisons: list[tuple[int, int]], candidates: list[str], scores: list[float]
) -> list[tuple[int, int]]:
    """The `comparisons` (index pairs into `candidates`) that keep each line text in one pair at most, taken widest
    score gap first."""
    kept, used = [], set()
    for better, worse in sorted(comparisons, key=lambda pair: scores[pair[1]] - scores[pair[0]]):
        if candidates[better] not in used and candidates[worse] not in used:
            kept.append((better, worse))
            used |= {candidates[better], candidates[worse]}
    return kept


def preferences_folder(
    model_dir: str,
    output_dir: str,
    num_prompts: int = 6000,
    num_candidates: int = 4,
    temperature: float = 1.0,
    margin: float = 0.1,
    seed: int = 0,
    batch_size: int = 64,
) -> dict:
    """Build the pairs from the chat model in `model_dir`; write `pairs.jsonl`, its data card and `summary.json`
    in `output_dir`. Returns the summary."""
    started = time.time()
    check_settings(num_prompts, num_candidates, temperature, margin)
    model, tokenizer = load_model_and_tokenizer(str(check_model_folder(model_dir)))
    if tokenizer.chat_template is None:
        raise DataError(f"--model: {model_dir} has no chat template; sample candidates from an SFT model")
    records = preference_pairs(
        model, tokenizer, num_prompts, num_candidates, temperature, margin, seed=seed, batch_size=batch_size
    )
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    with open(output / PAIRS_FILE, "w", encoding="utf-8") as file:
        file.writelines(json.dumps(record) + "\n" for record in records)
    candidates = [candidate["score"] for record in records for candidate in record["candidates"]]
    summary = {
        "model": str(model_dir),
        "prompts": num_prompts,
        "pairs": len(records),
        "train_pairs": sum(record["split"] == "train" for record in records),
        "test_pairs": sum(record["split"] == "test" for record in records),
        "mean_chosen_score": _mean([record["chosen_score"] for record in records]),
        "mean_rejected_score": _mean([record["rejected_score"] for record in records]),
        "mean_candidate_score": _mean(candidates),
        "num_candidates": num_candidates,
        "temperature": temperature,
        "margin": margin,
        "seed": seed,
        "seconds": time.time() - started,
    }
    (output / "README.md").write_text(data_card(summary, records), encoding="utf-8")
    write_metrics(output, summary, "summary.json")
    return summary


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def data_card(summary: dict, records: list[dict]) -> str:
    """The preference data's card: Hub metadata, how it was built, the ranking rule, the counts, examples."""
    shown = sorted(records, key=lambda record: record["rejected_score"] - record["chosen_score"])[:2] + records[:2]
    rows = [
        f"| {record['topic']} | {_cell(record['chosen'][0]['content'])} ({record['chosen_score']:.2f}) | "
        f"{_cell(record['rejected'][0]['content'])} ({record['rejected_score']:.2f}) |"
        for record in shown
    ]
    return "\n".join(
        [
            "---",
            "pretty_name: deepdive verse preferences",
            "license: apache-2.0",
            "language:\n- en",
            "tags:\n- synthetic\n- rlhf\n- preference\n- dpo\n- reward-modeling",
            f"sampled_from: {summary['model']}",
            f"pairs: {summary['pairs']}",
            "---",
            "",
            "# deepdive verse preferences",
            "",
            f'`{summary["model"]}` was asked "Write a line of verse about {{topic}}." {summary["prompts"]} times '
            f"(train topics only; the pairs of a fifth of the prompts are held out) and wrote {summary['num_candidates']} lines to each, sampled "
            f"at temperature {summary['temperature']} (seed {summary['seed']}).",
            "",
            "**Rule:** the simulated labeler (`deepdive.labeler.VerseLabeler`) scores each line: iambic pentameter "
            "by the CMU Pronouncing Dictionary, real words, on topic, not repetitive, not copied from the plays. "
            "Two lines of a prompt make a pair (chosen: the higher score, rejected: the lower) when their scores "
            f"differ by at least {summary['margin']}; lines it cannot tell apart give none. A held-out prompt gives "
            "every such comparison, as a person's ranking of its lines does. A train prompt gives each line to one "
            "pair at most, the widest gaps first, so that a reward model learns the preference rather than the "
            "lines it meets again and again.",
            "",
            f"**Counts:** {summary['pairs']} pairs ({summary['train_pairs']} train, {summary['test_pairs']} from "
            f"held-out prompts); mean labeler score: chosen {summary['mean_chosen_score']:.3f}, rejected "
            f"{summary['mean_rejected_score']:.3f}, all candidates {summary['mean_candidate_score']:.3f}.",
            "",
            "| topic | chosen (score) | rejected (score) |",
            "|---|---|---|",
            *rows,
            "",
            f"Files: `{PAIRS_FILE}`, one pair per line (prompt, chosen, rejected as messages; topic, split, both "
            "scores, every candidate). Regenerate with `deepdive prefs`.",
            "",
        ]
    )


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "/") or "(empty)"


def read_pairs(prefs_dir: str | Path, split: str) -> Dataset:
    """The `split` ("train" or "test") pairs `preferences_folder` wrote, as a Dataset of prompt / chosen / rejected
    (TRL's conversational preference format), with a one-line error naming `prefs_dir` when there are none."""
    return Dataset.from_list([{field: record[field] for field in FIELDS} for record in pair_records(prefs_dir, split)])


def pair_rules(prefs_dir: str | Path, split: str) -> list[str]:
    """For each pair `read_pairs` gives, which part of the labeler's rule tells its lines apart
    (`VerseLabeler.deciding_rule`); none when a pair has no topic (pairs not made by `deepdive prefs`)."""
    records = pair_records(prefs_dir, split)
    if not all(isinstance(record.get("topic"), str) for record in records):
        return []
    return [
        labeler().deciding_rule(_reply(record["chosen"]), _reply(record["rejected"]), record["topic"])
        for record in records
    ]


def _reply(side: list[dict] | str) -> str:
    return side[-1]["content"] if isinstance(side, list) else side


def pair_records(prefs_dir: str | Path, split: str) -> list[dict]:
    """The `split` records of the pairs file in `prefs_dir`, checked, with a one-line error naming the folder."""
    if split not in SPLITS:
        raise DataError(f"prefs split: {split!r}; valid: {', '.join(SPLITS)}")
    path = Path(prefs_dir) / PAIRS_FILE
    if not path.is_file():
        raise DataError(f"prefs_dir: {prefs_dir} holds no {PAIRS_FILE}; run `deepdive prefs --output {prefs_dir}`")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"prefs_dir: {path} line {number} is not JSON ({error.msg})") from None
        if not isinstance(record, dict) or not set(FIELDS) | {"split"} <= set(record):
            raise DataError(f"prefs_dir: {path} line {number} lacks {', '.join(FIELDS)} or split")
        if record["split"] == split:
            records.append(record)
    if not records:
        raise DataError(f"prefs_dir: {path} has no {split} pairs; build more with `deepdive prefs --num_prompts`")
    return records
