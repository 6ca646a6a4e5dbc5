"""The default tiny pretraining setup, as `recipes/tiny/pretrain.yaml` gives it, for the benchmarks."""

import functools
import tempfile

import torch
from transformers import TrainingArguments, get_scheduler
from trl import ScriptArguments

from deepdive.configs import PretrainArguments, parse_recipe
from deepdive.data import collate_blocks, load_corpus, packed_dataset, tokenize_documents
from deepdive.modeling import build_llama_config, build_model
from deepdive.optim import build_optimizer
from deepdive.tokenizer import train_tokenizer


RECIPE = "recipes/tiny/pretrain.yaml"


def parse_tiny(*overrides: str):
    """(PretrainArguments, TrainingArguments) of the tiny recipe with `overrides`; nothing evaluated, saved or
    reported, output in a scratch folder."""
    scratch = tempfile.mkdtemp(prefix="deepdive-bench-")
    _, args, training_args = parse_recipe(
        (ScriptArguments, PretrainArguments, TrainingArguments),
        ["--config", RECIPE, "--output_dir", scratch, "--eval_strategy", "no", "--save_strategy", "no",
         "--report_to", "none", "--disable_tqdm", "true", *overrides],
    )  # fmt: skip
    return args, training_args


@functools.cache
def tokenizer_and_corpus(vocab_size: int):
    corpus = load_corpus(dataset_name="shakespeare")
    return train_tokenizer(corpus["train"]["text"], vocab_size), corpus


def train_blocks(args, seq_len: int | None = None):
    """The recipe's packed training blocks (of `seq_len` tokens if given)."""
    tokenizer, corpus = tokenizer_and_corpus(args.vocab_size)
    return tokenizer, packed_dataset(tokenize_documents(corpus["train"], tokenizer), seq_len or args.seq_len)


def tiny_model(args, training_args, tokenizer, **shape):
    """The recipe's model (or one reshaped by `shape`: hidden_size, num_hidden_layers, ...)."""
    fields = {
        "hidden_size": args.hidden_size,
        "num_hidden_layers": args.num_hidden_layers,
        "num_attention_heads": args.num_attention_heads,
        "max_position_embeddings": args.seq_len,
        "vocab_size": args.vocab_size,
        "attn_implementation": args.attn_implementation,
        **shape,
    }
    return build_model(build_llama_config(tokenizer, **fields), seed=training_args.seed)


def untrained_chat_model_dir() -> str:
    """A folder with an untrained tiny model and its tokenizer with the chat template: what the SFT and GRPO
    benchmarks load when speed, not quality, is measured."""
    from deepdive.tokenizer import add_chat_template

    args, training_args = parse_tiny()
    tokenizer, _ = tokenizer_and_corpus(args.vocab_size)
    folder = tempfile.mkdtemp(prefix="deepdive-bench-model-")
    tiny_model(args, training_args, tokenizer).save_pretrained(folder)
    add_chat_template(tokenizer).save_pretrained(folder)
    return folder


class BareLoop:
    """A hand-written PyTorch training loop with the recipe's settings: the same model, optimizer (Muon +
    AdamW), schedule, bf16 autocast, torch.compile, deterministic kernels (`full_determinism`), gradient clipping,
    batch and data order source."""

    def __init__(
        self,
        model,
        training_args,
        muon_lr,
        dataset,
        compile_model=None,
        bf16=None,
        deterministic=None,
        batch_size=None,
    ):
        self.model = model
        self.optimizer = build_optimizer(model, training_args, muon_lr) or torch.optim.AdamW(
            model.parameters(), lr=training_args.learning_rate
        )
        self.scheduler = get_scheduler(
            training_args.lr_scheduler_type,
            self.optimizer,
            num_warmup_steps=training_args.warmup_steps,
            num_training_steps=max(training_args.max_steps, 1),
            scheduler_specific_kwargs=training_args.lr_scheduler_kwargs,
        )
        compile_model = training_args.torch_compile if compile_model is None else compile_model
        self.forward = torch.compile(model) if compile_model else model
        self.bf16 = training_args.bf16 if bf16 is None else bf16
        self.deterministic = training_args.full_determinism if deterministic is None else deterministic
        self.max_grad_norm = training_args.max_grad_norm
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size or training_args.per_device_train_batch_size,
            shuffle=True,
            collate_fn=collate_blocks,
            drop_last=True,
            generator=torch.Generator().manual_seed(training_args.seed),
        )
        self.batches = iter(self.loader)
        model.train()

    def step(self) -> torch.Tensor:
        # The mode is global and torch.compile compiles under the mode it meets, so set it for this loop's steps only.
        before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(self.deterministic)
        try:
            return self._step()
        finally:
            torch.use_deterministic_algorithms(before)

    def _step(self) -> torch.Tensor:
        batch = next(self.batches, None)
        if batch is None:
            self.batches = iter(self.loader)
            batch = next(self.batches)
        device = next(self.model.parameters()).device
        batch = {key: value.to(device) for key, value in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.forward(**batch).loss
        loss.backward()
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()
