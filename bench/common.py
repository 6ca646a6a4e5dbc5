"""What every benchmark shares: the default tiny setup, alternating A/B timing, medians, results on disk.

These machines are noisy (other jobs, turbo clocks), so a benchmark never compares two separate runs: both
sides run in the same process, in alternating blocks after a warm-up, and the figure is the ratio of their
median step times. Absolute times are recorded too, for orientation only.
"""

import importlib.util
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

from deepdive.records import cpu_has_bf16


REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("DEEPDIVE_BENCH_RESULTS", REPO / "bench" / "results"))


def load_recipe_script(stage: str):
    """`recipes/<stage>.py` as a module (its functions, without running it)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{stage}", REPO / "recipes" / f"{stage}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Side:
    """One side of an A/B comparison: `run(steps)` runs that many steps and returns each one's seconds."""

    name: str
    run: callable
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def alternate(sides: list[Side], rounds: int, steps: int, warmup: int) -> list[Side]:
    """Warm every side up, then run `rounds` blocks of `steps` steps of each side in turn (A B A B ...)."""
    for side in sides:
        side.run(warmup)
    for _ in range(rounds):
        for side in sides:
            side.times += side.run(steps)
    return sides


def timed_steps(step, steps: int) -> list[float]:
    """Call `step()` `steps` times; the seconds of each call."""
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


class StepTimer(TrainerCallback):
    """A Trainer callback recording the seconds of each optimizer step."""

    def __init__(self):
        self.step_times, self._started = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_times.append(time.perf_counter() - self._started)


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "bf16_instructions": cpu_has_bf16(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


def write_result(name: str, result: dict) -> Path:
    """`bench/results/<name>.json`, with the machine and the time of the run."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), **result}
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """A Markdown table (what README's Performance section shows)."""
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(_cell(value) for value in row) + " |")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def matmul_peak(dtype=torch.bfloat16, size: int = 2048, seconds: float = 3.0) -> float:
    """The machine's measured matmul throughput in FLOP/s (square `size` matrices, best of a few seconds):
    the ceiling that model-FLOPs utilisation is measured against."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(4):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - started))
    return best


def flops_per_token(matmul_parameters: int, layers: int, hidden: int, seq_len: int) -> float:
    """Training FLOPs per token, counted as nanochat and PaLM do: 6 per weight that multiplies (forward 2,
    backward 4; the output head counts, the embedding lookup does not) plus attention's scores and weighted
    sum, 12 x layers x hidden x seq_len."""
    return 6 * matmul_parameters + 12 * layers * hidden * seq_len
