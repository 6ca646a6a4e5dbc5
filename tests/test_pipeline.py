"""The whole pipeline at micro scale: evaluation of each stage, the report card, model cards, push to the Hub."""

import json
import shutil
import sys

import pytest
import yaml
from conftest import REPO, rescored, run_micro

from deepdive import hub
from deepdive.cards import build_model_card
from deepdive.cli import main as deepdive
from deepdive.errors import RecipeError
from deepdive.tasks import TASKS


@pytest.fixture(scope="module")
def micro_run(micro_base, micro_sft, tmp_path_factory):
    """A run folder laid out as `make all` leaves it: base/, sft/, grpo/, each evaluated, and a report card (the
    `deepdive` commands run in this process)."""
    run = tmp_path_factory.mktemp("pipeline") / "micro"
    shutil.copytree(micro_base, run / "base")
    shutil.copytree(micro_sft, run / "sft")
    run_micro("grpo", run / "sft", run / "grpo")
    for stage in ("base", "sft", "grpo"):
        deepdive(
            ["eval", "--model", str(run / stage), "--num_test_examples", "4", "--num_samples", "2", "--k", "1", "2"]
        )
    deepdive(["report", "--run", str(run)])
    return run


def read_card(folder):
    text = (folder / "README.md").read_text()
    _, metadata, prose = text.split("---\n", 2)
    return yaml.safe_load(metadata), prose


def test_base_eval_scores_the_held_out_plays_as_pretraining_did(micro_run):
    evaluation = json.loads((micro_run / "base" / "eval.json").read_text())
    recorded = json.loads((micro_run / "base" / "metrics.json").read_text())
    assert evaluation["kind"] == "base" and evaluation["stage"] == "pretrain"
    # the same split, windows and stride; only the eval's bf16 autocast differs from the fp32 micro recipe
    assert evaluation["val_bits_per_byte"] == pytest.approx(recorded["val_bits_per_byte"], abs=0.05)
    assert evaluation["val_bytes"] == recorded["val_bytes"]


def test_chat_eval_reports_accuracy_stop_rate_and_pass_at_k(micro_run):
    for stage in ("sft", "grpo"):
        evaluation = json.loads((micro_run / stage / "eval.json").read_text())
        assert evaluation["kind"] == "chat" and evaluation["test_prompts"] == 4 * len(TASKS)  # 4 prompts a family
        # `deepdive eval`'s defaults: 160 new tokens, batches of 64
        again = rescored(micro_run / stage, TASKS, 4, max_new_tokens=160, batch_size=64)
        assert {key: evaluation[key] for key in again} == again
        assert evaluation["arithmetic_pass@1_sampled"] <= evaluation["arithmetic_pass@2_sampled"] <= 1.0


def test_report_card_has_the_table_plots_and_stages_side_by_side(micro_run):
    report = (micro_run / "report.md").read_text()
    assert "| metric | pretrain | sft | grpo |" in report
    base_bpb = json.loads((micro_run / "base" / "eval.json").read_text())["val_bits_per_byte"]
    assert f"| val bits per byte | {base_bpb:.3f} | – | – |" in report
    assert "| arithmetic pass@1, sampled | – |" in report and "| arithmetic pass@2, sampled | – |" in report
    for stage in ("pretrain", "sft", "grpo"):
        plot = micro_run / "report" / f"{stage}.png"
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"](report/{stage}.png)" in report
    side_by_side = report.split("## The same prompts, stage by stage")[1].split("## Environment")[0]
    assert len([line for line in side_by_side.splitlines() if line.startswith("| ") and "prompt" not in line]) == 4
    assert "transformers 5.24.0" in report and "trl 1.16.0" in report


def test_every_stage_gets_a_model_card_with_its_results(micro_run):
    for stage, folder in (("pretrain", "base"), ("sft", "sft"), ("grpo", "grpo")):
        metadata, prose = read_card(micro_run / folder)
        assert metadata["license"] == "apache-2.0" and metadata["pipeline_tag"] == "text-generation"
        assert "deepdive" in metadata["tags"]
        results = metadata["model-index"][0]["results"]
        assert results, f"{stage}: no eval results in the model-index"
        assert "## Limitations" in prose and "Hallucination" in prose and "Jagged intelligence" in prose
        assert "recipe.yaml" in prose and (micro_run / folder / "recipe.yaml").is_file()
    base_metadata, _ = read_card(micro_run / "base")
    assert base_metadata["model-index"][0]["results"][0]["metrics"][0]["type"] == "bits_per_byte"
    sft_metadata, sft_prose = read_card(micro_run / "sft")
    assert "deepdive/arithmetic" in sft_metadata["datasets"] and "(data_cards/arithmetic.md)" in sft_prose


def test_card_names_the_hub_base_model_once_the_parent_is_pushed(micro_run, tmp_path):
    grpo = tmp_path / "grpo"
    shutil.copytree(micro_run / "grpo", grpo)
    recipe = yaml.safe_load((grpo / "recipe.yaml").read_text())
    assert recipe["model_name_or_path"] == str(micro_run / "sft")
    assert "base_model" not in build_model_card(grpo).data.to_dict()  # a local folder is not a Hub id
    pushed_parent = tmp_path / "sft"
    shutil.copytree(micro_run / "sft", pushed_parent)
    (pushed_parent / "hub.json").write_text(json.dumps({"repo_id": "someone/tiny-sft"}))
    recipe["model_name_or_path"] = str(pushed_parent)
    (grpo / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert build_model_card(grpo).data.base_model == "someone/tiny-sft"


class FakeHub:
    """Stands in for `huggingface_hub.HfApi` at the client boundary and records what would be sent."""

    calls: list = []

    def __init__(self, *args, **kwargs):
        FakeHub.calls.append(("init", args, kwargs))

    def create_repo(self, repo_id, **kwargs):
        FakeHub.calls.append(("create_repo", repo_id, kwargs))

    def create_commit(self, repo_id, operations, commit_message, **kwargs):
        operations = list(operations)
        FakeHub.calls.append(("create_commit", repo_id, sorted(op.path_in_repo for op in operations), commit_message))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


@pytest.fixture
def fake_hub(monkeypatch):
    FakeHub.calls = []
    monkeypatch.setattr(hub, "HfApi", FakeHub)  # the `huggingface_hub` client deepdive.hub calls
    monkeypatch.setenv("HF_TOKEN", "hf_do_not_leak_this_token")
    return FakeHub


def test_push_sends_the_model_card_data_cards_and_report(micro_run, tmp_path, fake_hub, capsys):
    run = tmp_path / "micro"
    shutil.copytree(micro_run, run)
    url = hub.push_folder(run / "sft", "someone/tiny-sft", private=True, report=run / "report.md")
    assert url == "https://huggingface.co/someone/tiny-sft/commit/abc"
    init, create_repo, create_commit = fake_hub.calls
    assert init == ("init", (), {"token": None})  # no token passed along: huggingface_hub reads it itself
    assert create_repo == (
        "create_repo",
        "someone/tiny-sft",
        {"private": True, "repo_type": "model", "exist_ok": True},
    )
    _, repo_id, files, message = create_commit
    assert repo_id == "someone/tiny-sft"
    assert message == "deepdive: upload the sft stage from sft"  # no absolute local path
    assert files == sorted(
        ["README.md", "chat_template.jinja", "config.json", "eval.json", "generation_config.json", "metrics.json",
         "model.safetensors", "recipe.yaml", "tokenizer.json", "tokenizer_config.json", "report.md",
         "report/pretrain.png", "report/sft.png", "report/grpo.png", "report/knowledge.png"]
        + [f"data_cards/{card}.md" for card in ("identity", "arithmetic", "spelling", "shakespeare_qa")]
    )  # fmt: skip
    metadata, _ = read_card(run / "sft")
    assert metadata["model-index"][0]["name"] == "someone/tiny-sft"
    assert json.loads((run / "sft" / "hub.json").read_text())["repo_id"] == "someone/tiny-sft"
    written = "".join(path.read_text(errors="ignore") for path in run.rglob("*") if path.is_file())
    assert "hf_do_not_leak_this_token" not in written + capsys.readouterr().out


@pytest.mark.parametrize(
    "repo_id, token, message",
    [
        (None, "hf_x", "hub_model_id: pushing needs a Hub repo id"),
        ("no spaces allowed/x", "hf_x", "hub_model_id: 'no spaces allowed/x' is not a valid Hub repo id"),
        ("tiny-sft", "hf_x", "hub_model_id: 'tiny-sft' needs its owner"),
        ("someone/tiny-sft", None, "no Hugging Face token"),
    ],
)
def test_push_settings_fail_in_one_line(monkeypatch, repo_id, token, message):
    monkeypatch.setattr(hub, "get_token", lambda: token)
    with pytest.raises(RecipeError, match=message):
        hub.check_push_settings(repo_id)


def test_recipe_push_to_hub_pushes_the_finished_folder_once(micro_sft, tmp_path, fake_hub):
    sys.path.insert(0, str(REPO / "recipes"))
    import grpo
    from trl import GRPOConfig, ModelConfig, ScriptArguments

    from deepdive.configs import GRPOArguments, parse_recipe

    recipe = [
        "--config", str(REPO / "recipes/micro/grpo.yaml"), "--model_name_or_path", str(micro_sft),
        "--output_dir", str(tmp_path / "grpo"), "--num_test_examples", "0",
        "--push_to_hub", "true", "--hub_model_id", "someone/tiny-grpo", "--hub_private_repo", "true",
    ]  # fmt: skip
    grpo.main(*parse_recipe((ScriptArguments, GRPOArguments, GRPOConfig, ModelConfig), recipe))
    commits = [call for call in fake_hub.calls if call[0] == "create_commit"]
    assert len(commits) == 1 and commits[0][1] == "someone/tiny-grpo"
    assert (
        "create_repo",
        "someone/tiny-grpo",
        {"private": True, "repo_type": "model", "exist_ok": True},
    ) in fake_hub.calls


def test_recipe_push_without_a_repo_id_stops_before_training(micro_sft, tmp_path):
    result = run_micro("grpo", micro_sft, tmp_path / "grpo", "--push_to_hub", "true", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: hub_model_id: pushing needs a Hub repo id")
    assert not (tmp_path / "grpo" / "model.safetensors").exists()
