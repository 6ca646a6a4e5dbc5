"""Train the byte-level BPE tokenizer that turns text into the tokens the model simulates, and the chat template.

Byte-level, so any Unicode string round-trips exactly and no input is ever "unknown". Digits are split one by
one before BPE, so "1234" is always four tokens and arithmetic in the SFT and RL stages sees single digits
(the lecture's "models need tokens to think"). The special tokens for documents and chat turns are reserved
here, at pretraining time, so later stages never resize the embedding. Trained on the train split only.
The chat template also writes tools, calls and results in plain text (`<tool>python {"code": "1 + 2"}</tool>`),
and its response template reads a generated call back, for the chat and for TRL's GRPO tool loop.
"""

import re

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from deepdive.errors import DataError


END_OF_TEXT = "<|endoftext|>"  # closes every document; also the BOS/EOS of the base model
PAD = "<|pad|>"  # never trained on; separate from EOS so that SFT can learn to stop
IM_START = "<|im_start|>"  # opens a chat turn (ChatML style): <|im_start|>role\n ... <|im_end|>
IM_END = "<|im_end|>"  # closes a chat turn; the assistant's end-of-turn token
SPECIAL_TOKENS = [END_OF_TEXT, PAD, IM_START, IM_END]


def train_tokenizer(texts, vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train byte-level BPE with single-digit splitting on an iterable of strings."""
    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise DataError(f"vocab_size: must exceed the 256 byte tokens and {len(SPECIAL_TOKENS)} specials")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
    )


def token_byte_lengths(tokenizer) -> list[int]:
    """UTF-8 bytes each token id stands for; special tokens count 0 (they are not text).

    In byte-level BPE every character of a token's string is one byte, so a token's length is its byte count.
    """
    special_ids = set(tokenizer.all_special_ids)
    lengths = [0] * len(tokenizer)
    for token, token_id in tokenizer.get_vocab().items():
        lengths[token_id] = 0 if token_id in special_ids else len(token)
    return lengths


def bytes_per_token(tokenizer, texts) -> float:
    """Average UTF-8 bytes per token over `texts` (higher means a more compact tokenizer)."""
    n_bytes = sum(len(text.encode("utf-8")) for text in texts)
    n_tokens = sum(
        len(ids) for ids in tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)["input_ids"]
    )
    return n_bytes / max(n_tokens, 1)


# --- The chat template: a conversation as tokens ------------------------------------------------------------
# A conversation is just another token sequence. The template is ChatML-style with the special tokens reserved
# above (`<|im_start|>role\n ... <|im_end|>`), opened by `<|endoftext|>` as every pretraining document was. The
# assistant's content and its closing `<|im_end|>` sit inside `{% generation %}` markers, so TRL's
# `assistant_only_loss` trains exactly those tokens: the model learns to answer and, just as important, to stop.
#
# Tools follow the ecosystem's conventions, so that `apply_chat_template(..., tools=[python, search])`, datasets
# of `tool_calls` and TRL's GRPO tool loop work unchanged; a conversation without tools renders exactly as before.
# - The tools are listed in a system block, one line each, name and argument names only: `python(code)`. The
#   model's whole context is 256 tokens and a small model learns when to call which tool from the SFT examples,
#   not from reading a JSON schema, so the descriptions are left out.
# - A call is `<tool>python {"code": "347 + 286"}</tool>` inside the assistant's turn (and its loss). The
#   vocabulary has no tool tokens and gets none (that would resize the embedding), so the markers are plain text
#   that neither the plays nor the tasks' answers contain. The name stands outside the arguments to spend fewer
#   tokens than OpenAI's {"name": ..., "arguments": ...}; the arguments are a JSON object, which the template
#   writes with `tojson` and the parser reads back with `json`, so quotes and backslashes survive a round trip,
#   and the code's own strings, written with single quotes, need no escaping.
# - A tool's reply is a `<|im_start|>tool\n ... <|im_end|>` turn outside the generation markers: no loss.

TOOL_CALL_OPEN = "<tool>"
TOOL_CALL_CLOSE = "</tool>"
ROLES = ("system", "user", "assistant", "tool")
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages and messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n' }}{%- endif %}"
    "{{- 'Tools:' }}"
    "{%- for tool in tools %}"
    "{%- set function = tool['function'] if tool['function'] is defined else tool %}"
    "{{- '\\n' + function['name'] + '(' }}"
    "{%- if function['parameters'] is mapping and function['parameters']['properties'] is mapping %}"
    "{{- function['parameters']['properties'] | join(', ') }}"
    "{%- endif %}"
    "{{- ')' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}"
    "{{- raise_exception('unknown role ' + message['role'] + '; valid roles: system, user, assistant, tool') }}"
    "{%- endif %}"
    "{%- if tools and loop.first and message['role'] == 'system' %}"  # already written above the tool list
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}"
    "{{- message['content'] if message['content'] is string else '' }}"
    "{%- if message['tool_calls'] is defined and message['tool_calls'] %}"
    "{%- for call in message['tool_calls'] %}"
    "{%- set function = call['function'] if call['function'] is defined else call %}"
    "{{- '" + TOOL_CALL_OPEN + "' + function['name'] + ' ' }}"
    "{%- if function['arguments'] is string %}{{- function['arguments'] }}"  # OpenAI's form: JSON text already
    "{%- else %}"
    "{{- '{' }}"
    "{%- if function['arguments'] is mapping %}"
    # A `datasets` table gives every call the keys of all calls, the foreign ones None: those are left out.
    "{%- for key, value in function['arguments'].items() if value is not none %}"
    "{{- (', ' if not loop.first else '') + key | tojson + ': ' + value | tojson }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '}' }}"
    "{%- endif %}"
    "{{- '" + TOOL_CALL_CLOSE + "' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>' }}"
    "{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# --- Reading a reply back: the response template -------------------------------------------------------------
# `tokenizer.parse_response(text, prefix=prompt)` (transformers' declarative parser, which TRL's GRPO tool loop
# calls on every completion) turns the assistant's text into {"role", "content", "tool_calls"}. A call is
# recognised only when it is well formed: the opening pattern looks ahead for a flat JSON object (string, number,
# true/false/null values) and the closing marker, so `json` can never fail on it. Anything else (broken JSON,
# a missing `</tool>`, nested arguments, `</tool>` inside a string) stays in the content as plain text, so a
# sampled reply never makes the parser raise and the model reads its own mistake back as text.

_JSON_SPACE = r"[ \t\n\r]*"
_JSON_STRING = rf'"(?:(?!{re.escape(TOOL_CALL_CLOSE)})[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{{4}})*"'
_JSON_NUMBER = r"-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,16})?(?:[eE][+-]?[0-9]{1,3})?"  # bounded: int() has limits
_JSON_VALUE = rf"(?:{_JSON_STRING}|{_JSON_NUMBER}|true|false|null)"
_JSON_MEMBER = rf"{_JSON_STRING}{_JSON_SPACE}:{_JSON_SPACE}{_JSON_VALUE}"
_JSON_FLAT_OBJECT = (
    rf"\{{{_JSON_SPACE}(?:{_JSON_MEMBER}(?:{_JSON_SPACE},{_JSON_SPACE}{_JSON_MEMBER})*)?{_JSON_SPACE}\}}"
)
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant", "content": ""},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open_pattern": rf"{re.escape(TOOL_CALL_OPEN)}(?P<name>[A-Za-z_][A-Za-z0-9_]*)[ \t]*"
            rf"(?={_JSON_FLAT_OBJECT}{re.escape(TOOL_CALL_CLOSE)})",
            "close_pattern": rf"{re.escape(TOOL_CALL_CLOSE)}[ \t\n\r]*",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": {"name": "{name}", "arguments": "{content}"}},
        },
        # The text exactly as written (what the template would write back), up to the end of the turn: whatever
        # follows `<|im_end|>` (padding, a next turn) is not part of this reply.
        "content": {"close_pattern": r"<\|im_end\|>.*", "content": "text", "content_args": {"strip": False}},
    },
}


def add_chat_template(tokenizer, where: str = "model_name_or_path"):
    """Give `tokenizer` deepdive's chat template (if it has none) and make `<|im_end|>` its EOS.

    With deepdive's template comes its response template, so `tokenizer.parse_response` reads tool calls back;
    both are saved by `save_pretrained`. Raises DataError when the tokenizer lacks the chat special tokens (e.g.
    a tokenizer from elsewhere).
    """
    vocabulary = tokenizer.get_vocab()
    if tokenizer.chat_template is None:
        missing = [token for token in (END_OF_TEXT, IM_START, IM_END) if token not in vocabulary]
        if missing:
            raise DataError(
                f"{where}: the tokenizer has no chat template and lacks the chat tokens {', '.join(missing)}; "
                "use a model pretrained by deepdive or one with a chat template"
            )
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.bos_token = END_OF_TEXT
        tokenizer.eos_token = IM_END
    if tokenizer.chat_template == CHAT_TEMPLATE and tokenizer.response_template is None:
        tokenizer.response_template = RESPONSE_TEMPLATE
    return tokenizer
