import io
import subprocess
import sys

import pytest

from deepdive.cli import main
from deepdive.generation import Decoding, sample_text


def test_sample_is_reproducible_per_seed_and_streams(micro_base):
    stream = io.StringIO()
    first = sample_text(str(micro_base), "ROMEO:\n", Decoding(12, 0.8, 50, seed=3), stream=stream)
    again = sample_text(str(micro_base), "ROMEO:\n", Decoding(12, 0.8, 50, seed=3))
    other = sample_text(str(micro_base), "ROMEO:\n", Decoding(12, 0.8, 50, num_samples=2, seed=3))
    assert first == again
    assert len(other) == 2 and other[0] == first[0] and other[1] != other[0]  # sample i is seed + i
    assert stream.getvalue().startswith("ROMEO:\n") and first[0] in stream.getvalue()


def test_greedy_sampling_ignores_the_seed(micro_base):
    one = sample_text(str(micro_base), "KING:", Decoding(8, seed=1))
    two = sample_text(str(micro_base), "KING:", Decoding(8, seed=2))
    assert one == two


def test_command_line_sample(micro_base):
    result = subprocess.run(
        [sys.executable, "-m", "deepdive.cli", "sample", "--model", str(micro_base), "--prompt", "HAMLET:"]
        + ["--max_new_tokens", "5", "--top_k", "10", "--top_p", "0.9", "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HAMLET:")


def test_command_line_names_a_missing_model(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "deepdive.cli", "sample", "--model", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: --model: {tmp_path / 'nothing'} is not a model folder"


@pytest.mark.parametrize("command", [["card"], ["eval", "--num_test_examples", "1"]])
def test_card_and_eval_refuse_a_folder_that_holds_no_model(tmp_path, monkeypatch, command):
    (tmp_path / "README.md").write_text("# My project\n")  # `deepdive card --model .` in a repository
    (tmp_path / "config.json").write_text("{}")  # a config.json alone is not a model
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main([command[0], "--model", ".", *command[1:]])
    assert stopped.value.code == (
        "error: --model: . is not a model folder (it holds no config.json with .safetensors weights, nor a LoRA "
        "adapter)"
    )
    assert (tmp_path / "README.md").read_text() == "# My project\n" and not (tmp_path / "eval.json").exists()


class LoaderReached(Exception):
    """Raised by the stand-in loader: the id got through to `from_pretrained`."""


@pytest.mark.parametrize("command", ["sample", "chat"])
def test_sample_and_chat_take_a_hub_id_with_its_owner(monkeypatch, command):
    loaded = []

    def from_pretrained(name, **kwargs):  # no network here: record what would be downloaded, then stop
        loaded.append(name)
        raise LoaderReached

    for loader in ("AutoTokenizer", "AutoModelForCausalLM"):
        monkeypatch.setattr(f"deepdive.modeling.{loader}.from_pretrained", from_pretrained)
    with pytest.raises(LoaderReached):
        main([command, "--model", "HuggingFaceTB/SmolLM2-135M", "--prompt", "Hi"])
    assert loaded == ["HuggingFaceTB/SmolLM2-135M"]


def test_a_hub_id_that_cannot_be_loaded_fails_in_one_line(monkeypatch):
    def from_pretrained(name, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.setattr("deepdive.modeling.AutoTokenizer.from_pretrained", from_pretrained)
    with pytest.raises(SystemExit) as stopped:
        main(["sample", "--model", "someone/no-such-model"])
    assert stopped.value.code == (
        "error: --model: someone/no-such-model is not a model folder nor loadable from the Hub (We couldn't connect "
        "to 'https://huggingface.co' to load the files.)"
    )
