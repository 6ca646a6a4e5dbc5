"""Several processes, one run: what the recipes add to accelerate's data parallelism.

accelerate and the Trainer split the training batches and synchronise the gradients. Around them, a recipe
also evaluates, trains a tokenizer and checks its result; here each of those is done once for all processes,
or shared out among them, so that 2 processes (or 8 GPUs) give the numbers 1 process gives.
"""

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather, gather_object

from deepdive.errors import TrainingError


# accelerate's distributed types whose processes each hold the whole model (DDP). Under FSDP and DeepSpeed the
# weights are sharded and every forward pass is collective, so each process there evaluates all the items.
DATA_PARALLEL = ("MULTI_CPU", "MULTI_GPU")


def is_sharded() -> bool:
    """True under FSDP or DeepSpeed: the weights are split over the processes, so every forward pass (and so
    every `generate`, which transformers then keeps in step across processes) needs all of them."""
    return PartialState().distributed_type in ("FSDP", "DEEPSPEED")


def is_main_process() -> bool:
    return PartialState().is_main_process


def holds_replicas() -> bool:
    """True when the run has several processes that each hold a whole copy of the model."""
    state = PartialState()
    return state.num_processes > 1 and state.distributed_type in DATA_PARALLEL


def process_share(items: list) -> list:
    """This process's contiguous share of `items` when several processes hold replicas of the model (all of
    `items` otherwise): each scores its share, and `gather_shares` puts the results back in order."""
    if not holds_replicas():
        return items
    with PartialState().split_between_processes(items) as share:
        return share


def gather_shares(results: list) -> list:
    """The per-item `results` of every process's `process_share`, concatenated in the order of the items."""
    return gather_object(results) if holds_replicas() else results


def computed_once(build):
    """`build()` run by the main process only and its result sent to the others, so that every process holds
    the same object (a trained tokenizer, say) without each one computing it."""
    state = PartialState()
    if state.num_processes == 1:
        return build()
    result = [build() if state.is_main_process else None]
    broadcast_object_list(result)
    return result[0]


def end_processes() -> None:
    """Once every process has finished its part, close the process group: left open, its communication
    threads can abort a process as Python exits, failing a run that had succeeded."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        PartialState().wait_for_everyone()
        torch.distributed.destroy_process_group()


def parameter_fingerprints(model) -> torch.Tensor:
    """Per parameter, the float64 sum and sum of absolute values, flattened: equal weights, equal vectors."""
    sums = [torch.stack([p.detach().double().sum(), p.detach().double().abs().sum()]) for p in model.parameters()]
    return torch.stack(sums).flatten()


def replica_mismatch(fingerprints: torch.Tensor, names: list[str]) -> str | None:
    """Given the (processes, 2 x parameters) fingerprints of all processes, where the first process that
    differs from process 0 differs ('process 1, parameter model.norm.weight'), or None when all agree."""
    for rank in range(1, fingerprints.shape[0]):
        differs = (fingerprints[rank] != fingerprints[0]).nonzero()
        if len(differs):
            return f"process {rank}, parameter {names[int(differs[0]) // 2]}"
    return None


def check_replicas(model) -> bool:
    """Check, after data-parallel training, that every process holds the very same weights; raise
    TrainingError naming the first parameter that differs (replicas drift apart when gradients were not
    synchronised or the processes started from different models)."""
    device = next(model.parameters()).device
    fingerprints = gather(parameter_fingerprints(model).to(device)[None]).cpu()
    mismatch = replica_mismatch(fingerprints, [name for name, _ in model.named_parameters()])
    if mismatch:
        raise TrainingError(f"the processes hold different weights after training ({mismatch})")
    return True
