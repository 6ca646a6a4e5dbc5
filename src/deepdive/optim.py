"""Muon for the hidden weight matrices, AdamW for everything else, as one optimizer the Trainer can drive.

Muon (momentum + Newton-Schulz orthogonalisation of each 2-D update) trains small transformers in markedly
fewer steps than AdamW; on the tiny Shakespeare recipe it is the single largest gain per CPU-minute. It only
suits the 2-D weights inside the blocks: embeddings, the (tied) output head and the norm gains stay on AdamW.
Both live in one `torch.optim.Optimizer`, so the Trainer's LR scheduler, gradient clipping, checkpointing
and resume treat it like any other optimizer. `torch.optim.Muon` is PyTorch's own implementation; it
orthogonalises in bfloat16, which a CPU without bf16 instructions only emulates, so there `Float32Muon` does the
same step in float32 (the recipes train in float32 there too). The Trainer builds it in its own `create_optimizer` (`MuonAdamWTrainerMixin`), so it holds exactly the
parameters that train, a LoRA adapter's included.
"""

import math

import torch

from deepdive.errors import RecipeError
from deepdive.records import cpu_has_bf16


def split_muon_parameters(model: torch.nn.Module) -> tuple[list, list]:
    """(2-D weights inside the transformer blocks, all other parameters that require grad); tied weights appear
    once. Under LoRA only the adapter trains: its `lora_A` (r x in) and `lora_B` (out x r) matrices sit inside
    the blocks and go to Muon, on purpose. `match_rms_adamw` sizes Muon's step by the matrix's shape, so a
    rank-r factor gets an AdamW-sized step; `muon_lr` then means the block matrices' rate with or without LoRA
    (the recipes' AdamW `learning_rate`, tuned for embeddings and norms, would be low for an adapter)."""
    muon, adamw = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        inside_blocks = ".layers." in name
        (muon if parameter.ndim == 2 and inside_blocks else adamw).append(parameter)
    return muon, adamw


def orthogonalize(update: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float):
    """Muon's quintic Newton-Schulz iteration in float32: `update` with its singular values pushed towards 1
    (roughly into [0.5, 1.5]), the direction Muon steps in. Works on the wide orientation, so X @ X.T is the
    smaller Gram matrix."""
    a, b, c = coefficients
    tall = update.size(0) > update.size(1)
    x = update.float()
    x = x.T if tall else x
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm <= 1: inside the iteration's basin
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Float32Muon(torch.optim.Muon):
    """`torch.optim.Muon` (same settings, state and checkpoints) with the orthogonalisation in float32.

    For a CPU without bf16 instructions, where torch's bfloat16 orthogonalisation is emulated: on 2 such cores the
    tiny recipe's Muon step took 2.8 s (most of a 4.5 s pretraining step), 0.1 s in float32
    (`make bench ARGS=optimizer`, bench/results/optimizer.json).
    """

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        if any(group["adjust_lr_fn"] != "match_rms_adamw" for group in self.param_groups):
            raise ValueError("Float32Muon sizes its steps as adjust_lr_fn='match_rms_adamw' only")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            self._init_group(group, params, grads, buffers)
            momentum = group["momentum"]
            for param, grad, buffer in zip(params, grads, buffers, strict=True):
                buffer.lerp_(grad, 1 - momentum)
                update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = orthogonalize(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
                # match_rms_adamw: the update's RMS matches a typical AdamW step's, whatever the matrix's shape.
                step_size = group["lr"] * 0.2 * math.sqrt(max(param.shape))
                param.mul_(1 - group["lr"] * group["weight_decay"])
                param.add_(update.to(param.dtype), alpha=-step_size)
        return loss


def muon_class(params: list) -> type[torch.optim.Muon]:
    """torch's Muon where bf16 matmuls are native (GPUs, CPUs with AMX or AVX512-BF16), `Float32Muon` elsewhere."""
    on_cpu = all(parameter.device.type == "cpu" for parameter in params)
    return Float32Muon if on_cpu and not cpu_has_bf16() else torch.optim.Muon


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer over two: `torch.optim.Muon` on `muon_params`, `torch.optim.AdamW` on `adamw_params`.

    `muon_lr` is in AdamW units (Muon's `match_rms_adamw` scaling), so the two rates are comparable; the LR
    scheduler scales both groups by the same factor.
    """

    def __init__(
        self,
        muon_params,
        adamw_params,
        lr: float,
        muon_lr: float,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        muon_momentum: float = 0.95,
    ):
        # One group each, even an empty one (torch refuses an empty parameter list): under LoRA the adapter's
        # matrices may all be Muon's, leaving AdamW nothing to train.
        muon_params, adamw_params = [{"params": list(muon_params)}], [{"params": list(adamw_params)}]
        self.muon = muon_class(muon_params[0]["params"])(
            muon_params, lr=muon_lr, momentum=muon_momentum, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw"
        )
        self.adamw = torch.optim.AdamW(adamw_params, lr=lr, betas=betas, eps=eps, weight_decay=0.0)
        super().__init__([*self.adamw.param_groups, *self.muon.param_groups], {})

    def _share_groups(self) -> None:
        # The scheduler writes `lr` into self.param_groups: they must be the children's own dicts.
        self.param_groups = [*self.adamw.param_groups, *self.muon.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self._share_groups()


def build_optimizer(model: torch.nn.Module, training_args, muon_lr: float | None) -> MuonAdamW | None:
    """Muon + AdamW when the recipe sets `muon_lr` (AdamW settings from `TrainingArguments`); otherwise None,
    so the Trainer builds the optimizer named by `optim` as usual."""
    if not muon_lr:
        return None
    muon_params, adamw_params = split_muon_parameters(model)
    return MuonAdamW(
        muon_params,
        adamw_params,
        lr=training_args.learning_rate,
        muon_lr=muon_lr,
        betas=(training_args.adam_beta1, training_args.adam_beta2),
        eps=training_args.adam_epsilon,
        weight_decay=training_args.weight_decay,
    )


class MuonAdamWTrainerMixin:
    """Listed before a `transformers.Trainer` (or a TRL trainer) in a class's bases, it builds `MuonAdamW` in the
    Trainer's own `create_optimizer` when `muon_lr` is given; otherwise the Trainer builds `optim` as usual.

    The Trainer calls `create_optimizer` as it prepares to train: after PEFT has frozen the base weights and
    added the adapter, at the point FSDP and DeepSpeed expect (on the wrapped model where FSDP wraps first), and
    before it loads a checkpoint's optimizer state on resume. An optimizer passed in (`optimizers=`) is built
    before all that: it misses a LoRA adapter, and the Trainer refuses it under FSDP.
    """

    def __init__(self, *args, muon_lr: float | None = None, **kwargs):
        self.muon_lr = muon_lr
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.muon_lr:
            if getattr(self, "is_deepspeed_enabled", False):
                raise RecipeError(
                    "muon_lr: Muon orthogonalises whole weight matrices, and DeepSpeed ZeRO hands the optimizer flat "
                    "shards of them; leave muon_lr unset (AdamW) or launch with accelerate_configs/fsdp.yaml"
                )
            self.optimizer = build_optimizer(self.model if model is None else model, self.args, self.muon_lr)
        return super().create_optimizer(model)
