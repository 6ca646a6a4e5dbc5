"""Several processes: the global batch, 2-process CPU runs of every stage, accelerate configs, Slurm launcher."""

import copy
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import REPO, launch

from deepdive import distributed, trainer
from deepdive.configs import fit_global_batch
from deepdive.distributed import check_replicas, parameter_fingerprints, replica_mismatch
from deepdive.errors import RecipeError, TrainingError
from deepdive.generation import Completion
from deepdive.records import read_record


# --- The global batch ----------------------------------------------------------------------------------------


def batch_args(per_device: int, processes: int, **grpo) -> SimpleNamespace:
    """The fields of a TrainingArguments (or, with `num_generations`, a GRPOConfig) that the batch touches."""
    args = SimpleNamespace(per_device_train_batch_size=per_device, gradient_accumulation_steps=1, world_size=processes)
    if grpo:
        args.steps_per_generation, args.generation_batch_size = 1, per_device * processes
        args.__dict__.update(grpo)
    return args


@pytest.mark.parametrize(
    ("global_batch", "per_device_cap", "processes", "per_device", "accumulation"),
    [
        (32, 32, 1, 32, 1),
        (32, 32, 2, 16, 1),
        (32, 8, 1, 8, 4),
        (32, 8, 2, 8, 2),
        (256, 32, 8, 32, 1),
        (24, 16, 1, 12, 2),  # not 16 + 8: every micro-batch has the same size
        (34, 16, 1, 2, 17),
    ],
)
def test_global_batch_is_split_into_device_batches(global_batch, per_device_cap, processes, per_device, accumulation):
    args = batch_args(per_device_cap, processes)
    fit_global_batch(args, global_batch)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (per_device, accumulation)
    assert per_device * accumulation * processes == global_batch


def test_without_a_global_batch_the_recipe_batch_stays():
    args = batch_args(4, 2)
    args.gradient_accumulation_steps = 3
    fit_global_batch(args, None)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 3)


def test_grpo_generates_the_global_batch_once_per_step():
    args = batch_args(64, 2, num_generations=8)
    fit_global_batch(args, 512)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (64, 4)
    assert (args.steps_per_generation, args.generation_batch_size) == (4, 512)


def test_grpo_keeps_optimizer_steps_per_generation():
    args = batch_args(256, 1, num_generations=8)
    args.steps_per_generation, args.generation_batch_size = 2, 512  # 2 optimizer steps per generation
    fit_global_batch(args, 256)  # same batch, 2 processes below
    assert (args.steps_per_generation, args.generation_batch_size) == (2, 512)
    args = batch_args(32, 2, num_generations=8)
    args.steps_per_generation, args.generation_batch_size = 2, 128
    fit_global_batch(args, 256)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (32, 4)
    assert (args.steps_per_generation, args.generation_batch_size) == (8, 512)


@pytest.mark.parametrize(
    ("args", "global_batch", "message"),
    [
        (batch_args(8, 3), 32, "global_batch_size: 32 sequences do not split evenly over 3 processes"),
        (batch_args(8, 1), 0, "global_batch_size: must be a positive number"),
        (batch_args(8, 2, num_generations=8), 36, "36 replies per generation do not make whole groups of num_gen"),
    ],
)
def test_misfit_global_batch_is_one_line(args, global_batch, message):
    with pytest.raises(RecipeError, match=message) as error:
        fit_global_batch(args, global_batch)
    assert "\n" not in str(error.value)


def test_replica_mismatch_names_the_first_parameter_that_differs():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    names = [name for name, _ in model.named_parameters()]
    same = parameter_fingerprints(model)
    assert replica_mismatch(torch.stack([same, same]), names) is None
    with torch.no_grad():
        model[1].weight[0, 0] += 1e-3
    drifted = parameter_fingerprints(model)
    assert replica_mismatch(torch.stack([same, same, drifted]), names) == "process 2, parameter 1.weight"


def test_check_replicas_stops_a_run_whose_processes_hold_different_weights(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    drifted = copy.deepcopy(model)
    with torch.no_grad():
        drifted[0].bias[1] += 1e-3
    other = parameter_fingerprints(drifted)[None]
    monkeypatch.setattr(distributed, "gather", lambda local: torch.cat([local, other]))  # process 1 holds `drifted`
    with pytest.raises(TrainingError, match=r"different weights after training \(process 1, parameter 0\.bias\)"):
        check_replicas(model)
    monkeypatch.setattr(distributed, "gather", lambda local: torch.cat([local, local]))  # both hold `model`
    assert check_replicas(model) is True


# --- Two processes on the CPU, every stage ------------------------------------------------------------------

# Loaded at start-up by every process through PYTHONPATH: in a process other than rank 0, log each file or
# folder it creates or writes, so the test can tell what rank 1 wrote.
WRITE_LOG = """
import os, sys
if os.environ.get("RANK", "0") != "0":
    _log = open(os.environ["DEEPDIVE_WRITE_LOG"] + "." + os.environ["RANK"], "a")
    _writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _audit(event, args):
        if event == "open" and isinstance(args[0], (str, os.PathLike)):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (mode is None and flags & _writing):
                _log.write(os.path.abspath(args[0]) + "\\n"), _log.flush()
        elif event in ("os.mkdir", "os.rename", "os.remove") and isinstance(args[0], (str, os.PathLike)):
            _log.write(os.path.abspath(args[0]) + "\\n"), _log.flush()

    sys.addaudithook(_audit)
"""


@pytest.fixture(scope="module")
def two_processes(micro_base, micro_sft, tmp_path_factory) -> dict:
    """The three micro recipes run by `accelerate launch --config_file accelerate_configs/cpu_ddp.yaml`, each
    from the 1-process run of the stage before; for each stage its folder and the paths rank 1 wrote."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "hooks").mkdir()
    (root / "hooks" / "sitecustomize.py").write_text(WRITE_LOG, encoding="utf-8")
    runs = {}
    for stage, start in (("pretrain", None), ("sft", micro_base), ("grpo", micro_sft)):
        output_dir, log = root / stage, root / f"{stage}-writes"
        model = ["--model_name_or_path", str(start)] if start else []
        hooks = os.pathsep.join(filter(None, [str(root / "hooks"), os.environ.get("PYTHONPATH")]))  # ahead of the rest
        env = {"PYTHONPATH": hooks, "DEEPDIVE_WRITE_LOG": str(log)}
        result = launch(
            "cpu_ddp", f"{stage}.py", "--config", f"recipes/micro/{stage}.yaml", *model,
            "--output_dir", str(output_dir), env=env,
        )  # fmt: skip
        written = Path(f"{log}.1").read_text(encoding="utf-8").split() if Path(f"{log}.1").exists() else []
        runs[stage] = SimpleNamespace(output_dir=output_dir, rank1_writes=written, log=result.stderr)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["pretrain", "sft", "grpo"])
def test_two_processes_train_one_model(two_processes, stage):
    run = two_processes[stage]
    metrics = read_record(run.output_dir, "metrics.json")
    assert metrics["processes"] == 2
    assert "replicas_identical" in metrics  # both processes' weights were compared (a difference stops the run)
    recipe_batch = yaml.safe_load((REPO / f"recipes/micro/{stage}.yaml").read_text())["global_batch_size"]
    assert metrics["global_batch_size"] == recipe_batch
    assert f"global batch {recipe_batch} = {recipe_batch // 2} per device x 1 accumulation step(s) x 2" in run.log


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["pretrain", "sft", "grpo"])
def test_only_rank_zero_writes(two_processes, stage):
    run = two_processes[stage]
    inside = [Path(path) for path in run.rank1_writes if Path(path).is_relative_to(run.output_dir)]
    assert run.rank1_writes, "the write log recorded nothing: the audit hook did not load"
    # all rank 1 may write is the Trainer's own per-process RNG state, in a checkpoint folder it makes sure exists
    own = [path for path in inside if path.name == "rng_state_1.pth" or path.name.startswith("checkpoint-")]
    assert inside == own, inside

    assert (run.output_dir / "model.safetensors").is_file() and (run.output_dir / "README.md").is_file()


def losses(folder: Path) -> list[float]:
    return [entry["loss"] for entry in read_record(folder, "trainer_state.json")["log_history"] if "loss" in entry]


@pytest.mark.slow
def test_pretrain_matches_one_process(two_processes, micro_base):
    """Same global batch, same data order: the 2-process loss curve and validation bits per byte are the
    1-process ones (up to float summation order); the validation windows are shared out between processes."""
    two = two_processes["pretrain"].output_dir
    assert len(losses(two)) == len(losses(micro_base)) > 1
    assert losses(two) == pytest.approx(losses(micro_base), rel=1e-4)
    one_metrics, two_metrics = read_record(micro_base, "metrics.json"), read_record(two, "metrics.json")
    assert two_metrics["val_tokens"] == one_metrics["val_tokens"]
    assert two_metrics["val_bits_per_byte"] == pytest.approx(one_metrics["val_bits_per_byte"], rel=1e-4)
    samples = (two / "samples.jsonl").read_text().splitlines()
    assert len(samples) == len((micro_base / "samples.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_sft_matches_one_process(two_processes, micro_sft):
    two = two_processes["sft"].output_dir
    assert losses(two) == pytest.approx(losses(micro_sft), rel=1e-4)
    one_metrics, two_metrics = read_record(micro_sft, "metrics.json"), read_record(two, "metrics.json")
    assert two_metrics["test_prompts"] == one_metrics["test_prompts"]  # every held-out prompt answered once
    assert two_metrics["stop_rate"] == pytest.approx(one_metrics["stop_rate"])


@pytest.mark.parametrize(
    "main_process, sharded, generates, writes",
    [(True, False, True, True), (False, False, False, False), (False, True, True, False), (True, True, True, True)],
)
def test_every_process_of_a_sharded_run_generates_the_samples(
    main_process, sharded, generates, writes, tmp_path, monkeypatch
):
    """Under FSDP or ZeRO-3 a forward pass needs every process: a sample generated by the main process alone would
    hang the run. Every process generates there; only the main process ever writes."""
    calls = []
    monkeypatch.setattr(trainer, "is_sharded", lambda: sharded)
    monkeypatch.setattr(trainer, "generate", lambda *args, **kwargs: calls.append(args) or [Completion(" ay", True)])
    callback = trainer.SampleGenerationCallback(tokenizer=None, prompts=["ROMEO:"])
    args = SimpleNamespace(output_dir=str(tmp_path), bf16=False, report_to=[])
    state = SimpleNamespace(is_world_process_zero=main_process, global_step=3)
    callback.on_evaluate(args, state, control=None, model=object())
    assert bool(calls) == generates
    assert (tmp_path / "samples.jsonl").exists() == writes


# --- accelerate configs ---------------------------------------------------------------------------------------


def launch_environment(config: Path, *flags: str) -> tuple:
    """What `accelerate launch --config_file config` would start, without starting it: its parsed arguments
    and the environment its launcher gives the processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), *flags, "recipes/sft.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return args, prepare_deepspeed_cmd_env(args)[1]
    if args.multi_gpu or args.use_fsdp:
        return args, prepare_multi_gpu_env(args)
    return args, {}


CONFIGS = sorted((REPO / "accelerate_configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.stem)
def test_accelerate_config_launches(config):
    assert config.read_text().startswith("# "), "each config opens with a comment on when to use it"
    args, env = launch_environment(config)
    assert args.num_processes >= 1 and args.training_script == "recipes/sft.py"


def test_accelerate_configs_cover_one_cpu_to_many_nodes():
    assert {path.stem for path in CONFIGS} >= {
        "cpu", "cpu_ddp", "single_gpu", "multi_gpu", "fsdp", "zero2", "zero3", "multi_node",
    }  # fmt: skip
    args, _ = launch_environment(REPO / "accelerate_configs/cpu_ddp.yaml")
    assert args.num_processes == 2 and args.use_cpu
    _, fsdp = launch_environment(REPO / "accelerate_configs/fsdp.yaml")
    assert fsdp["FSDP_VERSION"] == "2" and fsdp["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["FSDP_STATE_DICT_TYPE"] == "SHARDED_STATE_DICT" and fsdp["ACCELERATE_MIXED_PRECISION"] == "bf16"
    _, zero2 = launch_environment(REPO / "accelerate_configs/zero2.yaml")
    _, zero3 = launch_environment(REPO / "accelerate_configs/zero3.yaml")
    assert zero2["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "2" and zero3["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
    assert zero3["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"
    args, _ = launch_environment(
        REPO / "accelerate_configs/multi_node.yaml", "--num_machines", "4", "--num_processes", "32",
        "--machine_rank", "3", "--main_process_ip", "10.0.0.1", "--main_process_port", "29500",
    )  # fmt: skip
    assert (args.num_machines, args.num_processes, args.machine_rank) == (4, 32, 3)


def test_fsdp_without_gpus_stops_before_training(tmp_path):
    """accelerate shards only GPU processes: on CPUs fsdp.yaml would run plain data parallel, unannounced.
    (zero*.yaml stop in `accelerate launch` itself when DeepSpeed is not installed.)"""
    accelerate = Path(sys.executable).parent / "accelerate"
    result = subprocess.run(
        [str(accelerate), "launch", "--config_file", "accelerate_configs/fsdp.yaml", "--num_processes", "2",
         "recipes/sft.py", "--config", "recipes/micro/sft.yaml", "--output_dir", str(tmp_path / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0 and not (tmp_path / "run").exists()
    assert "error: accelerate config: " in result.stderr and "shards the model over GPUs" in result.stderr


# --- Slurm ----------------------------------------------------------------------------------------------------

SLURM = REPO / "scripts/slurm/train.slurm"


def slurm(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SLURM), *args], cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **env}
    )


def test_slurm_dry_run_renders_the_launch_command():
    env = {"SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "8", "MASTER_ADDR": "gpu-01", "DRY_RUN": "1"}
    result = slurm("sft", "recipes/smollm2-135m/sft.yaml", "--max_steps", "500", "--run_name", "a b", env=env)
    assert result.returncode == 0, result.stderr
    srun = result.stdout.strip().splitlines()[-1]
    assert srun.startswith("srun --ntasks-per-node=1 bash -c ")
    command = shlex.split(shlex.split(srun)[-1].replace("$SLURM_PROCID", "1"))
    assert command[:3] == [".venv/bin/accelerate", "launch", "--config_file"]
    script_at = command.index("recipes/sft.py")
    args, _ = launch_environment(REPO / command[3], *command[4:script_at])
    assert (args.num_machines, args.num_processes, args.machine_rank) == (2, 16, 1)
    assert (args.main_process_ip, args.main_process_port, args.rdzv_backend) == ("gpu-01", 29500, "c10d")
    assert command[script_at:] == [
        "recipes/sft.py", "--config", "recipes/smollm2-135m/sft.yaml", "--max_steps", "500", "--run_name", "a b",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["dpo", "recipes/tiny/sft.yaml"], {"SLURM_NNODES": "1"}, "stage: 'dpo' is not one of pretrain, sft, grpo"),
        (["sft", "recipes/tiny/nope.yaml"], {"SLURM_NNODES": "1"}, "recipe: recipes/tiny/nope.yaml does not exist"),
        (["sft", "recipes/tiny/sft.yaml"], {"ACCELERATE_CONFIG": "tpu"}, "accelerate_configs/tpu.yaml does not exist"),
        (["sft", "recipes/tiny/sft.yaml"], {"SLURM_NNODES": ""}, "run this script through sbatch"),
    ],
)
def test_slurm_launcher_refuses_bad_arguments(args, env, message):
    result = slurm(*args, env={"SLURM_GPUS_ON_NODE": "8", "MASTER_ADDR": "x", "DRY_RUN": "1", **env})
    assert result.returncode != 0 and message in result.stderr


@pytest.mark.slow
def test_slurm_launcher_runs_a_recipe_on_one_node(tmp_path):
    """The launcher end to end on this machine: one node of 2 CPU processes (cpu_ddp), srun standing in."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text('#!/bin/bash\nshift\nSLURM_PROCID=0 exec "$@"\n', encoding="utf-8")
    (fake_bin / "srun").chmod(0o755)
    env = {
        "PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_NNODES": "1", "GPUS_PER_NODE": "2",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533", "ACCELERATE_CONFIG": "cpu_ddp",
        "DEEPDIVE_VENV": str(Path(sys.executable).parent.parent),
    }  # fmt: skip
    result = slurm("pretrain", "recipes/micro/pretrain.yaml", "--output_dir", str(tmp_path / "base"), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "base" / "metrics.json").read_text())["processes"] == 2
