"""Conversations: checking them before training, and talking to a chat model on the terminal.

A conversation is a list of {role, content} messages; the chat template (`deepdive.tokenizer`) turns it into the
tokens the model reads, and `deepdive.generation` writes the assistant's turn. The terminal chat keeps a long
conversation inside the model's context by dropping its oldest exchanges.
"""

import sys

from deepdive.errors import DataError
from deepdive.generation import Decoding, generate, generate_with_tools
from deepdive.tokenizer import ROLES


def validate_conversation(messages, where: str) -> None:
    """One-line DataError for a conversation the template cannot train on."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise DataError(f"{where}: unknown role {role!r}; valid roles: {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise DataError(f"{where}: a {role} message has no text 'content'")
        if role == "assistant" and not (message["content"].strip() or message.get("tool_calls")):
            raise DataError(f"{where}: an assistant turn is empty (no text and no tool call)")
    if not any(message["role"] == "assistant" for message in messages):
        raise DataError(f"{where}: the conversation has no assistant turn to learn from")


def validate_conversations(dataset, where: str) -> None:
    """Check every row of a conversational dataset before training starts."""
    if "messages" not in dataset.column_names:
        raise DataError(f"{where}: the dataset has no 'messages' column (it has {', '.join(dataset.column_names)})")
    for index, messages in enumerate(dataset["messages"]):
        validate_conversation(messages, f"{where} row {index}")


def reply(
    model, tokenizer, messages, max_new_tokens=256, temperature=0.0, top_k=50, stream=None, seed=0, tools=False
) -> str:
    """The assistant's next turn for `messages`; streamed to `stream` as it is generated when given.

    With `tools` the python and search tools are offered: each call the model makes is run, its result shown on
    `stream`, and both are appended to `messages` before the model writes again (the answer is what it writes
    once it calls no more).
    """
    decoding = Decoding(max_new_tokens, temperature, top_k, seed=seed)
    if not tools:
        return generate(model, tokenizer, [messages], decoding, stream=stream)[0].text
    [exchange] = generate_with_tools(model, tokenizer, [messages], decoding, stream=stream)
    messages.extend(exchange.turns)
    return exchange.completion.text


def fit_to_context(messages: list[dict], tokenizer, context_length: int, reserve: int) -> list[dict]:
    """Drop the oldest exchanges until the prompt leaves `reserve` tokens of the context for the reply.

    A small model has a short context (256 tokens for the tiny recipe); a long chat keeps its latest turns.
    The newest user message is always kept.
    """
    kept = list(messages)
    while len(kept) > 1:
        length = len(tokenizer.apply_chat_template(kept, add_generation_prompt=True, return_dict=True)["input_ids"])
        if length + reserve <= context_length:
            break
        kept = kept[2:] if kept[0]["role"] != "system" else kept[:1] + kept[3:]
    return kept


def chat_loop(
    model, tokenizer, temperature=0.7, top_k=50, max_new_tokens=256, seed=0, read=input, out=sys.stdout, tools=False
):
    """Multi-turn chat on the terminal: `/reset` forgets the conversation, `/quit` (or Ctrl-D) leaves. With
    `tools` the model may call python and search; each call and its result are shown as they happen."""
    out.write("deepdive chat. /reset starts over, /quit leaves.\n")
    messages = []
    while True:
        try:
            text = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return messages
        if text == "/quit":
            return messages
        if text == "/reset":
            messages = []
            out.write("(conversation reset)\n")
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        context = getattr(model.config, "max_position_embeddings", None) if model is not None else None
        budget = min(max_new_tokens, context // 2) if context else max_new_tokens
        if context:
            messages = fit_to_context(messages, tokenizer, context, budget)
        out.write("deepdive> ")
        answer = reply(model, tokenizer, messages, budget, temperature, top_k, stream=out, seed=seed, tools=tools)
        messages.append({"role": "assistant", "content": answer})
        seed += 1
