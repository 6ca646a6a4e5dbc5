"""The report card of a run: one Markdown page with a stage-by-metric table, plots and the stages side by side.

`deepdive report --run runs/tiny` reads what each stage folder (`base`, `sft`, `sft-honest`, `grpo`, `sft-tools`,
`grpo-tools`) recorded, its `metrics.json`, `eval.json` and the Trainer's `trainer_state.json` log, and writes
`runs/tiny/report.md` with PNG plots in `runs/tiny/report/`: pretraining loss and validation bits per byte, SFT
loss, GRPO reward per function and completion length, for GRPO with tools the tool calls per reply and the share
that failed, and the knowledge evaluation's outcomes (right play, hallucinated, declined) per stage. The same
held-out prompts are answered by every stage (greedy), so the page shows what each stage of the lecture adds.
Stages that have not run are left out.
"""

import json
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from deepdive.errors import DataError
from deepdive.generation import Completion, Decoding, Exchange, generate, generate_with_tools
from deepdive.labeler import RULES
from deepdive.modeling import load_model_and_tokenizer
from deepdive.records import hardware, read_record, trained_with_tools
from deepdive.tasks import LESSONS, get_task
from deepdive.tasks.verse import Verse


STAGE_FOLDERS = {
    "pretrain": "base",
    "sft": "sft",
    "honest sft": "sft-honest",
    "grpo": "grpo",
    "sft + tools": "sft-tools",
    "grpo + tools": "grpo-tools",
    "verse sft": "sft-verse",
    "reward model": "reward",
    "rlhf": "rlhf",
    "dpo": "dpo",
}
SCORERS = ("reward model",)  # stages that score replies and write none
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "evaluate", "tokenizers", "deepdive")
# (row label, key in a stage's metrics or eval results, how to show it)


def _count(value: float) -> str:
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _share(value: float) -> str:
    return f"{value:.1%}"


# (row label, key in a stage's metrics or eval results, how to show it); pass@k rows are added per k found
ROWS = [
    ("parameters", "parameters", _count),
    ("tokens seen in training", "tokens_seen", _count),
    ("wall-clock of the stage", "wall_seconds", _duration),
    ("val bits per byte", "val_bits_per_byte", lambda value: f"{value:.3f}"),
    ("identity accuracy", "identity_accuracy", _share),
    ("arithmetic accuracy (greedy = pass@1)", "arithmetic_accuracy", _share),
    ("long arithmetic accuracy (RL's problems)", "long_arithmetic_accuracy", _share),
    ("spelling accuracy", "spelling_accuracy", _share),
    ("shakespeare accuracy", "shakespeare_accuracy", _share),
    ("repeat accuracy (copying from the context)", "repeat_accuracy", _share),
    ("real characters: right play", "knowledge_real_correct", _share),
    ("real characters: hallucinated", "knowledge_real_hallucinated", _share),
    ("real characters: declined", "knowledge_real_declined", _share),
    ("made-up names: declined", "knowledge_made_up_declined", _share),
    ("verse: the labeler's score, held-out topics", "verse_labeler_score", lambda value: f"{value:.3f}"),
    ("verse: the labeler's score, sampled lines", "verse_sampled_score", lambda value: f"{value:.3f}"),
    ("verse: lines the labeler would keep", "verse_good", _share),
    ("verse: lines copied from the plays", "verse_copied", _share),
    ("reward model: held-out pairs ranked right", "reward_accuracy", _share),
    *[
        (f"reward model: ranked right, told apart by {words}", f"reward_accuracy_{rule}", _share)
        for rule, words in RULES.items()
    ],
    ("DPO's implicit reward: held-out pairs ranked right", "preference_accuracy", _share),
    ("replies that stop", "stop_rate", _share),
    ("tool calls per question", "tool_calls_per_question", lambda value: f"{value:.2f}"),
    ("tool calls that failed", "tool_failure_rate", _share),
    ("questions a tool answers: first call the task's own", "tool_calls_as_asked", _share),
]


def table_rows(records: dict[str, dict]) -> list[tuple[str, str, object]]:
    """ROWS, with a row for every sampled pass@k any stage reports, after its task's accuracy."""
    rows = list(ROWS)
    sampled = sorted(
        {key for record in records.values() for key in record if key.endswith("_sampled") and "_pass@" in key},
        key=lambda key: (key.split("_pass@")[0], int(key.split("_pass@")[1].split("_")[0])),
    )
    for key in reversed(sampled):
        task, k = key.split("_pass@")[0], key.split("_pass@")[1].split("_")[0]
        after = next((i for i, row in enumerate(rows) if row[1] == f"{task}_accuracy"), len(rows) - 1)
        rows.insert(after + 1, (f"{task} pass@{k}, sampled", key, _share))
    with_tools = {key for record in records.values() for key in record if key.endswith("_with_tools")}
    for index in reversed(range(len(rows))):  # each score asked again with the tools, right below it
        label, key, show = rows[index]
        if f"{key}_with_tools" in with_tools:
            rows.insert(index + 1, (f"{label.split(' (')[0]}, with tools", f"{key}_with_tools", show))
    return rows


def stage_record(folder: Path) -> dict:
    """What a stage folder recorded: metrics, evaluation and the Trainer's log history, merged."""
    metrics, evaluation = read_record(folder, "metrics.json"), read_record(folder, "eval.json")
    history = read_record(folder, "trainer_state.json").get("log_history", [])
    record = {**metrics, **evaluation, "history": history}
    for key, value in metrics.items():  # a stage that scored verse before and after training shows the after
        if key.startswith("after_verse_"):
            record.setdefault(key.removeprefix("after_"), value)
    if "train_tokens" in metrics:
        record["tokens_seen"] = metrics["train_tokens"]
    else:
        counted = [entry["num_tokens"] for entry in history if "num_tokens" in entry]
        if counted:
            record["tokens_seen"] = counted[-1]
    return record


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(entry["step"], entry[key]) for entry in history if key in entry and "step" in entry]
    return [step for step, _ in points], [value for _, value in points]


REWARD_MODEL_SCORE = "every reward but the labeler"  # a panel's keys: the reward model's rewards/<name>/mean


def plot_stages(records: dict[str, dict], assets: Path) -> dict[str, Path]:
    """PNG plots of each stage's training curves; returns {stage: path}."""
    # imported here, by the one function that draws: the backend must be chosen before pyplot is imported, and
    # choosing it when the module is imported would impose it on every program that imports deepdive.report
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assets.mkdir(parents=True, exist_ok=True)
    panels = {
        "pretrain": [("train loss (nats/token)", ["loss"]), ("val bits per byte", ["eval_bits_per_byte"])],
        "sft": [("train loss on assistant tokens", ["loss"])],
        "honest sft": [("train loss on assistant tokens", ["loss"])],
        "grpo": [
            ("mean reward per function", None),  # every rewards/<name>/mean the run logged
            ("completion length (tokens)", ["completions/mean_length"]),
        ],
        "verse sft": [("train loss on assistant tokens", ["loss"])],
        "reward model": [("train loss", ["loss"]), ("train pairs ranked right", ["accuracy"])],
        "rlhf": [
            ("the reward model's score (trained on)", REWARD_MODEL_SCORE),
            ("the labeler's score of the same lines", ["rewards/labeler/mean"]),
            ("completion length (tokens)", ["completions/mean_length"]),
        ],
        "dpo": [("train loss", ["loss"]), ("train pairs ranked right", ["rewards/accuracies"])],
    }
    panels["grpo + tools"] = panels["grpo"]
    logged_only = [  # panels of what a run logs only with some settings: tools, a KL penalty
        ("tool calls per reply, and the share that failed", ["tools/call_frequency", "tools/failure_frequency"]),
        ("KL to the reference model", ["kl"]),
    ]
    paths = {}
    for stage, record in records.items():
        history = record["history"]
        if not history or stage not in panels:
            continue
        shown = panels[stage] + [panel for panel in logged_only if any(panel[1][0] in entry for entry in history)]
        figure, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 3.6), squeeze=False)
        for axis, (title, keys) in zip(axes[0], shown, strict=True):
            if keys in (None, REWARD_MODEL_SCORE):
                keys = sorted(
                    {key for entry in history for key in entry if key.startswith("rewards/") and key.endswith("/mean")}
                    - ({"rewards/labeler/mean"} if keys == REWARD_MODEL_SCORE else set())
                )
            for key in keys:
                steps, values = _series(history, key)
                if steps:
                    axis.plot(
                        steps,
                        values,
                        marker="o" if len(steps) < 30 else None,
                        label=key.split("/")[1] if "/" in key else key,
                    )
            axis.set_title(title)
            axis.set_xlabel("step")
            axis.grid(alpha=0.3)
            if len(keys) > 1:
                axis.legend()
        figure.suptitle(f"{stage}: {STAGE_FOLDERS[stage]}")
        figure.tight_layout()
        paths[stage] = assets / f"{stage.replace(' + ', '-')}.png"  # sft-tools.png
        figure.savefig(paths[stage], dpi=110)
        plt.close(figure)
    return paths


KNOWLEDGE_PANELS = {
    "seen": "real characters, seen in pretraining",
    "unseen": "real characters, never seen",
    "made_up": "made-up names",
}
OUTCOME_COLOURS = {"correct": "tab:green", "hallucinated": "tab:red", "declined": "tab:gray"}


def plot_knowledge(records: dict[str, dict], assets: Path) -> Path | None:
    """Stacked bars of the three outcomes of the knowledge evaluation (right play, hallucinated, declined) per
    stage, one panel per group of held-out names; None when no stage has the figures."""
    stages = [stage for stage, record in records.items() if "knowledge_real_correct" in record]
    if not stages:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assets.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, len(KNOWLEDGE_PANELS), figsize=(4.2 * len(KNOWLEDGE_PANELS), 3.8), sharey=True)
    for axis, (group, title) in zip(axes, KNOWLEDGE_PANELS.items(), strict=True):
        bottom = [0.0] * len(stages)
        for outcome, colour in OUTCOME_COLOURS.items():
            shares = [100 * records[stage].get(f"knowledge_{group}_{outcome}", 0.0) for stage in stages]
            axis.bar(stages, shares, bottom=bottom, color=colour, label=outcome)
            bottom = [low + share for low, share in zip(bottom, shares, strict=True)]
        asked = records[stages[0]].get(f"knowledge_{group}_questions")
        axis.set_title(f"{title} ({asked} questions)" if asked else title, fontsize=10)
        axis.set_ylim(0, 100)
        axis.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("% of held-out questions")
    axes[-1].legend(loc="lower right")
    figure.suptitle('"Which play is X in?": right play, hallucinated or declined')
    figure.tight_layout()
    path = assets / "knowledge.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def rlhf_summary(rlhf: dict) -> list[str]:
    """The RLHF lines of the report: the labeler's score of held-out lines before and after, and the steps where the
    reward model's score of the samples and the labeler's score of the same samples rose and fell."""
    curve = rlhf["reward_curve"]
    labeler = [entry["rewards"].get("labeler") for entry in curve]
    lines = [
        "## RLHF: the reward model and the person it imitates",
        "",
        f"The labeler's score of greedy lines about {rlhf.get('before_verse_prompts', '?')} held-out topics: "
        f"{rlhf.get('before_verse_labeler_score', float('nan')):.3f} before RLHF, "
        f"{rlhf.get('after_verse_labeler_score', float('nan')):.3f} after.",
    ]
    if "after_verse_sampled_score" in rlhf:
        lines[-1] += (
            f" Of lines sampled at temperature 1, as RL samples them: {rlhf['before_verse_sampled_score']:.3f} "
            f"before, {rlhf['after_verse_sampled_score']:.3f} after."
        )
    if curve and None not in labeler:
        best = max(range(len(curve)), key=lambda index: labeler[index])
        lines.append(
            f"Over {curve[-1]['step']} steps the reward model's mean score of the sampled lines went "
            f"{curve[0]['reward']:+.2f} -> {curve[-1]['reward']:+.2f}; the labeler's score of the same lines went "
            f"{labeler[0]:.3f} -> {labeler[best]:.3f} (its best, step {curve[best]['step']}) -> {labeler[-1]:.3f}. "
            "Where the first keeps rising and the second falls, the policy is gaming the reward model."
        )
    if curve and "kl" in curve[-1]:
        kl = [entry["kl"] for entry in curve]
        lines.append(
            f"The run penalised the policy's KL to the verse SFT model (`beta`): the KL of its samples was "
            f"{kl[0]:.3f} at step {curve[0]['step']}, {max(kl):.3f} at most and {kl[-1]:.3f} at step "
            f"{curve[-1]['step']}."
        )
    return [*lines, ""]


def answer_side_by_side(folders: dict[str, Path], max_new_tokens: int = 100) -> list[dict]:
    """The first held-out prompt of each task family, answered greedily by every stage.

    Chat stages answer through their chat template; the base model, a token simulator, continues the question
    as plain text, which is what pretraining alone gives.
    """
    questions = [get_task(name).examples("test", 1, seed=0)[0]["prompt"] for name in LESSONS]
    if "verse sft" in folders:
        questions.append(Verse().examples("test", 1, seed=0)[0]["prompt"])
    rows = [{"prompt": question[-1]["content"]} for question in questions]
    for stage, folder in folders.items():
        model, tokenizer = load_model_and_tokenizer(str(folder))
        if trained_with_tools(folder):  # answers with the tools it was trained to call
            exchanges = generate_with_tools(model, tokenizer, questions, Decoding(max_new_tokens))
            completions = [Completion(shown_exchange(exchange), exchange.completion.stopped) for exchange in exchanges]
        elif tokenizer.chat_template:
            completions = generate(model, tokenizer, questions, Decoding(max_new_tokens))
        else:
            texts = [row["prompt"] + "\n" for row in rows]
            completions = generate(model, tokenizer, texts, Decoding(max_new_tokens // 2))
        for row, completion in zip(rows, completions, strict=True):
            row[stage] = completion.text
    return rows


def shown_exchange(exchange: Exchange) -> str:
    """An answer given with tools as one text: each call (`python {"code": ...}`), its result (`-> ...`), then the
    answer."""
    lines = []
    for turn in exchange.turns:
        if turn["role"] == "assistant":
            lines += [f"{c['function']['name']} {json.dumps(c['function']['arguments'])}" for c in turn["tool_calls"]]
        else:
            lines.append(f"-> {turn['content']}")
    return "\n".join([*lines, exchange.completion.text])


def _cell(text: str) -> str:
    return text.strip().replace("|", "\\|").replace("\n", "<br>") or "(empty)"


def environment() -> list[str]:
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    return [f"- Hardware: {hardware()}", f"- Python {platform.python_version()}, {', '.join(versions)}"]


def write_report(run_dir: str | Path, side_by_side: bool = True) -> Path:
    """Write `<run_dir>/report.md` and its plots in `<run_dir>/report/`; return the report's path."""
    run_dir = Path(run_dir)
    folders = {
        stage: run_dir / name for stage, name in STAGE_FOLDERS.items() if (run_dir / name / "metrics.json").is_file()
    }
    if not folders:
        raise DataError(
            f"--run: {run_dir} holds no finished stage ({', '.join(STAGE_FOLDERS.values())} with metrics.json)"
        )
    records = {stage: stage_record(folder) for stage, folder in folders.items()}
    plots = plot_stages(records, run_dir / "report")

    stages = list(folders)
    lines = [
        f"# deepdive report card: `{run_dir.as_posix()}`",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M')}. Stages: "
        + ", ".join(f"{stage} (`{folders[stage].name}/`)" for stage in stages)
        + ". Accuracies are on held-out prompts (`deepdive eval`); bits per byte on the held-out plays.",
        "",
        "| metric | " + " | ".join(stages) + " |",
        "|---|" + "---|" * len(stages),
    ]
    for label, key, show in table_rows(records):
        cells = [show(records[stage][key]) if key in records[stage] else "–" for stage in stages]
        if any(cell != "–" for cell in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    training = sum(record.get("wall_seconds", 0) for record in records.values())
    evaluating = sum(read_record(folder, "eval.json").get("eval_seconds", 0) for folder in folders.values())
    lines += [
        "",
        f"Wall-clock: {_duration(training)} inside the stage recipes (from start to their saved record, launch "
        f"excluded), {_duration(evaluating)} in `deepdive eval`.",
        "",
    ]
    grpo = records.get("grpo", {})
    for key in sorted(key for key in grpo if key.startswith("before_") and key.endswith("_accuracy")):
        task = key.removeprefix("before_").removesuffix("_accuracy")
        lines += [
            f"RL on {task}, greedy accuracy on {grpo.get('before_test_prompts', '?')} held-out problems: "
            f"{grpo[key]:.1%} before, {grpo[f'after_{task}_accuracy']:.1%} after.",
            "",
        ]
    knowledge = plot_knowledge(records, run_dir / "report")
    if knowledge:
        lines += [
            "## Hallucination: where each stage's knowledge ends",
            "",
            'Held-out "which play?" questions: real characters of the train plays (seen in pretraining), real '
            "characters of the validation plays (never seen) and made-up names, each reply marked as the right play, "
            "a hallucination (a wrong play, or a play for a name in none) or declined. `make honest` probes what the "
            "SFT model knows and trains it to decline the rest.",
            "",
            f"![knowledge]({knowledge.relative_to(run_dir).as_posix()})",
            "",
        ]
    lines += ["## Training curves", ""]
    for stage, path in plots.items():
        lines += [f"![{stage}]({path.relative_to(run_dir).as_posix()})", ""]
    rlhf = records.get("rlhf", {})
    if "reward_curve" in rlhf:
        lines += rlhf_summary(rlhf)
    if side_by_side:
        writers = {stage: folder for stage, folder in folders.items() if stage not in SCORERS}
        lines += [
            "## The same prompts, stage by stage",
            "",
            "Greedy replies to the first held-out prompt of each task family. The base model is a token "
            "simulator: it continues the question as text.",
            "",
            "| prompt | " + " | ".join(writers) + " |",
            "|---|" + "---|" * len(writers),
        ]
        for row in answer_side_by_side(writers):
            lines.append(f"| {_cell(row['prompt'])} | " + " | ".join(_cell(row[stage]) for stage in writers) + " |")
        lines.append("")
    lines += ["## Environment", "", *environment(), ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
