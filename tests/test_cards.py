"""Model cards: written from a run folder's records, only into a folder that holds a model, and naming no
absolute local path."""

import pytest
from conftest import fake_model_folder

from deepdive.cards import write_model_card


@pytest.mark.parametrize("cwd, base", [("elsewhere", "base"), ("home", "runs/tiny/base")])
def test_a_card_shows_no_absolute_local_path(tmp_path, monkeypatch, cwd, base):
    run = tmp_path / "home" / "runs" / "tiny"  # stands in for /home/alice/runs/tiny
    recipe = {
        "model_name_or_path": str(run / "base"),
        "data_files": [str(tmp_path / "home" / "chats.jsonl")],
        "output_dir": str(run / "sft"),
        "sample_prompts": ["/quit"],  # text that only looks like a path is left as it is
    }
    full = fake_model_folder(run / "sft", recipe)
    lora = fake_model_folder(run / "sft-lora", {**recipe, "output_dir": str(run / "sft-lora")}, str(run / "base"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / cwd)
    for folder in (full, lora):
        card = write_model_card(folder).read_text()
        assert str(tmp_path) not in card, card
        assert f"- Starting point: `{base}`." in card and f"model_name_or_path: {base}\n" in card
        assert "- Data: local files chats.jsonl." in card and "- /quit\n" in card
    assert f"on `{base}`; `deepdive merge`" in (lora / "README.md").read_text()
