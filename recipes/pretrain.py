"""Stage 1 of the lecture, pretraining: a token simulator trained from scratch on a text corpus.

    python recipes/pretrain.py --config recipes/tiny/pretrain.yaml
    accelerate launch recipes/pretrain.py --config recipes/tiny/pretrain.yaml --max_steps 100

Corpus -> BPE tokenizer (train split only) -> packed blocks -> a Llama-style model built from the recipe ->
`transformers.Trainer` -> validation bits per byte -> a Hugging Face folder (`runs/<recipe>/base` by default)
that `AutoModelForCausalLM` loads. Every recipe field can be overridden on the command line.
"""

import logging
import os
import time

import numpy as np
import torch
from datasets import IterableDataset
from transformers import AutoTokenizer, Trainer, TrainingArguments
from trl import ScriptArguments

from deepdive.configs import PretrainArguments, run_from_command_line
from deepdive.data import collate_blocks, load_corpus, packed_dataset, tokenize_documents
from deepdive.distributed import computed_once
from deepdive.errors import RecipeError
from deepdive.evaluation import bits_per_byte, bits_per_byte_metric, sum_token_nll, token_stream
from deepdive.generation import default_generation_config
from deepdive.modeling import build_llama_config, build_model, count_parameters
from deepdive.runs import finish_run, global_batch, save_model, start_run
from deepdive.tokenizer import bytes_per_token, token_byte_lengths, train_tokenizer
from deepdive.trainer import NonFiniteGuard, RecipeTrainerMixin, SampleGenerationCallback


logger = logging.getLogger("deepdive.pretrain")


class MuonTrainer(RecipeTrainerMixin, Trainer):
    """`transformers.Trainer` with Muon + AdamW when the recipe sets `muon_lr`."""


def main(script_args: ScriptArguments, args: PretrainArguments, training_args: TrainingArguments) -> dict:
    if args.eval_stride is not None and not 1 <= args.eval_stride < args.seq_len:
        raise RecipeError(f"eval_stride: {args.eval_stride} must be at least 1 and below seq_len ({args.seq_len})")
    run = start_run(training_args, args.overwrite_output_dir, args.recipe)
    output_dir = run.output_dir
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(output_dir / "tensorboard"))

    # Data: documents with a train split and a held-out validation split
    corpus = load_corpus(
        dataset_name=script_args.dataset_name,
        dataset_config=script_args.dataset_config,
        data_files=args.data_files,
        text_column=args.text_column,
        train_split=script_args.dataset_train_split,
        validation_split=script_args.dataset_test_split,
        validation_size=args.validation_size,
        streaming=script_args.dataset_streaming,
        seed=training_args.seed,
    )

    streamed = isinstance(corpus["train"], IterableDataset)  # read as training goes: no length, no epochs
    if streamed and training_args.max_steps <= 0:
        raise RecipeError("max_steps: a streamed corpus has no length; set the number of optimizer steps")

    # Tokenizer: trained on the train split only (by the main process, for all), unless the recipe names one
    if args.tokenizer_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name_or_path)
    else:
        texts = (
            corpus["train"]["text"]
            if not streamed
            else (row["text"] for row in corpus["train"].take(args.tokenizer_documents))
        )
        tokenizer = computed_once(lambda: train_tokenizer(texts, args.vocab_size or 4096))
    validation_bytes_per_token = bytes_per_token(tokenizer, corpus["validation"]["text"])
    logger.info(
        "tokenizer: %d tokens, %.3f bytes/token on the validation split", len(tokenizer), validation_bytes_per_token
    )

    # Model: Llama-style, sized by the recipe
    config = build_llama_config(
        tokenizer,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        num_key_value_heads=args.num_key_value_heads,
        intermediate_size=args.intermediate_size,
        max_position_embeddings=args.seq_len,
        rope_theta=args.rope_theta,
        vocab_size=args.vocab_size,
        attn_implementation=args.attn_implementation,
    )
    model = build_model(config, seed=training_args.seed)
    n_params = count_parameters(model)
    logger.info("model: %.2fM parameters", n_params / 1e6)

    # Packed blocks of seq_len tokens, no padding
    tokenized = tokenize_documents(corpus, tokenizer)
    train_blocks = packed_dataset(tokenized["train"], args.seq_len)
    eval_blocks = packed_dataset(tokenized["validation"], args.seq_len)
    if args.max_eval_blocks and args.max_eval_blocks < len(eval_blocks):  # spread over all validation plays
        eval_blocks = eval_blocks.select(np.linspace(0, len(eval_blocks) - 1, args.max_eval_blocks).astype(int))
    token_bytes = token_byte_lengths(tokenizer)

    # Train
    trainer = build_trainer(args, training_args, model, tokenizer, train_blocks, eval_blocks)
    train_started = time.time()
    train_result = trainer.train(resume_from_checkpoint=run.resume_from)
    train_seconds = time.time() - train_started

    # Final metric: bits per byte over the whole validation split, every byte scored once
    final = bits_per_byte(
        trainer.model,
        token_stream(list(tokenized["validation"]["input_ids"]), tokenizer.eos_token_id),
        token_bytes,
        seq_len=args.seq_len,
        stride=args.eval_stride or args.seq_len // 2,
        batch_size=training_args.per_device_eval_batch_size,
        autocast_dtype=torch.bfloat16 if training_args.bf16 else None,
        progress=True,
    )

    # Save: model + tokenizer + generation config + metrics, in plain Hugging Face format
    model.generation_config = default_generation_config(tokenizer)
    save_model(trainer, output_dir)
    # Tokens trained by this process: a resumed run's first steps were trained (and timed) by the one it resumes
    train_tokens = (train_result.global_step - run.resumed_step) * global_batch(training_args) * args.seq_len
    metrics = {
        "stage": "pretrain",
        "val_bits_per_byte": final["bits_per_byte"],
        "val_loss_per_token": final["loss"],
        "val_tokens": final["tokens"],
        "val_bytes": final["bytes"],
        "val_bytes_per_token": validation_bytes_per_token,
        "parameters": n_params,
        "train_tokens": train_tokens,
        "train_seconds": train_seconds,
        "train_loss": train_result.training_loss,
        "train_tokens_per_second": train_tokens / train_seconds,
    }
    finish_run(trainer, run, metrics)
    logger.info("val bits per byte %.4f -> %s", final["bits_per_byte"], output_dir)
    return metrics


def build_trainer(args, training_args, model, tokenizer, train_blocks, eval_blocks, callbacks=()) -> MuonTrainer:
    """The pretraining Trainer: packed blocks, bits per byte at each evaluation, logged samples, the NaN
    guard and the recipe's optimizer (`bench/` times this very Trainer against a bare PyTorch loop)."""
    return MuonTrainer(
        model=model,
        args=training_args,
        train_dataset=train_blocks,
        eval_dataset=eval_blocks,
        processing_class=tokenizer,
        data_collator=collate_blocks,
        compute_metrics=bits_per_byte_metric(token_byte_lengths(tokenizer)),
        preprocess_logits_for_metrics=sum_token_nll,
        callbacks=[
            SampleGenerationCallback(tokenizer, args.sample_prompts, args.sample_max_new_tokens),
            NonFiniteGuard(),
            *callbacks,
        ],
        muon_lr=args.muon_lr,
    )


if __name__ == "__main__":
    run_from_command_line(main, (ScriptArguments, PretrainArguments, TrainingArguments))
