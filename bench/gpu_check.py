"""`make gpu-check`: every GPU path of deepdive in a few minutes, one table at the end.

    python -m bench.gpu_check                 # on a GPU machine: the checks below, about 5 minutes on one H200
    python -m bench.gpu_check --cpu           # the same code on the CPU, shrunk: checks the script itself

1. the micro pipeline (pretrain -> SFT -> GRPO) on one GPU, in bf16;
2. the d12 model shape (`recipes/d12-fineweb/pretrain.yaml`, 124M parameters, compiled) for a few steps on
   the Shakespeare corpus, which needs no Hub: tokens/s and model-FLOPs utilisation against this GPU's
   measured bf16 matmul peak;
3. FSDP2 (`accelerate_configs/fsdp.yaml`) over every GPU, when there are two or more;
4. a GRPO run whose replies vLLM generates (colocated), when vLLM is installed.

Each check runs the recipe scripts as a user launches them (`accelerate launch`) into a temporary folder and
reads the records they write; a check that cannot run here says why in the table instead.
"""

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import REPO, flops_per_token, matmul_peak, print_table


# Recipe overrides per device: the GPU runs the recipes as written, in bf16; the CPU runs them shrunk
DEVICE = {"gpu": ["--use_cpu", "false", "--bf16", "true"], "cpu": ["--use_cpu", "true", "--bf16", "false"]}
D12_STEPS = ["--max_steps", "20", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
             "--dataset_name", "shakespeare", "--dataset_streaming", "false", "--dataset_test_split", "validation",
             "--vocab_size", "8192", "--warmup_steps", "2", "--sample_prompts", "[]"]  # fmt: skip
D12_ON_CPU = ["--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "2", "--seq_len", "128",
              "--global_batch_size", "8", "--per_device_train_batch_size", "8", "--max_steps", "3",
              "--vocab_size", "512", "--torch_compile", "false", "--dataloader_num_workers", "0",
              "--eval_stride", "64"]  # fmt: skip


LAST_WORDS = re.compile(r"error: |\w*(Error|Exception): ")  # a recipe's one-line error, or Python's


class Checks:
    """Runs the recipes through `accelerate launch` into `workdir` and collects one table row per check."""

    def __init__(self, device: str, workdir: Path):
        self.device, self.workdir, self.rows = device, workdir, []
        self.config = "single_gpu" if device == "gpu" else "cpu"

    def launch(self, stage: str, recipe: str, output: str, *args: str, config: str | None = None, processes=1):
        """`accelerate launch recipes/<stage>.py` on `recipe`; its metrics.json, or the error it stopped with."""
        command = [
            str(Path(sys.executable).parent / "accelerate"), "launch",
            "--config_file", f"accelerate_configs/{config or self.config}.yaml", "--num_processes", str(processes),
            f"recipes/{stage}.py", "--config", recipe, "--output_dir", str(self.workdir / output),
            *DEVICE[self.device], *args,
        ]  # fmt: skip
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if result.returncode != 0:  # the recipe's own last words, not accelerate's report that it failed
            said = [line for line in result.stderr.splitlines() if LAST_WORDS.match(line)]
            said = said or [line for line in result.stderr.splitlines() if line.strip()] or ["(no output)"]
            raise RuntimeError(said[-1][:200])
        return json.loads((self.workdir / output / "metrics.json").read_text())

    def check(self, name: str, run) -> None:
        """Run one check; a row of (check, outcome, seconds, what it measured)."""
        started = time.time()
        try:
            figure = run()
            self.rows.append([name, "ok", round(time.time() - started), figure])
        except Exception as error:  # noqa: BLE001 - a failed check is a row of the table, the others still run
            self.rows.append([name, "FAILED", round(time.time() - started), str(error)])

    def skip(self, name: str, reason: str) -> None:
        self.rows.append([name, "skipped", 0, reason])

    def micro_pipeline(self) -> str:
        base = self.launch("pretrain", "recipes/micro/pretrain.yaml", "base")
        sft = self.launch("sft", "recipes/micro/sft.yaml", "sft", "--model_name_or_path", str(self.workdir / "base"))
        grpo = self.launch(
            "grpo", "recipes/micro/grpo.yaml", "grpo", "--model_name_or_path", str(self.workdir / "sft")
        )
        return (
            f"val bpb {base['val_bits_per_byte']:.2f}, SFT stop rate {sft['stop_rate']:.0%}, "
            f"GRPO train loss {grpo['train_loss']:.3g}"
        )

    def d12_throughput(self) -> str:
        extra = D12_STEPS + (D12_ON_CPU if self.device == "cpu" else [])
        metrics = self.launch("pretrain", "recipes/d12-fineweb/pretrain.yaml", "d12", *extra)
        config = json.loads((self.workdir / "d12" / "config.json").read_text())
        # Weights that multiply: an untied output head is a matrix of its own, the embedding lookup is not
        embedding = 0 if config["tie_word_embeddings"] else config["vocab_size"] * config["hidden_size"]
        seq_len = config["max_position_embeddings"]
        per_token = flops_per_token(
            metrics["parameters"] - embedding, config["num_hidden_layers"], config["hidden_size"], seq_len
        )
        achieved = per_token * metrics["train_tokens_per_second"]
        precision = "bf16" if self.device == "gpu" else "fp32"  # the precision the check trained in
        peak = matmul_peak(torch.bfloat16 if precision == "bf16" else torch.float32)
        return (
            f"{metrics['train_tokens_per_second']:,.0f} tokens/s, MFU {achieved / peak:.1%} "
            f"of the measured {precision} peak {peak / 1e12:.0f} TFLOP/s "
            f"({metrics['parameters'] / 1e6:.0f}M parameters; the 20 steps include torch.compile's warm-up, so both "
            "are lower bounds)"
        )

    def fsdp(self, gpus: int) -> str:
        metrics = self.launch(
            "pretrain", "recipes/micro/pretrain.yaml", "fsdp", "--global_batch_size", str(8 * gpus),
            config="fsdp", processes=gpus,
        )  # fmt: skip
        if metrics["processes"] != gpus:
            raise RuntimeError(f"{metrics['processes']} processes joined the run, not {gpus}")
        return f"{gpus} processes, val bpb {metrics['val_bits_per_byte']:.2f}"

    def vllm(self) -> str:
        if not (self.workdir / "sft" / "metrics.json").is_file():
            raise RuntimeError("needs the micro pipeline's SFT model, which failed")
        metrics = self.launch(
            "grpo", "recipes/micro/grpo.yaml", "grpo-vllm", "--model_name_or_path", str(self.workdir / "sft"),
            "--use_vllm", "true", "--vllm_mode", "colocate", "--vllm_gpu_memory_utilization", "0.2",
        )  # fmt: skip
        return f"train loss {metrics['train_loss']:.3g}, {metrics['wall_seconds']:.0f} s"


def main(argv: list[str] | None = None) -> list[list]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU, shrunk (checks the script, not the GPU)")
    options = parser.parse_args(argv)
    gpus = torch.cuda.device_count()
    if not options.cpu and gpus == 0:
        parser.error("no GPU here; `--cpu` runs the same checks shrunk on the CPU")
    with tempfile.TemporaryDirectory(prefix="deepdive-gpu-check-") as workdir:
        checks = Checks("cpu" if options.cpu else "gpu", Path(workdir))
        checks.check("micro pipeline, one device", checks.micro_pipeline)
        checks.check("d12 shape, pretraining throughput", checks.d12_throughput)
        if options.cpu or gpus < 2:
            checks.skip("FSDP over every GPU", "needs 2 or more GPUs" if not options.cpu else "GPUs only")
        else:
            checks.check(f"FSDP over {gpus} GPUs", lambda: checks.fsdp(gpus))
        if options.cpu or importlib.util.find_spec("vllm") is None:
            checks.skip("GRPO with vLLM", "GPUs only" if options.cpu else "vLLM is not installed")
        else:
            checks.check("GRPO with vLLM (colocated)", checks.vllm)
    machine = "the CPU" if options.cpu else f"{gpus} x {torch.cuda.get_device_name(0)}"
    print_table(f"deepdive GPU check on {machine}", ["check", "outcome", "seconds", "measured"], checks.rows)
    return checks.rows


if __name__ == "__main__":
    rows = main()
    sys.exit(1 if any(row[1] == "FAILED" for row in rows) else 0)
