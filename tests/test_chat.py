import io

import pytest
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM
from trl import SFTConfig
from trl.chat_template_utils import is_chat_template_stop_token_trained
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from deepdive.chat import chat_loop, fit_to_context, reply, validate_conversations
from deepdive.errors import DataError
from deepdive.tokenizer import add_chat_template, train_tokenizer


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am deepdive."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "Answer: 4"},
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["ROMEO:\nWho are you? I am deepdive. What is 2 + 2? Answer: 4\n"] * 50
    return add_chat_template(train_tokenizer(texts, vocab_size=300))


def test_assistant_mask_covers_exactly_the_assistant_replies_and_their_end_token(tokenizer):
    encoded = tokenizer.apply_chat_template(CONVERSATION, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    trained = [tokenizer.decode([i]) for i, m in zip(ids, mask, strict=True) if m]
    assert "".join(trained) == "I am deepdive.<|im_end|>Answer: 4<|im_end|>"
    # Everything else (system, user, role headers, the separator) is masked out.
    untrained = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if not m])
    assert "Who are you?" in untrained and "Be brief." in untrained and "I am deepdive" not in untrained
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert is_chat_template_stop_token_trained(tokenizer)


def test_end_of_turn_is_the_eos(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>"
    prompt = tokenizer.apply_chat_template(CONVERSATION[:2], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n")


def test_a_tokenizer_without_chat_tokens_is_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    plain = PreTrainedTokenizerFast(tokenizer_object=raw)
    with pytest.raises(DataError, match="lacks the chat tokens <\\|endoftext\\|>, <\\|im_start\\|>, <\\|im_end\\|>"):
        add_chat_template(plain)


@pytest.mark.parametrize(
    "messages, message",
    [
        ([{"role": "wizard", "content": "hi"}], "unknown role 'wizard'; valid roles: system, user, assistant"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}], "an assistant turn is empty"),
        ([{"role": "user", "content": "hi"}], "has no assistant turn"),
        ([], "must be a non-empty list"),
    ],
)
def test_bad_conversations_are_named(messages, message):
    with pytest.raises(DataError, match=message):
        validate_conversations(Dataset.from_list([{"messages": messages}]), "data.jsonl")


def test_dataset_without_messages_column():
    with pytest.raises(DataError, match="has no 'messages' column \\(it has text\\)"):
        validate_conversations(Dataset.from_list([{"text": "hi"}]), "data.jsonl")


def test_packed_rows_attend_only_within_their_own_conversation(tokenizer):
    """Padding-free packing is correct only if packed sequences cannot see each other."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    first = tokenizer.apply_chat_template(CONVERSATION[1:3], return_dict=True)["input_ids"]
    second = tokenizer.apply_chat_template(CONVERSATION[3:], return_dict=True)["input_ids"]
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    batch = collator([{"input_ids": first}, {"input_ids": second}])
    assert "attention_mask" not in batch or batch["attention_mask"] is None
    # The Trainer trains with `use_cache=False` (TrainingArguments' default); with a KV cache the packed
    # sequences would see each other, so this guards that default too.
    assert SFTConfig(output_dir="unused", use_cpu=True).use_cache is False
    model.config.use_cache = False
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        alone = model(input_ids=torch.tensor([second])).logits[0]
    torch.testing.assert_close(packed[len(first) :], alone, atol=1e-5, rtol=1e-4)


def test_reply_streams_and_stops_at_end_of_turn(tokenizer):
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():  # make <|im_end|> the most likely next token everywhere
        model.lm_head.weight.zero_()
        model.lm_head.weight[end] = 1.0
        model.model.norm.weight.fill_(1.0)
    stream = io.StringIO()
    text = reply(model, tokenizer, CONVERSATION[1:2], max_new_tokens=5, stream=stream)
    assert text == "" and stream.getvalue() == "\n"


def test_chat_loop_handles_reset_and_quit(tokenizer, monkeypatch):
    import deepdive.chat as chat

    seen = []

    def fake_reply(model, tokenizer, messages, *args, **kwargs):
        seen.append([m["content"] for m in messages])
        return f"reply {len(seen)}"

    monkeypatch.setattr(chat, "reply", fake_reply)
    lines = iter(["hello", "again", "/reset", "", "fresh", "/quit", "never"])
    out = io.StringIO()
    history = chat_loop(None, tokenizer, read=lambda prompt: next(lines), out=out)
    assert seen == [["hello"], ["hello", "reply 1", "again"], ["fresh"]]
    assert history == [{"role": "user", "content": "fresh"}, {"role": "assistant", "content": "reply 3"}]
    assert "(conversation reset)" in out.getvalue()


def test_long_chats_keep_their_latest_turns(tokenizer):
    turns = []
    for index in range(12):
        turns += [{"role": "user", "content": f"Question {index}?"}, {"role": "assistant", "content": "An answer."}]
    messages = [{"role": "system", "content": "Be brief."}, *turns, {"role": "user", "content": "Last one?"}]
    kept = fit_to_context(messages, tokenizer, context_length=80, reserve=20)
    length = len(tokenizer.apply_chat_template(kept, add_generation_prompt=True, return_dict=True)["input_ids"])
    assert length + 20 <= 80
    assert kept[0]["role"] == "system" and kept[-1]["content"] == "Last one?"
    assert kept[1:] == messages[len(messages) - len(kept) + 1 :]  # a suffix of the chat, whole exchanges
    assert fit_to_context(messages[-1:], tokenizer, context_length=8, reserve=4) == messages[-1:]
