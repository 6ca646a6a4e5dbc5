"""The spread over seeds: the same recipe run with several seeds, side by side in one table.

One run's figure is one draw: the seed picks the initial weights, the order of the data and the generated
task examples, and on a few hundred held-out prompts that moves an accuracy by points. `make seeds SEEDS="1 2 3"`
runs the whole pipeline once per seed (`runs/<recipe>/seed-<s>`); `deepdive seeds` then reads what each run
recorded, the stages' own `metrics.json` (and `eval.json` for the time `deepdive eval` took), and writes one
row per figure: each seed's value, the mean and the min-max range, as JSON and Markdown. Nothing is measured
again here, so the table quotes the records exactly; a stage or figure a run lacks shows as "—".
"""

import json
import math
import re
from pathlib import Path

from deepdive.errors import DataError
from deepdive.labeler import RULES
from deepdive.records import read_record
from deepdive.tasks import LESSONS as TASK_ORDER  # rows in the lecture's order; other families after
from deepdive.tasks.verse import Verse


PIPELINE = ("base", "sft", "grpo")  # the stage folders of `make all`, in pipeline order
RLHF_STAGES = ("sft-verse", "reward", "rlhf", "dpo")  # the stage folders of `make rlhf`
STAGES = (*PIPELINE, "sft-honest", "sft-tools", *RLHF_STAGES)  # with `make honest`'s and `make tools`' SFT passes
CHAT_STAGES = ("sft", "sft-honest", "sft-tools")
TIMED = (*PIPELINE, "sft-honest", "sft-tools", "probe", "sft-verse", "prefs", *RLHF_STAGES[1:], "all")  # time rows
STAGE_NAMES = {
    "base": "pretraining",
    "sft": "SFT",
    "grpo": "GRPO",
    "sft-honest": "SFT after the probe",
    "sft-tools": "SFT with tools",
    "probe": "probe",
    "sft-verse": "verse SFT",
    "prefs": "preference pairs",
    "reward": "reward model",
    "rlhf": "RLHF",
    "dpo": "DPO",
}


def _rule_figures() -> dict[tuple[str, str], str]:
    """Per part of the labeler's rule: the share of the held-out pairs it tells apart, the reward model's accuracy
    on them."""
    figures = {}
    for rule, words in RULES.items():
        figures["reward", f"pairs_{rule}_share"] = f"reward model: held-out pairs told apart by {words}"
        figures["reward", f"reward_accuracy_{rule}"] = f"reward model: ranked right, told apart by {words}"
    return figures


RLHF_FIGURES = {  # (stage, figure): its row's words
    ("sft-verse", "verse_labeler_score"): "verse SFT: the labeler's score, greedy lines, held-out topics",
    ("rlhf", "before_verse_sampled_score"): "verse SFT: the labeler's score, sampled lines (RLHF's check before)",
    ("reward", "reward_accuracy"): "reward model: held-out pairs ranked right",
    **_rule_figures(),
    ("rlhf", "after_verse_labeler_score"): "RLHF: the labeler's score, greedy lines",
    ("rlhf", "verse_labeler_gain"): "RLHF: gain in the labeler's score, greedy lines",
    ("rlhf", "after_verse_sampled_score"): "RLHF: the labeler's score, sampled lines",
    ("rlhf", "verse_sampled_gain"): "RLHF: gain in the labeler's score, sampled lines",
    ("dpo", "after_verse_labeler_score"): "DPO: the labeler's score, greedy lines",
    ("dpo", "verse_labeler_gain"): "DPO: gain in the labeler's score, greedy lines",
    ("dpo", "after_verse_sampled_score"): "DPO: the labeler's score, sampled lines",
    ("dpo", "verse_sampled_gain"): "DPO: gain in the labeler's score, sampled lines",
}
TOOL_FIGURES = {  # of the evaluation with tools, the figures the table shows
    "tool_calls_per_question": "tool calls per question",
    "tool_failure_rate": "tool calls that failed",
    "tool_calls_as_asked": "questions whose first call is the task's own",
}
KNOWLEDGE_FIGURES = {  # of the knowledge evaluation, the figures the table shows
    "knowledge_real_correct": "real characters answered right",
    "knowledge_real_hallucinated": "real characters hallucinated",
    "knowledge_real_declined": "real characters declined",
    "knowledge_seen_hallucinated": "seen characters hallucinated",
    "knowledge_unseen_hallucinated": "never-seen characters hallucinated",
    "knowledge_made_up_declined": "made-up names declined",
}
MISSING = "—"


def run_seed(run_dir: Path) -> int:
    """The seed a run was trained with: its stages' `recipe.yaml` (overrides applied), else its `seed-<N>` name."""
    seeds = {read_record(run_dir / stage, "recipe.yaml").get("seed") for stage in STAGES} - {None}
    if len(seeds) > 1:
        raise DataError(f"--runs: the stages of {run_dir} were trained with different seeds ({sorted(seeds)})")
    if seeds:
        return int(seeds.pop())
    named = re.fullmatch(r"seed-(\d+)", run_dir.name)
    if named is None:
        raise DataError(f"--runs: cannot tell the seed of {run_dir}: no stage recipe.yaml and not named seed-<N>")
    return int(named.group(1))


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def run_figures(run_dir: Path) -> dict[str, float]:
    """One run's figures, keyed `<stage>.<figure>`: bits per byte, the SFT recipe's held-out accuracies and stop
    rate, the GRPO recipe's accuracy before and after on each task it practised, SFT with tools' figures without
    and with the tools (and its tool calls), and the wall-clock per stage."""
    records = {stage: read_record(run_dir / stage, "metrics.json") for stage in STAGES}
    figures = {}
    if _number(records["base"].get("val_bits_per_byte")):
        figures["base.val_bits_per_byte"] = records["base"]["val_bits_per_byte"]
    for stage in CHAT_STAGES:  # each family without tools, and with them where the model has them
        for key, value in records[stage].items():
            chosen = key in TOOL_FIGURES or key in KNOWLEDGE_FIGURES
            if re.fullmatch(r".+_accuracy(_with_tools)?|stop_rate(_with_tools)?", key) or chosen:
                if _number(value):
                    figures[f"{stage}.{key}"] = value
    probe = read_record(run_dir / "probe", "summary.json")
    if _number(probe.get("known")) and probe.get("characters"):
        figures["probe.known_share"] = probe["known"] / probe["characters"]
    if _number(probe.get("seconds")):
        figures["probe.wall_seconds"] = probe["seconds"]
    prefs = read_record(run_dir / "prefs", "summary.json")
    if _number(prefs.get("seconds")):  # `deepdive prefs`: sampling and ranking the lines
        figures["prefs.wall_seconds"] = prefs["seconds"]
    grpo = records["grpo"]
    practised = {key[len("before_") : -len("_accuracy")] for key in grpo if re.fullmatch(r"before_.+_accuracy", key)}
    practised |= {key[len("after_") : -len("_accuracy")] for key in grpo if re.fullmatch(r"after_.+_accuracy", key)}
    for task in practised:
        before, after = grpo.get(f"before_{task}_accuracy"), grpo.get(f"after_{task}_accuracy")
        if _number(before):
            figures[f"grpo.before_{task}_accuracy"] = before
        if _number(after):
            figures[f"grpo.after_{task}_accuracy"] = after
        if _number(before) and _number(after):
            figures[f"grpo.{task}_gain_points"] = 100 * (after - before)
    for stage, figure in RLHF_FIGURES:
        value = records[stage].get(figure)
        if figure.endswith("_gain"):  # against the model the stage started from, on the same prompts
            score = figure.removesuffix("_gain") + "_score"
            before, after = (records[stage].get(f"{when}_{score}") for when in ("before", "after"))
            value = after - before if _number(before) and _number(after) else None
        if figure.startswith("pairs_"):  # of the held-out pairs, those one part of the labeler's rule tells apart
            pairs = records[stage].get(f"test_{figure.removesuffix('_share')}")
            total = records[stage].get("test_pairs")
            value = pairs / total if _number(pairs) and _number(total) and total else None
        if _number(value):
            figures[f"{stage}.{figure}"] = value
    for stage in STAGES:
        if _number(records[stage].get("wall_seconds")):
            figures[f"{stage}.wall_seconds"] = records[stage]["wall_seconds"]
    for stage in STAGES:
        eval_seconds = read_record(run_dir / stage, "eval.json").get("eval_seconds")
        if _number(eval_seconds):
            figures[f"{stage}.eval_seconds"] = eval_seconds
    if all(f"{stage}.wall_seconds" in figures for stage in PIPELINE):
        figures["all.wall_seconds"] = sum(figures[f"{stage}.wall_seconds"] for stage in PIPELINE)
    return figures


def _task_rank(task: str) -> tuple:
    return (TASK_ORDER.index(task), "") if task in TASK_ORDER else (len(TASK_ORDER), task)


def _row_rank(key: str) -> tuple:
    """Where a figure's row goes: bits per byte, SFT tasks, knowledge, stop rate, the probe and SFT after it, GRPO
    per task, SFT with tools (each task without, then with tools; stop rates; tool calls), then times."""
    stage, figure = key.split(".", 1)
    if figure.endswith("_seconds"):
        return (5, ("wall_seconds", "eval_seconds").index(figure), TIMED.index(stage))
    if stage == "base":
        return (0,)
    if stage == "probe":
        return (2, -1)
    if (stage, figure) in RLHF_FIGURES:  # after GRPO's and the tools' rows
        return (4.5, list(RLHF_FIGURES).index((stage, figure)))
    if stage in CHAT_STAGES:
        block = {"sft": 1, "sft-honest": 2, "sft-tools": 4}[stage]  # GRPO's rows are block 3
        if figure in TOOL_FIGURES:
            return (block, 3, list(TOOL_FIGURES).index(figure))
        if figure in KNOWLEDGE_FIGURES:
            return (block, 1, list(KNOWLEDGE_FIGURES).index(figure))
        with_tools = figure.endswith("_with_tools")
        figure = figure.removesuffix("_with_tools")
        if figure == "stop_rate":
            return (block, 2, with_tools)
        return (block, 0, _task_rank(figure.removesuffix("_accuracy")), with_tools)
    if figure.endswith("_gain_points"):
        return (3, _task_rank(figure.removesuffix("_gain_points")), 2)
    when, task = figure.removesuffix("_accuracy").split("_", 1)
    return (3, _task_rank(task), ("before", "after").index(when))


def label(key: str) -> str:
    """The table's words for a figure key."""
    stage, figure = key.split(".", 1)
    if figure == "wall_seconds":
        return "wall-clock, all three stages" if stage == "all" else f"wall-clock, {STAGE_NAMES[stage]}"
    if figure == "eval_seconds":
        return f"time in `deepdive eval`, {stage}"
    if figure == "val_bits_per_byte":
        return "val bits per byte"
    if figure in TOOL_FIGURES or figure in KNOWLEDGE_FIGURES:
        return f"{STAGE_NAMES[stage]}: {TOOL_FIGURES.get(figure) or KNOWLEDGE_FIGURES[figure]}"
    if (stage, figure) in RLHF_FIGURES:
        return RLHF_FIGURES[stage, figure]
    if figure == "known_share":
        return "probe: characters the SFT model knows"
    if stage in CHAT_STAGES:
        with_tools = ", with tools" if figure.endswith("_with_tools") else ""
        figure = figure.removesuffix("_with_tools")
        what = "replies that stop" if figure == "stop_rate" else f"{figure.removesuffix('_accuracy')} accuracy"
        return f"{STAGE_NAMES[stage]} {what}{with_tools}"
    if figure.endswith("_gain_points"):
        return f"GRPO {figure.removesuffix('_gain_points')} gain"
    when, task = figure.removesuffix("_accuracy").split("_", 1)
    return f"GRPO {task} accuracy, {when}"


def duration(seconds: float) -> str:
    """`4 min 12 s`, or `58 s` under a minute."""
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def show(key: str, value: float | None) -> str:
    """A figure as the table shows it: percentages, points, bits per byte with 3 decimals, durations."""
    if value is None:
        return MISSING
    if key.endswith("_seconds"):
        return duration(value)
    if key.endswith("_gain_points"):
        return f"{value:+.1f} pts"
    if key.endswith("_gain"):
        return f"{value:+.3f}"
    if key.endswith("tool_calls_per_question"):
        return f"{value:.2f}"
    if re.search(
        r"(_accuracy|stop_rate|_failure_rate|_as_asked|_correct|_hallucinated|_declined|_share)(_with_tools)?$", key
    ) or re.search(r"\.reward_accuracy_\w+$", key):  # the reward model's accuracy on the pairs one rule tells apart
        return f"{value:.1%}"
    return f"{value:.3f}"


def summarize(values: list[float]) -> dict:
    """Mean, min, max and count of the values present."""
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "n": len(values)}


def seeds_table(run_dirs: list[str | Path], generated_by: str | None = None) -> dict:
    """The spread over seeds of `run_dirs` (one run folder per seed), the JSON record `write_seeds_table` saves:
    `runs` maps each seed to its figures (None where its records lack one), `summary` each figure to the mean,
    min, max and number of the seeds that have it, `metrics` each figure key to its row label."""
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise DataError(f"--runs: {run_dir} is not a run folder")
    seeds = [run_seed(run_dir) for run_dir in run_dirs]
    for index, seed in enumerate(seeds):
        if seeds.index(seed) != index:
            raise DataError(f"--runs: {run_dirs[seeds.index(seed)]} and {run_dirs[index]} both have seed {seed}")
    figures = {str(seed): run_figures(run_dir) for seed, run_dir in zip(seeds, run_dirs, strict=True)}
    keys = sorted({key for found in figures.values() for key in found}, key=_row_rank)
    runs = {seed: {key: found.get(key) for key in keys} for seed, found in figures.items()}  # None: not recorded
    hardware = sorted(
        {read_record(run_dir / stage, "metrics.json").get("hardware") for run_dir in run_dirs for stage in STAGES}
        - {None}
    )
    return {
        "recipe": run_dirs[0].parent.name if len({run_dir.parent for run_dir in run_dirs}) == 1 else None,
        "seeds": seeds,
        "folders": {str(seed): run_dir.as_posix() for seed, run_dir in zip(seeds, run_dirs, strict=True)},
        "hardware": hardware,
        "generated_by": generated_by
        or "deepdive seeds --runs " + " ".join(run_dir.as_posix() for run_dir in run_dirs),
        "metrics": {key: label(key) for key in keys},
        "runs": runs,
        "summary": {key: summarize([found[key] for found in figures.values() if key in found]) for key in keys},
    }


def markdown(table: dict) -> str:
    """The Markdown page of a seeds table: one row per figure, a column per seed, then mean and min-max."""
    seeds = [str(seed) for seed in table["seeds"]]
    recipe = f"`{table['recipe']}`" if table["recipe"] else "runs"
    lines = [
        f"# Spread over seeds: {recipe}",
        "",
        f"Seeds {', '.join(seeds)} on {'; '.join(table['hardware']) or 'unrecorded hardware'}; "
        f"regenerate with `{table['generated_by']}`.",
        "",
        "| metric | " + " | ".join(f"seed {seed}" for seed in seeds) + " | mean | min–max |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]
    for key, words in table["metrics"].items():
        cells = [show(key, table["runs"][seed].get(key)) for seed in seeds]
        summary = table["summary"][key]
        spread = f"{show(key, summary['min'])} – {show(key, summary['max'])}"
        lines.append(f"| {words} | " + " | ".join(cells) + f" | {show(key, summary['mean'])} | {spread} |")
    lines += [
        "",
        "SFT figures are the SFT recipe's held-out evaluation (`sft/metrics.json`), GRPO figures its recipe's check "
        "before and after RL (`grpo/metrics.json`), gains in percentage points; SFT with tools (`make tools`, "
        "`sft-tools/metrics.json`) is scored on the same questions without and with the tools offered; "
        "SFT after the probe (`make honest`, `sft-honest/metrics.json`) on the same questions as SFT, the knowledge "
        'rows on held-out "which play?" questions (right play, hallucinated or declined); '
        "the RLHF rows (`make rlhf`) are the simulated labeler's mean score (0 to 1) of lines about held-out topics, "
        f"greedy and {Verse.SAMPLES} sampled at temperature 1 per prompt, gains against the verse SFT model on the "
        "same prompts; "
        "wall-clock is inside each recipe, "
        f"`deepdive eval` timed on its own. Mean and min–max are over the seeds that have the figure ({MISSING}: "
        "not recorded).",
        "",
    ]
    return "\n".join(lines)


def write_seeds_table(run_dirs: list[str | Path], output: str | Path | None = None, generated_by: str | None = None):
    """Write `<output>.json` and `<output>.md` (default output: `seeds` in the folder holding the runs) and, when
    the runs share a folder, the same page as `seeds.md` there: the report card of the multi-seed run, beside
    each seed's own `report.md`. Returns the paths written."""
    table = seeds_table(run_dirs, generated_by)
    parents = {Path(run_dir).parent for run_dir in run_dirs}
    shared = parents.pop() if len(parents) == 1 else None
    output = Path(output) if output else (shared or Path()) / "seeds"
    output.parent.mkdir(parents=True, exist_ok=True)
    page = markdown(table)
    paths = [output.with_name(output.name + ".json"), output.with_name(output.name + ".md")]
    paths[0].write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(page, encoding="utf-8")
    if shared and (shared / "seeds.md").resolve() != paths[1].resolve():
        (shared / "seeds.md").write_text(page, encoding="utf-8")
        paths.append(shared / "seeds.md")
    return paths
