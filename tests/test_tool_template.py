"""Tool use in the chat template (`deepdive.tokenizer`): the tool list, calls, results and reading calls back.

What is checked is what SFT and TRL's GRPO tool loop rely on: the calls and answers are trained and the tool list
and results are not, a rendered call parses back to the same call, a malformed one parses as plain text without
raising, the response template survives saving, TRL's own checks on a tool template pass, and a conversation
without tools renders exactly as it did before tools existed.
"""

from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer
from transformers.utils import get_json_schema
from trl.chat_template_utils import (
    is_chat_template_prefix_preserving,
    is_chat_template_stop_token_trained,
    supports_tool_calling,
)
from trl.chat_template_utils import parse_response as trl_parse_response
from trl.trainer.grpo_trainer import GRPOTrainer

from deepdive.tokenizer import CHAT_TEMPLATE, RESPONSE_TEMPLATE, add_chat_template, train_tokenizer
from deepdive.tools import TOOLS


# The template as it was before tools (commit 4d728c0), frozen here: conversations without tools must keep
# rendering exactly like this, or every model trained so far would meet different tokens than it learned.
TEMPLATE_BEFORE_TOOLS = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{- raise_exception('unknown role ' + message['role'] + '; valid roles: system, user, assistant') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

TOOL_FREE_CONVERSATIONS = [
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "I am deepdive."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "Answer: 4"},
    ],
    [{"role": "user", "content": "Spell 'tool' with {braces} and \"quotes\"."}, {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "Which play is Ophélie in?\n"}],
]


def call(name: str, **arguments) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


QUESTION = {"role": "user", "content": "What is 347 + 286?"}
CALL = {"role": "assistant", "content": "", "tool_calls": [call("python", code="347 + 286")]}
RESULT = {"role": "tool", "name": "python", "content": "633"}
ANSWER = {"role": "assistant", "content": "Answer: 633"}
TOOL_LIST = "<|im_start|>system\nTools:\npython(code)\nsearch(query)<|im_end|>\n"


@pytest.fixture(scope="module")
def tokenizer():
    texts = ['ROMEO:\nWho are you? <tool>python {"code": "347 + 286"}</tool> Answer: 633\n'] * 50
    return add_chat_template(train_tokenizer(texts, vocab_size=300))


def render(tokenizer, messages, **options) -> str:
    return tokenizer.apply_chat_template(messages, tools=TOOLS, tokenize=False, **options)


def test_the_tools_are_listed_by_name_and_arguments_in_a_system_block(tokenizer):
    prompt = render(tokenizer, [QUESTION], add_generation_prompt=True)
    assert prompt == f"<|endoftext|>{TOOL_LIST}<|im_start|>user\nWhat is 347 + 286?<|im_end|>\n<|im_start|>assistant\n"
    # JSON schemas, as a dataset's `tools` column holds them, render like the functions they describe.
    schemas = [get_json_schema(tool) for tool in TOOLS]
    assert tokenizer.apply_chat_template([QUESTION], tools=schemas, tokenize=False) == render(tokenizer, [QUESTION])
    # A system message of the conversation opens the same block, once.
    with_system = render(tokenizer, [{"role": "system", "content": "Be brief."}, QUESTION])
    assert with_system.startswith("<|endoftext|><|im_start|>system\nBe brief.\nTools:\npython(code)\n")
    assert with_system.count("Be brief.") == 1 and with_system.count("<|im_start|>system") == 1


def test_a_tool_conversation_renders_the_call_and_the_result_as_turns(tokenizer):
    assert render(tokenizer, [QUESTION, CALL, RESULT, ANSWER]) == (
        f"<|endoftext|>{TOOL_LIST}"
        "<|im_start|>user\nWhat is 347 + 286?<|im_end|>\n"
        '<|im_start|>assistant\n<tool>python {"code": "347 + 286"}</tool><|im_end|>\n'
        "<|im_start|>tool\n633<|im_end|>\n"
        "<|im_start|>assistant\nAnswer: 633<|im_end|>\n"
    )


def test_call_arguments_in_every_form_a_dataset_may_hold_render_alike(tokenizer):
    as_text = {"type": "function", "function": {"name": "python", "arguments": '{"code": "347 + 286"}'}}
    with_a_foreign_key = call("python", code="347 + 286", query=None)  # what a `datasets` table makes of it
    expected = render(tokenizer, [QUESTION, CALL])
    for tool_call in (as_text, with_a_foreign_key):
        assert render(tokenizer, [QUESTION, {**CALL, "tool_calls": [tool_call]}]) == expected


def test_the_mask_trains_calls_and_answers_but_not_the_tool_list_nor_the_results(tokenizer):
    encoded = tokenizer.apply_chat_template(
        [QUESTION, CALL, RESULT, ANSWER], tools=TOOLS, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    trained = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert trained == '<tool>python {"code": "347 + 286"}</tool><|im_end|>Answer: 633<|im_end|>'
    untrained = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if not m])
    assert TOOL_LIST in untrained and "<|im_start|>tool\n633<|im_end|>" in untrained


@pytest.mark.parametrize("conversation", TOOL_FREE_CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("tools", [None, []])
def test_conversations_without_tools_render_exactly_as_before(tokenizer, conversation, add_generation_prompt, tools):
    text = tokenizer.apply_chat_template(
        conversation, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False
    )
    before = tokenizer.apply_chat_template(
        conversation, chat_template=TEMPLATE_BEFORE_TOOLS, add_generation_prompt=add_generation_prompt, tokenize=False
    )
    assert text == before
    if any(message["role"] == "assistant" for message in conversation):  # and the same tokens are trained
        options = {"return_dict": True, "return_assistant_tokens_mask": True}
        now = tokenizer.apply_chat_template(conversation, tools=tools, **options)
        before = tokenizer.apply_chat_template(conversation, chat_template=TEMPLATE_BEFORE_TOOLS, **options)
        assert now["input_ids"] == before["input_ids"] and now["assistant_masks"] == before["assistant_masks"]
        assert any(now["assistant_masks"])


def test_an_unknown_role_is_named(tokenizer):
    with pytest.raises(Exception, match="unknown role wizard; valid roles: system, user, assistant, tool"):
        render(tokenizer, [{"role": "wizard", "content": "hi"}])


ROUND_TRIPS = {
    "a calculator call": CALL,
    "quotes and backslashes": {"role": "assistant", "content": "", "tool_calls": [call("python", code="'a\\\"b'")]},
    "a search with non-ASCII": {"role": "assistant", "content": "", "tool_calls": [call("search", query="Ophélie")]},
    "text before the call": {"role": "assistant", "content": "Let me add.", "tool_calls": [call("python", code="1")]},
    "two calls": {
        "role": "assistant",
        "content": "",
        "tool_calls": [call("search", query="Lady Macbeth"), call("python", code="len('Macbeth')")],
    },
    "a plain answer": {"role": "assistant", "content": "Answer: 633"},
}


@pytest.mark.parametrize("message", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_a_rendered_reply_parses_back_to_the_same_message(tokenizer, message):
    prompt = render(tokenizer, [QUESTION], add_generation_prompt=True)
    whole = render(tokenizer, [QUESTION, message])
    assert whole.startswith(prompt)
    generated = whole[len(prompt) :]
    assert tokenizer.parse_response(generated, prefix=prompt) == {"content": "", **message}
    # TRL parses token ids, with the prompt's ids as the prefix and the tools to type the arguments.
    ids = tokenizer(generated, add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert trl_parse_response(tokenizer, ids, prefix=prompt_ids, tools=TOOLS) == {"content": "", **message}


def test_a_plain_answer_has_no_tool_calls_and_ends_at_the_end_of_turn(tokenizer):
    parsed = tokenizer.parse_response(" Answer: 4\n<|im_end|>\n<|pad|><|pad|>", prefix="")
    assert parsed == {"role": "assistant", "content": " Answer: 4\n"}  # as written, cut at the end of the turn
    assert tokenizer.parse_response("Answer: 4", prefix="") == {"role": "assistant", "content": "Answer: 4"}


MALFORMED = {
    "unclosed string": '<tool>python {"code": "1 +</tool>',
    "no closing marker": '<tool>python {"code": "1 + 2"}',
    "no opening marker": 'python {"code": "1 + 2"}</tool>',
    "not an object": '<tool>python "1 + 2"</tool>',
    "single quotes": "<tool>python {'code': '1 + 2'}</tool>",
    "trailing comma": '<tool>python {"code": "1 + 2",}</tool>',
    "nested arguments": '<tool>python {"code": {"text": "1"}}</tool>',
    "no name": '<tool> {"code": "1"}</tool>',
    "the marker inside a string": '<tool>python {"code": "</tool>"}</tool>',
    "a raw newline in a string": '<tool>python {"code": "1\n+ 2"}</tool>',
    "a huge number": '<tool>python {"code": ' + "9" * 5000 + "}</tool>",
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_call_is_plain_content_and_never_raises(tokenizer, text):
    parsed = tokenizer.parse_response(text + "<|im_end|>", prefix="<|im_start|>assistant\n")
    assert parsed == {"role": "assistant", "content": text}


def test_a_well_formed_call_among_text_is_still_found(tokenizer):
    text = "I will count. <tool>python {\"code\": \"'strawberry'.count('r')\"}</tool><|im_end|>"
    parsed = tokenizer.parse_response(text, prefix="")
    assert parsed["content"] == "I will count. "
    assert parsed["tool_calls"] == [call("python", code="'strawberry'.count('r')")]


def test_the_response_template_survives_save_and_load(tokenizer, tmp_path):
    assert tokenizer.response_template == RESPONSE_TEMPLATE
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == CHAT_TEMPLATE and loaded.response_template == RESPONSE_TEMPLATE
    assert add_chat_template(loaded).response_template == RESPONSE_TEMPLATE
    reply = '<tool>search {"query": "Lady Macbeth"}</tool><|im_end|>'
    assert loaded.parse_response(reply, prefix="")["tool_calls"] == [call("search", query="Lady Macbeth")]


def test_trl_accepts_the_template_for_its_tool_loop(tokenizer):
    """What GRPOTrainer(tools=...) checks and does with the tokenizer, on our template."""
    assert supports_tool_calling(tokenizer)  # else GRPOTrainer refuses the tools
    assert is_chat_template_prefix_preserving(tokenizer)  # else it swaps in a training template it lacks for ours
    assert is_chat_template_stop_token_trained(tokenizer)
    assert tokenizer.response_template is not None  # else it calls add_response_schema, which knows only its own
    # The loop appends a tool result to prompt + completion as token ids, with no re-tokenisation: the ids it
    # builds must be the ids of the whole conversation rendered at once.
    trainer = SimpleNamespace(
        processing_class=tokenizer, _tokenizer=tokenizer, chat_template=None, chat_template_kwargs={}, _is_vlm=False
    )
    suffix_ids = GRPOTrainer._get_tool_suffix_ids(trainer, [RESULT])
    assert tokenizer.decode(suffix_ids) == "\n<|im_start|>tool\n633<|im_end|>\n<|im_start|>assistant\n"
    prompt_ids = tokenizer.apply_chat_template([QUESTION], tools=TOOLS, add_generation_prompt=True, return_dict=True)
    completion = '<tool>python {"code": "347 + 286"}</tool><|im_end|>'
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    whole = tokenizer.apply_chat_template(
        [QUESTION, CALL, RESULT], tools=TOOLS, add_generation_prompt=True, return_dict=True
    )
    assert list(prompt_ids["input_ids"]) + completion_ids + suffix_ids == list(whole["input_ids"])
