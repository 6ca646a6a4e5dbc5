import io
import subprocess
import sys

from deepdive.sampling import sample_text


def test_sample_is_reproducible_per_seed_and_streams(micro_base):
    stream = io.StringIO()
    first = sample_text(str(micro_base), "ROMEO:\n", max_new_tokens=12, seed=3, stream=stream)
    again = sample_text(str(micro_base), "ROMEO:\n", max_new_tokens=12, seed=3)
    other = sample_text(str(micro_base), "ROMEO:\n", max_new_tokens=12, seed=4, num_samples=2)
    assert first == again
    assert len(other) == 2 and other[0] != other[1]
    assert stream.getvalue().startswith("ROMEO:\n") and first[0] in stream.getvalue()


def test_greedy_sampling_ignores_the_seed(micro_base):
    one = sample_text(str(micro_base), "KING:", max_new_tokens=8, temperature=0, seed=1)
    two = sample_text(str(micro_base), "KING:", max_new_tokens=8, temperature=0, seed=2)
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
