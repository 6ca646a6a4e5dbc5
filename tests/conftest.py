"""Shared fixtures: one micro pretraining run for the whole session (a few seconds on 2 cores)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


def run_recipe(script: str, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `recipes/<script>` in a subprocess the way a user does, return the finished process."""
    result = subprocess.run(
        [sys.executable, str(REPO / "recipes" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def launch(accelerate_config: str, script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `recipes/<script>` through `accelerate launch` with `accelerate_configs/<accelerate_config>.yaml`."""
    accelerate = Path(sys.executable).parent / "accelerate"
    config = REPO / "accelerate_configs" / f"{accelerate_config}.yaml"
    result = subprocess.run(
        [str(accelerate), "launch", "--config_file", str(config), str(REPO / "recipes" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise AssertionError(f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def run_micro(stage: str, model_dir, output_dir, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `recipes/<stage>.py` on its micro recipe from `model_dir` into `output_dir`."""
    return run_recipe(
        f"{stage}.py",
        "--config",
        f"recipes/micro/{stage}.yaml",
        "--model_name_or_path",
        str(model_dir),
        "--output_dir",
        str(output_dir),
        *extra,
        check=check,
    )


@pytest.fixture(scope="session")
def micro_base(tmp_path_factory) -> Path:
    """A model folder written by `recipes/pretrain.py` on the micro recipe."""
    output_dir = tmp_path_factory.mktemp("micro") / "base"
    run_recipe("pretrain.py", "--config", "recipes/micro/pretrain.yaml", "--output_dir", str(output_dir))
    return output_dir


@pytest.fixture(scope="session")
def micro_sft(micro_base, tmp_path_factory) -> Path:
    """A chat model folder written by `recipes/sft.py` on the micro recipe, from `micro_base`."""
    output_dir = tmp_path_factory.mktemp("micro") / "sft"
    run_micro("sft", micro_base, output_dir)
    return output_dir
