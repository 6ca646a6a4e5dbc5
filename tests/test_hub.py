"""Pushing to the Hub, with the Hub stood in for at the `huggingface_hub` client boundary: what a commit carries
and what it must never carry (a token, a local path)."""

import json

import pytest
import yaml
from conftest import STAGES, fake_model_folder

from deepdive import hub
from deepdive.configs import parse_recipe, save_recipe
from deepdive.errors import DataError


TOKEN = "hf_override_token_that_must_not_leak"
LOGIN_TOKEN = "hf_login_token_that_must_not_leak"


class RecordingHub:
    """Stands in for `huggingface_hub.HfApi`; keeps the token it was given and every byte a commit would upload."""

    calls: list = []

    def __init__(self, token=None):
        RecordingHub.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        RecordingHub.calls.append(("create_repo", repo_id))

    def create_commit(self, repo_id, operations, commit_message, **kwargs):
        uploaded = {
            op.path_in_repo: op.path_or_fileobj
            if isinstance(op.path_or_fileobj, bytes)
            else open(op.path_or_fileobj, "rb").read()
            for op in operations
        }
        RecordingHub.calls.append(("create_commit", uploaded, commit_message))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


@pytest.fixture
def recording_hub(monkeypatch):
    RecordingHub.calls = []
    monkeypatch.setattr(hub, "HfApi", RecordingHub)  # the `huggingface_hub` names deepdive.hub calls
    monkeypatch.setattr(hub, "get_token", lambda: LOGIN_TOKEN)  # as after `hf auth login`
    return RecordingHub


def test_a_hub_token_override_pushes_but_is_never_uploaded(tmp_path, recording_hub, monkeypatch):
    monkeypatch.setattr(hub, "get_token", lambda: None)  # the override is the only token there is
    folder = fake_model_folder(tmp_path / "sft", {"learning_rate": 1e-3})
    recipe = ["--learning_rate", "1e-3", "--hub_token", TOKEN, "--push_to_hub", "true"]
    _, args, _ = parse_recipe(STAGES["pretrain"], recipe)  # what the recipe script parsed, as the run keeps it
    save_recipe(folder, args.recipe)
    hub.push_folder(folder, "someone/tiny-sft", token=TOKEN)
    (_, token), _, (_, uploaded, message) = recording_hub.calls
    assert token == TOKEN  # the recipe's token is the one the push uses...
    assert {"recipe.yaml", "README.md", "metrics.json"} <= set(uploaded)
    assert [name for name, data in uploaded.items() if TOKEN.encode() in data] == []  # ...and it is never uploaded
    assert TOKEN not in message


def test_a_folder_holding_the_token_is_not_pushed(tmp_path, recording_hub):
    recipe = {"learning_rate": 1e-3, "hub_token": LOGIN_TOKEN}  # a recipe.yaml written by an older deepdive
    folder = fake_model_folder(tmp_path / "sft", recipe)
    with pytest.raises(DataError, match=r"recipe.yaml: holds your Hugging Face token; remove it, then push again"):
        hub.push_folder(folder, "someone/tiny-sft")
    assert [call[0] for call in recording_hub.calls] == []


@pytest.mark.parametrize("cwd, shown", [("elsewhere", "sft"), ("home", "runs/tiny/sft")])
def test_the_commit_message_names_no_absolute_path(tmp_path, recording_hub, monkeypatch, cwd, shown):
    home = tmp_path / "home"
    folder = fake_model_folder(home / "runs" / "tiny" / "sft", {"model_name_or_path": str(home / "runs/tiny/base")})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / cwd)
    hub.push_folder(folder, "someone/tiny-sft")
    _, _, (_, uploaded, message) = recording_hub.calls
    assert message == f"deepdive: upload the sft stage from {shown}"
    assert str(tmp_path).encode() not in uploaded["README.md"]


def test_the_records_uploaded_name_no_absolute_path(tmp_path, recording_hub, monkeypatch):
    """recipe.yaml, eval.json, metrics.json and a LoRA adapter's config go up with local paths shown as the card
    shows them; an adapter's base that was pushed is named by its Hub id, so the adapter loads from the Hub."""
    home = tmp_path / "home"
    base = fake_model_folder(home / "runs" / "tiny" / "base", {"learning_rate": 1e-3})
    (base / "hub.json").write_text(json.dumps({"repo_id": "someone/tiny-base"}))
    recipe = {
        "model_name_or_path": str(base),
        "output_dir": str(home / "runs/tiny/sft"),
        "data_files": [str(home / "chats.jsonl")],
    }
    folder = fake_model_folder(home / "runs" / "tiny" / "sft", recipe, adapter_of=str(base))
    (folder / "eval.json").write_text(json.dumps({"model": str(folder), "arithmetic_accuracy": 0.5}))
    monkeypatch.chdir(home)
    hub.push_folder(folder, "someone/tiny-sft")
    _, _, (_, uploaded, _) = recording_hub.calls
    records = {name: uploaded[name] for name in ("recipe.yaml", "eval.json", "metrics.json", "adapter_config.json")}
    assert [name for name, data in records.items() if str(tmp_path).encode() in data] == []
    assert yaml.safe_load(records["recipe.yaml"]) == {
        "model_name_or_path": "runs/tiny/base",
        "output_dir": "runs/tiny/sft",
        "data_files": ["chats.jsonl"],
    }
    assert json.loads(records["eval.json"]) == {"model": "runs/tiny/sft", "arithmetic_accuracy": 0.5}
    assert json.loads(records["adapter_config.json"]) == {"base_model_name_or_path": "someone/tiny-base", "r": 8}
    assert (folder / "eval.json").read_text().count(str(folder)) == 1  # the local records are left as they are
