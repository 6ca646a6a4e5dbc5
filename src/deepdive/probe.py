"""Probing what a chat model knows, so that it learns to say "I don't know" exactly where its knowledge ends.

The lecture's first mitigation of hallucination, as Llama 3 did it: ask the model many questions, check its answers,
and add training conversations whose answer is "I don't know" for the questions it gets wrong. Its refusals then
follow its own knowledge rather than how a name sounds. `deepdive probe --model runs/tiny/sft` asks about every
minor character of the train plays (`ShakespeareQA.probe_questions`: real names that pretraining showed a few times,
which neither the SFT data nor the held-out questions name) in several phrasings, greedily and sampled, and marks
each character known or unknown:

    known  <=>  the share of its answers, greedy and sampled over all its phrasings, that name its play >= threshold

Sampled answers count because a model that names the right play only on its greedy path, and another play as
often as not, does not reliably know it. The folder it writes holds `probe.jsonl` (one row per character: its
play, the answers counted, the share right, the verdict and a reply) and a data card, `README.md`, with the rule
and the counts, and `summary.json` (the counts and the time taken). The second SFT pass (`probe_dir` in the SFT
recipe) turns it into conversations with `honest_examples`: a known character keeps its play, an unknown one gets
one of several honest refusals, asked in the training phrasings and a few of its own (`SECOND_PASS_PHRASINGS`).
"""

import json
import random
import time
from pathlib import Path

from deepdive.errors import DataError
from deepdive.generation import Decoding, generate
from deepdive.modeling import check_model_folder, load_model_and_tokenizer
from deepdive.records import write_metrics
from deepdive.tasks.common import conversation
from deepdive.tasks.shakespeare import DONT_KNOW, ShakespeareQA, corpus_characters


PROBE_FILE = "probe.jsonl"
# Honest refusals, varied so that the model learns to decline, not one sentence. Each says "don't know" or "do not
# know" (what the checker reads as declining) and names neither a play nor the character, whose name may hold a
# play's title (Lady Macbeth).
REFUSALS = [
    "I don't know which play that character appears in.",
    "I'm sorry, I don't know that character, so I can't name the play.",
    "I do not know which of Shakespeare's plays they are in.",
    "I don't know them well enough to say which play they are from.",
    "Honestly, I don't know where that character appears.",
    "I'm not sure. I don't know which play has that character.",
]


def probe_questions(phrasings_per_name: int, seed: int = 0) -> dict[str, list[str]]:
    """Each probed character -> `phrasings_per_name` of its questions, drawn with `seed`."""
    if isinstance(phrasings_per_name, bool) or not isinstance(phrasings_per_name, int) or phrasings_per_name < 1:
        raise DataError(f"--phrasings: {phrasings_per_name!r}; ask each character in at least 1 phrasing")
    by_name: dict[str, list[str]] = {}
    for name, phrasing in ShakespeareQA().probe_questions():
        by_name.setdefault(name, []).append(phrasing.format(name=name))
    rng = random.Random(f"probe:{seed}")
    return {name: rng.sample(asked, min(phrasings_per_name, len(asked))) for name, asked in sorted(by_name.items())}


def probe(
    model,
    tokenizer,
    phrasings_per_name: int = 3,
    num_samples: int = 4,
    temperature: float = 1.0,
    threshold: float = 0.5,
    seed: int = 0,
    batch_size: int = 64,
    max_new_tokens: int = 40,
) -> list[dict]:
    """One record per probed character: name, play, answers (greedy + sampled), correct, share, known, a reply."""
    if not 0 < threshold <= 1:
        raise DataError(
            f"--threshold: {threshold!r}; the share of right answers that makes a character known, in (0, 1]"
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise DataError(f"--num_samples: {num_samples!r}; sampled answers per question, a whole number >= 0")
    if num_samples and not temperature > 0:
        raise DataError(f"--temperature: {temperature!r}; sampling needs a temperature > 0")
    task = ShakespeareQA()
    questions = probe_questions(phrasings_per_name, seed)
    asked = [(name, question) for name, phrasings in questions.items() for question in phrasings]
    prompts = [[{"role": "user", "content": question}] for _, question in asked]
    greedy = generate(model, tokenizer, prompts, Decoding(max_new_tokens), batch_size, progress=True)
    sampled = []
    if num_samples:
        decoding = Decoding(max_new_tokens, temperature, num_samples=num_samples, seed=seed)
        sampled = generate(model, tokenizer, prompts, decoding, batch_size, progress=True)
    records = {name: {"name": name, "play": task.play_of(name), "replies": []} for name in questions}
    for index, (name, _) in enumerate(asked):
        records[name]["replies"] += [greedy[index].text]
        records[name]["replies"] += [c.text for c in sampled[index * num_samples : (index + 1) * num_samples]]
    for record in records.values():
        outcomes = [task.outcome(reply, record["play"]) for reply in record["replies"]]
        record.update(
            answers=len(outcomes),
            correct=outcomes.count("correct"),
            hallucinated=outcomes.count("hallucinated"),
            declined=outcomes.count("declined"),
        )
        record["share"] = record["correct"] / record["answers"]
        record["known"] = record["share"] >= threshold
        record["reply"] = record.pop("replies")[0]  # the greedy reply to its first phrasing
    return list(records.values())


def probe_folder(
    model_dir: str,
    output_dir: str,
    phrasings_per_name: int = 3,
    num_samples: int = 4,
    temperature: float = 1.0,
    threshold: float = 0.5,
    seed: int = 0,
    batch_size: int = 64,
) -> dict:
    """Probe the chat model in `model_dir`; write `probe.jsonl` and its data card in `output_dir`. Returns the
    counts of the card."""
    started = time.time()
    model, tokenizer = load_model_and_tokenizer(str(check_model_folder(model_dir)))
    if tokenizer.chat_template is None:
        raise DataError(f"--model: {model_dir} has no chat template; probe an SFT model")
    records = probe(model, tokenizer, phrasings_per_name, num_samples, temperature, threshold, seed, batch_size)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    with open(output / PROBE_FILE, "w", encoding="utf-8") as file:
        file.writelines(json.dumps(record) + "\n" for record in records)
    summary = {
        "model": str(model_dir),
        "characters": len(records),
        "known": sum(record["known"] for record in records),
        "answers": sum(record["answers"] for record in records),
        "correct": sum(record["correct"] for record in records),
        "phrasings_per_name": phrasings_per_name,
        "num_samples": num_samples,
        "temperature": temperature,
        "threshold": threshold,
        "seed": seed,
        "seconds": time.time() - started,
    }
    (output / "README.md").write_text(data_card(summary, records), encoding="utf-8")
    write_metrics(output, summary, "summary.json")
    return summary


def data_card(summary: dict, records: list[dict]) -> str:
    """The probe result's data card: Hub metadata, how it was built, the rule and the counts."""
    unknown = summary["characters"] - summary["known"]
    share = summary["correct"] / summary["answers"] if summary["answers"] else 0.0
    examples = sorted(records, key=lambda record: -record["share"])
    shown = examples[:3] + [record for record in examples[3:] if not record["known"]][:3]
    rows = [
        f"| {r['name']} | {r['play']} | {r['correct']}/{r['answers']} | {'known' if r['known'] else 'unknown'} | "
        f"{' '.join(r['reply'].split()).replace('|', '/') or '(empty)'} |"
        for r in shown
    ]
    return "\n".join(
        [
            "---",
            "pretty_name: deepdive knowledge probe",
            "license: apache-2.0",
            "language:\n- en",
            "tags:\n- synthetic\n- sft\n- hallucination\n- shakespeare",
            f"probed_model: {summary['model']}",
            f"characters: {summary['characters']}",
            f"known: {summary['known']}",
            f"unknown: {unknown}",
            "---",
            "",
            "# deepdive knowledge probe",
            "",
            f"What `{summary['model']}` knows of the plays: each of the {summary['characters']} minor characters of "
            "the train plays (real names that neither the SFT data nor the held-out questions name) "
            f'was asked "which play?" in {summary["phrasings_per_name"]} phrasings, once greedily and '
            f"{summary['num_samples']} times sampled at temperature {summary['temperature']} (seed {summary['seed']}).",
            "",
            f"**Rule:** a character is known when at least {summary['threshold']:.0%} of its "
            f"{summary['phrasings_per_name'] * (1 + summary['num_samples'])} answers name its play. The second SFT "
            "pass keeps the play as the answer for known characters and teaches an honest refusal for the others.",
            "",
            f"**Counts:** {summary['known']} known, {unknown} unknown; {summary['correct']} of {summary['answers']} "
            f"answers ({share:.1%}) named the right play.",
            "",
            "| character | play | right answers | verdict | greedy reply |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"Files: `{PROBE_FILE}`, one row per character (name, play, answers, correct, hallucinated, declined, "
            "share, known, reply). Regenerate with `deepdive probe`.",
            "",
        ]
    )


def read_probe(probe_dir: str | Path) -> list[dict]:
    """The records `probe_folder` wrote, with a one-line error naming `probe_dir` when there are none."""
    path = Path(probe_dir) / PROBE_FILE
    if not path.is_file():
        raise DataError(f"probe_dir: {probe_dir} holds no {PROBE_FILE}; run `deepdive probe --output {probe_dir}`")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    fields = {"name", "play", "known"}
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict) or not fields <= set(record):
            raise DataError(f"probe_dir: {path} line {number} lacks {', '.join(sorted(fields))}")
    if not records:
        raise DataError(f"probe_dir: {path} is empty")
    return records


def honest_examples(records: list[dict], n: int, seed: int = 0) -> list[dict]:
    """`n` conversations about the probed characters, spread evenly over them, each asked in one of
    `ShakespeareQA.second_pass_phrasings`: a known character's answer is its play, an unknown one's a refusal drawn
    from REFUSALS."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DataError(f"num_probe_examples: {n!r}; a whole number >= 0")
    task = ShakespeareQA()
    probed = corpus_characters().minor
    phrasings = task.second_pass_phrasings()
    rng = random.Random(f"honest:{seed}")
    examples = []
    for index in range(n):
        record = records[index % len(records)]
        name = record["name"]
        if name not in probed:
            raise DataError(
                f"probe_dir: {name!r} is not one of the characters `deepdive probe` asks about; probe again"
            )
        question = rng.choice(phrasings).format(name=name)
        if record["known"]:
            reply, answer = f"{name} appears in {record['play']}.", record["play"]
        else:
            reply, answer = rng.choice(REFUSALS), DONT_KNOW
        call = {"name": "search", "arguments": {"query": name}}
        examples.append(conversation(task.name, question, reply, answer, call, f"{name} appears in {record['play']}."))
    rng.shuffle(examples)
    return examples
