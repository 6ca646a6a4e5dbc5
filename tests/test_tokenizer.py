import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from deepdive.errors import DataError
from deepdive.tokenizer import (
    END_OF_TEXT,
    IM_END,
    IM_START,
    PAD,
    bytes_per_token,
    token_byte_lengths,
    train_tokenizer,
)


TEXT = [
    "ROMEO:\nBut, soft! what light through yonder window breaks?\n",
    "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo? 1234 + 5678 = 6912\n",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXT, vocab_size=320)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_unicode_round_trips(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_token_byte_lengths_add_up_to_the_utf8_size(tokenizer, text):
    lengths = token_byte_lengths(tokenizer)
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert sum(lengths[i] for i in ids) == len(text.encode("utf-8"))


def test_text_spelling_a_special_token_stays_text(tokenizer):
    ids = tokenizer("a<|endoftext|>b", add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert tokenizer.eos_token_id not in ids and tokenizer.decode(ids) == "a<|endoftext|>b"


def test_digits_are_split_one_by_one(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("x 1234+56", add_special_tokens=False)["input_ids"])
    digits = [token.lstrip("Ġ") for token in tokens if any(c.isdigit() for c in token)]
    assert digits == ["1", "2", "3", "4", "5", "6"]


def test_special_tokens_are_single_ids_and_count_no_bytes(tokenizer):
    lengths = token_byte_lengths(tokenizer)
    for special in (END_OF_TEXT, PAD, IM_START, IM_END):
        ids = tokenizer(special, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and lengths[ids[0]] == 0
    assert tokenizer.eos_token == END_OF_TEXT and tokenizer.pad_token == PAD
    assert tokenizer.eos_token_id != tokenizer.pad_token_id


def test_saved_tokenizer_loads_with_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "HAMLET:\nTo be, or not to be: 2 + 2 = 4 \u2014 \u00e9t\u00e9 \U0001f916"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text


def test_bytes_per_token_grows_with_the_vocabulary():
    small = train_tokenizer(TEXT, vocab_size=270)
    large = train_tokenizer(TEXT, vocab_size=400)
    assert 1.0 <= bytes_per_token(small, TEXT) < bytes_per_token(large, TEXT)


def test_vocab_too_small_for_bytes_and_specials():
    with pytest.raises(DataError, match="vocab_size"):
        train_tokenizer(TEXT, vocab_size=200)
