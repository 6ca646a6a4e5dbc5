"""The one generation helper: repeatable draws that leave training's random numbers alone, the model's own
distribution whatever its folder's generation config says, batches that answer like single prompts, and
completions that know whether the model stopped by itself."""

import io

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from deepdive.generation import Decoding, generate
from deepdive.tokenizer import IM_END, add_chat_template, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["ROMEO:\nWhat light through yonder window breaks? It is the east.\n"] * 50
    return add_chat_template(train_tokenizer(texts, vocab_size=300))


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


CONVERSATIONS = [
    [{"role": "user", "content": "Who are you?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What light breaks through the window?"}],
]


def texts(completions) -> list[str]:
    return [completion.text for completion in completions]


def test_a_sampled_draw_repeats_per_seed_and_leaves_the_global_random_state_alone(model, tokenizer):
    """Training draws its next random numbers as if no sample had been generated in between."""
    decoding = Decoding(max_new_tokens=12, temperature=1.0, num_samples=3, seed=7)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = texts(generate(model, tokenizer, CONVERSATIONS, decoding))
    assert torch.equal(torch.get_rng_state(), state)
    assert texts(generate(model, tokenizer, CONVERSATIONS, decoding)) == first
    other_seed = texts(generate(model, tokenizer, CONVERSATIONS, Decoding(12, 1.0, num_samples=3, seed=8)))
    assert other_seed != first and len(first) == 6 and len(set(first)) > 1


def test_a_top_k_of_zero_cuts_nothing_even_when_the_model_folder_sets_one(model, tokenizer):
    """A saved generation config with top-k 1 would make every sampled reply the greedy one."""
    model.generation_config.top_k = 1
    try:
        greedy = texts(generate(model, tokenizer, ["ROMEO:"], Decoding(max_new_tokens=8)))
        sampled = texts(generate(model, tokenizer, ["ROMEO:"], Decoding(8, temperature=1.0, num_samples=8)))
        assert set(sampled) != set(greedy)
        cut = texts(generate(model, tokenizer, ["ROMEO:"], Decoding(8, temperature=1.0, top_k=1, num_samples=8)))
        assert set(cut) == set(greedy)  # a top-k of 1 asked for is a top-k of 1: the greedy text every time
    finally:
        model.generation_config.top_k = 50


def test_a_batch_answers_each_conversation_as_it_would_alone(model, tokenizer):
    decoding = Decoding(max_new_tokens=10)
    alone = [generate(model, tokenizer, [conversation], decoding)[0] for conversation in CONVERSATIONS]
    assert generate(model, tokenizer, CONVERSATIONS, decoding, batch_size=2) == alone


def test_a_reply_stops_at_the_end_of_the_turn_and_says_so(model, tokenizer):
    end = tokenizer.convert_tokens_to_ids(IM_END)
    stops = LlamaForCausalLM(model.config).eval()
    ends_every_turn = torch.zeros(len(tokenizer))
    ends_every_turn[end] = 1e4  # the end of turn becomes the likeliest next token everywhere
    stops.lm_head.register_forward_hook(lambda module, inputs, logits: logits + ends_every_turn)
    stream = io.StringIO()
    [completion] = generate(stops, tokenizer, CONVERSATIONS[:1], Decoding(max_new_tokens=5), stream=stream)
    assert completion.text == "" and completion.stopped and stream.getvalue() == "\n"
    [running_on] = generate(model, tokenizer, CONVERSATIONS[:1], Decoding(max_new_tokens=3))
    assert running_on.text and not running_on.stopped  # the budget ran out before this model closed its turn


def test_generation_restores_the_training_mode_and_the_padding_side(model, tokenizer):
    model.train()
    tokenizer.padding_side = "right"
    try:
        generate(model, tokenizer, CONVERSATIONS, Decoding(max_new_tokens=2))
        assert model.training and tokenizer.padding_side == "right"
    finally:
        model.eval()


@pytest.mark.parametrize(
    "prompts, decoding, stream, message",
    [
        (["ROMEO:", CONVERSATIONS[0]], Decoding(), None, "all texts or all conversations"),
        (CONVERSATIONS, Decoding(), io.StringIO(), "one completion of one prompt"),
        (["ROMEO:"], Decoding(num_samples=2), None, "greedy decoding gives one reply per prompt"),
    ],
)
def test_impossible_requests_are_refused(model, tokenizer, prompts, decoding, stream, message):
    with pytest.raises(ValueError, match=message):
        generate(model, tokenizer, prompts, decoding, stream=stream)
