"""Bad input, caught early: each case stops a recipe with one line naming the field or file and what is valid,
before any training step and before anything is written to the output folder."""

import json
import sys

import pytest
from conftest import REPO, STAGES

from deepdive.configs import parse_recipe
from deepdive.errors import DeepdiveError


sys.path.insert(0, str(REPO / "recipes"))
CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


def jsonl(*records) -> str:
    return "".join((record if isinstance(record, str) else json.dumps(record)) + "\n" for record in records)


# (case, stage, files to write {name: text or bytes}, extra arguments ({tmp} is the test folder), error start)
CASES = [
    ("unknown recipe field", "pretrain", {"r.yaml": "hiden_size: 64\n"}, ["--config", "{tmp}/r.yaml"],
     "{tmp}/r.yaml: unknown field 'hiden_size'; did you mean hidden_size"),
    ("unknown command-line argument", "pretrain", {}, ["--hiden_size", "3"],
     "unknown argument '--hiden_size'; did you mean hidden_size"),
    ("ill-typed recipe field", "pretrain", {"r.yaml": "learning_rate: fast\n"}, ["--config", "{tmp}/r.yaml"],
     "{tmp}/r.yaml: field 'learning_rate' must be float, got 'fast'"),
    ("recipe file missing", "pretrain", {}, ["--config", "{tmp}/nowhere.yaml"], "--config: {tmp}/nowhere.yaml does not exist"),
    ("data file missing", "pretrain", {}, ["--data_files", "{tmp}/book.txt"], "data_files: {tmp}/book.txt does not exist"),
    ("empty corpus", "pretrain", {"a.txt": "", "b.txt": "  \n"}, ["--data_files", "{tmp}/a.txt", "{tmp}/b.txt"],
     "data_files: {tmp}/a.txt, {tmp}/b.txt hold no text"),
    ("non-UTF-8 corpus", "pretrain", {"latin1.txt": "caf\xe9".encode("latin-1")}, ["--data_files", "{tmp}/latin1.txt"],
     "data_files: {tmp}/latin1.txt is not UTF-8 text (byte 3)"),
    ("JSONL with a broken line", "pretrain", {"docs.jsonl": jsonl({"text": "a"}, '{"text": "b"', {"text": "c"})},
     ["--data_files", "{tmp}/docs.jsonl"], "data_files: {tmp}/docs.jsonl line 2 is not valid JSON"),
    ("JSONL without the text column", "pretrain", {"docs.jsonl": jsonl({"body": "a"}, {"body": "b"})},
     ["--data_files", "{tmp}/docs.jsonl"], "data_files: {tmp}/docs.jsonl line 1 has no string field 'text'"),
    ("vocab size not above the byte tokens", "pretrain", {}, ["--vocab_size", "100"],
     "vocab_size: must exceed the 256 byte tokens"),
    ("vocab size below the tokenizer's", "pretrain", {}, ["--tokenizer_name_or_path", "{base}", "--vocab_size", "300"],
     "vocab_size: 300 is smaller than the tokenizer's 512 tokens"),
    ("eval stride not shorter than the sequence", "pretrain", {}, ["--eval_stride", "64"],
     "eval_stride: 64 must be at least 1 and below seq_len (64)"),
    ("output path not writable", "pretrain", {"file": "not a folder"}, ["--output_dir", "{tmp}/file/run"],
     "output_dir: cannot write to {tmp}/file/run"),
    ("conversation with an unknown role", "sft", {"c.jsonl": jsonl({"messages": [{"role": "robot", "content": "x"}, *CHAT]})},
     ["--data_files", "{tmp}/c.jsonl"], "train dataset row 0: unknown role 'robot'; valid roles: system"),
    ("conversation without an assistant turn", "sft", {"c.jsonl": jsonl({"messages": CHAT[:1]})},
     ["--data_files", "{tmp}/c.jsonl"], "train dataset"),
    ("dataset without a messages column", "sft", {"c.jsonl": jsonl({"text": "Hello"})}, ["--data_files", "{tmp}/c.jsonl"],
     "data_files: {tmp}/c.jsonl line 1 has no 'messages' list"),
    ("sequence length above the model's maximum", "sft", {}, ["--max_length", "4096"],
     "max_length: 4096 exceeds the model's 64 positions"),
    ("tokenizer without chat tokens", "sft", {}, ["--model_name_or_path", "{plain}"],
     "model_name_or_path: the tokenizer has no chat template and lacks the chat tokens"),
    ("unknown task", "sft", {}, ["--tasks", "arithmetic", "poetry"], "tasks: unknown task 'poetry'; valid tasks:"),
    ("task weights of the wrong length", "sft", {}, ["--tasks", "arithmetic", "spelling", "--task_weights", "1.0"],
     "task_weights: 1 weights for 2 tasks"),
    ("a drill without a drill task", "sft", {}, ["--num_drill_examples", "8"],
     "num_drill_examples: no drill_task to drill; name one"),
    ("a drill in shuffled data", "sft", {}, ["--drill_task", "repeat", "--num_drill_examples", "8"],
     "num_drill_examples: the drill leads only when the data is read in order; set train_sampling_strategy: "
     "sequential"),
    ("unknown GRPO task", "grpo", {}, ["--tasks", "poetry"], "tasks: unknown task 'poetry'; valid tasks: arithmetic"),
    ("unknown reward", "grpo", {}, ["--reward_funcs", "accuracy", "style"],
     "reward_funcs: unknown reward 'style'; valid rewards: accuracy, format, length"),
    ("reward weights of the wrong length", "grpo", {}, ["--reward_weights", "1.0"], "reward_weights: 1 weights for 3 reward_funcs"),
    ("num_generations not dividing the batch", "grpo", {}, ["--num_generations", "3"],
     "generation_batch_size (4) must be divisible by num_generations (3)"),
    ("num_generations below 2", "grpo", {}, ["--num_generations", "1"], "GRPO requires at least 2 generations per prompt"),
    ("push without a repo id", "grpo", {}, ["--push_to_hub", "true"], "hub_model_id: pushing needs a Hub repo id"),
    ("LoRA target that matches no module", "sft", {}, ["--use_peft", "true", "--lora_target_modules", "q_proj", "v_prj"],
     "lora_target_modules: v_prj matches no module of the model; its linear and embedding modules are down_proj, "
     "embed_tokens, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"),
    ("one LoRA target, read as a regular expression", "grpo", {}, ["--use_peft", "true", "--lora_target_modules", "q_proj"],
     "lora_target_modules: q_proj matches no module of the model (one value is a regular expression"),
]  # fmt: skip


@pytest.fixture(scope="module")
def plain_tokenizer_model(micro_base, tmp_path_factory):
    """The micro base model with a tokenizer that has no chat tokens (as a tokenizer from elsewhere would)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("plain")
    raw = Tokenizer(models.BPE(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel()
    raw.train_from_iterator(["to be or not to be"] * 10, trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"]))
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]").save_pretrained(folder)
    AutoModelForCausalLM.from_pretrained(micro_base).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case, stage, files, extra, message", CASES, ids=[case[0] for case in CASES])
def test_bad_input_stops_in_one_line_before_anything_is_written(
    case, stage, files, extra, message, micro_base, micro_sft, plain_tokenizer_model, tmp_path
):
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    fill = {"tmp": str(tmp_path), "base": str(micro_base), "plain": str(plain_tokenizer_model)}
    extra = [arg.format(**fill) for arg in extra]
    output_dir = tmp_path / "run"
    model = [] if stage == "pretrain" else ["--model_name_or_path", str(micro_base if stage == "sft" else micro_sft)]
    config = [] if "--config" in extra else ["--config", str(REPO / f"recipes/micro/{stage}.yaml")]
    args = [*config, *model, "--output_dir", str(output_dir), *extra]
    recipe = __import__(stage)
    with pytest.raises(DeepdiveError) as error:
        recipe.main(*parse_recipe(STAGES[stage], args))
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(message.format(**fill)), text
    assert not output_dir.exists()
