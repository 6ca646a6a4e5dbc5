"""Run records: the files a run writes into its folder about itself, and reading them back.

A finished folder is its own record: `metrics.json` (what the recipe measured, with wall-clock and hardware),
`eval.json` (`deepdive eval`), `recipe.yaml` (the recipe as run), `trainer_state.json` (the Trainer's log) and
`hub.json` (where it was pushed). Model cards, the report card, the seeds table and pushes read these files
instead of measuring again, so a figure is quoted exactly as it was recorded. This is the bottom layer: it
imports no other deepdive module, so every stage and command can use it.
"""

import json
import os
import platform
from pathlib import Path

import torch
import yaml


def write_metrics(output_dir: str | Path, metrics: dict, name: str = "metrics.json") -> Path:
    """Write `metrics` as pretty JSON into the run folder and return the path."""
    path = Path(output_dir) / name
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_record(folder: str | Path, name: str) -> dict:
    """A record a run wrote into its folder (`metrics.json`, `eval.json`, `recipe.yaml`, ...); {} if absent."""
    path = Path(folder) / name
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if name.endswith(".yaml"):
        return yaml.safe_load(text) or {}
    return json.loads(text) or {}


def trained_with_tools(folder: str | Path) -> bool:
    """Whether the model in `folder` was fine-tuned with tool conversations (its `recipe.yaml` sets `tool_share`)."""
    return bool(read_record(folder, "recipe.yaml").get("tool_share"))


def hardware() -> str:
    """The accelerator, or the CPU, a run trained on, in words: its model and bf16 instructions, which set the speed
    of every CPU figure ("2 CPU cores (AMD EPYC, AVX512-BF16), no GPU")."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    features = cpu_bf16_features()
    if features is None:
        bf16 = "bf16 instructions unknown"
    else:
        bf16 = ", ".join(name.upper().replace("_", "-") for name in features) or "no bf16 instructions"
    return f"{os.cpu_count()} CPU cores ({cpu_model()}, {bf16}), no GPU"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name as Linux reports it, else its architecture."""
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.machine()


# Instruction-set features with which a CPU multiplies bfloat16 matrices in hardware: Intel's AMX and AVX512-BF16,
# Arm's BF16 and SVE-BF16. Without them bf16 autocast is emulated and runs many times slower than float32.
CPU_BF16_FEATURES = ("amx_bf16", "avx512_bf16", "bf16", "sve_bf16")


def cpu_bf16_features() -> list[str] | None:
    """The CPU_BF16_FEATURES this CPU has (None when this torch cannot tell)."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:
        return None
    capabilities = get_capabilities()
    return [feature for feature in CPU_BF16_FEATURES if capabilities.get(feature, False)]


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively, so that bf16 autocast is faster on it than float32 (True
    when this torch cannot tell)."""
    features = cpu_bf16_features()
    return features is None or bool(features)
