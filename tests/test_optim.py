import copy

import pytest
import torch

from deepdive import optim
from deepdive.errors import RecipeError
from deepdive.modeling import build_llama_config, build_model
from deepdive.optim import (
    Float32Muon,
    MuonAdamW,
    MuonAdamWTrainerMixin,
    build_optimizer,
    muon_class,
    orthogonalize,
    split_muon_parameters,
)


class Vocabulary:
    bos_token_id = eos_token_id = 0
    pad_token_id = 1

    def __len__(self):
        return 64


def tiny_model():
    return build_model(build_llama_config(Vocabulary(), 16, 2, 2, max_position_embeddings=8), seed=0)


def train_steps(model, optimizer, steps, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(0, 64, (2, 8), generator=generator)
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_muon_takes_the_block_matrices_and_adamw_the_rest():
    model = tiny_model()
    muon, adamw = split_muon_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim == 2 and ".layers." in names[id(p)] for p in muon)
    assert len(muon) == 2 * 7  # q, k, v, o, gate, up, down per block
    assert {names[id(p)] for p in adamw if p.ndim == 2} == {"model.embed_tokens.weight"}  # tied with the head
    assert len(muon) + len(adamw) == len(list(model.parameters()))


def test_a_scheduler_scales_both_optimizers():
    model = tiny_model()
    optimizer = MuonAdamW(*split_muon_parameters(model), lr=1e-3, muon_lr=2e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    optimizer.step()  # no gradients yet: a no-op, in the order the scheduler expects
    scheduler.step()
    assert [group["lr"] for group in optimizer.muon.param_groups] == [1e-2]
    assert [group["lr"] for group in optimizer.adamw.param_groups] == [5e-4]


def test_state_dict_round_trip_resumes_exactly():
    model = tiny_model()
    optimizer = MuonAdamW(*split_muon_parameters(model), lr=1e-3, muon_lr=1e-2)
    train_steps(model, optimizer, 3)
    saved_model, saved_state = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    train_steps(model, optimizer, 2, seed=1)

    resumed = tiny_model()
    resumed.load_state_dict(saved_model)
    optimizer2 = MuonAdamW(*split_muon_parameters(resumed), lr=1e-3, muon_lr=1e-2)
    optimizer2.load_state_dict(saved_state)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer2, lambda step: 1.0)  # must see the loaded groups
    assert scheduler.optimizer.param_groups[1] is optimizer2.muon.param_groups[0]
    train_steps(resumed, optimizer2, 2, seed=1)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_muon_lowers_the_loss():
    model = tiny_model()
    optimizer = MuonAdamW(*split_muon_parameters(model), lr=1e-2, muon_lr=2e-2)
    batch = torch.randint(0, 64, (4, 8), generator=torch.Generator().manual_seed(0))
    before = model(input_ids=batch, labels=batch).loss.item()
    for _ in range(20):
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert model(input_ids=batch, labels=batch).loss.item() < before - 1.0


def test_without_muon_lr_the_trainer_keeps_its_own_optimizer():
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir="unused", use_cpu=True, learning_rate=3e-3, adam_beta2=0.95)
    assert build_optimizer(tiny_model(), args, None) is None
    optimizer = build_optimizer(tiny_model(), args, 1e-2)
    assert optimizer.adamw.param_groups[0]["lr"] == 3e-3 and optimizer.adamw.param_groups[0]["betas"] == (0.9, 0.95)
    assert optimizer.muon.param_groups[0]["lr"] == 1e-2


def test_the_trainer_builds_muon_over_exactly_the_parameters_that_train(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    class MuonTrainer(MuonAdamWTrainerMixin, Trainer):
        pass

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    model = get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    optimizer = MuonTrainer(model=model, args=args, muon_lr=1e-2).create_optimizer()
    adapter = [id(parameter) for parameter in model.parameters() if parameter.requires_grad]
    assert len(adapter) == 2 * 2 * 2  # lora_A and lora_B of q and v in each of the 2 blocks
    assert [id(parameter) for parameter in optimizer.muon.param_groups[0]["params"]] == adapter
    assert optimizer.adamw.param_groups[0]["params"] == []
    assert type(MuonTrainer(model=tiny_model(), args=args).create_optimizer()) is torch.optim.AdamW  # `optim`


def test_muon_under_deepspeed_stops_before_the_first_step(tmp_path):
    """DeepSpeed ZeRO gives the optimizer flat shards, which Muon would orthogonalise as if they were matrices."""
    from transformers import Trainer, TrainingArguments

    class MuonTrainer(MuonAdamWTrainerMixin, Trainer):
        pass

    trainer = MuonTrainer(
        model=tiny_model(), args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True), muon_lr=1e-2
    )
    trainer.is_deepspeed_enabled = True  # as under accelerate_configs/zero2.yaml or zero3.yaml on GPUs
    with pytest.raises(RecipeError, match=r"^muon_lr: Muon orthogonalises whole weight matrices, and DeepSpeed ZeRO"):
        trainer.create_optimizer()
    assert trainer.optimizer is None


@pytest.mark.parametrize("shape", [(24, 40), (40, 24), (16, 16)])
@pytest.mark.parametrize("nesterov", [True, False])
def test_float32_muon_steps_where_torchs_muon_does(shape, nesterov):
    """Same update as torch's Muon, up to torch's bfloat16 rounding: three steps with momentum and weight decay."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(shape, generator=generator)
    grads = [torch.randn(shape, generator=generator) for _ in range(3)]
    moved = {}
    for optimizer_class in (torch.optim.Muon, Float32Muon):
        param = torch.nn.Parameter(start.clone())
        optimizer = optimizer_class(
            [param], lr=1e-2, weight_decay=0.1, nesterov=nesterov, adjust_lr_fn="match_rms_adamw"
        )
        for grad in grads:
            param.grad = grad.clone()
            optimizer.step()
        moved[optimizer_class] = (param.detach() - start).flatten()
    torch_step, float32_step = moved[torch.optim.Muon], moved[Float32Muon]
    assert torch.nn.functional.cosine_similarity(torch_step, float32_step, dim=0) > 0.999
    assert float32_step.norm() == pytest.approx(torch_step.norm().item(), rel=0.01)


def test_orthogonalize_leaves_singular_values_near_one():
    update = torch.randn(32, 80, generator=torch.Generator().manual_seed(0)) * 1e3
    coefficients = torch.optim.Muon([torch.nn.Parameter(torch.zeros(2, 2))]).defaults["ns_coefficients"]
    singular_values = torch.linalg.svdvals(orthogonalize(update, coefficients, steps=5, eps=1e-7))
    assert 0.5 < singular_values.min() and singular_values.max() < 1.5


def test_float32_muon_refuses_another_step_size_rule():
    with pytest.raises(ValueError, match="match_rms_adamw"):
        Float32Muon([torch.nn.Parameter(torch.zeros(2, 2))], adjust_lr_fn="original")


@pytest.mark.parametrize(
    "device, has_bf16, expected",
    [("cpu", False, Float32Muon), ("cpu", True, torch.optim.Muon), ("meta", False, torch.optim.Muon)],
)
def test_muon_orthogonalises_in_bfloat16_only_where_it_is_native(monkeypatch, device, has_bf16, expected):
    monkeypatch.setattr(optim, "cpu_has_bf16", lambda: has_bf16)
    params = [torch.nn.Parameter(torch.zeros(4, 4, device=device))]
    assert muon_class(params) is expected
    if device == "cpu":
        optimizer = MuonAdamW(params, [torch.nn.Parameter(torch.zeros(4))], lr=1e-3, muon_lr=1e-2)
        assert type(optimizer.muon) is expected
