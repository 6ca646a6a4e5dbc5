"""The spread over seeds: the table quotes each seed's records, `make seeds` runs each seed into its own folder."""

import json
import shutil
import subprocess

import pytest
import yaml
from conftest import REPO
from safetensors.torch import load_file

from deepdive.cli import main
from deepdive.errors import DataError
from deepdive.records import read_record, write_metrics
from deepdive.seeds import duration, seeds_table, show


def write_run(run_dir, seed: int | None, records: dict[str, dict]) -> None:
    """A run folder as the recipes leave it: `<stage>/metrics.json` (+ `eval.json`, `recipe.yaml` with the seed)."""
    for stage, record in records.items():
        folder = run_dir / stage
        folder.mkdir(parents=True)
        write_metrics(folder, record["metrics"])
        if "eval" in record:
            write_metrics(folder, record["eval"], "eval.json")
        if seed is not None:
            (folder / "recipe.yaml").write_text(yaml.safe_dump({"seed": seed, "output_dir": str(folder)}))


HARDWARE = "2 CPU cores (x86_64), no GPU"


def stages(bpb, sft_arithmetic, before, after, grpo_seconds=290.0):
    records = {
        "base": {
            "metrics": {"stage": "pretrain", "val_bits_per_byte": bpb, "wall_seconds": 365.0, "hardware": HARDWARE},
            "eval": {"val_bits_per_byte": bpb + 0.01, "eval_seconds": 19.0},
        },
        "sft": {
            "metrics": {
                "stage": "sft",
                "identity_accuracy": 1.0,
                "arithmetic_accuracy": sft_arithmetic,
                "spelling_accuracy": 0.4,
                "shakespeare_accuracy": 0.32,
                "stop_rate": 0.999,
                "test_prompts": 800,
                "wall_seconds": 282.0,
                "eval_seconds": 40.0,
                "hardware": HARDWARE,
            },  # fmt: skip
            "eval": {"arithmetic_accuracy": 0.99, "eval_seconds": 58.4},  # `deepdive eval`: not the SFT figures
        },
    }
    if before is not None:
        records["grpo"] = {
            "metrics": {
                "stage": "grpo",
                "before_countdown_accuracy": before,
                "after_countdown_accuracy": after,
                "before_stop_rate": 1.0,
                "wall_seconds": grpo_seconds,
                "hardware": HARDWARE,
            },  # fmt: skip
        }
    return records


@pytest.fixture
def seed_runs(tmp_path):
    """Three seeds of a recipe: two complete, the third (no recipe.yaml, seed from its name) without GRPO."""
    runs = tmp_path / "runs" / "tiny"
    write_run(runs / "first", 1, stages(2.019, 0.31, 0.312, 0.444))
    write_run(runs / "seed-2", 2, stages(2.031, 0.40, 0.350, 0.430, grpo_seconds=251.6))
    write_run(runs / "seed-3", None, stages(2.025, 0.355, None, None))
    return [runs / "first", runs / "seed-2", runs / "seed-3"]


def test_table_quotes_each_seeds_records_and_summarizes_the_present_ones(seed_runs):
    table = seeds_table(seed_runs, 'make seeds RECIPE=tiny SEEDS="1 2 3"')
    assert table["recipe"] == "tiny" and table["seeds"] == [1, 2, 3] and table["hardware"] == [HARDWARE]
    for seed, run_dir in zip(("1", "2", "3"), seed_runs, strict=True):
        figures, sft = table["runs"][seed], read_record(run_dir / "sft", "metrics.json")
        assert figures["base.val_bits_per_byte"] == read_record(run_dir / "base", "metrics.json")["val_bits_per_byte"]
        for key in ("identity_accuracy", "arithmetic_accuracy", "spelling_accuracy", "shakespeare_accuracy"):
            assert figures[f"sft.{key}"] == sft[key]  # the SFT recipe's evaluation, not eval.json's
        assert figures["sft.stop_rate"] == sft["stop_rate"] and figures["sft.wall_seconds"] == sft["wall_seconds"]
        assert figures["sft.eval_seconds"] == read_record(run_dir / "sft", "eval.json")["eval_seconds"]
    grpo = read_record(seed_runs[0] / "grpo", "metrics.json")
    assert table["runs"]["1"]["grpo.before_countdown_accuracy"] == grpo["before_countdown_accuracy"]
    assert table["runs"]["1"]["grpo.after_countdown_accuracy"] == grpo["after_countdown_accuracy"]
    assert table["runs"]["1"]["grpo.countdown_gain_points"] == pytest.approx(13.2)
    assert table["runs"]["1"]["all.wall_seconds"] == 365.0 + 282.0 + 290.0
    assert not any(key.startswith("grpo.") and "arithmetic" in key for key in table["metrics"])  # what it practised
    assert (
        table["runs"]["3"]["grpo.after_countdown_accuracy"] is None and table["runs"]["3"]["all.wall_seconds"] is None
    )

    assert table["summary"]["sft.arithmetic_accuracy"] == pytest.approx(
        {"mean": 0.355, "min": 0.31, "max": 0.40, "n": 3}
    )
    assert table["summary"]["grpo.after_countdown_accuracy"] == pytest.approx(
        {"mean": 0.437, "min": 0.43, "max": 0.444, "n": 2}
    )  # seed 3 has no GRPO stage: left out, not counted as zero
    assert table["summary"]["base.val_bits_per_byte"]["n"] == 3


def test_markdown_rows_per_figure_and_both_pages_written(seed_runs, tmp_path):
    output = tmp_path / "results" / "tiny-seeds"
    main(["seeds", "--runs", *map(str, seed_runs), "--output", str(output), "--generated_by", "make seeds"])
    page = (tmp_path / "results" / "tiny-seeds.md").read_text()
    assert json.loads((tmp_path / "results" / "tiny-seeds.json").read_text()) == seeds_table(seed_runs, "make seeds")
    assert (seed_runs[0].parent / "seeds.md").read_text() == page  # the multi-seed run's report card
    assert f"on {HARDWARE}; regenerate with `make seeds`." in page
    assert "| metric | seed 1 | seed 2 | seed 3 | mean | min–max |" in page
    assert "| val bits per byte | 2.019 | 2.031 | 2.025 | 2.025 | 2.019 – 2.031 |" in page
    assert "| SFT arithmetic accuracy | 31.0% | 40.0% | 35.5% | 35.5% | 31.0% – 40.0% |" in page
    assert "| GRPO countdown gain | +13.2 pts | +8.0 pts | — | +10.6 pts | +8.0 pts – +13.2 pts |" in page
    assert "| wall-clock, GRPO | 4 min 50 s | 4 min 12 s | — | 4 min 31 s | 4 min 12 s – 4 min 50 s |" in page
    assert "| time in `deepdive eval`, sft | 58 s | 58 s | 58 s | 58 s | 58 s – 58 s |" in page
    rows = [line.split(" | ")[0] for line in page.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == [
        "| metric", "| val bits per byte", "| SFT identity accuracy", "| SFT arithmetic accuracy",
        "| SFT spelling accuracy", "| SFT shakespeare accuracy", "| SFT replies that stop",
        "| GRPO countdown accuracy, before", "| GRPO countdown accuracy, after", "| GRPO countdown gain",
        "| wall-clock, pretraining", "| wall-clock, SFT", "| wall-clock, GRPO", "| wall-clock, all three stages",
        "| time in `deepdive eval`, base", "| time in `deepdive eval`, sft",
    ]  # fmt: skip


def test_sft_with_tools_rows_sit_after_grpo_each_family_without_then_with_tools(seed_runs, tmp_path):
    for seed, run_dir in enumerate(seed_runs[:2], start=1):
        record = {"stage": "sft", "spelling_accuracy": 0.45, "spelling_accuracy_with_tools": 0.9 + seed / 100}
        record |= {"stop_rate": 1.0, "stop_rate_with_tools": 0.995, "tool_calls_per_question": 0.75}
        record |= {"tool_failure_rate": 0.0, "tool_calls_as_asked": 0.8, "train_loss": 0.3, "wall_seconds": 300.0}
        write_run(run_dir, seed, {"sft-tools": {"metrics": record}})
    output = tmp_path / "results" / "tiny-seeds"
    main(["seeds", "--runs", *map(str, seed_runs), "--output", str(output), "--generated_by", "make seeds"])
    page = output.with_suffix(".md").read_text()
    assert "| SFT with tools spelling accuracy, with tools | 91.0% | 92.0% | — | 91.5% | 91.0% – 92.0% |" in page
    assert "| SFT with tools: tool calls per question | 0.75 | 0.75 | — | 0.75 | 0.75 – 0.75 |" in page
    assert "| SFT with tools: questions whose first call is the task's own | 80.0% | 80.0% | — | 80.0% |" in page
    rows = [line.split(" | ")[0] for line in page.splitlines() if line.startswith("| ") and "---" not in line]
    after_grpo = rows[rows.index("| GRPO countdown gain") + 1 : rows.index("| wall-clock, pretraining")]
    assert after_grpo == [
        "| SFT with tools spelling accuracy", "| SFT with tools spelling accuracy, with tools",
        "| SFT with tools replies that stop", "| SFT with tools replies that stop, with tools",
        "| SFT with tools: tool calls per question", "| SFT with tools: tool calls that failed",
        "| SFT with tools: questions whose first call is the task's own",
    ]  # fmt: skip
    assert "| wall-clock, SFT with tools | 5 min 0 s |" in page
    assert seeds_table(seed_runs)["runs"]["1"]["all.wall_seconds"] == 365.0 + 282.0 + 290.0  # `make all`'s three


def test_durations_read_as_minutes_and_seconds():
    assert [duration(s) for s in (58.4, 59.6, 252.0, 3725.0)] == ["58 s", "1 min 0 s", "4 min 12 s", "62 min 5 s"]


def test_runs_that_cannot_be_told_apart_fail_in_one_line(seed_runs, tmp_path):
    shutil.copytree(seed_runs[1], tmp_path / "copy")
    with pytest.raises(DataError, match=r"--runs: .*seed-2 and .*copy both have seed 2"):
        seeds_table([seed_runs[1], tmp_path / "copy"])
    (tmp_path / "unnamed").mkdir()
    with pytest.raises(DataError, match="cannot tell the seed of .*unnamed"):
        seeds_table([tmp_path / "unnamed"])
    with pytest.raises(DataError, match="is not a run folder"):
        seeds_table([tmp_path / "nothing"])


# --- The Makefile: SEED, make seeds -------------------------------------------------------------------------------


def make(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `make` in the repository as a user does (`-o` keeps the installed .venv as it is)."""
    if shutil.which("make") is None or not (REPO / ".venv" / "bin" / "accelerate").exists():
        pytest.skip("needs make and the repository's .venv")
    result = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def test_make_seeds_runs_every_stage_of_each_seed_into_its_own_folder_then_the_table(tmp_path):
    commands = make("-n", "-B", "seeds", "RECIPE=micro", "SEEDS=1 2", f"RUNS={tmp_path}").stdout
    for seed in (1, 2):
        run = f"{tmp_path}/micro/seed-{seed}"
        for line in (
            f"recipes/pretrain.py --config recipes/micro/pretrain.yaml --seed {seed} --output_dir {run}/base",
            f"recipes/sft.py --config recipes/micro/sft.yaml --seed {seed} --output_dir {run}/sft "
            f"--model_name_or_path {run}/base",
            f"recipes/grpo.py --config recipes/micro/grpo.yaml --seed {seed} --output_dir {run}/grpo "
            f"--model_name_or_path {run}/sft",
            f"deepdive eval --model {run}/grpo",
            f"deepdive report --run {run}",
        ):
            assert line in commands
    table = commands[commands.index("deepdive seeds") :]
    assert table.split("\\")[0].strip() == f"deepdive seeds --runs {tmp_path}/micro/seed-1 {tmp_path}/micro/seed-2"
    assert "--output results/micro-seeds --generated_by 'make seeds RECIPE=micro SEEDS=\"1 2\"'" in table


def test_seeds_of_the_rlhf_stages_alone_start_from_one_sft_model(tmp_path):
    sft = tmp_path / "shared" / "sft"
    sft.mkdir(parents=True)
    (sft / "metrics.json").write_text("{}")
    knobs = (f"RUNS={tmp_path}", f"VERSE_FROM={sft}", "RESULTS=results/rlhf")
    commands = make("-n", "-B", "seeds", "SEEDS=1 2", "SEEDS_TARGETS=rlhf", *knobs).stdout
    for seed in (1, 2):
        run = f"{tmp_path}/tiny/seed-{seed}"
        assert (
            f"recipes/sft.py --config recipes/tiny/sft-verse.yaml --seed {seed} --output_dir {run}/sft-verse "
            f"--model_name_or_path {sft}" in commands
        )
        assert f"deepdive prefs --model {run}/sft-verse --output {run}/prefs --seed {seed}" in commands
        assert f"--reward_model {run}/reward" in commands
    assert "recipes/pretrain.py" not in commands and f"{tmp_path}/tiny/seed-1/sft " not in commands
    assert f'SEEDS_TARGETS="rlhf" VERSE_FROM={sft} RESULTS=results/rlhf\'' in commands  # the command in its header
    assert "--output results/rlhf/tiny-seeds" in commands


def test_make_without_seed_runs_the_recipes_as_written():
    commands = make("-n", "-B", "all", "RECIPE=micro").stdout
    launches = [line for line in commands.splitlines() if "accelerate launch" in line]
    assert [line.partition(" recipes/")[2].partition(" --overwrite")[0].strip() for line in launches] == [
        f"{stage}.py --config recipes/micro/{stage}.yaml" for stage in ("pretrain", "sft", "grpo")
    ]
    assert "deepdive report --run runs/micro\n" in commands


@pytest.mark.slow
def test_each_seed_trains_its_own_weights_and_the_table_quotes_its_records(tmp_path):
    """The micro pipeline's three stages for seeds 1 and 2, as `make all SEED=<s>` trains them (the default
    evaluation, minutes per chat model, is left out), then `deepdive seeds` on the two runs."""
    runs = [tmp_path / "runs" / "micro" / f"seed-{seed}" for seed in (1, 2)]
    for seed, run in zip((1, 2), runs, strict=True):
        stage_args = ("RECIPE=micro", f"SEED={seed}", f"RUNS={tmp_path / 'runs'}", f"{run}/grpo/metrics.json")
        make(*stage_args)
        assert make("-q", *stage_args, check=False).returncode == 0  # finished stages are skipped next time
        for stage, parent in (("base", None), ("sft", "base"), ("grpo", "sft")):
            recipe = read_record(run / stage, "recipe.yaml")
            assert recipe["seed"] == seed and recipe["output_dir"] == str(run / stage)
            assert parent is None or recipe["model_name_or_path"] == str(run / parent)
    for stage in ("base", "sft"):
        weights = [load_file(run / stage / "model.safetensors") for run in runs]
        assert weights[0].keys() == weights[1].keys()
        assert any(not weights[0][name].equal(weights[1][name]) for name in weights[0]), f"{stage}: same weights"

    main(["seeds", "--runs", *map(str, runs), "--output", str(tmp_path / "results" / "micro-seeds")])
    table = json.loads((tmp_path / "results" / "micro-seeds.json").read_text())
    assert table["seeds"] == [1, 2] and table["recipe"] == "micro"
    for seed, run in zip(("1", "2"), runs, strict=True):
        base, sft, grpo = (read_record(run / stage, "metrics.json") for stage in ("base", "sft", "grpo"))
        figures = table["runs"][seed]
        assert figures["base.val_bits_per_byte"] == base["val_bits_per_byte"]
        assert figures["sft.arithmetic_accuracy"] == sft["arithmetic_accuracy"]
        assert figures["sft.stop_rate"] == sft["stop_rate"]
        assert figures["grpo.after_arithmetic_accuracy"] == grpo["after_arithmetic_accuracy"]
        assert figures["grpo.wall_seconds"] == grpo["wall_seconds"]
    assert not any(key.endswith(".eval_seconds") for key in table["metrics"])  # no `deepdive eval` was run
    page = (tmp_path / "results" / "micro-seeds.md").read_text()
    assert (tmp_path / "runs" / "micro" / "seeds.md").read_text() == page
    bpb = [table["runs"][seed]["base.val_bits_per_byte"] for seed in ("1", "2")]
    assert f"| val bits per byte | {bpb[0]:.3f} | {bpb[1]:.3f} |" in page


def test_the_rlhf_rows_quote_each_seeds_labeler_scores_and_gains(tmp_path):
    for seed, (sft, rlhf, dpo) in {1: (0.40, 0.50, 0.45), 2: (0.30, 0.36, 0.41)}.items():
        sampled = {"before_verse_sampled_score": sft / 2, "after_verse_sampled_score": rlhf / 2 + 0.1}
        write_run(
            tmp_path / f"seed-{seed}",
            seed,
            {
                "sft-verse": {"metrics": {"stage": "sft", "verse_labeler_score": sft}},
                "reward": {"metrics": {"stage": "reward", "reward_accuracy": 0.8 + seed / 100, "wall_seconds": 240.0}},
                "rlhf": {"metrics": {"before_verse_labeler_score": sft, "after_verse_labeler_score": rlhf, **sampled}},
                "dpo": {"metrics": {"before_verse_labeler_score": sft, "after_verse_labeler_score": dpo}},
            },
        )
        (tmp_path / f"seed-{seed}" / "prefs").mkdir()
        write_metrics(tmp_path / f"seed-{seed}" / "prefs", {"pairs": 100, "seconds": 200.0 + seed}, "summary.json")
    table = seeds_table([tmp_path / "seed-1", tmp_path / "seed-2"])
    assert table["metrics"]["prefs.wall_seconds"] == "wall-clock, preference pairs"
    assert table["runs"]["2"]["prefs.wall_seconds"] == 202.0
    times = [key for key in table["metrics"] if key.endswith(".wall_seconds")]
    assert times == ["prefs.wall_seconds", "reward.wall_seconds"]  # the pairs before the model that learns them
    assert table["metrics"]["rlhf.verse_labeler_gain"] == "RLHF: gain in the labeler's score, greedy lines"
    assert table["runs"]["1"]["rlhf.verse_labeler_gain"] == pytest.approx(0.10)
    assert table["runs"]["2"]["dpo.verse_labeler_gain"] == pytest.approx(0.11)
    assert table["runs"]["1"]["rlhf.verse_sampled_gain"] == pytest.approx(0.15)  # 0.25 + 0.1 against 0.2
    assert "dpo.verse_sampled_gain" not in table["runs"]["1"]  # DPO's record has no sampled lines
    assert table["summary"]["reward.reward_accuracy"]["min"] == pytest.approx(0.81)
    assert list(table["metrics"])[:4] == [
        "sft-verse.verse_labeler_score",
        "rlhf.before_verse_sampled_score",
        "reward.reward_accuracy",
        "rlhf.after_verse_labeler_score",
    ]


def test_the_reward_model_rows_give_each_part_of_the_rule_its_share_of_pairs_and_accuracy(tmp_path):
    reward = {"stage": "reward", "reward_accuracy": 0.7, "test_pairs": 200}
    reward |= {"test_pairs_length": 50, "reward_accuracy_length": 0.9, "test_pairs_stress": 150}
    reward |= {"reward_accuracy_stress": 0.5}
    write_run(tmp_path / "seed-1", 1, {"reward": {"metrics": reward}})
    table = seeds_table([tmp_path / "seed-1"])
    assert list(table["metrics"]) == [
        "reward.reward_accuracy",
        "reward.pairs_length_share",
        "reward.reward_accuracy_length",
        "reward.pairs_stress_share",
        "reward.reward_accuracy_stress",
    ]  # no rows for the parts that told no pair apart
    assert table["runs"]["1"]["reward.pairs_length_share"] == pytest.approx(0.25)
    assert table["runs"]["1"]["reward.pairs_stress_share"] == pytest.approx(0.75)
    assert (
        table["metrics"]["reward.reward_accuracy_stress"]
        == "reward model: ranked right, told apart by stress (the beat)"
    )
    assert show("reward.reward_accuracy_stress", 0.5) == "50.0%" and show("reward.pairs_stress_share", 0.75) == "75.0%"
