"""Tool use end to end without training: the task conversations that teach it, and the loop that runs the calls.

The SFT examples must call the tool that answers the question and then answer from its result, with the result
itself untrained; a mixture offers the tools to the share of conversations the recipe asks for and leaves the
others exactly as they were. The loop is driven by a scripted model whose replies are fixed in advance, so what
is checked is the loop: a call is run, its result is read back into the conversation, a failing call comes back
as an error the model sees, and a model that never stops calling is cut off.
"""

import io
import json

import pytest
import torch
from test_seeds import write_run

from deepdive.chat import reply
from deepdive.data import build_shakespeare
from deepdive.errors import DataError
from deepdive.generation import MAX_TOOL_ROUNDS, Decoding, generate_with_tools
from deepdive.report import plot_stages, write_report
from deepdive.tasks import build_mixture, get_task, with_tools
from deepdive.tokenizer import add_chat_template, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    texts = ['ROMEO:\nHow many? Answer: 5 <tool>python {"code": "2 + 3"}</tool> error import\n'] * 50
    return add_chat_template(train_tokenizer(texts, vocab_size=400))


@pytest.mark.parametrize("family", ["arithmetic", "spelling", "shakespeare"])
def test_a_tool_conversation_calls_the_tool_and_answers_from_its_result(family):
    for example in get_task(family).examples("train", 20, seed=3):
        user, call, result, answer = with_tools(example)["messages"]
        assert user == example["messages"][0] and call["content"] == "" and result["role"] == "tool"
        assert get_task(family).check(answer["content"], example["answer"])
        if family == "shakespeare":
            assert call["tool_calls"][0]["function"]["name"] == "search"
        else:  # the calculator's result is the answer itself
            assert call["tool_calls"][0]["function"]["name"] == "python" and result["content"] == example["answer"]


@pytest.fixture(scope="module")
def play_tokenizer():
    """A byte-level BPE of three train plays: real words in several pieces, " word" and "word" cut differently."""
    return add_chat_template(train_tokenizer(build_shakespeare()["train"]["text"][:3], vocab_size=1000))


def sublist_at(ids: list[int], part: list[int]) -> list[int]:
    return [start for start in range(len(ids) - len(part) + 1) if ids[start : start + len(part)] == part]


def token_turns(tokenizer, conversation: dict) -> tuple[list[int], list[int]]:
    """The token ids of a tool conversation up to the assistant's turn (the question), and of its call."""
    tools = json.loads(conversation["tools"])
    user, call = conversation["messages"][:2]
    asked = tokenizer.apply_chat_template([user], tools=tools, add_generation_prompt=True)["input_ids"]
    both = tokenizer.apply_chat_template([user, call], tools=tools)["input_ids"]
    assert both[: len(asked)] == asked
    return asked, both[len(asked) :]


@pytest.mark.parametrize(("family", "argument"), [("spelling", "code"), ("shakespeare", "query")])
def test_a_call_copies_the_word_or_name_with_the_question_s_own_tokens(family, argument, play_tokenizer):
    """The call writes the word (or name) as the question spells it, after a space only when the question has one
    before it, so the pieces the call needs are pieces the question already holds, token for token."""
    task, spaced = get_task(family), set()
    for example in task.examples("train", 60, seed=1):
        key, question = task.split_key(example), example["prompt"][0]["content"]
        conversation = with_tools(example)
        value = conversation["messages"][1]["tool_calls"][0]["function"]["arguments"][argument]
        written = f" {key}" if f" {key}" in question else key
        assert (f"'{written}'" if family == "spelling" else written) in value
        spaced.add(written != key)
        asked, called = token_turns(play_tokenizer, conversation)
        key_ids = play_tokenizer(written, add_special_tokens=False)["input_ids"]
        assert sublist_at(asked, key_ids) and sublist_at(called, key_ids), (question, value)
    assert spaced == {True, False}


def test_identity_is_answered_without_a_call_even_with_tools_offered():
    example = get_task("identity").examples("train", 1, seed=0)[0]
    offered = with_tools(example)
    assert offered["messages"] == example["messages"] and json.loads(offered["tools"])[0]["function"]["name"]


def test_only_the_call_and_the_answer_carry_loss(tokenizer):
    example = with_tools(get_task("arithmetic").examples("train", 1, seed=0)[0])
    encoded = tokenizer.apply_chat_template(
        example["messages"], tools=json.loads(example["tools"]), return_dict=True, return_assistant_tokens_mask=True
    )
    trained = tokenizer.decode([t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if m])
    code = example["messages"][1]["tool_calls"][0]["function"]["arguments"]["code"]
    assert trained == f'<tool>python {{"code": "{code}"}}</tool><|im_end|>Answer: {example["answer"]}<|im_end|>'


def test_a_mixture_offers_tools_to_its_share_and_leaves_the_rest_as_before():
    weights = {"identity": 1.0, "arithmetic": 1.0, "spelling": 1.0, "shakespeare": 1.0}
    plain = build_mixture(weights, 200, "train", seed=5)
    mixed = build_mixture(weights, 200, "train", seed=5, tool_share=0.5)
    assert plain["tools"] == [None] * 200
    offered = [tools is not None for tools in mixed["tools"]]
    assert 70 <= sum(offered) <= 130
    for was, now, tools in zip(plain, mixed, offered, strict=True):
        assert was["prompt"] == now["prompt"] and was["answer"] == now["answer"]
        drop_none = [{k: v for k, v in m.items() if v is not None} for m in now["messages"]]
        assert (drop_none == [{k: v for k, v in m.items() if v is not None} for m in was["messages"]]) == (
            not tools or now["task"] == "identity"
        )
    with pytest.raises(DataError, match="tool_share: 1.5"):
        build_mixture(weights, 10, "train", tool_share=1.5)


class ScriptedModel(torch.nn.Module):
    """Answers the n-th round of every conversation with the n-th scripted text, whatever it is asked."""

    def __init__(self, tokenizer, script: list[str]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer, self.script, self.rounds, self.prompts = tokenizer, script, 0, []

    def generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, streamer=None, **kwargs):
        self.prompts.append(self.tokenizer.batch_decode(input_ids, skip_special_tokens=False))
        text = self.script[min(self.rounds, len(self.script) - 1)]
        self.rounds += 1
        reply = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [eos_token_id]
        if streamer is not None:  # as transformers streams: the prompt first, then token by token
            streamer.put(input_ids)
            for token in reply:
                streamer.put(torch.tensor([token]))
            streamer.end()
        return torch.cat([input_ids, torch.tensor([reply] * len(input_ids))], dim=1)


QUESTION = [{"role": "user", "content": "How many?"}]


def test_a_call_is_run_and_its_result_read_back_before_the_answer(tokenizer):
    model = ScriptedModel(tokenizer, ['<tool>python {"code": "2 + 3"}</tool>', "Answer: 5"])
    [exchange] = generate_with_tools(model, tokenizer, [QUESTION], Decoding(max_new_tokens=30))
    assert exchange.completion.text == "Answer: 5" and exchange.completion.stopped
    assert [turn["role"] for turn in exchange.turns] == ["assistant", "tool"] and exchange.turns[1]["content"] == "5"
    assert (exchange.calls, exchange.failures) == (1, 0)
    assert "python(code)" in model.prompts[0][0] and "<|im_start|>tool\n5<|im_end|>" in model.prompts[1][0]


def test_a_failing_call_comes_back_as_an_error_and_a_model_that_keeps_calling_is_cut_off(tokenizer):
    model = ScriptedModel(tokenizer, ['<tool>python {"code": "import os"}</tool>'])
    [exchange] = generate_with_tools(model, tokenizer, [QUESTION], Decoding(max_new_tokens=30))
    assert model.rounds == MAX_TOOL_ROUNDS + 1 and exchange.calls == exchange.failures == MAX_TOOL_ROUNDS
    assert exchange.turns[1]["content"].startswith("error:") and "<tool>" in exchange.completion.text


def test_the_chat_shows_each_call_and_result_and_keeps_them_in_the_conversation(tokenizer):
    model = ScriptedModel(tokenizer, ['<tool>python {"code": "2 + 3"}</tool>', "Answer: 5"])
    messages, out = list(QUESTION), io.StringIO()
    assert reply(model, tokenizer, messages, max_new_tokens=30, stream=out, tools=True) == "Answer: 5"
    assert out.getvalue() == '<tool>python {"code": "2 + 3"}</tool>\n  | 5\nAnswer: 5\n'
    assert [message["role"] for message in messages] == ["user", "assistant", "tool"]
    untooled = ScriptedModel(tokenizer, ['<tool>python {"code": "2 + 3"}</tool>'])
    assert reply(untooled, tokenizer, list(QUESTION), max_new_tokens=30) == '<tool>python {"code": "2 + 3"}</tool>'
    assert untooled.rounds == 1  # without tools a call is only text


def png_width(path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk: width, then height


def test_the_report_plots_the_tool_calls_of_grpo_with_tools_and_not_of_grpo_without(tmp_path):
    steps = [{"step": step, "rewards/accuracy/mean": 0.1 * step, "completions/mean_length": 40.0} for step in (1, 2)]
    with_tools = [{**entry, "tools/call_frequency": 0.9, "tools/failure_frequency": 0.05} for entry in steps]
    paths = plot_stages({"grpo": {"history": steps}, "grpo + tools": {"history": with_tools}}, tmp_path)
    assert paths["grpo + tools"].name == "grpo-tools.png"
    assert png_width(paths["grpo + tools"]) == pytest.approx(png_width(paths["grpo"]) * 3 / 2, rel=0.02)  # 3 panels


def test_the_report_card_puts_each_family_with_tools_right_below_it_repeat_included(tmp_path):
    run = tmp_path / "seed-1"
    sft = {"stage": "sft", "spelling_accuracy": 0.45, "repeat_accuracy": 0.1}
    tools = {
        "stage": "sft",
        **{"spelling_accuracy": 0.44, "spelling_accuracy_with_tools": 0.79},
        **{"repeat_accuracy": 0.57, "repeat_accuracy_with_tools": 0.58},
    }
    write_run(run, 1, {"sft": {"metrics": sft}, "sft-tools": {"metrics": tools}})
    lines = write_report(run, side_by_side=False).read_text().splitlines()
    rows = [line for line in lines if line.startswith(("| spelling accuracy", "| repeat accuracy"))]
    assert rows == [
        "| spelling accuracy | 45.0% | 44.0% |",
        "| spelling accuracy, with tools | – | 79.0% |",
        "| repeat accuracy (copying from the context) | 10.0% | 57.0% |",
        "| repeat accuracy, with tools | – | 58.0% |",
    ]
