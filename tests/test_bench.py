"""The benchmarks run and record what they claim (their figures come from `make bench`, never from tests)."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from bench.common import Side, alternate, flops_per_token


def test_alternate_warms_up_then_interleaves_the_sides():
    calls = []

    def side(name):
        def run(steps):
            calls.append((name, steps))
            return [float(len(calls))] * steps

        return Side(name, run)

    a, b = alternate([side("a"), side("b")], rounds=2, steps=3, warmup=1)
    assert calls == [("a", 1), ("b", 1), ("a", 3), ("b", 3), ("a", 3), ("b", 3)]
    assert a.times == [3.0] * 3 + [5.0] * 3  # warm-up steps are not timed
    assert a.median == 4.0


def test_flops_per_token_counts_weights_and_attention():
    # 6 per weight + 12 x layers x hidden x seq_len
    assert flops_per_token(1_000_000, layers=4, hidden=192, seq_len=256) == 6_000_000 + 12 * 4 * 192 * 256


@pytest.mark.slow
def test_quick_benchmarks_write_their_results(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "trainer_overhead",
            "data_prep",
            "grpo_rollouts",
            "serving",
            "optimizer",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "DEEPDIVE_BENCH_RESULTS": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    overhead = json.loads((tmp_path / "trainer_overhead.json").read_text())
    assert overhead["ratio"] == pytest.approx(overhead["bare_step_seconds"] / overhead["deepdive_step_seconds"])
    assert overhead["deepdive_tokens_per_second"] > 0 and overhead["machine"]["threads"] >= 1
    data = json.loads((tmp_path / "data_prep.json").read_text())
    assert data["cached rebuild"]["seconds"] < data["1 process"]["seconds"]
    rollouts = json.loads((tmp_path / "grpo_rollouts.json").read_text())
    default = rollouts["default"]
    assert 0 < default["generation_seconds_per_step"] < default["step_seconds"]
    assert default["replies_per_second"] > 0
    serving = json.loads((tmp_path / "serving.json").read_text())["concurrent"]
    assert serving["complete_replies"] == serving["clients"] == 3 and serving["streamed_pieces"] >= 3
    assert "| deepdive (recipe -> Trainer -> accelerate) |" in result.stdout
    optimizer = json.loads((tmp_path / "optimizer.json").read_text())
    assert optimizer["recipes_use"] == ("Muon" if optimizer["cpu_has_bf16"] else "Float32Muon")
    assert set(optimizer["step_seconds"]) == {"torch.optim.Muon (bfloat16 orthogonalisation)",
                                              "Float32Muon (float32 orthogonalisation)", "AdamW"}  # fmt: skip


@pytest.mark.slow
def test_the_gpu_check_runs_its_checks_on_the_cpu():
    """`make gpu-check ARGS=--cpu`: the script a GPU machine runs, shrunk on the CPU, passes its own checks and
    says which ones need GPUs."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--cpu"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in result.stdout.splitlines()[-4:]}
    assert rows["micro pipeline, one device"][0] == "ok" and "val bpb" in rows["micro pipeline, one device"][2]
    d12 = rows["d12 shape, pretraining throughput"]
    assert d12[0] == "ok" and re.search(r"[\d,]+ tokens/s, MFU \d+\.\d%", d12[2])
    assert rows["FSDP over every GPU"][:2] == ["skipped", "0"] and rows["GRPO with vLLM"][0] == "skipped"
